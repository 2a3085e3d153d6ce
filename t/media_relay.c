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
#include "media_test.h"
#include "clk.h"
#include "media/g711.h"
#include "media/media.h"
#include "media/media_int.h"

static struct media *m;
static struct media_prompt *tone;

static void side_open(struct mt_side *s)
{
	s->rtp = mt_udp(&s->a_rtp);
	s->rtcp = mt_udp(&s->a_rtcp);
	is_int(media_ep_alloc(m, &s->ep, &s->port), 0, "ep allocated");
	ok(s->port % 2 == 0, "RTP port %u is even", s->port);
	s->ep_rtp = mt_lo(s->port);
	s->ep_rtcp = mt_lo((uint16_t)(s->port + 1));
}

/* The peer at s, but its RTP at rtp (a stranger's, to test latching). */
static int set_peer(const struct mt_side *s, const struct sockaddr_storage *rtp,
		    enum media_codec codec, int te_pt)
{
	struct media_peer p = { .codec = codec, .pt = codec, .te_pt = te_pt,
				.sendrecv = true };

	p.rtp = *rtp;
	p.rtcp = s->a_rtcp;
	return media_ep_set_peer(m, s->ep, &p);
}

/* Reads what is queued; returns the count and keeps the last packet. */
static int drain(int fd, struct mt_pkt *last, int quiet_ms)
{
	struct mt_pkt p;
	int n = 0;

	while (n < 500 && mt_recv(fd, &p, quiet_ms) >= 0) {
		n++;
		if (last)
			*last = p;
	}
	return n;
}

#define STAT(ep, field, want) MT_STAT(m, (ep), field, (want))

static uint8_t payload[160];

/* ---- (a) a prompt -------------------------------------------------------- */

static int prompt_packets;      /* all prompt packets the caller received */

