/*
 * media_srtp.c: a bridge between a plain RTP caller and an SRTP agent,
 * with libsrtp2 playing the agent's phone: both crypto suites, SRTCP,
 * authentication and replay failures dropped and counted, keys kept
 * across a re-INVITE, latching only on authenticated packets, prompts
 * protected, and the failures in /metrics.
 */
#include "config.h"

#include <srtp2/srtp.h>

#include "tap.h"
#include "media_test.h"
#include "metrics.h"
#include "media/g711.h"
#include "media/media_int.h"

static struct media *m;
static uint8_t payload[160];

/* The agent's phone: it sends with key_phone, decrypts with key_relay. */
struct phone {
	srtp_t tx, rx;
	struct media_srtp keys;         /* as the engine sees them */
	enum media_srtp_suite suite;
	size_t tag;                     /* auth tag length */
};

static srtp_t session(enum media_srtp_suite suite, uint8_t *key, bool in)
{
	srtp_policy_t p;
	srtp_t s = NULL;

	memset(&p, 0, sizeof(p));
	if (suite == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32)
		srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p.rtp);
	else
		srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtp);
	srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtcp);
	p.ssrc.type = in ? ssrc_any_inbound : ssrc_any_outbound;
	p.key = key;
	p.window_size = 128;
	if (srtp_create(&s, &p) != srtp_err_status_ok) {
		printf("Bail out! srtp_create\n");
		exit(1);
	}
	return s;
}

static void phone_init(struct phone *ph, enum media_srtp_suite suite)
{
	memset(ph, 0, sizeof(*ph));
	ph->suite = suite;
	ph->tag = suite == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32 ? 4 : 10;
	ph->keys.suite = suite;
	is_int(media_srtp_keygen(ph->keys.tx_key), 0, "our key generated");
	is_int(media_srtp_keygen(ph->keys.rx_key), 0, "the phone's key generated");
	ok(memcmp(ph->keys.tx_key, ph->keys.rx_key, MEDIA_SRTP_KEY_LEN),
	   "two keys differ");
	ph->tx = session(suite, ph->keys.rx_key, false);
	ph->rx = session(suite, ph->keys.tx_key, true);
}

static void phone_free(struct phone *ph)
{
	srtp_dealloc(ph->tx);
	srtp_dealloc(ph->rx);
}

/* An SRTP packet from the phone: protected, ready to send. */
static size_t phone_pkt(struct phone *ph, uint8_t *b, int pt, uint16_t seq,
			uint32_t ts, const uint8_t *pl, size_t n)
{
	int len = (int)mt_rtp(b, pt, false, seq, ts, 0xA9E27, pl, n);

	if (srtp_protect(ph->tx, b, &len) != srtp_err_status_ok)
		return 0;
	return (size_t)len;
}

static int bad_bytes(const uint8_t *got, const uint8_t *table)
{
	int bad = 0;

	for (int i = 0; i < 160; i++)
		bad += got[i] != table[payload[i]];
	return bad;
}

/* caller (plain PCMA) -> agent (SRTP PCMU) */
static void to_agent(struct phone *ph, struct mt_side *c, struct mt_side *a,
		     const char *name)
{
	struct mt_pkt p;
	int len, plain_hits = 0;

	mt_rtp_send(c->rtp, &c->ep_rtp, MEDIA_PCMA, 100, 16000, 0xCA11E4, payload, 160);
	if (mt_recv(a->rtp, &p, MT_WAIT_MS) < 0) {
		ok(0, "%s: the caller's packet reaches the agent", name);
		return;
	}
	is_int(p.len, 12 + 160 + (int)ph->tag, "%s: 172 bytes + the %zu-byte tag",
	       name, ph->tag);
	for (int i = 0; i < 160; i++)
		plain_hits += p.b[12 + i] == media_g711_a2u[payload[i]] ||
			p.b[12 + i] == payload[i];
	ok(plain_hits < 16, "%s: the payload on the wire is not G.711 in clear "
	   "(%d of 160 bytes match)", name, plain_hits);
	len = p.len;
	is_int(srtp_unprotect(ph->rx, p.b, &len), srtp_err_status_ok,
	       "%s: the phone authenticates and decrypts it", name);
	is_int(len, 172, "%s: 172 bytes once decrypted", name);
	mt_parse(&p);
	is_int(p.pt, MEDIA_PCMU, "%s: PCMA became the agent's PCMU", name);
	is_int(bad_bytes(p.b + 12, media_g711_a2u), 0,
	       "%s: every payload byte transcoded", name);
}

