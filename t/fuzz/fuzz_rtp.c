/*
 * fuzz_rtp.c: the relay's packet path on arbitrary datagrams.
 *
 * Two eps x and y are set up the way the engine's commands leave them
 * (peer, SRTP keys, bridge, forwarding map), without the engine thread;
 * each datagram of the input is put into the receive batch and handed to
 * media_rtp_batch(), what media_rtp_input() runs after recvmmsg: the RTP
 * and RTCP header checks, source latching, SRTP/SRTCP unprotect, loss
 * counting, payload type mapping and A/u-law transcoding, the outgoing
 * stream's rewriting, SRTP protect and sendmmsg. RFC 4733 events are
 * queued and played with media_dtmf_queue() and media_rtp_tick(). What
 * the eps send goes to UDP sockets of the harness and is read back.
 *
 * Input:
 *   byte 0: bit 0 x has SRTP, bit 1 y has SRTP, bit 2 the 32-bit tag
 *           suite, bit 3 x negotiated telephone-event (101), bit 4 y did
 *           (bit 5: as 96, else 101), bit 6 y's codec is PCMA, bit 7 y
 *           is on hold
 *   byte 1: bit 0 bridged, bit 1 x's codec is PCMA
 *   then records: an op byte, a length byte, that many bytes (less at
 *   the end). op & 7: 0 RTP on x, 1 RTCP on x, 2 RTP on y, 3 RTCP on y,
 *   4 a 20 ms tick, 5 DTMF queued on y (event data[0], data[1] * 4 ms),
 *   6 the same on x, 7 y's hold toggled. For datagrams: 0x08 protected
 *   first with the key the sender's peer holds (so that SRTP passes),
 *   0x10 then one byte changed (the first data byte picks it), 0x20 from
 *   a stranger's address, 0x40 truncated (MSG_TRUNC).
 *
 * FUZZ_VERBOSE=1 prints each ep's counters after each input.
 *
 * Checked (abort): every datagram is counted once (received, or dropped,
 * or an SRTP failure); an SRTP datagram changed after protection is never
 * received, relayed or latched: it counts as an authentication failure
 * or a drop; what goes out is version 2 RTP with a payload type the
 * receiving peer negotiated, and with SRTP, what the peer's key
 * authenticates (SRTCP too).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <srtp2/srtp.h>

#include "fuzz.h"
#include "log.h"
#include "media/media_int.h"

static struct media *m;
static int sink[2][2];                  /* [ep][rtp/rtcp]: the peers' sockets */
static struct sockaddr_storage sink_addr[2][2];
static srtp_t peer_out[2];              /* the peers' senders */
static srtp_t peer_in[2];               /* the peers' receivers */

static const uint8_t keys[4][MEDIA_SRTP_KEY_LEN] = {
	{ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
	  21, 22, 23, 24, 25, 26, 27, 28, 29, 30 },
	{ 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
	  49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60 },
	{ 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78,
	  79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90 },
	{ 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106,
	  107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120 },
};

static int udp(struct sockaddr_storage *ss)
{
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	socklen_t len = sizeof(*a);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	memset(ss, 0, sizeof(*ss));
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)a, len) ||
	    getsockname(fd, (struct sockaddr *)a, &len))
		abort();
	return fd;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *spec = getenv("FUZZ_LOG");

	(void)argc;
	(void)argv;
	log_force_level(spec ? spec : "error");
	if (media_srtp_init())
		abort();
	m = calloc(1, sizeof(*m));
	if (!m || !(m->rx = calloc(1, sizeof(*m->rx))))
		abort();
	m->npairs = 2;
	m->slots = calloc(2, sizeof(*m->slots));
	m->eps = calloc(2, sizeof(*m->eps));
	m->playing = calloc(2, sizeof(*m->playing));
	if (!m->slots || !m->eps || !m->playing)
		abort();
	/* an eventfd stands in for the 20 ms timerfd: a tick is a write */
	m->tfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (m->tfd < 0)
		abort();
	media_rtp_init(m);
	for (int i = 0; i < 2; i++) {
		struct sockaddr_storage ss;

		m->eps[i].fd[0] = udp(&ss);
		m->eps[i].fd[1] = udp(&ss);
		sink[i][0] = udp(&sink_addr[i][0]);
		sink[i][1] = udp(&sink_addr[i][1]);
	}
	return 0;
}

