/*
 * msdp_crypto.c: SDES in SDP (RFC 4568): a=crypto lines parsed (and the
 * ones we cannot honour left out), RTP/SAVP, our offers and answers
 * written and read back, fresh keys, the keys handed to the engine, and
 * keys redacted for logs. Plain RTP/AVP SDP is unchanged.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "tap.h"
#include "conf.h"
#include "sip/msdp.h"

#define CODECS (CONF_CODEC_PCMA | CONF_CODEC_PCMU)

/* base64 of 0x00..0x1d and of 0xff..0xe2 */
#define KEY_A "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
#define KEY_B "//79/Pv6+fj39vX08/Lx8O/u7ezr6uno5+bl5OPi"

static const char *head =
	"v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";

static int parse(const char *media, struct msdp_info *in)
{
	char sdp[4096];

	snprintf(sdp, sizeof(sdp), "%s%s", head, media);
	return msdp_parse(sdp, strlen(sdp), CODECS, in);
}

static void offer_parsed(void)
{
	struct msdp_info in;
	bool a_ok = true, b_ok = true;

	is_int(parse("m=audio 4000 RTP/SAVP 8 101\r\n"
		     "a=rtpmap:101 telephone-event/8000\r\n"
		     "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" KEY_A "|2^31\r\n"
		     "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:" KEY_B "\r\n", &in), 0,
	       "an SRTP offer parses");
	ok(in.savp, "RTP/SAVP is seen");
	is_int(in.ncrypto, 2, "two crypto lines");
	ok(in.crypto[0].tag == 1 && in.crypto[0].suite == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_80,
	   "line 1: tag 1, AES_CM_128_HMAC_SHA1_80");
	ok(in.crypto[1].tag == 2 && in.crypto[1].suite == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32,
	   "line 2: tag 2, AES_CM_128_HMAC_SHA1_32");
	for (int i = 0; i < MEDIA_SRTP_KEY_LEN; i++) {
		a_ok &= in.crypto[0].key[i] == i;
		b_ok &= in.crypto[1].key[i] == 0xFF - i;
	}
	ok(a_ok && b_ok, "keys decoded from base64 (%d %d)", a_ok, b_ok);
	is_int(in.pt, 8, "codec as before");
	is_int(in.te_pt, 101, "telephone-event as before");
}

static void lines_left_out(void)
{
	struct msdp_info in;

	is_int(parse("m=audio 4000 RTP/SAVP 0\r\n"
		     "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" KEY_A "|2^20|1:4\r\n"
		     "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" KEY_A " UNENCRYPTED_SRTP\r\n"
		     "a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:" KEY_A "\r\n"
		     "a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:QUJD\r\n"
		     "a=crypto:0 AES_CM_128_HMAC_SHA1_80 inline:" KEY_A "\r\n"
		     "a=crypto:6 AES_CM_128_HMAC_SHA1_80 inline:" KEY_A ";inline:" KEY_B "\r\n"
		     "a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:" KEY_A " FOO=1\r\n"
		     "a=crypto:8 AES_CM_128_HMAC_SHA1_80 inline:" KEY_A " KDR=0 WSH=64\r\n",
		     &in), 0, "an offer with odd crypto lines parses");
	is_int(in.ncrypto, 1, "only the usable line is kept (MKI, unencrypted, "
	       "AES-256, short key, tag 0, two keys, unknown parameter left out)");
	is_int(in.crypto[0].tag, 8, "the one with KDR=0 and a window hint");
	is_int(parse("m=audio 4000 RTP/AVP 0\r\n"
		     "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:" KEY_A "\r\n", &in), 0,
	       "crypto on RTP/AVP parses");
	ok(!in.savp && in.ncrypto == 1, "profile AVP, one crypto line (best effort SRTP)");
	is_int(parse("m=audio 4000 RTP/AVP 0\r\n", &in), 0, "plain RTP");
	ok(!in.savp && in.ncrypto == 0, "no SRTP");
}

