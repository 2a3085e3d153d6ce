/*
 * msdp.c: SDP parsing through sofia-sip's parser, and our own SDP text,
 * SDES crypto attributes (RFC 4568) included.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sofia-sip/sdp.h>
#include <sofia-sip/su_alloc.h>

#include "conf.h"
#include "sip/msdp.h"

static int set_addr(struct sockaddr_storage *ss, const char *host, unsigned long port)
{
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (port > 65535)
		return EINVAL;
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		return 0;
	}
	return EINVAL;          /* host names in c= are not resolved */
}

static bool is_null_addr(const char *host)
{
	return !strcmp(host, "0.0.0.0") || !strcmp(host, "::");
}

static int pick_codec(const sdp_media_t *m, unsigned codecs, int *te_pt)
{
	int pt = -1;

	*te_pt = -1;
	for (const sdp_rtpmap_t *rm = m->m_rtpmaps; rm; rm = rm->rm_next) {
		const char *enc = rm->rm_encoding ? rm->rm_encoding : "";

		if (!strcasecmp(enc, "telephone-event") && rm->rm_rate == 8000 &&
		    *te_pt < 0)
			*te_pt = (int)rm->rm_pt;
		if (pt >= 0)
			continue;
		if (rm->rm_pt == 8 && (codecs & CONF_CODEC_PCMA))
			pt = 8;
		else if (rm->rm_pt == 0 && (codecs & CONF_CODEC_PCMU))
			pt = 0;
	}
	return pt;
}

static enum msdp_mode mode_of(const sdp_media_t *m)
{
	switch (m->m_mode) {
	case sdp_sendonly: return MSDP_SENDONLY;
	case sdp_recvonly: return MSDP_RECVONLY;
	case sdp_inactive: return MSDP_INACTIVE;
	default: return MSDP_SENDRECV;
	}
}

static unsigned long rtcp_port(const sdp_media_t *m)
{
	for (const sdp_attribute_t *a = m->m_attributes; a; a = a->a_next)
		if (a->a_name && !strcasecmp(a->a_name, "rtcp") && a->a_value)
			return strtoul(a->a_value, NULL, 10);
	return m->m_port + 1;
}

/* ---- a=crypto ------------------------------------------------------------ */

#define KEY_B64_LEN 40          /* base64 of 30 bytes, no padding */
#define TAG_MAX 999999999ul

static const struct {
	enum media_srtp_suite suite;
	const char *name;
} suites[] = {
	{ MEDIA_SRTP_AES_CM_128_HMAC_SHA1_80, "AES_CM_128_HMAC_SHA1_80" },
	{ MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32, "AES_CM_128_HMAC_SHA1_32" },
};

const char *msdp_suite_name(enum media_srtp_suite s)
{
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		if (suites[i].suite == s)
			return suites[i].name;
	return NULL;
}

static enum media_srtp_suite suite_of(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		if (strlen(suites[i].name) == len && !strncmp(suites[i].name, name, len))
			return suites[i].suite;
	return MEDIA_SRTP_OFF;
}

