/*
 * digest.c: digest authentication (RFC 3261 §22, RFC 7616, RFC 8760).
 *
 * Nonces are stateless: base64url (no padding) of an 8-byte big-endian
 * timestamp, a 6-byte counter and the first 16 bytes of
 * HMAC-SHA256(secret, timestamp || counter || realm). The counter makes
 * nonces issued in the same millisecond distinct, so two clients never
 * share a nonce-count record. The secret is random per process, so a
 * restart invalidates every outstanding nonce; clients then get BAD_NONCE
 * and a fresh challenge. Validating a nonce needs no memory at all.
 *
 * Not thread-safe: one verifier belongs to the signalling thread.
 *
 * Replay protection with qop=auth comes from the nonce-count: a bounded
 * hash table maps each nonce to the highest nc accepted with it, and a
 * request whose nc is not above that is a replay. The table is a cache:
 * when it is full the least recently used nonce is forgotten, and if that
 * nonce comes back while still valid its next nc is accepted as if new.
 * Only correct responses create records, so filling the table needs valid
 * credentials, not just a flood of requests.
 *
 * Without qop (RFC 2069, still sent by some old phones) there is no nc,
 * so a captured request can be replayed until its nonce expires: replay
 * protection is by nonce lifetime only.
 *
 * All hashing goes through OpenSSL's EVP; comparisons of secrets and MACs
 * are constant time.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "digest.h"
#include "hex.h"

#define FIELD_MAX 256           /* longest parameter accepted from the wire */
#define JOIN_MAX 1024           /* fits 3 fields of FIELD_MAX plus colons */
#define SECRET_LEN 32
#define TS_LEN 8
#define CTR_LEN 6
#define TAG_LEN 16
#define MSG_LEN (TS_LEN + CTR_LEN)      /* the authenticated prefix */
#define RAW_LEN (MSG_LEN + TAG_LEN)     /* 30: a multiple of 3 */
#define NONCE_LEN 40            /* base64 of RAW_LEN bytes, no padding */
#define NC_LEN 8
#define NC_TABLE_LIMIT (1u << 24)
#define NIL UINT32_MAX

/* Hashed instead of a missing password so unknown users cost the same. */
static const char dummy_password[] = "\x01sipcrm-no-such-user\x01";

struct nc_ent {
	char nonce[NONCE_LEN + 1];
	uint32_t nc;                    /* highest nonce-count accepted */
	int64_t ts;                     /* nonce issue time, for expiry */
	uint32_t hnext;                 /* hash chain */
	uint32_t prev, next;            /* LRU list, or free list (next only) */
};

struct digest {
	unsigned char secret[SECRET_LEN];
	uint64_t seed;                  /* hash table seed */
	uint64_t counter;               /* starts random: hides the volume */
	int64_t ttl_ms;
	struct nc_ent *ents;
	size_t max_nc, count;
	uint32_t *buckets, mask;
	uint32_t lru_head, lru_tail;    /* head: least recently used */
	uint32_t free_head;
};

/* ---- small helpers ---- */

/* A parameter present, non-empty and no longer than FIELD_MAX. */
static bool field_ok(const char *s)
{
	return s && *s && strnlen(s, FIELD_MAX + 1) <= FIELD_MAX;
}

/* Like field_ok, but may be absent (NULL) or empty. */
static bool opt_field_ok(const char *s)
{
	return !s || strnlen(s, FIELD_MAX + 1) <= FIELD_MAX;
}

/* Copies n hex digits lowercased into out (n + 1 bytes); false if not hex. */
static bool hex_lower(char *out, const char *s, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	if (strnlen(s, n + 1) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		int v = hex_digit((unsigned char)s[i]);

		if (v < 0)
			return false;
		out[i] = digits[v];
	}
	out[n] = '\0';
	return true;
}

