/*
 * media_rtp.c: the packet path, run only by the engine thread.
 *
 * A readable socket is read with one recvmmsg of up to MEDIA_BATCH
 * datagrams into preallocated buffers. Packets to relay are rewritten in
 * place (payload type, optional A/µ-law table lookup, sequence, timestamp,
 * SSRC) and all of them leave with one sendmmsg on the partner's socket.
 * Every packet of one batch goes to the same socket and address, so
 * flushing per batch costs no more system calls than collecting them for
 * the whole loop pass, and needs no buffers beyond one batch. The sockets
 * stay level-triggered: a full batch is simply reported again, without the
 * extra EAGAIN read that edge triggering needs.
 *
 * SRTP is undone in place on arrival and redone in place on the way out
 * (the buffers keep room for the trailer), so a bridge converts between
 * SRTP and RTP with no copy. A packet that fails authentication is
 * counted and dropped before it can latch a source, be recorded or be
 * relayed.
 *
 * Forwarding is decided when a bridge or a peer changes (media_rtp_fwd):
 * the packet path only indexes a 128-byte payload type map.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOG_MODULE "media"
#include "log.h"
#include "g711.h"
#include "media_int.h"

#define PT_DROP 0xFF
#define PT_CN 13                /* comfort noise: the same for both laws */
#define LOSS_JUMP_MAX 1000      /* a larger gap is a restart, not loss */
#define RTP_HDR MEDIA_RTP_HDR

void media_rtp_init(struct media *m)
{
	struct media_rx *rx = m->rx;

	for (int i = 0; i < MEDIA_BATCH; i++) {
		rx->iov[i].iov_base = rx->buf[i];
		rx->iov[i].iov_len = MEDIA_RX_MAX;
		rx->msg[i].msg_hdr.msg_name = &rx->src[i];
		rx->msg[i].msg_hdr.msg_iov = &rx->iov[i];
		rx->msg[i].msg_hdr.msg_iovlen = 1;
		m->tx.msg[i].msg_hdr.msg_iov = &m->tx.iov[i];
		m->tx.msg[i].msg_hdr.msg_iovlen = 1;
	}
}

#define PUB(f) do { \
	uint64_t _old = atomic_load_explicit(&s->f, memory_order_relaxed); \
	m->tot.f += e->st.f - _old; \
	atomic_store_explicit(&s->f, e->st.f, memory_order_relaxed); \
} while (0)

void media_rtp_publish(struct media *m, const struct media_ep *e)
{
	struct media_slot *s = &m->slots[e->h & 0xFFFFu];

	PUB(rx_packets);
	PUB(tx_packets);
	PUB(rx_bytes);
	PUB(tx_bytes);
	PUB(lost);
	PUB(late);
	PUB(dropped);
	PUB(srtp_auth);
	PUB(srtp_replay);
	atomic_store_explicit(&s->last_rx_ms, e->st.last_rx_ms, memory_order_relaxed);
}

#undef PUB

/* ---- forwarding decisions --------------------------------------------------- */

void media_rtp_fwd(struct media_ep *x)
{
	const struct media_ep *y = x->other;

	memset(x->fwd_pt, PT_DROP, sizeof(x->fwd_pt));
	x->xlat_u = x->xlat_a = NULL;
	if (!y || !x->has_peer || !y->has_peer)
		return;
	/* the static types say which law arrives, whatever was negotiated */
	x->fwd_pt[MEDIA_PCMU] = x->fwd_pt[MEDIA_PCMA] = (uint8_t)y->peer.pt;
	if (y->peer.codec == MEDIA_PCMA)
		x->xlat_u = media_g711_u2a;
	else
		x->xlat_a = media_g711_a2u;
	x->fwd_pt[PT_CN] = PT_CN;
	/* events only under the type x negotiated: anything else in the
	 * dynamic range stays PT_DROP, so a peer that did not agree to
	 * telephone-event can never send the other side garbage as DTMF */
	if (x->peer.te_pt >= 0)
		x->fwd_pt[x->peer.te_pt] = y->peer.te_pt >= 0 ?
			(uint8_t)y->peer.te_pt : PT_DROP;
}

