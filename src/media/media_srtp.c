/*
 * media_srtp.c: SDES-keyed SRTP (RFC 3711, RFC 4568) on an ep, through
 * libsrtp2.
 *
 * Each ep with SRTP has two libsrtp sessions: one with the peer's key for
 * what arrives (any inbound SSRC) and one with ours for what we send (any
 * outbound SSRC). libsrtp clones a stream for a new SSRC only once a packet
 * of it has passed authentication, so forged SSRCs cost no memory. The
 * sessions are created and used by the engine thread only; a change of
 * peer that keeps the keys keeps the sessions, because recreating them
 * would restart the rollover counter and the replay window.
 *
 * Failures are counted per ep (authentication, replay) and the packet is
 * dropped. Nothing here logs key material.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <srtp2/srtp.h>

#define LOG_MODULE "media"
#include "log.h"
#include "media_int.h"

_Static_assert(MEDIA_TRAILER >= SRTP_MAX_TRAILER_LEN + 4,
	       "receive buffers must keep room for the SRTP trailer");
_Static_assert(MEDIA_SRTP_KEY_LEN == SRTP_AES_ICM_128_KEY_LEN_WSALT,
	       "SDES inline keys are AES-128 key + salt");

#define REPLAY_WINDOW 1024      /* packets; libsrtp's default is 128 */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_err;

static void init_run(void)
{
	srtp_err_status_t s = srtp_init();

	if (s != srtp_err_status_ok) {
		log_err("srtp_init failed (%d)", (int)s);
		init_err = EIO;
	}
}

int media_srtp_init(void)
{
	pthread_once(&init_once, init_run);
	return init_err;
}

bool media_srtp_suite_ok(enum media_srtp_suite s)
{
	return s == MEDIA_SRTP_OFF || s == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_80 ||
		s == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32;
}

int media_srtp_keygen(uint8_t key[MEDIA_SRTP_KEY_LEN])
{
	return RAND_bytes(key, MEDIA_SRTP_KEY_LEN) == 1 ? 0 : EIO;
}

static srtp_t session_new(enum media_srtp_suite suite, const uint8_t *key,
			  bool inbound)
{
	uint8_t k[MEDIA_SRTP_KEY_LEN];
	srtp_policy_t p;
	srtp_t s = NULL;

	memset(&p, 0, sizeof(p));
	if (suite == MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32)
		srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p.rtp);
	else
		srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtp);
	/* RFC 4568 6.2.2: SRTCP keeps the 80-bit tag with either suite */
	srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtcp);
	p.ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound;
	memcpy(k, key, sizeof(k));      /* libsrtp wants a mutable pointer */
	p.key = k;
	p.window_size = REPLAY_WINDOW;
	/* a repeated index with another payload would reuse keystream */
	p.allow_repeat_tx = 0;
	if (srtp_create(&s, &p) != srtp_err_status_ok)
		s = NULL;
	OPENSSL_cleanse(k, sizeof(k));
	return s;
}

static void session_free(struct srtp_ctx_t_ **s)
{
	if (*s)
		srtp_dealloc(*s);
	*s = NULL;
}

void media_srtp_clear(struct media_ep *e)
{
	session_free(&e->srtp_in);
	session_free(&e->srtp_out);
	OPENSSL_cleanse(&e->srtp, sizeof(e->srtp));
}

static bool same_key(const uint8_t *a, const uint8_t *b)
{
	return CRYPTO_memcmp(a, b, MEDIA_SRTP_KEY_LEN) == 0;
}

void media_srtp_apply(struct media_ep *e, const struct media_srtp *s)
{
	bool same_suite = e->srtp.suite == s->suite;

	if (s->suite == MEDIA_SRTP_OFF) {
		media_srtp_clear(e);
		return;
	}
	if (!same_suite || !e->srtp_in || !same_key(e->srtp.rx_key, s->rx_key)) {
		session_free(&e->srtp_in);
		e->srtp_in = session_new(s->suite, s->rx_key, true);
	}
	if (!same_suite || !e->srtp_out || !same_key(e->srtp.tx_key, s->tx_key)) {
		session_free(&e->srtp_out);
		e->srtp_out = session_new(s->suite, s->tx_key, false);
	}
	e->srtp = *s;
	if (!e->srtp_in || !e->srtp_out)
		log_err("ep %08x: cannot create the SRTP sessions; "
			"its media is dropped", (unsigned)e->h);
}

static void count_failure(struct media_ep *e, srtp_err_status_t s)
{
	if (s == srtp_err_status_auth_fail)
		e->st.srtp_auth++;
	else if (s == srtp_err_status_replay_fail || s == srtp_err_status_replay_old)
		e->st.srtp_replay++;
	else
		e->st.dropped++;
}

bool media_srtp_unprotect(struct media_ep *e, uint8_t *p, size_t *len, bool rtcp)
{
	int n = (int)*len;
	srtp_err_status_t s;

	if (!e->srtp_in) {
		e->st.dropped++;
		return false;
	}
	s = rtcp ? srtp_unprotect_rtcp(e->srtp_in, p, &n) :
		srtp_unprotect(e->srtp_in, p, &n);
	if (s != srtp_err_status_ok) {
		count_failure(e, s);
		return false;
	}
	*len = (size_t)n;
	return true;
}

/* The caller keeps MEDIA_TRAILER bytes free behind p + *len. */
bool media_srtp_protect(struct media_ep *e, uint8_t *p, size_t *len, bool rtcp)
{
	int n = (int)*len;
	srtp_err_status_t s;

	if (!e->srtp_out) {
		e->st.dropped++;
		return false;
	}
	s = rtcp ? srtp_protect_rtcp(e->srtp_out, p, &n) :
		srtp_protect(e->srtp_out, p, &n);
	if (s != srtp_err_status_ok) {
		/* a duplicate of what we sent already: not the peer's fault */
		e->st.dropped++;
		return false;
	}
	*len = (size_t)n;
	return true;
}