/* agent (SRTP PCMU) -> caller (plain PCMA) */
static void to_caller(struct phone *ph, struct mt_side *c, struct mt_side *a,
		      const char *name, uint8_t *kept, size_t *keptlen)
{
	uint8_t b[256];
	struct mt_pkt p;
	size_t n = phone_pkt(ph, b, MEDIA_PCMU, 7, 800, payload, 160);

	mt_sendto(a->rtp, &a->ep_rtp, b, n);
	memcpy(kept, b, n);
	*keptlen = n;
	if (mt_recv(c->rtp, &p, MT_WAIT_MS) < 0) {
		ok(0, "%s: the agent's packet reaches the caller", name);
		return;
	}
	is_int(p.len, 172, "%s: plain RTP towards the caller", name);
	is_int(p.pt, MEDIA_PCMA, "%s: PCMU became PCMA", name);
	is_int(bad_bytes(p.b + 12, media_g711_u2a), 0,
	       "%s: the decrypted payload, transcoded", name);
}

static void failures(struct phone *ph, struct mt_side *c, struct mt_side *a,
		     const char *name, const uint8_t *kept, size_t keptlen)
{
	uint8_t b[256];
	struct mt_pkt p;
	size_t n = phone_pkt(ph, b, MEDIA_PCMU, 8, 960, payload, 160);

	b[20] ^= 0x01;          /* one bit of the ciphertext */
	mt_sendto(a->rtp, &a->ep_rtp, b, n);
	ok(mt_recv(c->rtp, &p, 200) < 0, "%s: a tampered packet is not relayed", name);
	is_int(MT_STAT(m, a->ep, srtp_auth, 1), 1,
	       "%s: and counted as an authentication failure", name);
	b[20] ^= 0x01;
	mt_sendto(a->rtp, &a->ep_rtp, b, n);
	ok(mt_recv(c->rtp, &p, MT_WAIT_MS) == 172,
	   "%s: the intact packet with the same index still passes", name);
	mt_sendto(a->rtp, &a->ep_rtp, kept, keptlen);
	ok(mt_recv(c->rtp, &p, 200) < 0, "%s: a replayed packet is not relayed", name);
	is_int(MT_STAT(m, a->ep, srtp_replay, 1), 1, "%s: and counted as a replay", name);
	mt_rtp_send(a->rtp, &a->ep_rtp, MEDIA_PCMU, 9, 1120, 0xA9E27, payload, 160);
	ok(mt_recv(c->rtp, &p, 200) < 0, "%s: plain RTP on the SRTP leg is dropped", name);
	is_int(MT_STAT(m, a->ep, srtp_auth, 2), 2, "%s: as an authentication failure",
	       name);
}

static void rtcp(struct phone *ph, struct mt_side *c, struct mt_side *a,
		 const char *name)
{
	uint8_t rr[8] = { 0x80, 201, 0, 1, 0x00, 0x0A, 0x9E, 0x27 };
	uint8_t b[128];
	struct mt_pkt p;
	int len = 8;

	memcpy(b, rr, 8);
	srtp_protect_rtcp(ph->tx, b, &len);
	mt_sendto(a->rtcp, &a->ep_rtcp, b, (size_t)len);
	ok(mt_recv(c->rtcp, &p, MT_WAIT_MS) == 8 && !memcmp(p.b, rr, 8),
	   "%s: the agent's SRTCP reaches the caller as plain RTCP", name);
	rr[4] = 0xCA;
	mt_sendto(c->rtcp, &c->ep_rtcp, rr, 8);
	if (mt_recv(a->rtcp, &p, MT_WAIT_MS) < 0) {
		ok(0, "%s: the caller's RTCP reaches the agent", name);
		return;
	}
	len = p.len;
	ok(len == 8 + 4 + 10, "%s: as SRTCP: 8 + index + 80-bit tag (%d)", name, len);
	ok(srtp_unprotect_rtcp(ph->rx, p.b, &len) == srtp_err_status_ok &&
	   len == 8 && !memcmp(p.b, rr, 8), "%s: which the phone decrypts", name);
}

