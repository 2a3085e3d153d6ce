/*
 * media_play.c: what the engine sends on its own, paced by the 20 ms
 * playout timer: prompts (the greeting, ringback) and injected RFC 4733
 * DTMF events. Engine thread only.
 *
 * Both continue the ep's outgoing stream (struct media_stream): one SSRC,
 * consecutive sequence numbers, timestamps that move on with the wall
 * clock across pauses, so that the peer hears one source whether it gets
 * a prompt, relayed media or an event. An ep is on the playing list while
 * it has a prompt or DTMF to send; the timer runs only while the list is
 * not empty.
 *
 * An injected event is sent as RFC 4733 §2.5 describes: the first packet
 * with the marker bit, one packet per 20 ms with the duration growing, then
 * the final packet (E bit) three times. Each packet takes the next
 * sequence number (a repeated one could not be SRTP-protected twice). Media
 * relayed towards the peer pauses meanwhile, and resumes as a new
 * talkspurt after the event's end.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define LOG_MODULE "media"
#include "log.h"
#include "media_int.h"

#define TICK_NS 20000000L
#define CATCHUP_MAX 5           /* frames sent for one late tick, at most */
#define DTMF_ENDS 3             /* final packets per event */
#define DTMF_GAP_TICKS 2        /* 40 ms of quiet between queued digits */
#define DTMF_VOLUME 10          /* -10 dBm0 */
#define RTP_HDR MEDIA_RTP_HDR

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

static bool wants_tick(const struct media_ep *e)
{
	return e->cur || media_dtmf_busy(e);
}

static void playing_del(struct media *m, struct media_ep *e)
{
	uint32_t pos = e->play_pos, last = m->playing[--m->nplaying];

	m->playing[pos] = last;
	m->eps[last].play_pos = pos;
	e->play_pos = UINT32_MAX;
}

/* Puts e on the playing list, or takes it off, as it needs. */
static void playing_update(struct media *m, struct media_ep *e)
{
	if (!wants_tick(e) && e->play_pos != UINT32_MAX)
		playing_del(m, e);
	if (wants_tick(e) && e->play_pos == UINT32_MAX) {
		e->play_pos = m->nplaying;
		m->playing[m->nplaying++] = e->h & 0xFFFFu;
		tick_arm(m, true);
	}
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
	playing_update(m, e);
}

/* Sends m->pbuf (len bytes of RTP) to e's peer, protected if need be. */
static void out_send(struct media *m, struct media_ep *e, size_t len)
{
	if (e->srtp.suite && !media_srtp_protect(e, m->pbuf, &len, false))
		return;
	if (sendto(e->fd[0], m->pbuf, len, MSG_DONTWAIT,
		   (struct sockaddr *)&e->dst[0], e->dstlen[0]) == (ssize_t)len) {
		e->st.tx_packets++;
		e->st.tx_bytes += len;
	}
}

/* The start of a talkspurt of ours: the timestamp moves on by the wall
 * time since we last sent, or starts at random. */
static void stream_resume(struct media *m, struct media_stream *o)
{
	if (o->started) {
		o->ts += media_ts_gap(o, m->now);
	} else {
		o->seq = (uint16_t)media_rng_next(m);
		o->ts = (uint32_t)media_rng_next(m);
	}
}

static void header_write(struct media *m, struct media_stream *o, uint8_t *p,
			 bool mark, int pt, uint32_t ts)
{
	o->seq++;
	o->ms = m->now;
	o->started = true;
	o->mapped = false;      /* relayed media after this starts afresh */
	p[0] = 0x80;
	p[1] = (uint8_t)((mark ? 0x80 : 0) | pt);
	media_wr16(p + 2, o->seq);
	media_wr32(p + 4, ts);
	media_wr32(p + 8, o->ssrc);
}

/* ---- prompts --------------------------------------------------------------------- */

static void frame_send(struct media *m, struct media_ep *e)
{
	struct media_stream *o = &e->out;
	bool mark = e->play_new;

	if (e->play_new)
		stream_resume(m, o);
	else
		o->ts += MEDIA_FRAME;
	e->play_new = false;
	header_write(m, o, m->pbuf, mark, e->peer.pt, o->ts);
	memcpy(m->pbuf + RTP_HDR, media_prompt_frame(e->cur, e->peer.codec, e->frame),
	       MEDIA_FRAME);
	out_send(m, e, RTP_HDR + MEDIA_FRAME);
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
	if (!media_can_send(e))
		return;
	for (uint64_t i = 0; i < n && e->cur; i++) {
		frame_send(m, e);
		frame_next(e);
	}
}

