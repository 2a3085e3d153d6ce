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
 * Forwarding is decided when a bridge or a peer changes (media_rtp_fwd):
 * the packet path only indexes a 128-byte payload type map.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define LOG_MODULE "media"
#include "log.h"
#include "g711.h"
#include "media_int.h"

#define PT_DROP 0xFF
#define PT_CN 13                /* comfort noise: the same for both laws */
#define TICK_NS 20000000L
#define CATCHUP_MAX 5           /* frames sent for one late tick, at most */
#define LOSS_JUMP_MAX 1000      /* a larger gap is a restart, not loss */
#define RTP_HDR 12

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
		(uint32_t)p[2] << 8 | p[3];
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

void media_rtp_init(struct media *m)
{
	struct media_rx *rx = m->rx;

	for (int i = 0; i < MEDIA_BATCH; i++) {
		rx->iov[i].iov_base = rx->buf[i];
		rx->iov[i].iov_len = sizeof(rx->buf[i]);
		rx->msg[i].msg_hdr.msg_name = &rx->src[i];
		rx->msg[i].msg_hdr.msg_iov = &rx->iov[i];
		rx->msg[i].msg_hdr.msg_iovlen = 1;
		m->tx.msg[i].msg_hdr.msg_iov = &m->tx.iov[i];
		m->tx.msg[i].msg_hdr.msg_iovlen = 1;
	}
}

/* Copies the engine's counters where other threads read them. */
static void publish(struct media *m, const struct media_ep *e)
{
	struct media_slot *s = &m->slots[e->h & 0xFFFFu];

	atomic_store_explicit(&s->rx_packets, e->st.rx_packets, memory_order_relaxed);
	atomic_store_explicit(&s->tx_packets, e->st.tx_packets, memory_order_relaxed);
	atomic_store_explicit(&s->rx_bytes, e->st.rx_bytes, memory_order_relaxed);
	atomic_store_explicit(&s->tx_bytes, e->st.tx_bytes, memory_order_relaxed);
	atomic_store_explicit(&s->lost, e->st.lost, memory_order_relaxed);
	atomic_store_explicit(&s->dropped, e->st.dropped, memory_order_relaxed);
	atomic_store_explicit(&s->last_rx_ms, e->st.last_rx_ms, memory_order_relaxed);
}

static bool can_send(const struct media_ep *e)
{
	return e && e->has_peer && e->peer.sendrecv;
}

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

/* Timestamp advance after a pause: the wall time that passed, so that the
 * receiver's jitter buffer sees the real gap (at least one frame). */
static uint32_t ts_gap(const struct media_stream *o, int64_t now)
{
	int64_t ms = now - o->ms;

	if (ms < 20)
		ms = 20;
	if (ms > 3600 * 1000)
		ms = 3600 * 1000;
	return (uint32_t)ms * 8;
}

/*
 * A peer that has heard nothing from us gets the source's SSRC, sequence
 * and timestamps untouched, which keeps relayed RTCP meaningful. Once we
 * have sent (a prompt, or another source), a new source is mapped onto our
 * stream: same SSRC, sequence and timestamp continuing, marker set.
 */
static void stream_map(struct media_stream *o, uint8_t *p, int64_t now)
{
	uint32_t in_ssrc = rd32(p + 8);
	uint16_t seq;
	uint32_t ts;

	if (!o->mapped || o->in_ssrc != in_ssrc) {
		if (o->started) {
			o->seq_off = (uint16_t)(o->seq + 1 - rd16(p + 2));
			o->ts_off = o->ts + ts_gap(o, now) - rd32(p + 4);
		} else {
			o->ssrc = in_ssrc;
			o->seq_off = 0;
			o->ts_off = 0;
		}
		o->mapped = true;
		o->in_ssrc = in_ssrc;
		p[1] |= 0x80;
	}
	seq = (uint16_t)(rd16(p + 2) + o->seq_off);
	ts = rd32(p + 4) + o->ts_off;
	wr16(p + 2, seq);
	wr32(p + 4, ts);
	wr32(p + 8, o->ssrc);
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
		h += 4 + 4u * rd16(p + h + 2);
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
		(size_t)(rd16(p + 2) + 1) * 4 <= len;
}