void media_rtp_unbridge(struct media_ep *e)
{
	struct media_ep *o = e->other;

	if (!o)
		return;
	e->other = o->other = NULL;
	media_rtp_fwd(e);
	media_rtp_fwd(o);
}

/* ---- the outgoing stream ------------------------------------------------------ */

/*
 * A peer that has heard nothing from us gets the source's SSRC, sequence
 * and timestamps untouched, which keeps relayed RTCP meaningful. Once we
 * have sent (a prompt, DTMF, or another source), a new source is mapped
 * onto our stream: same SSRC, sequence and timestamp continuing, marker set.
 */
static void stream_map(struct media_stream *o, uint8_t *p, int64_t now)
{
	uint32_t in_ssrc = media_rd32(p + 8);
	uint16_t seq;
	uint32_t ts;

	if (!o->mapped || o->in_ssrc != in_ssrc) {
		if (o->started) {
			o->seq_off = (uint16_t)(o->seq + 1 - media_rd16(p + 2));
			o->ts_off = o->ts + media_ts_gap(o, now) - media_rd32(p + 4);
		} else {
			o->ssrc = in_ssrc;
			o->seq_off = 0;
			o->ts_off = 0;
		}
		o->mapped = true;
		o->in_ssrc = in_ssrc;
		p[1] |= 0x80;
	}
	seq = (uint16_t)(media_rd16(p + 2) + o->seq_off);
	ts = media_rd32(p + 4) + o->ts_off;
	media_wr16(p + 2, seq);
	media_wr32(p + 4, ts);
	media_wr32(p + 8, o->ssrc);
	if (!o->started || (int16_t)(seq - o->seq) > 0) {
		o->seq = seq;
		o->ts = ts;
	}
	o->ms = now;
	o->started = true;
}

/* ---- receiving ------------------------------------------------------------------ */

/* Header length, or 0 if this is not a well-formed RTP packet. The
 * payload is p[hlen .. len - padding). */
static size_t rtp_check(const uint8_t *p, size_t len, size_t *plen)
{
	size_t h = RTP_HDR, pad = 0;

	if (len < RTP_HDR || (p[0] >> 6) != 2)
		return 0;
	h += 4u * (p[0] & 0x0F);
	if (p[0] & 0x10) {
		if (h + 4 > len)
			return 0;
		h += 4 + 4u * media_rd16(p + h + 2);
	}
	if (p[0] & 0x20)
		pad = p[len - 1];
	if (h > len || (p[0] & 0x20 && (!pad || h + pad > len)))
		return 0;
	*plen = len - h - pad;
	return h;
}

static bool rtcp_check(const uint8_t *p, size_t len)
{
	return len >= 8 && (p[0] >> 6) == 2 && p[1] >= 192 && p[1] <= 223 &&
		(size_t)(media_rd16(p + 2) + 1) * 4 <= len;
}

/*
 * Symmetric RTP: the first valid (and, with SRTP, authenticated) packet
 * after the peer is known fixes where this side's packets come from (behind
 * NAT that is not the SDP address), and from then on only that source is
 * accepted and answered. source_ok runs before any decryption, so that a
 * stranger costs no crypto once the peer is latched; source_latch after.
 */
static bool source_ok(const struct media_ep *x, int k,
		      const struct sockaddr_storage *src)
{
	return x->has_peer && (!x->latched[k] || media_sa_same(src, &x->dst[k]));
}

static void source_latch(struct media_ep *x, int k,
			 const struct sockaddr_storage *src, socklen_t len)
{
	if (x->latched[k])
		return;
	if (!media_sa_same(src, &x->dst[k])) {
		memcpy(&x->dst[k], src, len);
		x->dstlen[k] = len;
		log_debug("ep %08x: %s latched to the real source",
			  (unsigned)x->h, k ? "RTCP" : "RTP");
	}
	x->latched[k] = true;
}

static void rx_seq(struct media_ep *x, const uint8_t *p)
{
	uint32_t ssrc = media_rd32(p + 8);
	uint16_t seq = media_rd16(p + 2);
	int16_t d = (int16_t)(seq - x->rx_seq);

	if (!x->rx_started || ssrc != x->rx_ssrc || d > LOSS_JUMP_MAX) {
		x->rx_started = true;
		x->rx_ssrc = ssrc;
		x->rx_seq = seq;
		return;
	}
	if (d <= 0) {
		x->st.late++;           /* late or duplicate */
		return;
	}
	x->st.lost += (uint64_t)(d - 1);
	x->rx_seq = seq;
}