static void test_prompt(struct mt_side *c, struct mt_pkt *last)
{
	struct mt_pkt p, first;
	int n = 0, seq_ok = 1, ts_ok = 1, ssrc_ok = 1, mark_ok = 1, pt_ok = 1;

	is_int(media_ep_play(m, c->ep, tone, tone), 0, "play the tone to the caller");
	if (mt_recv(c->rtp, &first, MT_WAIT_MS) < 0) {
		ok(0, "a prompt packet arrives");
		return;
	}
	is_int(first.len, 172, "prompt packet is 12 + 160 bytes");
	is_int(first.marker, 1, "marker on the first packet");
	is_int(first.pt, MEDIA_PCMA, "payload type is the caller's (PCMA)");
	ok(!memcmp(first.b + 12, media_prompt_frame(tone, MEDIA_PCMA, 0), 160),
	   "first payload is the tone's first A-law frame");
	*last = first;
	for (n = 1; n < 10 && mt_recv(c->rtp, &p, MT_WAIT_MS) >= 0; n++) {
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

static void check_xlat(const struct mt_pkt *p, const uint8_t *table, const char *what)
{
	int bad = 0;

	for (int i = 0; i < 160; i++)
		bad += p->b[12 + i] != table[payload[i]];
	is_int(bad, 0, "%s: every payload byte mapped through the table", what);
}

static void test_bridge(struct mt_side *c, struct mt_side *a, struct mt_pkt *last)
{
	struct mt_pkt p, prev;
	int n;

	is_int(media_bridge(m, c->ep, a->ep), 0, "bridge caller and agent");
	mt_msleep(50);
	n = drain(c->rtp, last, 60);
	prompt_packets += n;
	ok(n < 10, "the prompt stops (%d packets after the bridge)", n);

	mt_rtp_send(c->rtp, &c->ep_rtp, MEDIA_PCMA, 1000, 5000, 0xCA11E4, payload, 160);
	if (mt_recv(a->rtp, &p, MT_WAIT_MS) < 0) {
		ok(0, "caller's packet reaches the agent");
		return;
	}
	is_int(p.pt, MEDIA_PCMU, "caller -> agent: PCMA becomes PCMU");
	check_xlat(&p, media_g711_a2u, "caller -> agent");
	ok(p.seq == 1000 && p.ts == 5000 && p.ssrc == 0xCA11E4,
	   "agent heard nothing before: seq/ts/SSRC pass through (%u %u %x)",
	   p.seq, p.ts, (unsigned)p.ssrc);

	mt_rtp_send(a->rtp, &a->ep_rtp, MEDIA_PCMU, 7, 100, 0xA9E27, payload, 160);
	mt_rtp_send(a->rtp, &a->ep_rtp, MEDIA_PCMU, 8, 260, 0xA9E27, payload, 160);
	if (mt_recv(c->rtp, &p, MT_WAIT_MS) < 0 || mt_recv(c->rtp, &prev, MT_WAIT_MS) < 0) {
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

static void test_dtmf(struct mt_side *c, struct mt_side *a, struct mt_pkt *last)
{
	uint8_t ev[4] = { 5, 0x0A, 0, 160 };
	struct media_stats st0, st1;
	struct mt_pkt p;

	mt_rtp_send(c->rtp, &c->ep_rtp, 101, 1001, 5160, 0xCA11E4, ev, 4);
	is_int(mt_recv(a->rtp, &p, MT_WAIT_MS), 16, "DTMF reaches the agent");
	is_int(p.pt, 96, "telephone-event 101 becomes the agent's 96");
	ok(!memcmp(p.b + 12, ev, 4), "event payload untouched");
	mt_rtp_send(a->rtp, &a->ep_rtp, 96, 9, 420, 0xA9E27, ev, 4);
	mt_recv(c->rtp, &p, MT_WAIT_MS);
	is_int(p.pt, 101, "agent's 96 becomes the caller's 101");
	*last = p;

	is_int(set_peer(a, &a->a_rtp, MEDIA_PCMU, -1), 0, "agent without telephone-event");
	mt_msleep(20);
	media_ep_stats(m, c->ep, &st0);
	mt_rtp_send(c->rtp, &c->ep_rtp, 101, 1002, 5160, 0xCA11E4, ev, 4);
	ok(mt_recv(a->rtp, &p, 200) < 0, "DTMF is dropped towards a peer without it");
	STAT(c->ep, rx_packets, st0.rx_packets + 1);
	media_ep_stats(m, c->ep, &st1);
	is_int(st1.dropped - st0.dropped, 1, "and counted as dropped");
	set_peer(a, &a->a_rtp, MEDIA_PCMU, 96);
}

/* ---- (e) RTCP --------------------------------------------------------------- */

static void test_rtcp(struct mt_side *c, struct mt_side *a)
{
	uint8_t rr[8] = { 0x80, 201, 0, 1, 0xCA, 0x11, 0xE4, 0x00 };
	uint8_t bad[8] = { 0x00, 201, 0, 1, 0, 0, 0, 0 };
	uint8_t got[64];
	struct pollfd pf = { .fd = a->rtcp, .events = POLLIN };
	ssize_t n = -1;

	sendto(c->rtcp, rr, 8, 0, (struct sockaddr *)&c->ep_rtcp, sizeof(struct sockaddr_in));
	if (poll(&pf, 1, MT_WAIT_MS) > 0)
		n = recv(a->rtcp, got, sizeof(got), 0);
	ok(n == 8 && !memcmp(got, rr, 8), "caller's RTCP reaches the agent's RTCP port as is");
	rr[4] = 0xA9;
	sendto(a->rtcp, rr, 8, 0, (struct sockaddr *)&a->ep_rtcp, sizeof(struct sockaddr_in));
	pf.fd = c->rtcp;
	n = poll(&pf, 1, MT_WAIT_MS) > 0 ? recv(c->rtcp, got, sizeof(got), 0) : -1;
	ok(n == 8 && !memcmp(got, rr, 8), "agent's RTCP reaches the caller's RTCP port");
	sendto(c->rtcp, bad, 8, 0, (struct sockaddr *)&c->ep_rtcp, sizeof(struct sockaddr_in));
	pf.fd = a->rtcp;
	ok(poll(&pf, 1, 200) == 0, "malformed RTCP (version 0) is not relayed");
}

/* ---- (f) counters ------------------------------------------------------------- */

static void test_stats(struct mt_side *c, struct mt_side *a, int c_sent, int c_got)
{
	struct media_stats st;

	/* a gap of three: 1010 after 1002 */
	mt_rtp_send(c->rtp, &c->ep_rtp, MEDIA_PCMA, 1006, 6000, 0xCA11E4, payload, 160);
	mt_rtp_send(c->rtp, &c->ep_rtp, MEDIA_PCMA, 1010, 6640, 0xCA11E4, payload, 160);
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
	struct mt_side x, y;
	struct sockaddr_storage nat_a;
	int nat = mt_udp(&nat_a), stranger;
	struct sockaddr_storage str_a;
	struct media_stats st;
	struct mt_pkt p;

	stranger = mt_udp(&str_a);
	side_open(&x);
	side_open(&y);
	mt_rtp_send(nat, &x.ep_rtp, MEDIA_PCMA, 1, 0, 0x11, payload, 160);
	is_int(STAT(x.ep, dropped, 1), 1, "before the peer is known, packets are dropped");
	/* x's SDP says x.rtp, but the phone is behind NAT and sends from nat */
	set_peer(&x, &x.a_rtp, MEDIA_PCMA, 101);
	set_peer(&y, &y.a_rtp, MEDIA_PCMA, 101);
	media_bridge(m, x.ep, y.ep);
	mt_msleep(20);
	mt_rtp_send(nat, &x.ep_rtp, MEDIA_PCMA, 2, 160, 0x11, payload, 160);
	ok(mt_recv(y.rtp, &p, MT_WAIT_MS) == 172 && !memcmp(p.b + 12, payload, 160),
	   "the first packet (from the NAT address) is relayed untranscoded");
	mt_rtp_send(y.rtp, &y.ep_rtp, MEDIA_PCMA, 50, 0, 0x22, payload, 160);
	ok(mt_recv(nat, &p, MT_WAIT_MS) == 172, "the reply goes to the latched address");
	ok(mt_recv(x.rtp, &p, 100) < 0, "and not to the SDP address");
	mt_rtp_send(stranger, &x.ep_rtp, MEDIA_PCMA, 3, 320, 0x11, payload, 160);
	mt_rtp_send(x.rtp, &x.ep_rtp, MEDIA_PCMA, 4, 480, 0x11, payload, 160);
	ok(mt_recv(y.rtp, &p, 200) < 0, "a stranger and the SDP address are both dropped");
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
	mt_side_close(&x);
	mt_side_close(&y);
	close(nat);
	close(stranger);
}

/* ---- prompt after relay, unbridge --------------------------------------------- */

static void test_replay(struct mt_side *c, struct mt_side *a, const struct mt_pkt *last)
{
	int n_prompt = 0, n_relayed = 0;
	struct mt_pkt p;

	is_int(media_ep_play(m, c->ep, tone, NULL), 0, "play again on a bridged ep");
	if (mt_recv(c->rtp, &p, MT_WAIT_MS) < 0) {
		ok(0, "prompt packet after relaying");
		return;
	}
	ok(p.ssrc == last->ssrc && p.seq == (uint16_t)(last->seq + 1) && p.marker,
	   "prompt continues the stream: SSRC %x, seq %u after %u, marker %d",
	   (unsigned)p.ssrc, p.seq, last->seq, p.marker);
	mt_rtp_send(a->rtp, &a->ep_rtp, MEDIA_PCMU, 20, 3000, 0xA9E27, payload, 160);
	for (int i = 0; i < 15 && mt_recv(c->rtp, &p, 60) >= 0; i++) {
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
	struct sockaddr_storage a = mt_lo(port);
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
		mt_msleep(5);
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
	struct mt_side c, a;
	struct mt_pkt last = { 0 };
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
	mt_side_close(&c);
	mt_side_close(&a);
	return tap_done();
}