static const EVP_MD *alg_md(enum digest_alg alg)
{
	return alg == DIGEST_SHA256 ? EVP_sha256() : EVP_md5();
}

static size_t alg_hexlen(enum digest_alg alg)
{
	return alg == DIGEST_SHA256 ? 64 : 32;
}

/*
 * H(p[0]:p[1]:...) in lowercase hex. EVP_Digest over one joined buffer
 * rather than incremental updates keeps a single failure point.
 * Returns 0, EINVAL if the parts do not fit, or EIO if libcrypto failed
 * (e.g. MD5 disabled by a FIPS provider).
 */
static int hash_join(char out[DIGEST_HEX_MAX], enum digest_alg alg,
		     const char *const *parts, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char buf[JOIN_MAX];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t len = 0;
	int err = 0;

	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(parts[i]);

		if (len + l + 1 > sizeof(buf)) {
			err = EINVAL;
			break;
		}
		if (i)
			buf[len++] = ':';
		memcpy(buf + len, parts[i], l);
		len += l;
	}
	if (!err && (!EVP_Digest(buf, len, md, &mdlen, alg_md(alg), NULL)
		     || 2 * (size_t)mdlen != alg_hexlen(alg)))
		err = EIO;
	/* buf holds the password when this computes HA1. */
	OPENSSL_cleanse(buf, sizeof(buf));
	if (err)
		return err;
	for (unsigned int i = 0; i < mdlen; i++) {
		out[2 * i] = digits[md[i] >> 4];
		out[2 * i + 1] = digits[md[i] & 15];
	}
	out[2 * mdlen] = '\0';
	return 0;
}

/* The response from a known HA1: RFC 7616 §3.4.1, or RFC 2069 without qop. */
static int response_from_ha1(char out[DIGEST_HEX_MAX], enum digest_alg alg,
			     const char *ha1, const char *method,
			     const char *uri, const char *nonce,
			     const char *nc, const char *cnonce,
			     const char *qop)
{
	char ha2[DIGEST_HEX_MAX];
	const char *a2[] = { method, uri };
	int err = hash_join(ha2, alg, a2, 2);

	if (err)
		return err;
	if (!qop) {
		const char *p[] = { ha1, nonce, ha2 };

		return hash_join(out, alg, p, 3);
	}
	const char *p[] = { ha1, nonce, nc, cnonce, qop, ha2 };

	return hash_join(out, alg, p, 6);
}

/* ---- client side ---- */

int digest_compute(char out[DIGEST_HEX_MAX], enum digest_alg alg,
		   const char *user, const char *realm, const char *password,
		   const char *method, const char *uri, const char *nonce,
		   const char *nc, const char *cnonce, const char *qop)
{
	char ha1[DIGEST_HEX_MAX];
	int err;

	if (!out || (alg != DIGEST_MD5 && alg != DIGEST_SHA256))
		return EINVAL;
	if (!field_ok(user) || !opt_field_ok(realm) || !realm
	    || !opt_field_ok(password) || !password || !field_ok(method)
	    || !field_ok(uri) || !field_ok(nonce))
		return EINVAL;
	if (qop && (strcasecmp(qop, "auth") || !field_ok(nc)
		    || !field_ok(cnonce)))
		return EINVAL;

	const char *a1[] = { user, realm, password };

	err = hash_join(ha1, alg, a1, 3);
	if (!err)
		err = response_from_ha1(out, alg, ha1, method, uri, nonce,
					nc, cnonce, qop);
	OPENSSL_cleanse(ha1, sizeof(ha1));
	return err;
}

/* ---- nonces ---- */

static const char b64url[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encodes n bytes (a multiple of 3) without padding. */
static void b64_encode(char *out, const unsigned char *in, size_t n)
{
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8
			     | in[i + 2];

		for (int k = 0; k < 4; k++)
			*out++ = b64url[(v >> (18 - 6 * k)) & 63];
	}
	*out = '\0';
}

