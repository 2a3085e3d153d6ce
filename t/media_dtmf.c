/*
 * media_dtmf.c: RFC 4733 telephone-events through the relay: payload
 * types mapped between the legs, events from a leg that did not negotiate
 * them dropped; and DTMF injected towards a peer (SIP INFO converted),
 * inside its stream, pausing relayed audio.
 */
#include "config.h"

#include "tap.h"
#include "media_test.h"

static struct media *m;
static uint8_t payload[160];

struct ev {
	int code, end, volume, dur;
};

static struct ev ev_of(const struct mt_pkt *p)
{
	struct ev e = { -1, 0, 0, 0 };

	if (p->len >= 16) {
		e.code = p->b[12];
		e.end = p->b[13] >> 7;
		e.volume = p->b[13] & 0x3F;
		e.dur = p->b[14] << 8 | p->b[15];
	}
	return e;
}

/* ---- relaying --------------------------------------------------------------- */

static void relay_mapping(void)
{
	uint8_t ev[4] = { 1, 0x0A, 0, 160 };
	struct mt_side c, a;
	struct mt_pkt p;

	mt_side_open(m, &c);
	mt_side_open(m, &a);
	mt_set_peer(m, &c, MEDIA_PCMA, 101, true, NULL);
	mt_set_peer(m, &a, MEDIA_PCMA, 96, true, NULL);
	media_bridge(m, c.ep, a.ep);
	mt_msleep(20);
	mt_rtp_send(c.rtp, &c.ep_rtp, 101, 1, 0, 0x11, ev, 4);
	ok(mt_recv(a.rtp, &p, MT_WAIT_MS) == 16 && p.pt == 96 && !memcmp(p.b + 12, ev, 4),
	   "the caller's event 101 reaches the agent as 96, untouched (pt %d)", p.pt);
	mt_rtp_send(a.rtp, &a.ep_rtp, 96, 1, 0, 0x22, ev, 4);
	ok(mt_recv(c.rtp, &p, MT_WAIT_MS) == 16 && p.pt == 101,
	   "the agent's 96 reaches the caller as 101 (pt %d)", p.pt);
	mt_rtp_send(c.rtp, &c.ep_rtp, 100, 2, 160, 0x11, ev, 4);
	ok(mt_recv(a.rtp, &p, 200) < 0,
	   "another dynamic type from the caller is not passed off as an event");
	/* the caller re-negotiates without telephone-event */
	mt_set_peer(m, &c, MEDIA_PCMA, -1, true, NULL);
	mt_msleep(20);
	mt_rtp_send(c.rtp, &c.ep_rtp, 101, 3, 320, 0x11, ev, 4);
	ok(mt_recv(a.rtp, &p, 200) < 0,
	   "events from a leg that did not negotiate them become nothing");
	is_int(MT_STAT(m, c.ep, dropped, 2), 2, "both dropped and counted");
	mt_rtp_send(c.rtp, &c.ep_rtp, MEDIA_PCMA, 4, 480, 0x11, payload, 160);
	ok(mt_recv(a.rtp, &p, MT_WAIT_MS) == 172, "audio from that leg still flows");
	media_ep_free(m, c.ep);
	media_ep_free(m, a.ep);
	mt_side_close(&c);
	mt_side_close(&a);
}

/* ---- injection ------------------------------------------------------------------ */

/* Collects up to max packets (until quiet for quiet_ms). */
static int collect(int fd, struct mt_pkt *out, int max, int quiet_ms)
{
	int n = 0;

	while (n < max && mt_recv(fd, &out[n], quiet_ms) >= 0)
		n++;
	return n;
}

static void check_event(const struct mt_pkt *pk, int n, int code, int total,
			const char *what)
{
	int frames = (total + 159) / 160, want = frames + 2;
	int seq_ok = 1, ts_ok = 1, dur_ok = 1, end_ok = 1, mark_ok = 1, pt_ok = 1;

	is_int(n, want, "%s: %d packets (%d updates, 2 more ends)", what, want, frames);
	for (int i = 0; i < n && i < want; i++) {
		struct ev e = ev_of(&pk[i]);
		int dur = (i + 1) * 160 < total ? (i + 1) * 160 : total;

		pt_ok &= pk[i].pt == 96 && pk[i].len == 16 && e.code == code &&
			e.volume == 10;
		seq_ok &= !i || pk[i].seq == (uint16_t)(pk[i - 1].seq + 1);
		ts_ok &= pk[i].ts == pk[0].ts && pk[i].ssrc == pk[0].ssrc;
		dur_ok &= e.dur == dur;
		end_ok &= e.end == (dur == total);
		mark_ok &= pk[i].marker == !i;
	}
	ok(pt_ok, "%s: type 96, 4 bytes, event %d, volume 10", what, code);
	ok(seq_ok && ts_ok, "%s: sequence +1 each (%d), one timestamp and SSRC (%d)",
	   what, seq_ok, ts_ok);
	ok(dur_ok && end_ok, "%s: duration grows by 160 to %d (%d), E bit on the last "
	   "three only (%d)", what, total, dur_ok, end_ok);
	ok(mark_ok, "%s: marker on the first packet only", what);
	if (n == want)
		ok(pk[n - 1].at - pk[0].at >= 20 * (want - 1) - 30 &&
		   pk[n - 1].at - pk[0].at <= 20 * (want - 1) + 150,
		   "%s: one packet per 20 ms (%lld ms for %d)", what,
		   (long long)(pk[n - 1].at - pk[0].at), want);
}