/*
 * Symmetric RTP: the first valid packet after the peer is known fixes
 * where this side's packets come from (behind NAT that is not the SDP
 * address), and from then on only that source is accepted and answered.
 */
static bool source_ok(struct media_ep *x, int k, const struct sockaddr_storage *src,
		      socklen_t len)
{
	if (!x->has_peer)
		return false;
	if (x->latched[k])
		return media_sa_same(src, &x->dst[k]);
	if (!media_sa_same(src, &x->dst[k])) {
		memcpy(&x->dst[k], src, len);
		x->dstlen[k] = len;
		log_debug("ep %08x: %s latched to the real source",
			  (unsigned)x->h, k ? "RTCP" : "RTP");
	}
	x->latched[k] = true;
	return true;
}

static void rx_seq(struct media_ep *x, const uint8_t *p)
{
	uint32_t ssrc = rd32(p + 8);
	uint16_t seq = rd16(p + 2);
	int16_t d = (int16_t)(seq - x->rx_seq);

	if (!x->rx_started || ssrc != x->rx_ssrc || d > LOSS_JUMP_MAX) {
		x->rx_started = true;
		x->rx_ssrc = ssrc;
		x->rx_seq = seq;
		return;
	}
	if (d <= 0)
		return;                 /* late or duplicate */
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

/* Accepts (and counts) datagram i as RTP from x's peer; 0: dropped. */
static size_t rtp_accept(struct media *m, struct media_ep *x, int i, size_t *plen)
{
	struct mmsghdr *h = &m->rx->msg[i];
	uint8_t *p = m->rx->buf[i];
	size_t len = h->msg_len, hlen;

	if ((h->msg_hdr.msg_flags & MSG_TRUNC) || !(hlen = rtp_check(p, len, plen)) ||
	    !source_ok(x, 0, &m->rx->src[i], h->msg_hdr.msg_namelen)) {
		x->st.dropped++;
		return 0;
	}
	x->st.rx_packets++;
	x->st.rx_bytes += len;
	x->st.last_rx_ms = m->now;
	rx_seq(x, p);
	return hlen;
}

static void input_rtp(struct media *m, struct media_ep *x)
{
	struct media_ep *y = can_send(x->other) ? x->other : NULL;
	int n = rx_batch(m, x->fd[0]), ntx = 0;
	size_t hlen, plen;

	for (int i = 0; i < n; i++) {
		if (!(hlen = rtp_accept(m, x, i, &plen)) || !y)
			continue;
		if (!relay_one(m, x, y, m->rx->buf[i], hlen, plen)) {
			x->st.dropped++;
			continue;
		}
		tx_add(m, ntx++, m->rx->buf[i], m->rx->msg[i].msg_len, y, 0);
	}
	if (n <= 0)
		return;
	if (ntx) {
		tx_flush(m, y->fd[0], ntx, &y->st);
		publish(m, y);
	}
	publish(m, x);
}

/* RTCP is relayed as it is, whenever the partner has a peer (RFC 3264:
 * even on hold). It counts only towards dropped. */
static void input_rtcp(struct media *m, struct media_ep *x)
{
	struct media_ep *y = x->other && x->other->has_peer ? x->other : NULL;
	int n = rx_batch(m, x->fd[1]), ntx = 0;

	for (int i = 0; i < n; i++) {
		struct mmsghdr *h = &m->rx->msg[i];

		if ((h->msg_hdr.msg_flags & MSG_TRUNC) ||
		    !rtcp_check(m->rx->buf[i], h->msg_len) ||
		    !source_ok(x, 1, &m->rx->src[i], h->msg_hdr.msg_namelen)) {
			x->st.dropped++;
			continue;
		}
		if (y)
			tx_add(m, ntx++, m->rx->buf[i], h->msg_len, y, 1);
	}
	if (ntx)
		tx_flush(m, y->fd[1], ntx, NULL);
	if (n > 0)
		publish(m, x);
}

void media_rtp_input(struct media *m, struct media_ep *e, int rtcp)
{
	if (!e)
		return;
	if (rtcp)
		input_rtcp(m, e);
	else
		input_rtp(m, e);
}

/* ---- playout ---------------------------------------------------------------------- */

static void tick_arm(struct media *m, bool on)
{
	struct itimerspec its = { { 0, 0 }, { 0, 0 } };

	if (on == m->tick_armed)
		return;
	if (on)
		its.it_interval.tv_nsec = its.it_value.tv_nsec = TICK_NS;
	if (timerfd_settime(m->tfd, 0, &its, NULL))
		log_err("timerfd_settime: %s", strerror(errno));
	else
		m->tick_armed = on;
}

static void playing_del(struct media *m, struct media_ep *e)
{
	uint32_t pos = e->play_pos, last = m->playing[--m->nplaying];

	m->playing[pos] = last;
	m->eps[last].play_pos = pos;
	e->play_pos = UINT32_MAX;
}

void media_rtp_play(struct media *m, struct media_ep *e,
		    struct media_prompt *first, struct media_prompt *loop)
{
	media_prompt_deref(e->first);
	media_prompt_deref(e->loop);
	e->first = first;
	e->loop = loop;
	e->looping = !first;
	e->cur = first ? first : loop;
	e->frame = 0;
	e->play_new = true;
	e->out.mapped = false;
	if (!e->cur && e->play_pos != UINT32_MAX)
		playing_del(m, e);
	if (e->cur && e->play_pos == UINT32_MAX) {
		e->play_pos = m->nplaying;
		m->playing[m->nplaying++] = e->h & 0xFFFFu;
		tick_arm(m, true);
	}
}

/* The header of the next prompt packet: our SSRC, continuing whatever we
 * sent last (a prompt or relayed media), marker on a new talkspurt. */
static void frame_header(struct media *m, struct media_ep *e, uint8_t *p)
{
	struct media_stream *o = &e->out;
	bool mark = e->play_new;

	if (e->play_new && o->started) {
		o->ts += ts_gap(o, m->now);
	} else if (e->play_new) {
		o->seq = (uint16_t)media_rng_next(m);
		o->ts = (uint32_t)media_rng_next(m);
	} else {
		o->ts += MEDIA_FRAME;
	}
	o->seq++;
	o->ms = m->now;
	o->started = true;
	o->mapped = false;
	e->play_new = false;
	p[0] = 0x80;
	p[1] = (uint8_t)((mark ? 0x80 : 0) | e->peer.pt);
	wr16(p + 2, o->seq);
	wr32(p + 4, o->ts);
	wr32(p + 8, o->ssrc);
}

static void frame_send(struct media *m, struct media_ep *e)
{
	uint8_t *p = m->pbuf;

	frame_header(m, e, p);
	memcpy(p + RTP_HDR, media_prompt_frame(e->cur, e->peer.codec, e->frame),
	       MEDIA_FRAME);
	if (sendto(e->fd[0], p, sizeof(m->pbuf), MSG_DONTWAIT,
		   (struct sockaddr *)&e->dst[0], e->dstlen[0]) == sizeof(m->pbuf)) {
		e->st.tx_packets++;
		e->st.tx_bytes += sizeof(m->pbuf);
	}
}

/* Moves to the next frame: first plays once, loop forever; NULL: done. */
static void frame_next(struct media_ep *e)
{
	if (++e->frame < e->cur->nframes)
		return;
	e->frame = 0;
	if (!e->looping) {
		e->looping = true;
		e->cur = e->loop;
	}
}

/* A prompt runs only while it can be heard: not before the peer is known,
 * and not while the peer holds the call. */
static void play_frames(struct media *m, struct media_ep *e, uint64_t n)
{
	if (!can_send(e))
		return;
	for (uint64_t i = 0; i < n && e->cur; i++) {
		frame_send(m, e);
		frame_next(e);
	}
	publish(m, e);
}

void media_rtp_tick(struct media *m)
{
	uint64_t exp;

	if (read(m->tfd, &exp, sizeof(exp)) != sizeof(exp) || !exp)
		return;
	if (exp > CATCHUP_MAX)
		exp = CATCHUP_MAX;
	for (uint32_t i = 0; i < m->nplaying;) {
		struct media_ep *e = &m->eps[m->playing[i]];

		play_frames(m, e, exp);
		if (e->cur)
			i++;
		else
			playing_del(m, e);      /* brings the last one to i */
	}
	if (!m->nplaying)
		tick_arm(m, false);
}
