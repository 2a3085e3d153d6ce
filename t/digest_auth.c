/*
 * digest_auth.c: digest computation against the RFC vectors, nonces,
 * verification results, nonce-count replay and the bounded nc table.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sip/digest.h"
#include "tap.h"

#define REALM "sip.example.com"
#define TTL 300000
#define T0 1000000

static const struct digest_secret alice = { .password = "s3cret", .ha1_md5 = NULL };

/* A request as a client would send it; fields point into the struct. */
struct req {
	struct digest_resp r;
	char nonce[DIGEST_NONCE_MAX];
	char resp[DIGEST_HEX_MAX];
	char nc[9];
};

/* Builds a correct qop=auth response for password (or no qop if !qop). */
static void make_req(struct req *q, struct digest *d, enum digest_alg alg,
		     const char *password, unsigned nc, bool qop, int64_t now)
{
	memset(q, 0, sizeof(*q));
	digest_nonce(d, REALM, now, q->nonce);
	snprintf(q->nc, sizeof(q->nc), "%08x", nc);
	q->r.username = "alice";
	q->r.realm = REALM;
	q->r.nonce = q->nonce;
	q->r.uri = "sip:" REALM;
	q->r.algorithm = alg == DIGEST_SHA256 ? "SHA-256" : "MD5";
	q->r.cnonce = qop ? "abc123" : NULL;
	q->r.qop = qop ? "auth" : NULL;
	q->r.nc = qop ? q->nc : NULL;
	q->r.response = q->resp;
	if (digest_compute(q->resp, alg, "alice", REALM, password, "REGISTER",
			   q->r.uri, q->nonce, q->r.nc, q->r.cnonce, q->r.qop))
		q->resp[0] = '\0';
}

/* Recomputes the response after the test changed a field. */
static void resign(struct req *q, enum digest_alg alg, const char *password)
{
	digest_compute(q->resp, alg, q->r.username, q->r.realm, password,
		       "REGISTER", q->r.uri, q->r.nonce, q->r.nc, q->r.cnonce,
		       q->r.qop);
}

static enum digest_result check(struct digest *d, const struct req *q,
				const struct digest_secret *s, int64_t now)
{
	return digest_verify(d, &q->r, "REGISTER", REALM, s, now);
}

#define is_res(got, want, what) do { \
	enum digest_result _g = (got), _w = (want); \
	ok(_g == _w, "%s", what); \
	if (_g != _w) \
		printf("#   expected %s, got %s\n", digest_result_str(_w), \
		       digest_result_str(_g)); \
} while (0)

static void test_vectors(void)
{
	char out[DIGEST_HEX_MAX];
	int err;

	err = digest_compute(out, DIGEST_MD5, "Mufasa", "testrealm@host.com",
			     "Circle Of Life", "GET", "/dir/index.html",
			     "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001",
			     "0a4f113b", "auth");
	is_int(err, 0, "RFC 2617 3.5 computes");
	is_str(out, "6629fae49393a05397450978507c4ef1", "RFC 2617 3.5 MD5 response");

	const char *nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
	const char *cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

	err = digest_compute(out, DIGEST_SHA256, "Mufasa", "http-auth@example.org",
			     "Circle of Life", "GET", "/dir/index.html", nonce,
			     "00000001", cnonce, "auth");
	is_int(err, 0, "RFC 7616 3.9.1 computes");
	is_str(out, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
	       "RFC 7616 3.9.1 SHA-256 response");
	err = digest_compute(out, DIGEST_MD5, "Mufasa", "http-auth@example.org",
			     "Circle of Life", "GET", "/dir/index.html", nonce,
			     "00000001", cnonce, "auth");
	is_str(out, "8ca523f5e9506fed4657c9700eebdbec", "RFC 7616 3.9.1 MD5 response");

	/* RFC 2069 style: H(HA1:nonce:HA2), RFC 2617 3.5 inputs. */
	err = digest_compute(out, DIGEST_MD5, "Mufasa", "testrealm@host.com",
			     "Circle Of Life", "GET", "/dir/index.html",
			     "dcd98b7102dd2f0e8b11d0f600bfb0c093", NULL, NULL, NULL);
	is_int(err, 0, "no-qop computes");
	is_str(out, "670fd8c2df070c60b045671b8b24ff02", "RFC 2069 style MD5 response");

	err = digest_compute(out, DIGEST_MD5, "u", "r", "p", "GET", "/", "n",
			     NULL, NULL, "auth-int");
	is_int(err, EINVAL, "digest_compute refuses qop=auth-int");
}