static void inject(void)
{
	struct mt_side c, a;
	struct mt_pkt pk[64], p, last;
	int n;

	mt_side_open(m, &c);
	mt_side_open(m, &a);
	mt_set_peer(m, &c, MEDIA_PCMA, 101, true, NULL);
	mt_set_peer(m, &a, MEDIA_PCMU, 96, true, NULL);
	media_bridge(m, c.ep, a.ep);
	mt_msleep(20);
	mt_rtp_send(c.rtp, &c.ep_rtp, MEDIA_PCMA, 500, 8000, 0xC0, payload, 160);
	mt_recv(a.rtp, &last, MT_WAIT_MS);

	is_int(media_ep_dtmf(m, a.ep, '5', 100), 0, "inject 5 for 100 ms towards the agent");
	n = collect(a.rtp, pk, 64, 200);
	check_event(pk, n, 5, 800, "digit 5");
	ok(n && pk[0].ssrc == last.ssrc && pk[0].seq == (uint16_t)(last.seq + 1) &&
	   pk[0].ts - last.ts >= 160 && pk[0].ts - last.ts < 8000 * 5,
	   "in the stream the agent was hearing: SSRC %x, seq %u after %u, ts +%u",
	   (unsigned)pk[0].ssrc, pk[0].seq, last.seq, pk[0].ts - last.ts);

	mt_rtp_send(c.rtp, &c.ep_rtp, MEDIA_PCMA, 501, 8160, 0xC0, payload, 160);
	if (mt_recv(a.rtp, &p, MT_WAIT_MS) < 0 || !n) {
		ok(0, "relayed audio after the event");
	} else {
		ok(p.ssrc == pk[0].ssrc && p.seq == (uint16_t)(pk[n - 1].seq + 1) &&
		   p.marker && p.pt == MEDIA_PCMU && p.ts - pk[0].ts >= 800,
		   "audio resumes: seq %u after %u, marker %d, ts +%u after the event's",
		   p.seq, pk[n - 1].seq, p.marker, p.ts - pk[0].ts);
	}

	/* audio from the caller while an event is going out is held back */
	media_ep_dtmf(m, a.ep, '#', 200);
	mt_msleep(50);
	for (int i = 0; i < 3; i++)
		mt_rtp_send(c.rtp, &c.ep_rtp, MEDIA_PCMA, (uint16_t)(502 + i),
			    (uint32_t)(8320 + 160 * i), 0xC0, payload, 160);
	n = collect(a.rtp, pk, 64, 200);
	{
		int events = 0, audio = 0;

		for (int i = 0; i < n; i++) {
			events += pk[i].pt == 96;
			audio += pk[i].pt == MEDIA_PCMU;
		}
		ok(events == 12 && audio == 0, "during the event only the event goes "
		   "out (%d event packets, %d audio)", events, audio);
		ok(n && ev_of(&pk[0]).code == 11, "'#' is event 11");
	}

	/* two digits queue: two events, one after the other */
	media_ep_dtmf(m, a.ep, 'A', 40);
	media_ep_dtmf(m, a.ep, 'd', 40);
	n = collect(a.rtp, pk, 64, 200);
	ok(n == 8 && ev_of(&pk[0]).code == 12 && ev_of(&pk[4]).code == 15,
	   "A then d: 4 packets each, events 12 and 15 (%d packets)", n);
	ok(n == 8 && pk[4].marker && pk[4].ts - pk[0].ts >= 320 &&
	   pk[4].seq == (uint16_t)(pk[3].seq + 1),
	   "the second starts a new event: marker, later timestamp (+%u), next seq",
	   n == 8 ? pk[4].ts - pk[0].ts : 0);

	is_int(media_ep_dtmf(m, a.ep, 'x', 100), EINVAL, "'x' is not a digit");
	is_int(media_ep_dtmf(m, MEDIA_EP_NONE, '1', 100), ENOENT, "no ep: ENOENT");

	/* a peer without telephone-event gets nothing */
	mt_set_peer(m, &a, MEDIA_PCMU, -1, true, NULL);
	mt_msleep(20);
	{
		struct media_stats st;

		media_ep_stats(m, a.ep, &st);
		media_ep_dtmf(m, a.ep, '1', 100);
		ok(mt_recv(a.rtp, &p, 200) < 0, "no telephone-event: nothing is sent");
		is_int(MT_STAT(m, a.ep, dropped, st.dropped + 1), st.dropped + 1,
		       "and the digit is counted as dropped");
	}
	media_ep_free(m, c.ep);
	media_ep_free(m, a.ep);
	mt_side_close(&c);
	mt_side_close(&a);
}

/* An ep playing a prompt: the event interrupts it, the prompt goes on. */
static void inject_over_prompt(void)
{
	struct media_prompt *tone = NULL;
	struct mt_side c;
	struct mt_pkt pk[64];
	int n, ev = 0, after = 0;

	media_prompt_tone(&tone);
	mt_side_open(m, &c);
	mt_set_peer(m, &c, MEDIA_PCMA, 96, true, NULL);
	media_ep_play(m, c.ep, tone, tone);
	mt_recv(c.rtp, &pk[0], MT_WAIT_MS);
	media_ep_dtmf(m, c.ep, '9', 60);
	n = collect(c.rtp, pk, 30, 100);
	for (int i = 0; i < n; i++) {
		if (pk[i].pt == 96)
			ev++;
		else if (ev)
			after++;
	}
	ok(ev == 5 && after > 0, "over a prompt: 5 event packets, then the prompt "
	   "again (%d, %d)", ev, after);
	media_ep_free(m, c.ep);
	mt_side_close(&c);
	media_prompt_deref(tone);
}

int main(void)
{
	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	for (int i = 0; i < 160; i++)
		payload[i] = (uint8_t)(i * 37 + 11);
	if (!(m = mt_engine(10))) {
		ok(0, "engine starts");
		return tap_done();
	}
	relay_mapping();
	inject();
	inject_over_prompt();
	m = media_free(m);
	return tap_done();
}