/* A re-INVITE with the same keys keeps the session (replay window). */
static void same_keys(struct phone *ph, struct mt_side *a, struct mt_side *c,
		      const char *name, const uint8_t *kept, size_t keptlen)
{
	uint8_t b[256];
	struct mt_pkt p;
	size_t n;

	is_int(mt_set_peer(m, a, MEDIA_PCMU, 96, true, &ph->keys), 0,
	       "%s: the same keys again (re-INVITE)", name);
	mt_msleep(20);
	mt_sendto(a->rtp, &a->ep_rtp, kept, keptlen);
	ok(mt_recv(c->rtp, &p, 200) < 0, "%s: the old packet is not relayed", name);
	is_int(MT_STAT(m, a->ep, srtp_replay, 2), 2,
	       "%s: it is still a replay: the session and its window were kept", name);
	n = phone_pkt(ph, b, MEDIA_PCMU, 10, 1280, payload, 160);
	mt_sendto(a->rtp, &a->ep_rtp, b, n);
	ok(mt_recv(c->rtp, &p, MT_WAIT_MS) == 172, "%s: the next one passes", name);
}

static void prompt(struct phone *ph, struct mt_side *a, struct media_prompt *tone,
		   const char *name)
{
	struct mt_pkt p;
	int len;

	is_int(media_ep_play(m, a->ep, tone, NULL), 0, "%s: a prompt to the agent", name);
	if (mt_recv(a->rtp, &p, MT_WAIT_MS) < 0) {
		ok(0, "%s: a prompt packet arrives", name);
		return;
	}
	len = p.len;
	ok(len == 172 + (int)ph->tag && srtp_unprotect(ph->rx, p.b, &len) ==
	   srtp_err_status_ok, "%s: the prompt is SRTP-protected (%d bytes)", name, p.len);
	ok(len == 172 && !memcmp(p.b + 12, media_prompt_frame(tone, MEDIA_PCMU, 0), 160),
	   "%s: and is the tone's first µ-law frame", name);
	media_ep_play(m, a->ep, NULL, NULL);
	mt_msleep(30);
	mt_drain(a->rtp, 50);
}

static void one_suite(enum media_srtp_suite suite, struct media_prompt *tone)
{
	const char *name = suite == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32 ? "SHA1_32" :
		"SHA1_80";
	struct mt_side c, a;
	struct phone ph;
	uint8_t kept[256];
	size_t keptlen = 0;

	phone_init(&ph, suite);
	if (mt_side_open(m, &c) || mt_side_open(m, &a)) {
		ok(0, "%s: eps", name);
		phone_free(&ph);
		return;
	}
	is_int(mt_set_peer(m, &c, MEDIA_PCMA, 101, true, NULL), 0,
	       "%s: caller: plain RTP", name);
	is_int(mt_set_peer(m, &a, MEDIA_PCMU, 96, true, &ph.keys), 0,
	       "%s: agent: SRTP", name);
	is_int(media_bridge(m, c.ep, a.ep), 0, "%s: bridged", name);
	mt_msleep(20);
	to_agent(&ph, &c, &a, name);
	to_caller(&ph, &c, &a, name, kept, &keptlen);
	failures(&ph, &c, &a, name, kept, keptlen);
	rtcp(&ph, &c, &a, name);
	same_keys(&ph, &a, &c, name, kept, keptlen);
	prompt(&ph, &a, tone, name);
	media_ep_free(m, c.ep);
	media_ep_free(m, a.ep);
	mt_side_close(&c);
	mt_side_close(&a);
	phone_free(&ph);
}

