/*
 * fuzz_digest.c: Digest credentials as sipcrm receives them: the header
 * value parsed by sofia-sip (sip_authorization_make), its parameters
 * read into struct digest_resp, then digest_verify; plus digest_compute
 * and digest_challenge on the same fields.
 *
 * Nonces are HMAC-signed, so a fuzzer cannot make one up. The control
 * bytes let it take a real nonce and even the right response instead of
 * its own, which reaches every verdict (stale, replay, ok) and the
 * nonce-count table (kept small so that it evicts):
 *
 *   byte 0: bit 0  use a fresh nonce of ours (and our realm)
 *           bit 1  put the right response in (digest_compute)
 *           bit 2  the user's secret is a stored MD5 HA1, not a password
 *           bit 3  the user is unknown (no secret)
 *           bits 4-6 when it is verified: 0, +1 ms, ttl - 1, ttl, ttl + 1,
 *                  -1 ms, far future, far past
 *           bit 7  verify twice
 *   byte 1: the method (REGISTER, INVITE, BYE, REFER, "", a long one)
 *   the rest: the header value, e.g. Digest username="101", realm=...
 *
 * Contract checks (abort): with our nonce, the right response from the
 * password and no time passed, the verdict is OK, or BAD_FORMAT or
 * UNSUPPORTED for fields the format check refuses; never OK for an
 * unknown user or an MD5 HA1 under SHA-256; an OK with qop=auth is a
 * REPLAY the second time, without qop still OK; digest_compute gives 32
 * or 64 lowercase hex digits; digest_challenge fits or writes "".
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sofia-sip/sip.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/su_alloc.h>

#include "fuzz.h"
#include "fuzz_auth.h"
#include "log.h"
#include "sip/digest.h"

#define REALM "sipcrm.test"
#define TTL_MS 60000
#define T0 1000000000LL

static struct digest *dg;
static int64_t clock_ms = T0;
static bool verbose;    /* FUZZ_VERBOSE=1: each verdict on stderr */

/* HA1 = MD5("101:sipcrm.test:secret101") */
static char ha1_101[33];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *spec = getenv("FUZZ_LOG");

	(void)argc;
	(void)argv;
	log_force_level(spec ? spec : "error");
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	if (digest_alloc(&dg, TTL_MS, 8))
		abort();
	strcpy(ha1_101, "97ac20370ee5187e229d775869353d6a");
	return 0;
}

static const char *method_of(uint8_t b)
{
	static const char *const m[] = { "REGISTER", "INVITE", "BYE", "REFER",
		"", "OPTIONS", "INVITE\"x", NULL };
	static char longm[300];

	if (!longm[0])
		memset(longm, 'M', sizeof(longm) - 1);
	b %= 8;
	return m[b] ? m[b] : longm;
}

static int64_t offset_of(unsigned sel)
{
	static const int64_t o[] = { 0, 1, TTL_MS - 1, TTL_MS, TTL_MS + 1, -1,
		INT64_MAX / 4, INT64_MIN / 4 };

	return o[sel & 7];
}

static void check_hex(const char *s, size_t n)
{
	if (strlen(s) != n)
		abort();
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			abort();
}

static void challenge(const struct digest_resp *r, size_t size)
{
	char *out = malloc(size ? size : 1);
	int n;

	if (!out)
		abort();
	out[0] = 'Z';
	n = digest_challenge(out, size, (r->algorithm && !strcasecmp(r->algorithm,
				"SHA-256")) ? DIGEST_SHA256 : DIGEST_MD5,
			     r->realm ? r->realm : REALM, r->nonce ? r->nonce : "n",
			     size & 1);
	if (n >= 0 && ((size_t)n >= size || strlen(out) != (size_t)n))
		abort();
	if (n < 0 && size && out[0] != 'Z' && out[0] != '\0')
		abort();
	free(out);
}

static enum digest_alg alg_of(const struct digest_resp *r)
{
	return r->algorithm && !strcasecmp(r->algorithm, "SHA-256") ?
	       DIGEST_SHA256 : DIGEST_MD5;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	su_home_t home[1] = { SU_HOME_INIT(home) };
	static char bufs[10][FUZZ_AUTH_VALUE_MAX];
	char nonce[DIGEST_NONCE_MAX], resp[DIGEST_HEX_MAX];
	struct digest_resp r;
	struct digest_secret sec = { 0 };
	const struct digest_secret *secret;
	sip_authorization_t *au;
	enum digest_result v1, v2;
	const char *method;
	char *text;
	uint8_t fl;
	bool computed = false, unknown, ha1;
	int64_t now;

	if (size < 2)
		return 0;
	fl = data[0];
	method = method_of(data[1]);
	text = fuzz_strndup(data + 2, size - 2);
	if (!text)
		return 0;
	au = sip_authorization_make(home, text);
	fuzz_auth_params(au ? au->au_params : NULL, &r, bufs);

	unknown = fl & 8;
	ha1 = fl & 4;
	if (!unknown) {
		if (ha1)
			sec.ha1_md5 = ha1_101;
		else
			sec.password = "secret101";
	}
	secret = unknown ? NULL : &sec;

	clock_ms += 1000;       /* every nonce of ours is a new one */
	if (fl & 1) {
		digest_nonce(dg, REALM, clock_ms, nonce);
		r.nonce = nonce;
		r.realm = REALM;
	}
	if (fl & 2) {
		int e = digest_compute(resp, alg_of(&r), r.username ? r.username : "",
				       r.realm ? r.realm : "", "secret101", method,
				       r.uri ? r.uri : "", r.nonce ? r.nonce : "",
				       r.nc, r.cnonce, r.qop);

		if (e != 0 && e != EINVAL && e != EIO)
			abort();
		if (e == 0) {
			check_hex(resp, alg_of(&r) == DIGEST_SHA256 ? 64 : 32);
			r.response = resp;
			computed = true;
		}
	}

	now = clock_ms + offset_of(fl >> 4);
	v1 = digest_verify(dg, &r, method, REALM, secret, now);
	if (!strcmp(digest_result_str(v1), "unknown"))
		abort();
	if (verbose)
		fprintf(stderr, "fuzz_digest: %s %s (user %s)\n", method,
			digest_result_str(v1), r.username ? r.username : "-");
	if (v1 == DIGEST_OK && (unknown || (ha1 && alg_of(&r) == DIGEST_SHA256)))
		abort();        /* no secret, yet accepted */
	if ((fl & 1) && computed && !unknown && !ha1 && offset_of(fl >> 4) == 0 &&
	    v1 != DIGEST_OK && v1 != DIGEST_BAD_FORMAT && v1 != DIGEST_UNSUPPORTED) {
		fprintf(stderr, "fuzz_digest: right credentials, verdict %s\n",
			digest_result_str(v1));
		abort();
	}
	if (fl & 128) {
		v2 = digest_verify(dg, &r, method, REALM, secret, now);
		if (v1 == DIGEST_OK && r.qop && v2 != DIGEST_REPLAY)
			abort();
		if (v1 == DIGEST_OK && !r.qop && v2 != DIGEST_OK)
			abort();
	}
	if (digest_nc_count(dg) > 8)
		abort();
	challenge(&r, (size_t)(fl % 200));
	su_home_deinit(home);
	free(text);
	return 0;
}