static int b64_val(char c)
{
	const char *p = c ? strchr(b64url, c) : NULL;

	return p ? (int)(p - b64url) : -1;
}

/* Decodes exactly NONCE_LEN characters into RAW_LEN bytes. */
static bool b64_decode_nonce(unsigned char out[RAW_LEN], const char *s)
{
	if (strnlen(s, NONCE_LEN + 1) != NONCE_LEN)
		return false;
	for (size_t i = 0, o = 0; i < NONCE_LEN; i += 4, o += 3) {
		uint32_t v = 0;

		for (int k = 0; k < 4; k++) {
			int c = b64_val(s[i + k]);

			if (c < 0)
				return false;
			v = v << 6 | (uint32_t)c;
		}
		out[o] = v >> 16;
		out[o + 1] = (v >> 8) & 255;
		out[o + 2] = v & 255;
	}
	return true;
}

/* HMAC over the timestamp and counter bytes, then the realm. */
static bool nonce_tag(const struct digest *d, const unsigned char msg[MSG_LEN],
		      const char *realm, unsigned char tag[TAG_LEN])
{
	unsigned char buf[MSG_LEN + FIELD_MAX];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	size_t rlen = strnlen(realm, FIELD_MAX + 1);

	if (rlen > FIELD_MAX)
		return false;
	memcpy(buf, msg, MSG_LEN);
	memcpy(buf + MSG_LEN, realm, rlen);
	if (!HMAC(EVP_sha256(), d->secret, SECRET_LEN, buf, MSG_LEN + rlen,
		  mac, &maclen) || maclen < TAG_LEN)
		return false;
	memcpy(tag, mac, TAG_LEN);
	return true;
}

void digest_nonce(struct digest *d, const char *realm, int64_t now_ms,
		  char out[DIGEST_NONCE_MAX])
{
	unsigned char raw[RAW_LEN];
	uint64_t ts = (uint64_t)now_ms, ctr = d->counter++;

	for (int i = 0; i < TS_LEN; i++)
		raw[i] = (ts >> (56 - 8 * i)) & 255;
	for (int i = 0; i < CTR_LEN; i++)
		raw[TS_LEN + i] = (ctr >> (40 - 8 * i)) & 255;
	/* Fails only for a realm over FIELD_MAX; "" then never verifies. */
	if (!nonce_tag(d, raw, realm ? realm : "", raw + MSG_LEN)) {
		out[0] = '\0';
		return;
	}
	b64_encode(out, raw, RAW_LEN);
}

/* Authenticates a nonce for realm; on success its issue time in *ts. */
static bool nonce_check(const struct digest *d, const char *nonce,
			const char *realm, int64_t *ts)
{
	unsigned char raw[RAW_LEN], tag[TAG_LEN];
	uint64_t v = 0;

	if (!b64_decode_nonce(raw, nonce) || !nonce_tag(d, raw, realm, tag))
		return false;
	if (CRYPTO_memcmp(tag, raw + MSG_LEN, TAG_LEN))
		return false;
	for (int i = 0; i < TS_LEN; i++)
		v = v << 8 | raw[i];
	*ts = (int64_t)v;
	return true;
}

/*
 * A nonce from the future (the caller's clock went back) counts as fresh:
 * it is authentic, only we could have issued it.
 */
static bool nonce_expired(const struct digest *d, int64_t ts, int64_t now)
{
	return now > ts && now - ts > d->ttl_ms;
}

/* ---- nonce-count table: chained hash over a fixed pool, LRU order ---- */

static uint32_t nc_hash(const struct digest *d, const char *nonce)
{
	uint64_t h = 0xcbf29ce484222325ull ^ d->seed;

	for (size_t i = 0; i < NONCE_LEN; i++) {
		h ^= (unsigned char)nonce[i];
		h *= 0x100000001b3ull;
	}
	return (uint32_t)(h ^ (h >> 32)) & d->mask;
}