static void test_round_trip(struct digest *d)
{
	struct req q;

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	is_int(strlen(q.nonce), 40, "nonce is 40 base64url chars");
	is_int(strspn(q.nonce, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		      "0123456789-_"), 40, "nonce alphabet is base64url: %s", q.nonce);
	is_res(check(d, &q, &alice, T0 + 10), DIGEST_OK, "MD5 round trip");

	/* Two clients challenged in the same millisecond must not share nc. */
	struct req q2;

	make_req(&q2, d, DIGEST_MD5, "s3cret", 1, true, T0);
	ok(strcmp(q.nonce, q2.nonce) != 0, "same-ms nonces differ: %s vs %s",
	   q.nonce, q2.nonce);
	is_res(check(d, &q2, &alice, T0 + 10), DIGEST_OK,
	       "second same-ms nonce accepts its own nc 1");

	make_req(&q, d, DIGEST_SHA256, "s3cret", 1, true, T0);
	is_res(check(d, &q, &alice, T0 + 10), DIGEST_OK, "SHA-256 round trip");

	make_req(&q, d, DIGEST_SHA256, "s3cret", 1, true, T0 + 1);
	q.r.algorithm = "sha-256";
	is_res(check(d, &q, &alice, T0 + 10), DIGEST_OK, "algorithm is case-insensitive");

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0 + 2);
	q.r.algorithm = NULL;
	is_res(check(d, &q, &alice, T0 + 10), DIGEST_OK, "absent algorithm means MD5");

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0 + 3);
	for (char *p = q.resp; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	is_res(check(d, &q, &alice, T0 + 10), DIGEST_OK, "uppercase hex response accepted");
}

static void test_failures(struct digest *d)
{
	struct req q;
	struct digest *other = NULL;

	make_req(&q, d, DIGEST_SHA256, "wrong", 1, true, T0);
	is_res(check(d, &q, &alice, T0), DIGEST_MISMATCH, "wrong password");

	make_req(&q, d, DIGEST_SHA256, "s3cret", 1, true, T0);
	is_res(check(d, &q, NULL, T0), DIGEST_MISMATCH, "unknown user (NULL secret)");
	make_req(&q, d, DIGEST_MD5, "\x01sipcrm-no-such-user\x01", 1, true, T0);
	is_res(check(d, &q, NULL, T0), DIGEST_MISMATCH,
	       "unknown user with the dummy password still fails");
	struct digest_secret empty = { .password = NULL, .ha1_md5 = NULL };
	make_req(&q, d, DIGEST_MD5, "", 1, true, T0);
	is_res(check(d, &q, &empty, T0), DIGEST_MISMATCH, "secret with neither field");

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	q.nonce[5] = q.nonce[5] == 'A' ? 'B' : 'A';
	resign(&q, DIGEST_MD5, "s3cret");
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_NONCE, "tampered nonce");

	int flips = 0;

	for (size_t i = 0; i < 40; i++) {
		make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
		q.nonce[i] = q.nonce[i] == 'A' ? 'B' : 'A';
		resign(&q, DIGEST_MD5, "s3cret");
		flips += check(d, &q, &alice, T0) == DIGEST_BAD_NONCE;
	}
	is_int(flips, 40, "a flip at any of the 40 nonce positions is caught");

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	q.nonce[31] = '\0';
	resign(&q, DIGEST_MD5, "s3cret");
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_NONCE, "truncated nonce");

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	q.nonce[3] = '+';
	resign(&q, DIGEST_MD5, "s3cret");
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_NONCE, "nonce outside base64url");

	is_int(digest_alloc(&other, TTL, 16), 0, "second verifier allocates");
	make_req(&q, other, DIGEST_MD5, "s3cret", 1, true, T0);
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_NONCE, "nonce from another secret");
	is_res(check(other, &q, &alice, T0), DIGEST_OK, "... accepted by its issuer");
	other = digest_free(other);
	ok(other == NULL, "digest_free returns NULL");

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	q.r.realm = "other.example.com";
	resign(&q, DIGEST_MD5, "s3cret");
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_REALM, "wrong realm");

	/* A nonce issued for one realm is not valid for another. */
	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	q.r.realm = "other.example.com";
	resign(&q, DIGEST_MD5, "s3cret");
	is_res(digest_verify(d, &q.r, "REGISTER", "other.example.com", &alice, T0),
	       DIGEST_BAD_NONCE, "nonce bound to its realm");

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	q.r.algorithm = "MD5-sess";
	is_res(check(d, &q, &alice, T0), DIGEST_UNSUPPORTED, "MD5-sess unsupported");
	q.r.algorithm = "SHA-256-sess";
	is_res(check(d, &q, &alice, T0), DIGEST_UNSUPPORTED, "SHA-256-sess unsupported");
	q.r.algorithm = "MD5";
	q.r.qop = "auth-int";
	is_res(check(d, &q, &alice, T0), DIGEST_UNSUPPORTED, "qop=auth-int unsupported");
}