static bool b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		(c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* "KEYSALT[|lifetime][|mki:len]": only the key and a lifetime are taken;
 * an MKI would need libsrtp's MKI mode and is refused. */
static bool key_param(const char *p, size_t len, uint8_t key[MEDIA_SRTP_KEY_LEN])
{
	uint8_t out[MEDIA_SRTP_KEY_LEN + 3];
	const char *k = p + 7, *end = p + len, *bar;
	size_t klen;
	bool ok;

	if (len < 7 || strncasecmp(p, "inline:", 7))
		return false;
	bar = memchr(k, '|', (size_t)(end - k));
	klen = (size_t)((bar ? bar : end) - k);
	if (klen != KEY_B64_LEN)
		return false;
	for (size_t i = 0; i < klen; i++)
		if (!b64_char(k[i]))
			return false;
	/* what follows the key: a lifetime, never an MKI (it has a ':') */
	if (bar && memchr(bar, ':', (size_t)(end - bar)))
		return false;
	ok = EVP_DecodeBlock(out, (const unsigned char *)k, (int)klen) ==
		MEDIA_SRTP_KEY_LEN;
	if (ok)
		memcpy(key, out, MEDIA_SRTP_KEY_LEN);
	OPENSSL_cleanse(out, sizeof(out));
	return ok;
}

/* Session parameters we can honour: a window size hint (libsrtp uses
 * its own), FEC order, and a key derivation rate of 0. Anything that
 * switches encryption or authentication off, or is unknown, makes the
 * line unusable (RFC 4568 6.3). */
static bool session_params(const char *p)
{
	while (*p) {
		size_t n;

		p += strspn(p, " \t");
		n = strcspn(p, " \t");
		if (!n)
			break;
		if (!(n > 4 && !strncmp(p, "WSH=", 4)) &&
		    !(n > 10 && !strncmp(p, "FEC_ORDER=", 10)) &&
		    !(n == 5 && !strncmp(p, "KDR=0", 5)))
			return false;
		p += n;
	}
	return true;
}

/* "TAG SUITE inline:KEY[|...] [params]" into c; false: not usable. */
static bool crypto_parse(const char *v, struct msdp_crypto *c)
{
	char *end;
	unsigned long tag = strtoul(v, &end, 10);
	size_t n;

	if (end == v || !tag || tag > TAG_MAX || *end != ' ')
		return false;
	v = end + strspn(end, " ");
	n = strcspn(v, " ");
	c->tag = (unsigned)tag;
	c->suite = suite_of(v, n);
	if (c->suite == MEDIA_SRTP_OFF)
		return false;
	v += n;
	v += strspn(v, " ");
	n = strcspn(v, " ");
	/* several key parameters (';') would mean MKIs: not supported */
	if (memchr(v, ';', n) || !key_param(v, n, c->key))
		return false;
	return session_params(v + n);
}

static void crypto_lines(const sdp_media_t *m, struct msdp_info *out)
{
	for (const sdp_attribute_t *a = m->m_attributes; a; a = a->a_next) {
		struct msdp_crypto *c = &out->crypto[out->ncrypto];

		if (out->ncrypto == MSDP_MAX_CRYPTO)
			break;
		if (!a->a_name || strcasecmp(a->a_name, "crypto") || !a->a_value)
			continue;
		if (crypto_parse(a->a_value, c))
			out->ncrypto++;
		else
			OPENSSL_cleanse(c, sizeof(*c));
	}
}

/* ---- parsing ---------------------------------------------------------------- */

static int fill(const sdp_session_t *s, const sdp_media_t *m, unsigned codecs,
		struct msdp_info *out)
{
	const sdp_connection_t *c = m->m_connections ? m->m_connections :
				    s->sdp_connection;
	int pt;

	if (!c || !c->c_address)
		return EINVAL;
	pt = pick_codec(m, codecs, &out->te_pt);
	if (pt < 0)
		return ENOTSUP;
	out->pt = pt;
	out->mode = mode_of(m);
	out->hold = is_null_addr(c->c_address) || out->mode == MSDP_SENDONLY ||
		    out->mode == MSDP_INACTIVE;
	if (set_addr(&out->rtp, c->c_address, m->m_port) ||
	    set_addr(&out->rtcp, c->c_address, rtcp_port(m)))
		return EINVAL;
	out->savp = m->m_proto == sdp_proto_srtp;
	crypto_lines(m, out);
	return 0;
}

static bool token_char(char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= 'A' && ch <= 'Z') || (ch && strchr("!#$%&'*+-.^_`{|}~", ch));
}

/*
 * sofia-sip's sdp_parse() never returns on some malformed m= lines (a
 * port that is not a number, a format that is not a token, trailing
 * white space, a '/' where a format starts: found by t/fuzz), so every
 * m= line must have RFC 4566's shape, m=<media> <port>[/<n>] <proto>
 * <fmt> ..., before sofia sees it. CR and LF each end a line, as they do
 * for sofia.
 */
static bool media_lines_ok(const char *body, size_t len)
{
	const char *p = body, *end = body + len;

	while (p < end) {
		const char *le = p, *q;
		int field = 0;

		while (le < end && *le != '\r' && *le != '\n')
			le++;
		if (le > p && (*p == ' ' || *p == '\t'))
			return false;   /* no SDP line starts with white space */
		if (le - p >= 2 && p[0] == 'm' && p[1] == '=') {
			for (q = p + 2; q < le; field++) {
				const char *t = q;

				/* '/' only in the port (8000/2) and the proto (RTP/AVP) */
				while (q < le && (token_char(*q) ||
						  (*q == '/' && (field == 1 || field == 2))))
					q++;
				if (q == t)
					return false;   /* empty field or a bad byte */
				if (field == 1) {
					/* the port: digits, optionally /digits */
					for (const char *d = t; d < q; d++)
						if ((*d < '0' || *d > '9') && *d != '/')
							return false;
				}
				if (q < le && *q++ != ' ')
					return false;
				if (q == le && q[-1] == ' ')
					return false;   /* trailing space */
			}
			if (field < 4)
				return false;
		}
		p = le < end ? le + 1 : end;
	}
	return true;
}