static uint32_t nc_find(const struct digest *d, const char *nonce)
{
	uint32_t i = d->buckets[nc_hash(d, nonce)];

	while (i != NIL && memcmp(d->ents[i].nonce, nonce, NONCE_LEN))
		i = d->ents[i].hnext;
	return i;
}

static void lru_unlink(struct digest *d, uint32_t i)
{
	struct nc_ent *e = &d->ents[i];

	if (e->prev != NIL)
		d->ents[e->prev].next = e->next;
	else
		d->lru_head = e->next;
	if (e->next != NIL)
		d->ents[e->next].prev = e->prev;
	else
		d->lru_tail = e->prev;
}

static void lru_append(struct digest *d, uint32_t i)
{
	struct nc_ent *e = &d->ents[i];

	e->prev = d->lru_tail;
	e->next = NIL;
	if (d->lru_tail != NIL)
		d->ents[d->lru_tail].next = i;
	else
		d->lru_head = i;
	d->lru_tail = i;
}

static void nc_remove(struct digest *d, uint32_t i)
{
	uint32_t *pp = &d->buckets[nc_hash(d, d->ents[i].nonce)];

	while (*pp != i)
		pp = &d->ents[*pp].hnext;
	*pp = d->ents[i].hnext;
	lru_unlink(d, i);
	d->ents[i].next = d->free_head;
	d->free_head = i;
	d->count--;
}

/* Frees a slot: expired records first, else the least recently used. */
static void nc_make_room(struct digest *d, int64_t now)
{
	while (d->lru_head != NIL
	       && nonce_expired(d, d->ents[d->lru_head].ts, now))
		nc_remove(d, d->lru_head);
	if (d->free_head == NIL)
		nc_remove(d, d->lru_head);
}

static void nc_insert(struct digest *d, const char *nonce, int64_t ts,
		      uint32_t nc, int64_t now)
{
	uint32_t i, b;
	struct nc_ent *e;

	nc_make_room(d, now);
	i = d->free_head;
	e = &d->ents[i];
	d->free_head = e->next;
	memcpy(e->nonce, nonce, NONCE_LEN + 1);
	e->nc = nc;
	e->ts = ts;
	b = nc_hash(d, nonce);
	e->hnext = d->buckets[b];
	d->buckets[b] = i;
	lru_append(d, i);
	d->count++;
}

/* Records nc for an authenticated nonce unless it is not a new count. */
static enum digest_result nc_accept(struct digest *d, const char *nonce,
				    int64_t ts, uint32_t nc, int64_t now)
{
	uint32_t i = nc_find(d, nonce);

	if (i == NIL) {
		nc_insert(d, nonce, ts, nc, now);
		return DIGEST_OK;
	}
	if (nc <= d->ents[i].nc)
		return DIGEST_REPLAY;
	d->ents[i].nc = nc;
	lru_unlink(d, i);
	lru_append(d, i);
	return DIGEST_OK;
}

size_t digest_nc_count(const struct digest *d)
{
	return d ? d->count : 0;
}

/* ---- lifetime ---- */

static size_t pow2_at_least(size_t n)
{
	size_t p = 8;

	while (p < n)
		p <<= 1;
	return p;
}

