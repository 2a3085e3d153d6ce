/*
 * media_relay.c: the RTP engine on 127.0.0.1, driven through its API, with
 * UDP sockets standing in for the caller and the agent.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "clk.h"
#include "media/g711.h"
#include "media/media.h"
#include "media/media_int.h"

#define WAIT_MS 1000            /* longest wait for any one packet */

/* One SIP leg: its two sockets (the phone) and its ep on the engine. */
struct side {
	int rtp, rtcp;
	struct sockaddr_storage a_rtp, a_rtcp;  /* the sockets' addresses */
	media_ep_t ep;
	uint16_t port;
	struct sockaddr_storage ep_rtp, ep_rtcp;        /* the ep's ports */
};

struct pkt {
	int len;
	uint8_t b[2048];
	int pt, marker;
	uint16_t seq;
	uint32_t ts, ssrc;
	int64_t at;
};

static struct media *m;
static struct media_prompt *tone;

static struct sockaddr_storage lo_addr(uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return ss;
}

static int udp_open(struct sockaddr_storage *a)
{
	socklen_t len = sizeof(*a);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	*a = lo_addr(0);
	if (fd < 0 || bind(fd, (struct sockaddr *)a, sizeof(struct sockaddr_in)) ||
	    getsockname(fd, (struct sockaddr *)a, &len)) {
		perror("udp socket");
		exit(1);
	}
	return fd;
}

static void side_open(struct side *s)
{
	s->rtp = udp_open(&s->a_rtp);
	s->rtcp = udp_open(&s->a_rtcp);
	is_int(media_ep_alloc(m, &s->ep, &s->port), 0, "ep allocated");
	ok(s->port % 2 == 0, "RTP port %u is even", s->port);
	s->ep_rtp = lo_addr(s->port);
	s->ep_rtcp = lo_addr((uint16_t)(s->port + 1));
}

static void side_close(struct side *s)
{
	close(s->rtp);
	close(s->rtcp);
}

static int set_peer(const struct side *s, const struct sockaddr_storage *rtp,
		    enum media_codec codec, int te_pt)
{
	struct media_peer p = { .codec = codec, .pt = codec, .te_pt = te_pt,
				.sendrecv = true };

	p.rtp = *rtp;
	p.rtcp = s->a_rtcp;
	return media_ep_set_peer(m, s->ep, &p);
}

static void rtp_send(int fd, const struct sockaddr_storage *to, int pt,
		     uint16_t seq, uint32_t ts, uint32_t ssrc, const uint8_t *pl,
		     size_t n)
{
	uint8_t b[12 + 200];

	b[0] = 0x80;
	b[1] = (uint8_t)pt;
	b[2] = (uint8_t)(seq >> 8);
	b[3] = (uint8_t)seq;
	for (int i = 0; i < 4; i++) {
		b[4 + i] = (uint8_t)(ts >> (24 - 8 * i));
		b[8 + i] = (uint8_t)(ssrc >> (24 - 8 * i));
	}
	memcpy(b + 12, pl, n);
	if (sendto(fd, b, 12 + n, 0, (const struct sockaddr *)to,
		   sizeof(struct sockaddr_in)) < 0)
		perror("sendto");
}

/* Waits up to ms for one datagram and parses its RTP header. */
static int pkt_recv(int fd, struct pkt *p, int ms)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	const uint8_t *b = p->b;

	memset(p, 0, sizeof(*p));
	p->len = -1;
	if (poll(&pf, 1, ms) <= 0)
		return -1;
	p->len = (int)recv(fd, p->b, sizeof(p->b), 0);
	p->at = clk_mono_ms();
	if (p->len >= 12) {
		p->pt = b[1] & 0x7F;
		p->marker = b[1] >> 7;
		p->seq = (uint16_t)(b[2] << 8 | b[3]);
		p->ts = (uint32_t)b[4] << 24 | (uint32_t)b[5] << 16 | (uint32_t)b[6] << 8 | b[7];
		p->ssrc = (uint32_t)b[8] << 24 | (uint32_t)b[9] << 16 | (uint32_t)b[10] << 8 | b[11];
	}
	return p->len;
}