/* Forged packets from a stranger never latch; the phone's first real
 * one, from behind NAT, does. */
static void latch(void)
{
	struct mt_side c, a;
	struct sockaddr_storage nat_a, str_a;
	int nat = mt_udp(&nat_a), stranger = mt_udp(&str_a);
	struct phone ph;
	struct mt_pkt p;
	uint8_t b[256];
	size_t n;

	phone_init(&ph, MEDIA_SRTP_AES_CM_128_HMAC_SHA1_80);
	mt_side_open(m, &c);
	mt_side_open(m, &a);
	mt_set_peer(m, &c, MEDIA_PCMA, 101, true, NULL);
	mt_set_peer(m, &a, MEDIA_PCMA, 101, true, &ph.keys);
	media_bridge(m, c.ep, a.ep);
	mt_msleep(20);
	mt_rtp_send(stranger, &a.ep_rtp, MEDIA_PCMA, 1, 0, 0x666, payload, 160);
	is_int(MT_STAT(m, a.ep, srtp_auth, 1), 1, "latch: a stranger's forgery fails");
	n = phone_pkt(&ph, b, MEDIA_PCMA, 1, 0, payload, 160);
	mt_sendto(nat, &a.ep_rtp, b, n);
	ok(mt_recv(c.rtp, &p, MT_WAIT_MS) == 172, "latch: the phone's packet via NAT "
	   "passes");
	mt_rtp_send(c.rtp, &c.ep_rtp, MEDIA_PCMA, 1, 0, 0xCA11E4, payload, 160);
	ok(mt_recv(nat, &p, MT_WAIT_MS) == 172 + 10,
	   "latch: the reply goes to the NAT address, not to the stranger");
	ok(mt_recv(stranger, &p, 100) < 0, "latch: the stranger gets nothing");
	media_ep_free(m, c.ep);
	media_ep_free(m, a.ep);
	mt_side_close(&c);
	mt_side_close(&a);
	close(nat);
	close(stranger);
	phone_free(&ph);
}

static void bad_suite(void)
{
	struct mt_side s;
	struct media_srtp k = { .suite = (enum media_srtp_suite)7 };

	mt_side_open(m, &s);
	is_int(mt_set_peer(m, &s, MEDIA_PCMA, -1, true, &k), EINVAL,
	       "an unknown suite is refused");
	media_ep_free(m, s.ep);
	mt_side_close(&s);
}

static void metrics(void)
{
	char *text = NULL;
	size_t len;

	/* the engine adds its counters to the series once a second */
	for (int i = 0; i < 30; i++) {
		free(text);
		text = metrics_render(&len);
		if (text && strstr(text, "sipcrm_srtp_failures_total{reason=\"auth\"} 5"))
			break;
		mt_msleep(100);
	}
	like(text, "sipcrm_srtp_failures_total{reason=\"auth\"} 5",
	     "/metrics: 2 + 2 tampered or plain, 1 forged");
	like(text, "sipcrm_srtp_failures_total{reason=\"replay\"} 4",
	     "/metrics: two replays per suite");
	free(text);
}

int main(void)
{
	struct media_prompt *tone = NULL;

	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	for (int i = 0; i < 160; i++)
		payload[i] = (uint8_t)(i * 37 + 11);
	media_prompt_tone(&tone);
	if (!(m = mt_engine(20))) {
		ok(0, "engine starts");
		return tap_done();
	}
	one_suite(MEDIA_SRTP_AES_CM_128_HMAC_SHA1_80, tone);
	one_suite(MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32, tone);
	latch();
	bad_suite();
	metrics();
	m = media_free(m);
	media_prompt_deref(tone);
	metrics_reset();
	return tap_done();
}
