/*
 * media_timeout.c: what the call core watches. A bridge whose RTP stops
 * from both sides is reported once per silence (MEDIA_EV_TIMEOUT); one
 * side talking, a hold, or an unbridged ep never is. And the counters:
 * lost and late packets per ep, the engine's totals in /metrics.
 */
#include "config.h"

#include "tap.h"
#include "media_test.h"
#include "metrics.h"

static struct media *m;
static uint8_t payload[160];

static bool no_event(int ms)
{
	struct media_event ev;

	return !mt_event(m, &ev, ms);
}

static void timeouts(void)
{
	struct mt_side c, a, lone;
	struct media_event ev;
	int64_t t0;
	bool got;

	is_int(media_set_timeout(m, 1000), 0, "media timeout 1 s");
	mt_side_open(m, &c);
	mt_side_open(m, &a);
	mt_side_open(m, &lone);
	mt_set_peer(m, &c, MEDIA_PCMA, 101, true, NULL);
	mt_set_peer(m, &a, MEDIA_PCMA, 101, true, NULL);
	mt_set_peer(m, &lone, MEDIA_PCMA, 101, true, NULL);
	media_bridge(m, c.ep, a.ep);
	t0 = clk_mono_ms();
	got = mt_event(m, &ev, 3000);
	ok(got && ev.kind == MEDIA_EV_TIMEOUT, "a silent bridge times out");
	ok(got && ((ev.a == c.ep && ev.b == a.ep) || (ev.a == a.ep && ev.b == c.ep)),
	   "the event names the pair");
	ok(got && ev.ms >= 1000 && clk_mono_ms() - t0 >= 900,
	   "after the timeout: idle %lld ms, reported after %lld ms",
	   (long long)ev.ms, (long long)(clk_mono_ms() - t0));
	ok(no_event(1500), "once: no second event for the same silence "
	   "(and none for the unbridged ep)");

	/* one side talks: not a timeout */
	for (int i = 0; i < 12; i++) {
		mt_rtp_send(c.rtp, &c.ep_rtp, MEDIA_PCMA, (uint16_t)i, (uint32_t)i * 160,
			    0xC0, payload, 160);
		mt_msleep(200);
	}
	ok(no_event(0), "RTP from one side only keeps the call up (2.4 s)");
	mt_drain(a.rtp, 0);
	got = mt_event(m, &ev, 3000);
	ok(got && ev.kind == MEDIA_EV_TIMEOUT && ev.ms >= 1000 && ev.ms < 2500,
	   "when it stops, the timeout comes again (idle %lld ms)", (long long)ev.ms);

	/* on hold: exempt, and the clock starts again when the hold ends */
	mt_set_peer(m, &a, MEDIA_PCMA, 101, false, NULL);
	ok(no_event(2300), "on hold (sendonly/inactive): no timeout in 2.3 s");
	mt_set_peer(m, &a, MEDIA_PCMA, 101, true, NULL);
	t0 = clk_mono_ms();
	got = mt_event(m, &ev, 3000);
	ok(got && ev.ms >= 1000 && ev.ms <= clk_mono_ms() - t0 + 100,
	   "after the hold, a full timeout again, counted from its end "
	   "(idle %lld ms, %lld ms since)", (long long)ev.ms,
	   (long long)(clk_mono_ms() - t0));

	is_int(media_set_timeout(m, 0), 0, "timeout off");
	ok(no_event(1500), "off: no events");
	is_int(media_set_timeout(m, -1), EINVAL, "a negative timeout is refused");
	media_ep_free(m, c.ep);
	media_ep_free(m, a.ep);
	media_ep_free(m, lone.ep);
	mt_side_close(&c);
	mt_side_close(&a);
	mt_side_close(&lone);
}

static void counters(void)
{
	static const uint16_t seqs[] = { 10, 11, 13, 12, 12, 14, 17 };
	struct mt_side c, a;
	struct media_stats st;
	char *text = NULL;
	size_t len;

	mt_side_open(m, &c);
	mt_side_open(m, &a);
	mt_set_peer(m, &c, MEDIA_PCMA, 101, true, NULL);
	mt_set_peer(m, &a, MEDIA_PCMA, 101, true, NULL);
	media_bridge(m, c.ep, a.ep);
	mt_msleep(20);
	for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++)
		mt_rtp_send(c.rtp, &c.ep_rtp, MEDIA_PCMA, seqs[i], seqs[i] * 160u,
			    0xC0, payload, 160);
	MT_STAT(m, c.ep, rx_packets, 7);
	media_ep_stats(m, c.ep, &st);
	is_int(st.rx_packets, 7, "7 packets in");
	is_int(st.lost, 1 + 2, "lost: the gaps before 13 and before 17");
	is_int(st.late, 2, "late: 12 after 13, and 12 again");
	is_int(MT_STAT(m, a.ep, tx_packets, 7), 7, "all 7 relayed");
	for (int i = 0; i < 30; i++) {
		free(text);
		text = metrics_render(&len);
		if (text && strstr(text, "sipcrm_rtp_late_total 2"))
			break;
		mt_msleep(100);
	}
	like(text, "sipcrm_rtp_late_total 2", "/metrics: late");
	like(text, "sipcrm_rtp_lost_total 3", "/metrics: lost");
	like(text, "sipcrm_rtp_packets_total{direction=\"in\"} 19",
	     "/metrics: packets in (12 earlier, 7 now)");
	like(text, "sipcrm_rtp_packets_total{direction=\"out\"} 19",
	     "/metrics: packets out");
	like(text, "sipcrm_media_timeouts_total 3", "/metrics: the three timeouts");
	free(text);
	media_ep_free(m, c.ep);
	media_ep_free(m, a.ep);
	mt_side_close(&c);
	mt_side_close(&a);
}

int main(void)
{
	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	memset(payload, 0xD5, sizeof(payload));
	if (!(m = mt_engine(10))) {
		ok(0, "engine starts");
		return tap_done();
	}
	timeouts();
	counters();
	m = media_free(m);
	metrics_reset();
	return tap_done();
}