static srtp_t session(bool suite32, const uint8_t *key, bool inbound)
{
	uint8_t k[MEDIA_SRTP_KEY_LEN];
	srtp_policy_t p;
	srtp_t s = NULL;

	memset(&p, 0, sizeof(p));
	if (suite32)
		srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p.rtp);
	else
		srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtp);
	srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtcp);
	p.ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound;
	memcpy(k, key, sizeof(k));
	p.key = k;
	p.window_size = 1024;
	p.allow_repeat_tx = 1;          /* the fuzzer repeats itself */
	if (srtp_create(&s, &p) != srtp_err_status_ok)
		abort();
	return s;
}

static void drain(int fd)
{
	uint8_t b[MEDIA_RX_BUF];

	while (recv(fd, b, sizeof(b), 0) >= 0)
		;
}

/* The state the engine's commands leave an ep in, from the config bytes. */
static void ep_setup(int i, uint8_t c0, uint8_t c1)
{
	struct media_ep *e = &m->eps[i];
	int fd0 = e->fd[0], fd1 = e->fd[1];
	struct media_peer *p = &e->peer;
	bool srtp = c0 & (i ? 2 : 1);

	media_srtp_clear(e);
	memset(e, 0, sizeof(*e));
	e->fd[0] = fd0;
	e->fd[1] = fd1;
	e->h = 0x10000u | (uint32_t)i;
	e->play_pos = UINT32_MAX;
	e->out.ssrc = 0x5eed0000u + (uint32_t)i;
	e->has_peer = true;
	p->rtp = sink_addr[i][0];
	p->rtcp = sink_addr[i][1];
	p->codec = (i ? c0 & 0x40 : c1 & 2) ? MEDIA_PCMA : MEDIA_PCMU;
	p->pt = (int)p->codec;
	p->te_pt = i ? (c0 & 0x10 ? (c0 & 0x20 ? 96 : 101) : -1) : (c0 & 8 ? 101 : -1);
	p->sendrecv = !(i && (c0 & 0x80));
	if (srtp) {
		p->srtp.suite = c0 & 4 ? MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32 :
			MEDIA_SRTP_AES_CM_128_HMAC_SHA1_80;
		memcpy(p->srtp.rx_key, keys[2 * i], MEDIA_SRTP_KEY_LEN);
		memcpy(p->srtp.tx_key, keys[2 * i + 1], MEDIA_SRTP_KEY_LEN);
	}
	e->dst[0] = p->rtp;
	e->dst[1] = p->rtcp;
	e->dstlen[0] = e->dstlen[1] = sizeof(struct sockaddr_in);
	media_srtp_apply(e, &p->srtp);
	if (peer_out[i])
		srtp_dealloc(peer_out[i]);
	if (peer_in[i])
		srtp_dealloc(peer_in[i]);
	peer_out[i] = srtp ? session(c0 & 4, keys[2 * i], false) : NULL;
	peer_in[i] = srtp ? session(c0 & 4, keys[2 * i + 1], true) : NULL;
}