/* Transcodes and re-labels one packet for the partner; false: drop it. */
static bool relay_one(struct media *m, struct media_ep *x, struct media_ep *y,
		      uint8_t *p, size_t hlen, size_t plen)
{
	uint8_t pt = p[1] & 0x7F, out = x->fwd_pt[pt];
	const uint8_t *t = pt == MEDIA_PCMU ? x->xlat_u :
		pt == MEDIA_PCMA ? x->xlat_a : NULL;

	if (out == PT_DROP)
		return false;
	if (t)
		for (uint8_t *q = p + hlen, *end = q + plen; q < end; q++)
			*q = t[*q];
	p[1] = (uint8_t)((p[1] & 0x80) | out);
	stream_map(&y->out, p, m->now);
	return true;
}

static void tx_add(struct media *m, int n, uint8_t *p, size_t len,
		   struct media_ep *y, int k)
{
	struct mmsghdr *h = &m->tx.msg[n];

	m->tx.iov[n].iov_base = p;
	m->tx.iov[n].iov_len = len;
	h->msg_hdr.msg_name = &y->dst[k];
	h->msg_hdr.msg_namelen = y->dstlen[k];
}

/* Sends the batch; a datagram the kernel refuses is skipped, not retried. */
static void tx_flush(struct media *m, int fd, int n, struct media_stats *st)
{
	int done = 0, r;

	while (done < n) {
		r = sendmmsg(fd, m->tx.msg + done, (unsigned)(n - done), MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == ENOBUFS))
			break;          /* the socket is full: the rest fails too */
		if (r <= 0) {
			done++;
			continue;
		}
		for (int i = done; st && i < done + r; i++) {
			st->tx_packets++;
			st->tx_bytes += m->tx.iov[i].iov_len;
		}
		done += r;
	}
}

static int rx_batch(struct media *m, int fd)
{
	int n;

	for (int i = 0; i < MEDIA_BATCH; i++)
		m->rx->msg[i].msg_hdr.msg_namelen = sizeof(m->rx->src[i]);
	do
		n = recvmmsg(fd, m->rx->msg, MEDIA_BATCH, MSG_DONTWAIT, NULL);
	while (n < 0 && errno == EINTR);
	return n;
}

/*
 * Accepts (and counts) datagram i as RTP from x's peer, decrypted; its
 * length is then *lenp. Returns the header length, 0: dropped.
 */
static size_t rtp_accept(struct media *m, struct media_ep *x, int i,
			 size_t *lenp, size_t *plen)
{
	struct mmsghdr *h = &m->rx->msg[i];
	uint8_t *p = m->rx->buf[i];
	size_t len = h->msg_len, hlen;

	if ((h->msg_hdr.msg_flags & MSG_TRUNC) || len < RTP_HDR ||
	    (p[0] >> 6) != 2 || !source_ok(x, 0, &m->rx->src[i]))
		goto drop;
	if (x->srtp.suite && !media_srtp_unprotect(x, p, &len, false))
		return 0;               /* counted as an SRTP failure */
	if (!(hlen = rtp_check(p, len, plen)))
		goto drop;
	source_latch(x, 0, &m->rx->src[i], h->msg_hdr.msg_namelen);
	x->st.rx_packets++;
	x->st.rx_bytes += h->msg_len;
	x->st.last_rx_ms = m->now;
	rx_seq(x, p);
	*lenp = len;
	return hlen;
drop:
	x->st.dropped++;
	return 0;
}

/* Where x's packets go: a partner that may be sent to and is not busy
 * with injected DTMF (which owns its outgoing stream meanwhile). */
static struct media_ep *relay_target(struct media_ep *x)
{
	struct media_ep *y = x->other;

	return media_can_send(y) && !media_dtmf_busy(y) ? y : NULL;
}