/* Reads what is queued; returns the count and keeps the last packet. */
static int drain(int fd, struct pkt *last, int quiet_ms)
{
	struct pkt p;
	int n = 0;

	while (n < 500 && pkt_recv(fd, &p, quiet_ms) >= 0) {
		n++;
		if (last)
			*last = p;
	}
	return n;
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Stats are published after each batch; give the engine a moment. */
static uint64_t stat_wait(media_ep_t ep, size_t off, uint64_t want)
{
	struct media_stats st;
	uint64_t v = 0;

	for (int i = 0; i < 200; i++) {
		media_ep_stats(m, ep, &st);
		memcpy(&v, (const char *)&st + off, sizeof(v));
		if (v == want)
			break;
		msleep(5);
	}
	return v;
}

#define STAT(ep, field, want) \
	stat_wait((ep), offsetof(struct media_stats, field), (want))

static uint8_t payload[160];

/* ---- (a) a prompt -------------------------------------------------------- */

static int prompt_packets;      /* all prompt packets the caller received */

static void test_prompt(struct side *c, struct pkt *last)
{
	struct pkt p, first;
	int n = 0, seq_ok = 1, ts_ok = 1, ssrc_ok = 1, mark_ok = 1, pt_ok = 1;

	is_int(media_ep_play(m, c->ep, tone, tone), 0, "play the tone to the caller");
	if (pkt_recv(c->rtp, &first, WAIT_MS) < 0) {
		ok(0, "a prompt packet arrives");
		return;
	}
	is_int(first.len, 172, "prompt packet is 12 + 160 bytes");
	is_int(first.marker, 1, "marker on the first packet");
	is_int(first.pt, MEDIA_PCMA, "payload type is the caller's (PCMA)");
	ok(!memcmp(first.b + 12, media_prompt_frame(tone, MEDIA_PCMA, 0), 160),
	   "first payload is the tone's first A-law frame");
	*last = first;
	for (n = 1; n < 10 && pkt_recv(c->rtp, &p, WAIT_MS) >= 0; n++) {
		seq_ok &= p.seq == (uint16_t)(last->seq + 1);
		ts_ok &= p.ts == last->ts + 160;
		ssrc_ok &= p.ssrc == first.ssrc;
		mark_ok &= !p.marker;
		pt_ok &= p.pt == MEDIA_PCMA;
		*last = p;
	}
	is_int(n, 10, "10 prompt packets arrive");
	ok(seq_ok && ts_ok, "consecutive sequence numbers (%d), timestamps +160 (%d)",
	   seq_ok, ts_ok);
	ok(ssrc_ok && mark_ok && pt_ok, "one SSRC (%d), no further marker (%d), "
	   "PCMA throughout (%d)", ssrc_ok, mark_ok, pt_ok);
	ok(last->at - first.at >= 120 && last->at - first.at <= 500,
	   "9 intervals take %lld ms, want about 180", (long long)(last->at - first.at));
	prompt_packets = n;
}

/* ---- (b) the bridge ------------------------------------------------------ */

static void check_xlat(const struct pkt *p, const uint8_t *table, const char *what)
{
	int bad = 0;

	for (int i = 0; i < 160; i++)
		bad += p->b[12 + i] != table[payload[i]];
	is_int(bad, 0, "%s: every payload byte mapped through the table", what);
}

static void test_bridge(struct side *c, struct side *a, struct pkt *last)
{
	struct pkt p, prev;
	int n;

	is_int(media_bridge(m, c->ep, a->ep), 0, "bridge caller and agent");
	msleep(50);
	n = drain(c->rtp, last, 60);
	prompt_packets += n;
	ok(n < 10, "the prompt stops (%d packets after the bridge)", n);

	rtp_send(c->rtp, &c->ep_rtp, MEDIA_PCMA, 1000, 5000, 0xCA11E4, payload, 160);
	if (pkt_recv(a->rtp, &p, WAIT_MS) < 0) {
		ok(0, "caller's packet reaches the agent");
		return;
	}
	is_int(p.pt, MEDIA_PCMU, "caller -> agent: PCMA becomes PCMU");
	check_xlat(&p, media_g711_a2u, "caller -> agent");
	ok(p.seq == 1000 && p.ts == 5000 && p.ssrc == 0xCA11E4,
	   "agent heard nothing before: seq/ts/SSRC pass through (%u %u %x)",
	   p.seq, p.ts, (unsigned)p.ssrc);

	rtp_send(a->rtp, &a->ep_rtp, MEDIA_PCMU, 7, 100, 0xA9E27, payload, 160);
	rtp_send(a->rtp, &a->ep_rtp, MEDIA_PCMU, 8, 260, 0xA9E27, payload, 160);
	if (pkt_recv(c->rtp, &p, WAIT_MS) < 0 || pkt_recv(c->rtp, &prev, WAIT_MS) < 0) {
		ok(0, "agent's packets reach the caller");
		return;
	}
	is_int(p.pt, MEDIA_PCMA, "agent -> caller: PCMU becomes PCMA");
	check_xlat(&p, media_g711_u2a, "agent -> caller");
	is_int(p.ssrc, last->ssrc, "the caller keeps hearing the prompt's SSRC");
	is_int(p.seq, (uint16_t)(last->seq + 1), "first relayed seq = last prompt seq + 1");
	ok(p.ts - last->ts >= 160 && p.ts - last->ts < 8000,
	   "timestamp moves on from the prompt (+%u)", p.ts - last->ts);
	is_int(p.marker, 1, "marker on the first relayed packet");
	ok(prev.seq == (uint16_t)(p.seq + 1) && prev.ts == p.ts + 160 && !prev.marker,
	   "second relayed packet: seq +1, ts +160, no marker");
	*last = prev;
}

/* ---- (c) telephone-event --------------------------------------------------- */

static void test_dtmf(struct side *c, struct side *a, struct pkt *last)
{
	uint8_t ev[4] = { 5, 0x0A, 0, 160 };
	struct media_stats st0, st1;
	struct pkt p;

	rtp_send(c->rtp, &c->ep_rtp, 101, 1001, 5160, 0xCA11E4, ev, 4);
	is_int(pkt_recv(a->rtp, &p, WAIT_MS), 16, "DTMF reaches the agent");
	is_int(p.pt, 96, "telephone-event 101 becomes the agent's 96");
	ok(!memcmp(p.b + 12, ev, 4), "event payload untouched");
	rtp_send(a->rtp, &a->ep_rtp, 96, 9, 420, 0xA9E27, ev, 4);
	pkt_recv(c->rtp, &p, WAIT_MS);
	is_int(p.pt, 101, "agent's 96 becomes the caller's 101");
	*last = p;

	is_int(set_peer(a, &a->a_rtp, MEDIA_PCMU, -1), 0, "agent without telephone-event");
	msleep(20);
	media_ep_stats(m, c->ep, &st0);
	rtp_send(c->rtp, &c->ep_rtp, 101, 1002, 5160, 0xCA11E4, ev, 4);
	ok(pkt_recv(a->rtp, &p, 200) < 0, "DTMF is dropped towards a peer without it");
	STAT(c->ep, rx_packets, st0.rx_packets + 1);
	media_ep_stats(m, c->ep, &st1);
	is_int(st1.dropped - st0.dropped, 1, "and counted as dropped");
	set_peer(a, &a->a_rtp, MEDIA_PCMU, 96);
}

/* ---- (e) RTCP --------------------------------------------------------------- */

static void test_rtcp(struct side *c, struct side *a)
{
	uint8_t rr[8] = { 0x80, 201, 0, 1, 0xCA, 0x11, 0xE4, 0x00 };
	uint8_t bad[8] = { 0x00, 201, 0, 1, 0, 0, 0, 0 };
	uint8_t got[64];
	struct pollfd pf = { .fd = a->rtcp, .events = POLLIN };
	ssize_t n = -1;

	sendto(c->rtcp, rr, 8, 0, (struct sockaddr *)&c->ep_rtcp, sizeof(struct sockaddr_in));
	if (poll(&pf, 1, WAIT_MS) > 0)
		n = recv(a->rtcp, got, sizeof(got), 0);
	ok(n == 8 && !memcmp(got, rr, 8), "caller's RTCP reaches the agent's RTCP port as is");
	rr[4] = 0xA9;
	sendto(a->rtcp, rr, 8, 0, (struct sockaddr *)&a->ep_rtcp, sizeof(struct sockaddr_in));
	pf.fd = c->rtcp;
	n = poll(&pf, 1, WAIT_MS) > 0 ? recv(c->rtcp, got, sizeof(got), 0) : -1;
	ok(n == 8 && !memcmp(got, rr, 8), "agent's RTCP reaches the caller's RTCP port");
	sendto(c->rtcp, bad, 8, 0, (struct sockaddr *)&c->ep_rtcp, sizeof(struct sockaddr_in));
	pf.fd = a->rtcp;
	ok(poll(&pf, 1, 200) == 0, "malformed RTCP (version 0) is not relayed");
}

/* ---- (f) counters ------------------------------------------------------------- */

static void test_stats(struct side *c, struct side *a, int c_sent, int c_got)
{
	struct media_stats st;

	/* a gap of three: 1010 after 1002 */
	rtp_send(c->rtp, &c->ep_rtp, MEDIA_PCMA, 1006, 6000, 0xCA11E4, payload, 160);
	rtp_send(c->rtp, &c->ep_rtp, MEDIA_PCMA, 1010, 6640, 0xCA11E4, payload, 160);
	drain(a->rtp, NULL, 100);
	c_sent += 2;
	is_int(STAT(c->ep, rx_packets, (uint64_t)c_sent), c_sent,
	       "caller ep: every valid RTP packet from the caller counted");
	is_int(STAT(c->ep, rx_bytes, (uint64_t)(c_sent - 2) * 172 + 2 * 16),
	       (c_sent - 2) * 172 + 2 * 16, "caller ep: received bytes");
	is_int(STAT(c->ep, tx_packets, (uint64_t)c_got), c_got,
	       "caller ep: prompt and relayed packets sent = what the caller got");
	media_ep_stats(m, c->ep, &st);
	is_int(st.lost, 3 + 3, "caller ep: lost counts the sequence gaps");
	ok(st.last_rx_ms > 0 && clk_mono_ms() - st.last_rx_ms < 2000,
	   "last_rx_ms is recent monotonic time (%lld ago)",
	   (long long)(clk_mono_ms() - st.last_rx_ms));
	is_int(STAT(a->ep, tx_packets, (uint64_t)c_sent - 1), c_sent - 1,
	       "agent ep: all but the dropped DTMF relayed");
	media_ep_stats(m, a->ep, &st);
	is_int(st.rx_packets, 3, "agent ep: three packets from the agent");
	is_int(st.lost, 0, "agent ep: nothing lost");
}

/* ---- (d) sources and latching ------------------------------------------------ */

static void test_latch(void)
{
	struct side x, y;
	struct sockaddr_storage nat_a;
	int nat = udp_open(&nat_a), stranger;
	struct sockaddr_storage str_a;
	struct media_stats st;
	struct pkt p;

	stranger = udp_open(&str_a);
	side_open(&x);
	side_open(&y);
	rtp_send(nat, &x.ep_rtp, MEDIA_PCMA, 1, 0, 0x11, payload, 160);
	is_int(STAT(x.ep, dropped, 1), 1, "before the peer is known, packets are dropped");
	/* x's SDP says x.rtp, but the phone is behind NAT and sends from nat */
	set_peer(&x, &x.a_rtp, MEDIA_PCMA, 101);
	set_peer(&y, &y.a_rtp, MEDIA_PCMA, 101);
	media_bridge(m, x.ep, y.ep);
	msleep(20);
	rtp_send(nat, &x.ep_rtp, MEDIA_PCMA, 2, 160, 0x11, payload, 160);
	ok(pkt_recv(y.rtp, &p, WAIT_MS) == 172 && !memcmp(p.b + 12, payload, 160),
	   "the first packet (from the NAT address) is relayed untranscoded");
	rtp_send(y.rtp, &y.ep_rtp, MEDIA_PCMA, 50, 0, 0x22, payload, 160);
	ok(pkt_recv(nat, &p, WAIT_MS) == 172, "the reply goes to the latched address");
	ok(pkt_recv(x.rtp, &p, 100) < 0, "and not to the SDP address");
	rtp_send(stranger, &x.ep_rtp, MEDIA_PCMA, 3, 320, 0x11, payload, 160);
	rtp_send(x.rtp, &x.ep_rtp, MEDIA_PCMA, 4, 480, 0x11, payload, 160);
	ok(pkt_recv(y.rtp, &p, 200) < 0, "a stranger and the SDP address are both dropped");
	is_int(STAT(x.ep, dropped, 3), 3, "dropped counts them");
	uint8_t junk[11] = { 0x80 };
	sendto(nat, junk, sizeof(junk), 0, (struct sockaddr *)&x.ep_rtp, sizeof(struct sockaddr_in));
	is_int(STAT(x.ep, dropped, 4), 4, "a runt packet is dropped");
	media_ep_stats(m, x.ep, &st);
	is_int(st.rx_packets, 1, "only the latched source's packet counted as received");
	media_ep_free(m, x.ep);
	media_ep_free(m, y.ep);
	media_ep_stats(m, x.ep, &st);
	ok(st.rx_packets == 0 && st.dropped == 0, "a freed handle reads zeroes");
	is_int(set_peer(&x, &x.a_rtp, MEDIA_PCMA, 101), ENOENT, "a freed handle is refused");
	side_close(&x);
	side_close(&y);
	close(nat);
	close(stranger);
}

/* ---- prompt after relay, unbridge --------------------------------------------- */

static void test_replay(struct side *c, struct side *a, const struct pkt *last)
{
	int n_prompt = 0, n_relayed = 0;
	struct pkt p;

	is_int(media_ep_play(m, c->ep, tone, NULL), 0, "play again on a bridged ep");
	if (pkt_recv(c->rtp, &p, WAIT_MS) < 0) {
		ok(0, "prompt packet after relaying");
		return;
	}
	ok(p.ssrc == last->ssrc && p.seq == (uint16_t)(last->seq + 1) && p.marker,
	   "prompt continues the stream: SSRC %x, seq %u after %u, marker %d",
	   (unsigned)p.ssrc, p.seq, last->seq, p.marker);
	rtp_send(a->rtp, &a->ep_rtp, MEDIA_PCMU, 20, 3000, 0xA9E27, payload, 160);
	for (int i = 0; i < 15 && pkt_recv(c->rtp, &p, 60) >= 0; i++) {
		bool relayed = p.len == 172;

		for (int k = 0; relayed && k < 160; k++)
			relayed = p.b[12 + k] == media_g711_u2a[payload[k]];
		n_relayed += relayed;
		n_prompt += !relayed && p.ssrc == last->ssrc;
	}
	ok(n_prompt > 0 && n_relayed == 0, "playing ends the bridge: %d prompt packets, "
	   "%d relayed (want 0)", n_prompt, n_relayed);
	is_int(media_unbridge(m, c->ep), 0, "unbridge");
}

/* ---- (g) port exhaustion -------------------------------------------------------- */

static bool port_free(uint16_t port)
{
	struct sockaddr_storage a = lo_addr(port);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	bool ok = fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(struct sockaddr_in));

	if (fd >= 0)
		close(fd);
	return ok;
}

