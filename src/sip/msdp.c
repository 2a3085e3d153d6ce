/*
 * msdp.c: SDP parsing through sofia-sip's parser, and our own SDP text.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

int msdp_build(char *buf, size_t size, const char *ip, uint16_t port,
	       const int *pts, size_t npts, int te_pt, enum msdp_mode mode,
	       uint64_t sess_id, uint64_t version)
{
	const char *ipv = strchr(ip, ':') ? "IP6" : "IP4";
	char fmts[64] = "", maps[256] = "";
	size_t fo = 0, mo = 0;
	int n;

	for (size_t i = 0; i < npts && i < 4; i++) {
		fo += (size_t)snprintf(fmts + fo, sizeof(fmts) - fo, " %d", pts[i]);
		mo += (size_t)snprintf(maps + mo, sizeof(maps) - mo,
				       "a=rtpmap:%d %s/8000\r\n", pts[i],
				       pts[i] == 8 ? "PCMA" : "PCMU");
	}
	if (te_pt >= 0) {
		fo += (size_t)snprintf(fmts + fo, sizeof(fmts) - fo, " %d", te_pt);
		snprintf(maps + mo, sizeof(maps) - mo,
			 "a=rtpmap:%d telephone-event/8000\r\na=fmtp:%d 0-16\r\n",
			 te_pt, te_pt);
	}
	n = snprintf(buf, size,
		     "v=0\r\n"
		     "o=sipcrm %llu %llu IN %s %s\r\n"
		     "s=sipcrm\r\n"
		     "c=IN %s %s\r\n"
		     "t=0 0\r\n"
		     "m=audio %u RTP/AVP%s\r\n"
		     "%s"
		     "a=ptime:20\r\n"
		     "a=%s\r\n",
		     (unsigned long long)sess_id, (unsigned long long)version, ipv, ip,
		     ipv, ip, port, fmts, maps, mode_str(mode));
	return n < 0 || (size_t)n >= size ? -1 : n;
}