static void profiles(void)
{
	struct msdp_info in;

	is_int(parse("m=audio 4000 RTP/SAVPF 0\r\n", &in), ENOTSUP,
	       "RTP/SAVPF alone: ENOTSUP (488)");
	is_int(parse("m=audio 4000 UDP/TLS/RTP/SAVP 0\r\n", &in), ENOTSUP,
	       "DTLS-SRTP alone: ENOTSUP");
	is_int(parse("m=audio 4000 RTP/SAVPF 0\r\nm=audio 4002 RTP/AVP 8\r\n", &in), 0,
	       "SAVPF then AVP: the AVP stream is taken");
	is_int(ntohs(((struct sockaddr_in *)&in.rtp)->sin_port), 4002, "its port");
}

static void written(void)
{
	struct msdp_crypto ours[MSDP_MAX_CRYPTO];
	struct msdp_info in;
	char buf[2048];
	int pts[] = { 8, 0 }, n;
	struct msdp_out o = {
		.ip = "198.51.100.7", .port = 30000, .pts = pts, .npts = 2, .te_pt = 101,
		.mode = MSDP_SENDRECV, .sess_id = 5, .version = 6, .savp = true,
	};

	n = msdp_crypto_offer(ours, MSDP_MAX_CRYPTO);
	is_int(n, 2, "our offer has two crypto lines");
	o.crypto = ours;
	o.ncrypto = (size_t)n;
	n = msdp_write(buf, sizeof(buf), &o);
	ok(n > 0, "our SRTP offer is written (%d bytes)", n);
	like(buf, "m=audio 30000 RTP/SAVP 8 0 101\r\n", "m= line with RTP/SAVP");
	like(buf, "\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:", "a=crypto:1 (80)");
	like(buf, "\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:", "a=crypto:2 (32)");
	is_int(msdp_parse(buf, (size_t)n, CODECS, &in), 0, "and parses back");
	ok(in.savp && in.ncrypto == 2 && in.crypto[0].tag == 1 && in.crypto[1].tag == 2 &&
	   !memcmp(in.crypto[0].key, ours[0].key, MEDIA_SRTP_KEY_LEN) &&
	   !memcmp(in.crypto[1].key, ours[1].key, MEDIA_SRTP_KEY_LEN),
	   "with the same tags, suites and keys");
	is_int(msdp_write(buf, 200, &o), -1, "too small a buffer: -1");
}

static void plain_unchanged(void)
{
	char buf[1024];
	int pts[] = { 8 };
	static const char want[] =
		"v=0\r\no=sipcrm 7 9 IN IP4 127.0.0.1\r\ns=sipcrm\r\n"
		"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 8 101\r\n"
		"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
		"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

	msdp_build(buf, sizeof(buf), "127.0.0.1", 20000, pts, 1, 101, MSDP_SENDRECV, 7, 9);
	is_str(buf, want, "msdp_build (no SRTP) writes what it always did");
}

static void keys(void)
{
	struct msdp_crypto a[2], b[2], ans;
	struct media_srtp k;
	bool zero = true;

	msdp_crypto_offer(a, 2);
	msdp_crypto_offer(b, 2);
	for (int i = 0; i < MEDIA_SRTP_KEY_LEN; i++)
		zero &= !a[0].key[i];
	ok(!zero && memcmp(a[0].key, a[1].key, MEDIA_SRTP_KEY_LEN) &&
	   memcmp(a[0].key, b[0].key, MEDIA_SRTP_KEY_LEN),
	   "fresh keys: per line and per offer");
	is_int(msdp_crypto_offer(a, 1), 1, "max is honoured");
	is_int(msdp_crypto_answer(&b[1], &ans), 0, "an answer to line 2");
	ok(ans.tag == 2 && ans.suite == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32 &&
	   memcmp(ans.key, b[1].key, MEDIA_SRTP_KEY_LEN), "same tag and suite, own key");
	ok(msdp_crypto_find(b, 2, 2) == &b[1] && !msdp_crypto_find(b, 2, 3),
	   "find by tag");
	is_int(msdp_srtp_keys(&ans, &b[1], &k), 0, "engine keys from a pair of lines");
	ok(k.suite == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32 &&
	   !memcmp(k.tx_key, ans.key, MEDIA_SRTP_KEY_LEN) &&
	   !memcmp(k.rx_key, b[1].key, MEDIA_SRTP_KEY_LEN),
	   "ours to send with, theirs to receive with");
	is_int(msdp_srtp_keys(&ans, &b[0], &k), EINVAL, "different suites: EINVAL");
	ok(k.suite == MEDIA_SRTP_OFF, "and the keys are off");
	is_str(msdp_suite_name(MEDIA_SRTP_AES_CM_128_HMAC_SHA1_80), "AES_CM_128_HMAC_SHA1_80",
	       "suite name");
}