int digest_alloc(struct digest **dp, int64_t ttl_ms, size_t max_nc)
{
	struct digest *d;
	size_t nb = pow2_at_least(max_nc);
	int err = ENOMEM;

	if (!dp || ttl_ms <= 0 || !max_nc || max_nc > NC_TABLE_LIMIT)
		return EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return ENOMEM;
	d->ents = calloc(max_nc, sizeof(*d->ents));
	d->buckets = malloc(nb * sizeof(*d->buckets));
	if (!d->ents || !d->buckets)
		goto out;
	if (RAND_bytes(d->secret, SECRET_LEN) != 1
	    || RAND_bytes((unsigned char *)&d->seed, sizeof(d->seed)) != 1
	    || RAND_bytes((unsigned char *)&d->counter, sizeof(d->counter)) != 1) {
		err = EIO;
		goto out;
	}
	memset(d->buckets, 0xff, nb * sizeof(*d->buckets));
	d->mask = (uint32_t)(nb - 1);
	d->max_nc = max_nc;
	d->ttl_ms = ttl_ms;
	d->lru_head = d->lru_tail = NIL;
	for (size_t i = 0; i < max_nc; i++)
		d->ents[i].next = i + 1 < max_nc ? (uint32_t)(i + 1) : NIL;
	d->free_head = 0;
	*dp = d;
	return 0;
 out:
	digest_free(d);
	return err;
}

struct digest *digest_free(struct digest *d)
{
	if (!d)
		return NULL;
	OPENSSL_cleanse(d->secret, SECRET_LEN);
	free(d->ents);
	free(d->buckets);
	free(d);
	return NULL;
}

/* A non-positive ttl would make every nonce stale at once: ignored. */
void digest_set_ttl(struct digest *d, int64_t ttl_ms)
{
	if (d && ttl_ms > 0)
		d->ttl_ms = ttl_ms;
}

/* ---- verification ---- */

static enum digest_result parse_alg(const char *s, enum digest_alg *alg)
{
	if (!s || !strcasecmp(s, "MD5"))
		*alg = DIGEST_MD5;
	else if (!strcasecmp(s, "SHA-256"))
		*alg = DIGEST_SHA256;
	else
		return DIGEST_UNSUPPORTED;      /* -sess, SHA-512-256, ... */
	return DIGEST_OK;
}

/* Parses the 8-hex-digit nonce-count; zero is not a valid count. */
static bool parse_nc(const char *s, uint32_t *nc)
{
	char lc[NC_LEN + 1];

	if (!hex_lower(lc, s, NC_LEN))
		return false;
	*nc = (uint32_t)strtoul(lc, NULL, 16);
	return *nc != 0;
}

/* Everything that can be checked without the secret or the nonce MAC. */
static enum digest_result check_format(const struct digest_resp *r,
				       const char *method, const char *realm,
				       enum digest_alg *alg, uint32_t *nc)
{
	if (!r || !field_ok(method) || !realm || !field_ok(r->username)
	    || !field_ok(r->realm) || !field_ok(r->nonce) || !field_ok(r->uri)
	    || !field_ok(r->response) || !opt_field_ok(r->algorithm)
	    || !opt_field_ok(r->cnonce) || !opt_field_ok(r->qop)
	    || !opt_field_ok(r->nc) || !opt_field_ok(r->opaque))
		return DIGEST_BAD_FORMAT;
	if (parse_alg(r->algorithm, alg) != DIGEST_OK)
		return DIGEST_UNSUPPORTED;
	*nc = 0;
	if (r->qop) {
		if (strcasecmp(r->qop, "auth"))
			return DIGEST_UNSUPPORTED;      /* auth-int */
		if (!field_ok(r->cnonce) || !r->nc || !parse_nc(r->nc, nc))
			return DIGEST_BAD_FORMAT;
	}
	if (strnlen(r->response, FIELD_MAX) != alg_hexlen(*alg))
		return DIGEST_BAD_FORMAT;
	return DIGEST_OK;
}

/*
 * HA1 for this request: from the password, else the stored MD5 HA1. The
 * password hash is computed even when it is not used (dummy password for
 * an unknown user or an HA1-only secret), so every path costs the same.
 * An empty password counts as none. Returns true only if ha1 belongs to a
 * real secret.
 */