int msdp_parse(const char *body, size_t len, unsigned codecs,
	       struct msdp_info *out)
{
	su_home_t home[1] = { SU_HOME_INIT(home) };
	sdp_parser_t *p;
	sdp_session_t *s;
	int e = EINVAL;

	memset(out, 0, sizeof(*out));
	out->te_pt = -1;
	if (!body || !len || len > 65536 || !media_lines_ok(body, len))
		return EINVAL;
	p = sdp_parse(home, body, (issize_t)len, sdp_f_config);
	s = p ? sdp_session(p) : NULL;
	for (const sdp_media_t *m = s ? s->sdp_media : NULL; m; m = m->m_next) {
		if (m->m_type != sdp_media_audio || m->m_port == 0 || m->m_rejected)
			continue;
		/* RTP/SAVPF, UDP/TLS/RTP/SAVP (DTLS) and the like: not ours */
		if (m->m_proto != sdp_proto_rtp && m->m_proto != sdp_proto_srtp) {
			e = ENOTSUP;
			continue;
		}
		e = fill(s, m, codecs, out);
		if (s->sdp_origin) {
			out->sess_id = s->sdp_origin->o_id;
			out->version = s->sdp_origin->o_version;
		}
		break;
	}
	sdp_parser_free(p);
	su_home_deinit(home);
	return e;
}

static const char *mode_str(enum msdp_mode m)
{
	static const char *const s[] = { "sendrecv", "sendonly", "recvonly", "inactive" };

	return s[m];
}

enum msdp_mode msdp_answer_mode(enum msdp_mode offered)
{
	switch (offered) {
	case MSDP_SENDONLY: return MSDP_RECVONLY;
	case MSDP_RECVONLY: return MSDP_SENDONLY;
	case MSDP_INACTIVE: return MSDP_INACTIVE;
	default: return MSDP_SENDRECV;
	}
}

/* The a=crypto lines into cry; false if they do not fit. */
static bool crypto_text(char *cry, size_t size, const struct msdp_out *o)
{
	size_t off = 0;

	cry[0] = '\0';
	for (size_t i = 0; i < o->ncrypto; i++) {
		const char *name = msdp_suite_name(o->crypto[i].suite);
		char b64[KEY_B64_LEN + 4];
		int n;

		if (!name)
			continue;
		EVP_EncodeBlock((unsigned char *)b64, o->crypto[i].key,
				MEDIA_SRTP_KEY_LEN);
		n = snprintf(cry + off, size - off, "a=crypto:%u %s inline:%s\r\n",
			     o->crypto[i].tag, name, b64);
		OPENSSL_cleanse(b64, sizeof(b64));
		if (n < 0 || (size_t)n >= size - off)
			return false;
		off += (size_t)n;
	}
	return true;
}

int msdp_write(char *buf, size_t size, const struct msdp_out *o)
{
	const char *ipv = strchr(o->ip, ':') ? "IP6" : "IP4";
	char fmts[64] = "", maps[256] = "", cry[MSDP_MAX_CRYPTO * 96];
	size_t fo = 0, mo = 0;
	int n;

	for (size_t i = 0; i < o->npts && i < 4; i++) {
		fo += (size_t)snprintf(fmts + fo, sizeof(fmts) - fo, " %d", o->pts[i]);
		mo += (size_t)snprintf(maps + mo, sizeof(maps) - mo,
				       "a=rtpmap:%d %s/8000\r\n", o->pts[i],
				       o->pts[i] == 8 ? "PCMA" : "PCMU");
	}
	if (o->te_pt >= 0) {
		fo += (size_t)snprintf(fmts + fo, sizeof(fmts) - fo, " %d", o->te_pt);
		snprintf(maps + mo, sizeof(maps) - mo,
			 "a=rtpmap:%d telephone-event/8000\r\na=fmtp:%d 0-16\r\n",
			 o->te_pt, o->te_pt);
	}
	if (o->ncrypto > MSDP_MAX_CRYPTO || !crypto_text(cry, sizeof(cry), o))
		return -1;
	n = snprintf(buf, size,
		     "v=0\r\n"
		     "o=sipcrm %llu %llu IN %s %s\r\n"
		     "s=sipcrm\r\n"
		     "c=IN %s %s\r\n"
		     "t=0 0\r\n"
		     "m=audio %u %s%s\r\n"
		     "%s"
		     "%s"
		     "a=ptime:20\r\n"
		     "a=%s\r\n",
		     (unsigned long long)o->sess_id, (unsigned long long)o->version,
		     ipv, o->ip, ipv, o->ip, o->port, o->savp ? "RTP/SAVP" : "RTP/AVP",
		     fmts, maps, cry, mode_str(o->mode));
	OPENSSL_cleanse(cry, sizeof(cry));
	return n < 0 || (size_t)n >= size ? -1 : n;
}