static void setup(uint8_t c0, uint8_t c1)
{
	uint64_t v;

	ep_setup(0, c0, c1);
	ep_setup(1, c0, c1);
	m->nplaying = 0;
	m->tick_armed = false;
	m->now = 1000000;
	m->rng = 0x9e3779b97f4a7c15ull;
	memset(m->slots, 0, 2 * sizeof(*m->slots));
	if (read(m->tfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		abort();
	if (c1 & 1) {
		m->eps[0].other = &m->eps[1];
		m->eps[1].other = &m->eps[0];
	}
	media_rtp_fwd(&m->eps[0]);
	media_rtp_fwd(&m->eps[1]);
	for (int i = 0; i < 2; i++)
		for (int k = 0; k < 2; k++)
			drain(sink[i][k]);
}

/*
 * What the peer of e may get: RTP of its payload types or comfort noise,
 * and with SRTP, packets that its key authenticates (it has seen the
 * same sequence numbers as our sender, so it estimates the same index).
 */
static void check_sent(int i)
{
	const struct media_ep *e = &m->eps[i];
	uint8_t b[MEDIA_RX_BUF];
	ssize_t n;
	int len;
	srtp_err_status_t s;

	while ((n = recv(sink[i][0], b, sizeof(b), 0)) >= 0) {
		unsigned pt;

		len = (int)n;
		if (peer_in[i] && (s = srtp_unprotect(peer_in[i], b, &len)) !=
		    srtp_err_status_ok) {
			fprintf(stderr, "fuzz_rtp: ep %d's peer cannot unprotect %zd bytes "
				"(libsrtp %d)\n", i, n, (int)s);
			abort();
		}
		n = len;
		pt = b[n > 1 ? 1 : 0] & 0x7F;
		if (n < MEDIA_RTP_HDR || b[0] >> 6 != 2 ||
		    (pt != (unsigned)e->peer.pt && pt != 13 &&
		     (e->peer.te_pt < 0 || pt != (unsigned)e->peer.te_pt))) {
			fprintf(stderr, "fuzz_rtp: ep %d's peer got %zd bytes, pt %u\n",
				i, n, pt);
			abort();
		}
	}
	while ((n = recv(sink[i][1], b, sizeof(b), 0)) >= 0) {
		len = (int)n;
		if (peer_in[i] && (s = srtp_unprotect_rtcp(peer_in[i], b, &len)) !=
		    srtp_err_status_ok) {
			fprintf(stderr, "fuzz_rtp: ep %d's peer cannot unprotect %zd bytes "
				"of SRTCP (libsrtp %d)\n", i, n, (int)s);
			abort();
		}
	}
}

/*
 * The engine arms its 20 ms timerfd when something starts playing and
 * disarms it when nothing does; here m->tfd is an eventfd (a tick is a
 * write), which timerfd_settime() refuses. This one, found by the linker
 * before libc's, takes any setting for it and passes the rest on.
 */
int timerfd_settime(int fd, int flags, const struct itimerspec *nv,
		    struct itimerspec *ov)
{
	if (m && fd == m->tfd)
		return 0;
	return (int)syscall(SYS_timerfd_settime, fd, flags, nv, ov);
}

static uint64_t failures(const struct media_stats *st)
{
	return st->dropped + st->srtp_auth + st->srtp_replay;
}

/* One datagram arriving on ep i's RTP or RTCP socket. */
static void datagram(int i, bool rtcp, uint8_t op, const uint8_t *d, size_t len)
{
	struct media_ep *e = &m->eps[i];
	uint8_t *p = m->rx->buf[0];
	struct mmsghdr *h = &m->rx->msg[0];
	struct sockaddr_in *src = (struct sockaddr_in *)&m->rx->src[0];
	struct media_stats before = e->st;
	bool latched = e->latched[rtcp], changed = false;
	int n = (int)len;

	if (len > MEDIA_RX_MAX - SRTP_MAX_TRAILER_LEN - 4)
		len = MEDIA_RX_MAX - SRTP_MAX_TRAILER_LEN - 4;
	n = (int)len;
	memcpy(p, d, len);
	if ((op & 0x08) && peer_out[i] && (rtcp ? srtp_protect_rtcp(peer_out[i], p, &n) :
	    srtp_protect(peer_out[i], p, &n)) == srtp_err_status_ok && (op & 0x10) &&
	    n > 0) {
		p[(len ? d[0] : 0) % (unsigned)n] ^= (uint8_t)(1u << (op >> 5 & 7));
		changed = true;
	}
	if (n < 0)
		n = (int)len;
	h->msg_len = (unsigned)n;
	h->msg_hdr.msg_flags = op & 0x40 ? MSG_TRUNC : 0;
	h->msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
	if (op & 0x20) {
		memset(src, 0, sizeof(*src));
		src->sin_family = AF_INET;
		src->sin_addr.s_addr = htonl(0x7f000009);
		src->sin_port = htons(4000);
	}
	else {
		memcpy(src, rtcp ? &e->peer.rtcp : &e->peer.rtp, sizeof(*src));
	}
	media_rtp_batch(m, e, rtcp, 1);

	if (e->st.rx_packets - before.rx_packets > (rtcp ? 0u : 1u))
		abort();
	if (e->st.rx_packets == before.rx_packets && !rtcp &&
	    failures(&e->st) - failures(&before) != 1) {
		fprintf(stderr, "fuzz_rtp: a datagram not counted once\n");
		abort();
	}
	if (changed && e->srtp.suite) {
		if (e->st.rx_packets != before.rx_packets || failures(&e->st) ==
		    failures(&before) || (!latched && e->latched[rtcp])) {
			fprintf(stderr, "fuzz_rtp: a forged SRTP%s datagram was taken\n",
				rtcp ? "C" : "");
			abort();
		}
		for (int k = 0; k < 2; k++) {
			uint8_t b[16];

			if (recv(sink[!i][k], b, sizeof(b), 0) >= 0) {
				fprintf(stderr, "fuzz_rtp: a forged datagram was relayed\n");
				abort();
			}
		}
	}
	check_sent(0);
	check_sent(1);
}

static void tick(void)
{
	uint64_t one = 1;

	m->now += 20;
	if (write(m->tfd, &one, sizeof(one)) != sizeof(one))
		abort();
	media_rtp_tick(m);
	check_sent(0);
	check_sent(1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t pos = 2;

	if (size < 2)
		return 0;
	setup(data[0], data[1]);
	while (pos + 2 <= size) {
		uint8_t op = data[pos];
		size_t len = data[pos + 1];
		const uint8_t *d = data + pos + 2;

		if (len > size - pos - 2)
			len = size - pos - 2;
		pos += 2 + len;
		m->now += 1;
		switch (op & 7) {
		case 0: case 1: case 2: case 3:
			datagram((op & 7) >> 1, op & 1, op, d, len);
			break;
		case 4:
			tick();
			break;
		case 5: case 6:
			media_dtmf_queue(m, &m->eps[(op & 7) == 5], len ? d[0] % 16 : 1,
					 (uint16_t)(len > 1 ? d[1] * 4 : 100));
			break;
		default:
			m->eps[1].peer.sendrecv = !m->eps[1].peer.sendrecv;
			media_rtp_fwd(&m->eps[0]);
			media_rtp_fwd(&m->eps[1]);
			break;
		}
	}
	for (int i = 0; i < 2 && getenv("FUZZ_VERBOSE"); i++) {
		const struct media_stats *st = &m->eps[i].st;

		fprintf(stderr, "fuzz_rtp: ep %d rx %llu tx %llu lost %llu late %llu "
			"dropped %llu srtp_auth %llu srtp_replay %llu\n", i,
			(unsigned long long)st->rx_packets, (unsigned long long)st->tx_packets,
			(unsigned long long)st->lost, (unsigned long long)st->late,
			(unsigned long long)st->dropped, (unsigned long long)st->srtp_auth,
			(unsigned long long)st->srtp_replay);
	}
	/* what the engine does when the eps go */
	for (int i = 0; i < 2; i++)
		media_rtp_play(m, &m->eps[i], NULL, NULL);
	return 0;
}