static void test_stale_replay(struct digest *d)
{
	struct req q;

	make_req(&q, d, DIGEST_SHA256, "s3cret", 1, true, T0);
	is_res(check(d, &q, &alice, T0 + TTL), DIGEST_OK, "valid at exactly ttl");
	make_req(&q, d, DIGEST_SHA256, "s3cret", 1, true, T0 - 1);
	is_res(check(d, &q, &alice, T0 + TTL), DIGEST_STALE,
	       "expired nonce, correct response -> stale");
	make_req(&q, d, DIGEST_SHA256, "wrong", 1, true, T0 - 1);
	is_res(check(d, &q, &alice, T0 + TTL), DIGEST_MISMATCH,
	       "expired nonce, wrong response -> mismatch, not stale");

	make_req(&q, d, DIGEST_MD5, "s3cret", 7, true, T0 + 100);
	is_res(check(d, &q, &alice, T0 + 200), DIGEST_OK, "nc 7 accepted");
	is_res(check(d, &q, &alice, T0 + 201), DIGEST_REPLAY, "same nc again -> replay");
	snprintf(q.nc, sizeof(q.nc), "%08x", 3);
	resign(&q, DIGEST_MD5, "s3cret");
	is_res(check(d, &q, &alice, T0 + 202), DIGEST_REPLAY, "lower nc -> replay");
	snprintf(q.nc, sizeof(q.nc), "%08x", 8);
	resign(&q, DIGEST_MD5, "s3cret");
	is_res(check(d, &q, &alice, T0 + 203), DIGEST_OK, "higher nc accepted");

	/* A failed attempt must not advance the recorded count. */
	snprintf(q.nc, sizeof(q.nc), "%08x", 20);
	resign(&q, DIGEST_MD5, "wrong");
	is_res(check(d, &q, &alice, T0 + 204), DIGEST_MISMATCH, "wrong password at nc 20");
	snprintf(q.nc, sizeof(q.nc), "%08x", 9);
	resign(&q, DIGEST_MD5, "s3cret");
	is_res(check(d, &q, &alice, T0 + 205), DIGEST_OK,
	       "nc 9 still accepted after the failed nc 20");

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, false, T0 + 300);
	is_res(check(d, &q, &alice, T0 + 301), DIGEST_OK, "no-qop (RFC 2069) accepted");
	is_res(check(d, &q, &alice, T0 + 302), DIGEST_OK,
	       "no-qop repeat accepted: only nonce expiry bounds replay");
	is_res(check(d, &q, &alice, T0 + 301 + TTL), DIGEST_STALE,
	       "no-qop nonce goes stale");

	digest_set_ttl(d, 10);
	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	is_res(check(d, &q, &alice, T0 + 11), DIGEST_STALE, "digest_set_ttl shortens the lifetime");
	digest_set_ttl(d, 0);
	is_res(check(d, &q, &alice, T0 + 11), DIGEST_STALE, "ttl 0 ignored");
	digest_set_ttl(d, TTL);
	is_res(check(d, &q, &alice, T0 + 11), DIGEST_OK, "ttl restored");
}

/*
 * MD5("alice:sip.example.com:s3cret"), computed independently with Python's
 * hashlib, in uppercase to check that stored HA1s are case-folded.
 */
#define HA1_ALICE "C2259BF057179DAE2DE80A2DFA26DAC2"

static void test_ha1(struct digest *d)
{
	struct digest_secret s = { .password = NULL, .ha1_md5 = HA1_ALICE };
	struct req q;

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	is_res(check(d, &q, &s, T0), DIGEST_OK, "HA1-only secret works for MD5");
	make_req(&q, d, DIGEST_SHA256, "s3cret", 1, true, T0);
	is_res(check(d, &q, &s, T0), DIGEST_MISMATCH, "HA1-only secret fails for SHA-256");
	s.ha1_md5 = "C2259BF057179DAE2DE80A2DFA26DAC3";
	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0 + 1);
	is_res(check(d, &q, &s, T0), DIGEST_MISMATCH, "different HA1 -> mismatch");
	s.ha1_md5 = "0123";
	is_res(check(d, &q, &s, T0), DIGEST_MISMATCH, "malformed HA1 -> mismatch");
}