/* An odd lo: the pairs are lo+1/lo+2 and lo+3/lo+4. */
static struct media *small_engine(uint16_t *lo)
{
	struct media *s = NULL;

	for (int t = 0; t < 20; t++) {
		bool all = true;

		*lo = (uint16_t)(21001 + 2 * (rand() % 4000));
		for (int i = 1; i <= 4; i++)
			all &= port_free((uint16_t)(*lo + i));
		if (all)
			return media_alloc(&s, "127.0.0.1", *lo, (uint16_t)(*lo + 4)) ?
				NULL : s;
	}
	return NULL;
}

static void test_exhaustion(void)
{
	struct media_stats st;
	media_ep_t e[3] = { 0 };
	uint16_t lo, port[3];
	struct media *s = small_engine(&lo);

	ok(s != NULL, "engine with 5 ports (2 pairs) starts");
	if (!s)
		return;
	is_int(media_ep_alloc(s, &e[0], &port[0]), 0, "first pair");
	is_int(media_ep_alloc(s, &e[1], &port[1]), 0, "second pair");
	ok(port[0] == lo + 1 && port[1] == lo + 3, "pairs are %u and %u (want %u, %u)",
	   port[0], port[1], lo + 1, lo + 3);
	is_int(media_ep_alloc(s, &e[2], &port[2]), EADDRINUSE, "third: EADDRINUSE");
	is_int(media_ports_free(s), 0, "no pair left");
	media_ep_free(s, e[0]);
	for (int i = 0; i < 200 && !media_ports_free(s); i++)
		msleep(5);
	is_int(media_ports_free(s), 1, "the freed pair comes back");
	is_int(media_ep_alloc(s, &e[2], &port[2]), 0, "and can be allocated again");
	ok(e[2] != e[0] && port[2] == port[0], "same port %u, new handle %08x != %08x",
	   port[2], (unsigned)e[2], (unsigned)e[0]);
	media_ep_stats(s, e[0], &st);
	is_int(st.rx_packets + st.tx_packets, 0, "the stale handle reads zeroes");
	is_int(media_ep_play(s, e[0], tone, NULL), ENOENT, "the stale handle is refused");
	is_int(media_bridge(s, e[1], e[1]), EINVAL, "an ep cannot be bridged to itself");
	media_ep_free(s, MEDIA_EP_NONE);
	s = media_free(s);
	ok(s == NULL, "media_free returns NULL");
}