static bool make_ha1(char ha1[DIGEST_HEX_MAX], enum digest_alg alg,
		     const struct digest_resp *r,
		     const struct digest_secret *secret)
{
	const char *pw = secret ? secret->password : NULL;
	bool real = field_ok(pw);
	const char *a1[] = { r->username, r->realm,
			     real ? pw : dummy_password };

	if (hash_join(ha1, alg, a1, 3))
		return false;
	if (real)
		return true;
	if (secret && secret->ha1_md5 && alg == DIGEST_MD5)
		return hex_lower(ha1, secret->ha1_md5, 32);
	return false;
}

/* Compares the expected response with the received one, case-insensitive. */
static bool response_matches(const char *want, const char *got, size_t len)
{
	char lc[DIGEST_HEX_MAX];

	if (!hex_lower(lc, got, len))
		return false;
	return CRYPTO_memcmp(want, lc, len) == 0;
}

enum digest_result digest_verify(struct digest *d, const struct digest_resp *r,
				 const char *method, const char *realm,
				 const struct digest_secret *secret, int64_t now_ms)
{
	char ha1[DIGEST_HEX_MAX], want[DIGEST_HEX_MAX];
	enum digest_alg alg;
	enum digest_result res;
	uint32_t nc;
	int64_t ts;
	bool real, match;

	if (!d)
		return DIGEST_BAD_FORMAT;
	res = check_format(r, method, realm, &alg, &nc);
	if (res != DIGEST_OK)
		return res;
	if (strcmp(r->realm, realm))
		return DIGEST_BAD_REALM;
	if (!nonce_check(d, r->nonce, realm, &ts))
		return DIGEST_BAD_NONCE;

	real = make_ha1(ha1, alg, r, secret);
	match = !response_from_ha1(want, alg, ha1, method, r->uri, r->nonce,
				   r->nc, r->cnonce, r->qop)
		&& response_matches(want, r->response, alg_hexlen(alg));
	OPENSSL_cleanse(ha1, sizeof(ha1));
	if (!real || !match)
		return DIGEST_MISMATCH;
	/* stale=true tells the client its credentials were right (RFC 7616). */
	if (nonce_expired(d, ts, now_ms))
		return DIGEST_STALE;
	if (!r->qop)
		return DIGEST_OK;       /* RFC 2069: no nc, expiry is the bound */
	return nc_accept(d, r->nonce, ts, nc, now_ms);
}

/* ---- challenge ---- */

/* A quoted-string value we can emit without escaping. */
static bool quotable(const char *s)
{
	return s && strnlen(s, FIELD_MAX + 1) <= FIELD_MAX
	       && !strpbrk(s, "\"\\\r\n");
}

int digest_challenge(char *out, size_t size, enum digest_alg alg,
		     const char *realm, const char *nonce, bool stale)
{
	int n;

	if (!out || !size || (alg != DIGEST_MD5 && alg != DIGEST_SHA256)
	    || !quotable(realm) || !quotable(nonce))
		return -1;
	n = snprintf(out, size,
		     "Digest realm=\"%s\", nonce=\"%s\", algorithm=%s, "
		     "qop=\"auth\"%s", realm, nonce,
		     alg == DIGEST_SHA256 ? "SHA-256" : "MD5",
		     stale ? ", stale=true" : "");
	if (n < 0 || (size_t)n >= size) {
		out[0] = '\0';
		return -1;
	}
	return n;
}

const char *digest_result_str(enum digest_result r)
{
	static const char *const names[] = {
		[DIGEST_OK] = "ok",
		[DIGEST_BAD_FORMAT] = "bad format",
		[DIGEST_BAD_REALM] = "bad realm",
		[DIGEST_BAD_NONCE] = "bad nonce",
		[DIGEST_STALE] = "stale nonce",
		[DIGEST_REPLAY] = "replayed nonce-count",
		[DIGEST_MISMATCH] = "wrong credentials",
		[DIGEST_UNSUPPORTED] = "unsupported algorithm or qop",
	};

	if ((unsigned)r >= sizeof(names) / sizeof(names[0]) || !names[r])
		return "unknown";
	return names[r];
}