static void redact(void)
{
	static const char sdp[] =
		"m=audio 4000 RTP/SAVP 0\r\n"
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" KEY_A "|2^31\r\n"
		"a=crypto:2 AES_CM_128_HMAC_SHA1_32 INLINE:" KEY_B "\r\n";
	char out[512], small[40];
	size_t n;

	n = msdp_redact(out, sizeof(out), sdp, strlen(sdp));
	ok(!strstr(out, KEY_A) && !strstr(out, KEY_B) && !strstr(out, "AAECAw"),
	   "no key material is left");
	like(out, "inline:[redacted]|2^31\r\n", "the lifetime stays");
	like(out, "INLINE:[redacted]\r\n", "either case");
	is_int(n, strlen(out), "the length returned");
	n = msdp_redact(small, sizeof(small), sdp, strlen(sdp));
	ok(n == sizeof(small) - 1 && small[n] == '\0', "truncated, still terminated");
	n = msdp_redact(small, sizeof(small), "x inline:" KEY_A, 49);
	ok(!strstr(small, "AAEC"), "a key cut by the buffer end leaks nothing: %s", small);
}

/* A plain offer of ours made secure: same session, formats and direction. */
static void secured(void)
{
	int pts[2] = { 8, 0 };
	struct msdp_crypto c[2];
	struct msdp_info in;
	char plain[1024], sec[1024], tiny[64];

	ok(msdp_build(plain, sizeof(plain), "127.0.0.1", 4000, pts, 2, 101,
		      MSDP_SENDONLY, 77, 3) > 0, "a plain offer");
	is_int(msdp_crypto_offer(c, 2), 2, "two lines");
	ok(msdp_secure(sec, sizeof(sec), plain, c, 2) > 0, "made secure");
	like(sec, "m=audio 4000 RTP/SAVP 8 0 101\r\n", "the m= line is RTP/SAVP, formats kept");
	like(sec, "o=sipcrm 77 3 ", "session and version kept");
	is_int(msdp_parse(sec, strlen(sec), CONF_CODEC_PCMA | CONF_CODEC_PCMU, &in), 0,
	       "it parses");
	ok(in.savp && in.ncrypto == 2 && in.crypto[0].tag == 1 &&
	   !memcmp(in.crypto[0].key, c[0].key, MEDIA_SRTP_KEY_LEN) &&
	   in.crypto[1].suite == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32,
	   "with both lines and their keys");
	ok(in.mode == MSDP_SENDONLY && in.te_pt == 101 && in.pt == 8,
	   "direction, telephone-event and codec kept");
	is_int(msdp_secure(tiny, sizeof(tiny), plain, c, 2), -1, "too small a buffer: -1");
	is_int(msdp_secure(sec, sizeof(sec), "v=0\r\n", c, 2), -1, "not our SDP: -1");
}

int main(void)
{
	secured();
	offer_parsed();
	lines_left_out();
	profiles();
	written();
	plain_unchanged();
	keys();
	redact();
	return tap_done();
}