static void batch_rtp(struct media *m, struct media_ep *x, int n)
{
	struct media_ep *y = relay_target(x);
	int ntx = 0;
	size_t hlen, plen, len = 0;

	for (int i = 0; i < n; i++) {
		uint8_t *p = m->rx->buf[i];

		if (!(hlen = rtp_accept(m, x, i, &len, &plen)))
			continue;
		if (x->tap.rec)
			media_rec_tap(m, x, p, hlen, plen);
		if (!y)
			continue;
		if (!relay_one(m, x, y, p, hlen, plen)) {
			x->st.dropped++;
			continue;
		}
		if (y->srtp.suite && !media_srtp_protect(y, p, &len, false))
			continue;
		tx_add(m, ntx++, p, len, y, 0);
	}
	if (n <= 0)
		return;
	if (ntx)
		tx_flush(m, y->fd[0], ntx, &y->st);
	if (y)
		media_rtp_publish(m, y);
	media_rtp_publish(m, x);
}

/* One RTCP datagram from x's peer, decrypted; false: dropped (counted). */
static bool rtcp_accept(struct media_ep *x, struct mmsghdr *h, uint8_t *p,
			const struct sockaddr_storage *src, size_t *lenp)
{
	size_t len = h->msg_len;

	if ((h->msg_hdr.msg_flags & MSG_TRUNC) || !rtcp_check(p, len) ||
	    !source_ok(x, 1, src)) {
		x->st.dropped++;
		return false;
	}
	if (x->srtp.suite && !media_srtp_unprotect(x, p, &len, true))
		return false;
	if (!rtcp_check(p, len)) {
		x->st.dropped++;
		return false;
	}
	source_latch(x, 1, src, h->msg_hdr.msg_namelen);
	*lenp = len;
	return true;
}

/* RTCP is relayed as it is (but for SRTCP), whenever the partner has a
 * peer (RFC 3264: even on hold). It counts only towards the failures. */
static void batch_rtcp(struct media *m, struct media_ep *x, int n)
{
	struct media_ep *y = x->other && x->other->has_peer ? x->other : NULL;
	int ntx = 0;
	size_t len = 0;

	for (int i = 0; i < n; i++) {
		uint8_t *p = m->rx->buf[i];

		if (!rtcp_accept(x, &m->rx->msg[i], p, &m->rx->src[i], &len) || !y)
			continue;
		if (y->srtp.suite && !media_srtp_protect(y, p, &len, true))
			continue;
		tx_add(m, ntx++, p, len, y, 1);
	}
	if (ntx)
		tx_flush(m, y->fd[1], ntx, NULL);
	if (n > 0) {
		if (y)
			media_rtp_publish(m, y);
		media_rtp_publish(m, x);
	}
}

void media_rtp_batch(struct media *m, struct media_ep *e, int rtcp, int n)
{
	if (rtcp)
		batch_rtcp(m, e, n);
	else
		batch_rtp(m, e, n);
}

void media_rtp_input(struct media *m, struct media_ep *e, int rtcp)
{
	if (!e)
		return;
	media_rtp_batch(m, e, rtcp, rx_batch(m, e->fd[rtcp ? 1 : 0]));
}

/* ---- media timeout ---------------------------------------------------------------- */

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* One bridge, seen from its lower-indexed ep e. */
static void timeout_check(struct media *m, struct media_ep *e)
{
	struct media_ep *o = e->other;
	struct media_event ev = { .kind = MEDIA_EV_TIMEOUT };
	int64_t last;

	if (!media_can_send(e) || !media_can_send(o)) {
		/* on hold (or not negotiated): exempt, and the clock starts
		 * again when the hold ends */
		e->idle_from = o->idle_from = m->now;
		e->timed_out = false;
		return;
	}
	last = max64(max64(e->st.last_rx_ms, o->st.last_rx_ms),
		     max64(e->idle_from, o->idle_from));
	if (m->now - last < m->timeout_ms) {
		e->timed_out = false;
		return;
	}
	if (e->timed_out)
		return;
	e->timed_out = true;
	m->tot.timeouts++;
	ev.a = e->h;
	ev.b = o->h;
	ev.ms = m->now - last;
	media_event_post(m, &ev);
}

void media_rtp_timeouts(struct media *m)
{
	if (m->timeout_ms <= 0)
		return;
	for (uint32_t i = 0; i < m->npairs; i++) {
		struct media_ep *e = &m->eps[i];

		if (e->h && e->other && e < e->other)
			timeout_check(m, e);
	}
}