static void test_alloc_args(void)
{
	struct media *s = NULL;

	is_int(media_alloc(&s, "not-an-ip", 30000, 30010), EINVAL, "bad IP refused");
	is_int(media_alloc(&s, "127.0.0.1", 30000, 30000), EINVAL, "range without a pair refused");
	ok(s == NULL, "*mp untouched on failure");
	ok(media_free(NULL) == NULL, "media_free(NULL)");
}

int main(void)
{
	struct side c, a;
	struct pkt last = { 0 };
	uint16_t base;

	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	for (int i = 0; i < 160; i++)
		payload[i] = (uint8_t)(i * 37 + 11);
	media_prompt_tone(&tone);
	test_alloc_args();
	base = (uint16_t)(22000 + 2 * (rand() % 3000));
	if (media_alloc(&m, "127.0.0.1", base, (uint16_t)(base + 39))) {
		ok(0, "engine starts");
		return tap_done();
	}
	side_open(&c);
	side_open(&a);
	is_int(set_peer(&c, &c.a_rtp, MEDIA_PCMA, 101), 0, "caller peer: PCMA, te 101");
	is_int(set_peer(&a, &a.a_rtp, MEDIA_PCMU, 96), 0, "agent peer: PCMU, te 96");
	test_prompt(&c, &last);
	test_bridge(&c, &a, &last);
	test_dtmf(&c, &a, &last);
	test_rtcp(&c, &a);
	/* the caller sent 3 RTP (1 audio, 2 DTMF), the agent 3; the caller
	 * got the prompt plus 2 audio and 1 DTMF */
	test_stats(&c, &a, 3, prompt_packets + 3);
	test_latch();
	test_replay(&c, &a, &last);
	test_exhaustion();
	/* (h) shut down with eps allocated and a prompt playing */
	media_ep_play(m, a.ep, tone, tone);
	m = media_free(m);
	tone = media_prompt_deref(tone);
	side_close(&c);
	side_close(&a);
	return tap_done();
}
