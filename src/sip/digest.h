/*
 * digest.h: HTTP digest authentication for SIP (RFC 3261 §22, RFC 7616,
 * RFC 8760): MD5 and SHA-256, qop=auth, stateless nonces, nonce-count
 * replay protection. Pure code over OpenSSL's libcrypto; no sofia types,
 * so it can be unit-tested and fuzzed alone.
 */
#ifndef SIPCRM_DIGEST_H
#define SIPCRM_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum digest_alg { DIGEST_MD5 = 0, DIGEST_SHA256 = 1 };

#define DIGEST_NONCE_MAX 64     /* text length bound, NUL included */
#define DIGEST_HEX_MAX 65       /* SHA-256 hex + NUL */

struct digest;

/*
 * Creates the verifier: a per-process random secret for nonces (from
 * RAND_bytes), nonce lifetime ttl_ms, and room for max_nc nonce-count
 * records (least recently used dropped first). Returns 0, EINVAL (ttl_ms
 * not positive, max_nc 0 or above 2^24), ENOMEM or EIO.
 */
int digest_alloc(struct digest **dp, int64_t ttl_ms, size_t max_nc);
struct digest *digest_free(struct digest *d);
void digest_set_ttl(struct digest *d, int64_t ttl_ms);  /* ignores <= 0 */

/* Nonce-count records held now, never above max_nc (metrics, tests). */
size_t digest_nc_count(const struct digest *d);

/* A fresh nonce for realm at time now_ms (monotonic ms), NUL-terminated. */
void digest_nonce(struct digest *d, const char *realm, int64_t now_ms,
		  char out[DIGEST_NONCE_MAX]);

/* The parameters of an Authorization / Proxy-Authorization header. */
struct digest_resp {
	const char *username;
	const char *realm;
	const char *nonce;
	const char *uri;
	const char *response;
	const char *algorithm;  /* NULL means MD5 */
	const char *cnonce;
	const char *qop;        /* NULL (RFC 2069 style) or "auth" */
	const char *nc;         /* 8 hex digits when qop is set */
	const char *opaque;
};

enum digest_result {
	DIGEST_OK = 0,
	DIGEST_BAD_FORMAT,      /* missing or malformed parameters */
	DIGEST_BAD_REALM,
	DIGEST_BAD_NONCE,       /* not ours, or tampered */
	DIGEST_STALE,           /* ours but expired: challenge with stale=true */
	DIGEST_REPLAY,          /* nonce-count not above the last one seen */
	DIGEST_MISMATCH,        /* wrong password (or unknown user) */
	DIGEST_UNSUPPORTED,     /* algorithm or qop we do not offer */
};

/*
 * The secret for one user: either the plain password, or a stored MD5 HA1
 * (hex). With only an HA1, SHA-256 answers fail with DIGEST_MISMATCH.
 */
struct digest_secret {
	const char *password;
	const char *ha1_md5;
};

/*
 * Checks a response for method (e.g. "REGISTER") at now_ms. secret may be
 * NULL for an unknown user: the same work is done against a dummy secret
 * and DIGEST_MISMATCH returned, so timing does not reveal which users
 * exist. The nonce-count record is updated only on DIGEST_OK.
 */
enum digest_result digest_verify(struct digest *d, const struct digest_resp *r,
				 const char *method, const char *realm,
				 const struct digest_secret *secret, int64_t now_ms);

/*
 * Formats a challenge header value:
 *   Digest realm="R", nonce="N", algorithm=SHA-256, qop="auth"[, stale=true]
 * Returns the length written (< size), or -1 if it did not fit.
 */
int digest_challenge(char *out, size_t size, enum digest_alg alg,
		     const char *realm, const char *nonce, bool stale);

/*
 * Computes a response as a client does (for tests and outbound auth).
 * qop is NULL (RFC 2069) or "auth", which needs nc and cnonce. Returns 0,
 * EINVAL (missing or overlong input, other qop) or EIO (libcrypto).
 */
int digest_compute(char out[DIGEST_HEX_MAX], enum digest_alg alg,
		   const char *user, const char *realm, const char *password,
		   const char *method, const char *uri, const char *nonce,
		   const char *nc, const char *cnonce, const char *qop);

const char *digest_result_str(enum digest_result r);

#endif