int msdp_build(char *buf, size_t size, const char *ip, uint16_t port,
	       const int *pts, size_t npts, int te_pt, enum msdp_mode mode,
	       uint64_t sess_id, uint64_t version)
{
	struct msdp_out o = {
		.ip = ip, .port = port, .pts = pts, .npts = npts, .te_pt = te_pt,
		.mode = mode, .sess_id = sess_id, .version = version,
	};

	return msdp_write(buf, size, &o);
}

/*
 * Our own plain SDP (from msdp_write) as RTP/SAVP with crypto lines: the
 * same session, version and formats, so that one offer can go out plain
 * to some branches and secure to others.
 */
int msdp_secure(char *dst, size_t size, const char *plain,
		const struct msdp_crypto *c, size_t n)
{
	struct msdp_out o = { .crypto = c, .ncrypto = n };
	char cry[MSDP_MAX_CRYPTO * 96];
	const char *m = strstr(plain, "\r\nm=audio "), *avp, *ptime;
	int len;

	if (!m || n > MSDP_MAX_CRYPTO || !crypto_text(cry, sizeof(cry), &o))
		return -1;
	avp = strstr(m, " RTP/AVP ");
	ptime = strstr(m, "\r\na=ptime:");
	if (!avp || !ptime || avp > ptime) {
		OPENSSL_cleanse(cry, sizeof(cry));
		return -1;
	}
	len = snprintf(dst, size, "%.*s RTP/SAVP %.*s\r\n%s%s",
		       (int)(avp - plain), plain,
		       (int)(ptime - (avp + 9)), avp + 9, cry, ptime + 2);
	OPENSSL_cleanse(cry, sizeof(cry));
	return len < 0 || (size_t)len >= size ? -1 : len;
}

/* ---- keys ---------------------------------------------------------------------- */

int msdp_crypto_offer(struct msdp_crypto *c, size_t max)
{
	static const enum media_srtp_suite order[] = {
		MEDIA_SRTP_AES_CM_128_HMAC_SHA1_80, MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32,
	};
	size_t n = 0;

	for (; n < max && n < sizeof(order) / sizeof(order[0]); n++) {
		c[n].tag = (unsigned)n + 1;
		c[n].suite = order[n];
		if (media_srtp_keygen(c[n].key)) {
			OPENSSL_cleanse(c, n * sizeof(*c));
			return -1;
		}
	}
	return (int)n;
}

int msdp_crypto_answer(const struct msdp_crypto *theirs, struct msdp_crypto *ours)
{
	ours->tag = theirs->tag;
	ours->suite = theirs->suite;
	return media_srtp_keygen(ours->key);
}

const struct msdp_crypto *msdp_crypto_find(const struct msdp_crypto *list,
					   size_t n, unsigned tag)
{
	for (size_t i = 0; i < n; i++)
		if (list[i].tag == tag)
			return &list[i];
	return NULL;
}

int msdp_srtp_keys(const struct msdp_crypto *ours, const struct msdp_crypto *theirs,
		   struct media_srtp *out)
{
	memset(out, 0, sizeof(*out));
	if (!ours || !theirs || ours->suite != theirs->suite ||
	    ours->suite == MEDIA_SRTP_OFF)
		return EINVAL;
	out->suite = ours->suite;
	memcpy(out->tx_key, ours->key, MEDIA_SRTP_KEY_LEN);
	memcpy(out->rx_key, theirs->key, MEDIA_SRTP_KEY_LEN);
	return 0;
}

/* ---- logging -------------------------------------------------------------------- */

size_t msdp_redact(char *dst, size_t size, const char *text, size_t len)
{
	static const char mark[] = "[redacted]";
	size_t i = 0, o = 0;

	if (!size)
		return 0;
	while (i < len && o + 1 < size) {
		if (len - i >= 7 && !strncasecmp(text + i, "inline:", 7)) {
			size_t w = size - 1 - o < 7 ? size - 1 - o : 7;

			memcpy(dst + o, text + i, w);
			o += w;
			i += 7;
			while (i < len && !strchr("|; \t\r\n", text[i]))
				i++;
			w = size - 1 - o < sizeof(mark) - 1 ? size - 1 - o :
				sizeof(mark) - 1;
			memcpy(dst + o, mark, w);
			o += w;
			continue;
		}
		dst[o++] = text[i++];
	}
	dst[o] = '\0';
	return o;
}
