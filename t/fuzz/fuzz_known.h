/*
 * fuzz_known.h: known bugs in libraries, so that a fuzzing session can
 * step around one that is already reported and look for the next.
 *
 * Only with FUZZ_SKIP_KNOWN set in the environment; by default every
 * harness runs into them, so fuzz-smoke and the regression inputs keep
 * failing until the bug is fixed or worked around in src/.
 */
#ifndef SIPCRM_FUZZ_KNOWN_H
#define SIPCRM_FUZZ_KNOWN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static inline bool fuzz_skip_known(void)
{
	static int skip = -1;

	if (skip < 0)
		skip = getenv("FUZZ_SKIP_KNOWN") != NULL;
	return skip;
}

/*
 * sofia-sip (1.12.11, and 1.13 upstream) sdp_parse() never returns on an
 * m= line whose proto is not RTP when its format list has, where a format
 * should start, a byte that is not a token character: "m=audio 0 X <",
 * "m=audio 0U /8400", or only white space after the proto ("m=audio 0 X"
 * and a tab). parse_media() loops on token(), which returns NULL without
 * moving on, and allocates a list node each time round: the thread spins
 * and eats memory until the process dies.
 *
 * This walks each m= line as parse_media() does and says whether it
 * would loop, or would have with a proto this sofia-sip takes for non-RTP
 * (the check does not depend on which protos are RTP: it refuses any
 * format that is not a token). Valid SDP never trips it, so msdp_parse()
 * can call the same check first and refuse such a body (EINVAL, 400) as
 * the workaround.
 * Lines end at CR or LF; the body ends at len or at a NUL (sdp_parse copies
 * it with strncpy).
 */
#define FUZZ_SDP_TOKEN "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" \
		       "0123456789-!#$%&'*+.^_`{|}~"

/* How many bytes of s[0..n) are in set. */
static inline size_t fuzz_span(const char *s, size_t n, const char *set)
{
	size_t i = 0;

	while (i < n && s[i] && strchr(set, s[i]))
		i++;
	return i;
}

/*
 * sofia's token(): skips strip, takes legal bytes; NULL (and no move) if
 * none; else ends the token at the next byte (whatever it is), skips sep.
 */
static inline bool fuzz_token(const char **r, const char *end, const char *sep,
			      const char *legal, const char *strip)
{
	const char *t = *r;
	size_t n;

	t += strip ? fuzz_span(t, (size_t)(end - t), strip) : 0;
	n = fuzz_span(t, (size_t)(end - t), legal);
	if (n == 0)
		return false;
	if (t + n < end) {
		n++;
		n += fuzz_span(t + n, (size_t)(end - t - n), sep);
	}
	*r = t + n;
	return true;
}

/* sofia's parse_ul(): white space, strtoul, white space. */
static inline bool fuzz_ul(const char **r, const char *end)
{
	const char *p = *r + fuzz_span(*r, (size_t)(end - *r), " \t");
	const char *q;

	/* strtoul: more white space, a sign, then digits */
	while (p < end && (*p == ' ' || (*p >= '\t' && *p <= '\r')))
		p++;
	if (p < end && (*p == '+' || *p == '-'))
		p++;
	q = p;
	while (q < end && *q >= '0' && *q <= '9')
		q++;
	if (q == p)
		return false;
	*r = q + fuzz_span(q, (size_t)(end - q), " \t");
	return true;
}

/* One m= line's content (after "m=" and white space), [r, end). */
static inline bool fuzz_media_loops(const char *r, const char *end)
{
	if (!fuzz_token(&r, end, " ", FUZZ_SDP_TOKEN, NULL))
		return false;                   /* media: an error */
	if (!fuzz_ul(&r, end))
		return false;                   /* port */
	if (r < end && *r == '/') {
		r++;
		if (!fuzz_ul(&r, end))
			return false;
	}
	if (!fuzz_token(&r, end, " ", "/" FUZZ_SDP_TOKEN, " "))
		return false;                   /* proto */
	/* Which protos sofia reads as RTP payload numbers (no loop) depends
	   on its version: 1.12.11 knows RTP/AVP and RTP/SAVP only, so
	   "m=o 6RTP/AVPF =" loops there. Formats that are not tokens are
	   refused whatever the proto: valid SDP has none. */
	while (r < end)
		if (!fuzz_token(&r, end, " \t", FUZZ_SDP_TOKEN, " \t"))
			return true;            /* stuck with bytes left */
	return false;
}

static inline bool fuzz_sdp_would_loop(const char *body, size_t len)
{
	const char *p = body, *end;

	end = memchr(body, '\0', len);
	if (!end)
		end = body + len;
	while (p < end) {
		const char *e = p;

		while (e < end && *e != '\r' && *e != '\n')
			e++;
		p += fuzz_span(p, (size_t)(e - p), " \t");
		if (e - p >= 2 && p[0] == 'm' && p[1] == '=') {
			const char *r = p + 2;

			r += fuzz_span(r, (size_t)(e - r), " \t");
			if (fuzz_media_loops(r, e))
				return true;
		}
		p = e + fuzz_span(e, (size_t)(end - e), "\r\n");
	}
	return false;
}

#endif