static void test_format(struct digest *d)
{
	char big[300];
	struct req q;

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';

	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	struct req base = q;
	const char **fields[] = { &q.r.username, &q.r.realm, &q.r.nonce,
				  &q.r.uri, &q.r.response };
	const char *names[] = { "username", "realm", "nonce", "uri", "response" };

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		q = base;
		q.r.nonce = q.nonce;
		q.r.response = q.resp;
		q.r.nc = q.nc;
		*fields[i] = NULL;
		char what[80];

		snprintf(what, sizeof(what), "missing %s -> bad format", names[i]);
		is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, what);
		*fields[i] = big;
		snprintf(what, sizeof(what), "overlong %s -> bad format", names[i]);
		is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, what);
	}
	q = base;
	q.r.nonce = q.nonce;
	q.r.response = q.resp;
	q.r.nc = NULL;
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, "qop without nc");
	q.r.nc = "0001";
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, "short nc");
	q.r.nc = "0000000g";
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, "non-hex nc");
	q.r.nc = "00000000";
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, "nc zero");
	q.r.nc = q.nc;
	q.r.cnonce = NULL;
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, "qop without cnonce");
	q.r.cnonce = big;
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, "overlong cnonce");
	q.r.cnonce = "abc123";
	q.r.opaque = big;
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, "overlong opaque");
	q.r.opaque = NULL;
	q.r.algorithm = big;
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, "overlong algorithm");
	q.r.algorithm = "MD5";
	q.resp[31] = '\0';
	is_res(check(d, &q, &alice, T0), DIGEST_BAD_FORMAT, "31-digit MD5 response");
	q.resp[31] = 'z';
	is_res(check(d, &q, &alice, T0), DIGEST_MISMATCH, "non-hex response -> mismatch");
	is_res(digest_verify(d, NULL, "REGISTER", REALM, &alice, T0),
	       DIGEST_BAD_FORMAT, "NULL response struct");
	is_res(digest_verify(d, &base.r, NULL, REALM, &alice, T0),
	       DIGEST_BAD_FORMAT, "NULL method");

	char out[DIGEST_HEX_MAX];

	is_int(digest_compute(out, DIGEST_MD5, big, "r", "p", "GET", "/", "n",
			      "00000001", "c", "auth"), EINVAL,
	       "digest_compute rejects an overlong user");
}

static void test_challenge(void)
{
	char buf[256];
	int n;

	n = digest_challenge(buf, sizeof(buf), DIGEST_SHA256, "R", "N", false);
	is_str(buf, "Digest realm=\"R\", nonce=\"N\", algorithm=SHA-256, qop=\"auth\"",
	       "SHA-256 challenge");
	is_int(n, strlen(buf), "length returned");
	digest_challenge(buf, sizeof(buf), DIGEST_MD5, "R", "N", true);
	is_str(buf, "Digest realm=\"R\", nonce=\"N\", algorithm=MD5, qop=\"auth\", stale=true",
	       "MD5 stale challenge");
	n = digest_challenge(buf, 20, DIGEST_MD5, "R", "N", false);
	is_int(n, -1, "too small a buffer -> -1");
	n = digest_challenge(buf, sizeof(buf), DIGEST_MD5, "a\"b", "N", false);
	is_int(n, -1, "realm with a quote -> -1");
}

static void test_nc_bound(void)
{
	struct digest *d = NULL;
	struct req q;
	int okc = 0;

	is_int(digest_alloc(&d, TTL, 64), 0, "small table allocates");
	for (int i = 0; i < 1000; i++) {
		make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0 + i);
		okc += check(d, &q, &alice, T0 + i) == DIGEST_OK;
	}
	is_int(okc, 1000, "1000 distinct nonces accepted");
	is_int(digest_nc_count(d), 64, "nc table stays at max_nc");

	/* The most recent nonce is still tracked; the first was evicted. */
	is_res(check(d, &q, &alice, T0 + 1000), DIGEST_REPLAY, "recent nonce still tracked");
	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0);
	is_res(check(d, &q, &alice, T0 + 1000), DIGEST_OK,
	       "evicted but valid nonce is accepted again (bounded cache)");

	/* Once everything is expired, inserting drops the expired records. */
	make_req(&q, d, DIGEST_MD5, "s3cret", 1, true, T0 + 10 * TTL);
	is_res(check(d, &q, &alice, T0 + 10 * TTL), DIGEST_OK, "fresh nonce later");
	is_int(digest_nc_count(d), 1, "expired records dropped on insert");
	d = digest_free(d);

	ok(digest_alloc(&d, TTL, 0) == EINVAL && d == NULL, "max_nc 0 -> EINVAL");
	ok(digest_alloc(&d, 0, 8) == EINVAL && d == NULL, "ttl 0 -> EINVAL");
	ok(digest_free(NULL) == NULL, "digest_free(NULL)");
	is_int(digest_nc_count(NULL), 0, "digest_nc_count(NULL)");
}

int main(void)
{
	struct digest *d = NULL;

	test_vectors();
	is_int(digest_alloc(&d, TTL, 1024), 0, "digest_alloc");
	if (!d)
		return tap_done();
	test_round_trip(d);
	test_failures(d);
	test_stale_replay(d);
	test_ha1(d);
	test_format(d);
	test_challenge();
	test_nc_bound();
	is_str(digest_result_str(DIGEST_STALE), "stale nonce", "digest_result_str");
	is_str(digest_result_str((enum digest_result)99), "unknown",
	       "digest_result_str out of range");
	digest_free(d);
	return tap_done();
}