/* ---- DTMF ------------------------------------------------------------------------ */

void media_dtmf_queue(struct media *m, struct media_ep *e, uint8_t ev, uint16_t ms)
{
	struct media_dtmf *d = &e->dtmf;

	if (d->q_len == MEDIA_DTMF_Q) {
		log_debug("ep %08x: DTMF queue full, digit dropped", (unsigned)e->h);
		e->st.dropped++;
		return;
	}
	d->q_ev[(d->q_head + d->q_len) % MEDIA_DTMF_Q] = ev;
	d->q_ms[(d->q_head + d->q_len) % MEDIA_DTMF_Q] = ms;
	d->q_len++;
	playing_update(m, e);
}

static void dtmf_packet(struct media *m, struct media_ep *e, bool mark, bool end)
{
	struct media_dtmf *d = &e->dtmf;
	uint8_t *p = m->pbuf;

	header_write(m, &e->out, p, mark, e->peer.te_pt, d->ts);
	p[RTP_HDR] = d->ev;
	p[RTP_HDR + 1] = (uint8_t)((end ? 0x80 : 0) | DTMF_VOLUME);
	media_wr16(p + RTP_HDR + 2, (uint16_t)d->dur);
	out_send(m, e, RTP_HDR + 4);
}

/* Takes the next digit; false if there is none or it cannot be sent. */
static bool dtmf_start(struct media *m, struct media_ep *e)
{
	struct media_dtmf *d = &e->dtmf;

	if (!d->q_len)
		return false;
	d->ev = d->q_ev[d->q_head];
	d->total = (uint32_t)d->q_ms[d->q_head] * 8;
	d->q_head = (uint8_t)((d->q_head + 1) % MEDIA_DTMF_Q);
	d->q_len--;
	if (!media_can_send(e) || e->peer.te_pt < 0) {
		log_debug("ep %08x: no telephone-event towards the peer (or on "
			  "hold), digit dropped", (unsigned)e->h);
		e->st.dropped++;
		return false;
	}
	stream_resume(m, &e->out);
	d->ts = e->out.ts;
	d->dur = 0;
	d->ends = 0;
	d->state = DTMF_SEND;
	m->tot.dtmf_sent++;
	return true;
}

/* One tick of injected DTMF on e. */
static void dtmf_tick(struct media *m, struct media_ep *e)
{
	struct media_dtmf *d = &e->dtmf;
	bool first;

	if (d->state == DTMF_GAP && --d->gap)
		return;
	if (d->state != DTMF_SEND) {
		d->state = DTMF_IDLE;
		if (!dtmf_start(m, e))
			return;
	}
	first = d->dur == 0;
	if (d->dur < d->total)
		d->dur = d->dur + MEDIA_FRAME < d->total ? d->dur + MEDIA_FRAME : d->total;
	else
		d->ends++;
	dtmf_packet(m, e, first, d->dur == d->total);
	if (d->dur == d->total && d->ends + 1 >= DTMF_ENDS) {
		/* what follows starts after the event, as a new talkspurt */
		e->out.ts = d->ts + d->total;
		e->play_new = true;
		d->state = DTMF_GAP;
		d->gap = DTMF_GAP_TICKS;
	}
}

/* ---- the timer --------------------------------------------------------------------- */

void media_rtp_tick(struct media *m)
{
	uint64_t exp;

	if (read(m->tfd, &exp, sizeof(exp)) != sizeof(exp) || !exp)
		return;
	if (exp > CATCHUP_MAX)
		exp = CATCHUP_MAX;
	for (uint32_t i = 0; i < m->nplaying;) {
		struct media_ep *e = &m->eps[m->playing[i]];

		if (media_dtmf_busy(e))
			dtmf_tick(m, e);
		else
			play_frames(m, e, exp);
		media_rtp_publish(m, e);
		if (wants_tick(e))
			i++;
		else
			playing_del(m, e);      /* brings the last one to i */
	}
	if (!m->nplaying)
		tick_arm(m, false);
}
