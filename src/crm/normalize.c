/*
 * normalize.c: phone numbers from SIP headers, URIs and people into
 * E.164. The rules are in normalize.h.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "hex.h"
#include "crm/normalize.h"

#define E164_MAX 15
#define E164_MIN 8
#define NATIONAL_MIN 7          /* shorter national numbers are left alone */

/* A country's dialling rules, where they differ from the generic ones. */
struct plan {
	const char *cc;
	const char *intl;       /* international prefix besides "00" */
	const char *trunk;      /* national (trunk) prefix, "" if none */
	size_t nsn;             /* fixed national number length, 0 if not */
};

static const struct plan plans[] = {
	{ "1",   "011",  "1",  10 },
	{ "7",   "810",  "8",  10 },
	{ "36",  NULL,   "06", 0 },
	{ "39",  NULL,   "",   0 },
	{ "61",  "0011", "0",  0 },
	{ "81",  "010",  "0",  0 },
	{ "375", "810",  "80", 0 },
};

static const struct plan generic = { NULL, NULL, "0", 0 };

/* Input text, read with %XX escapes decoded. */
struct cur {
	const char *p;
	const char *end;
};

/* Digits seen; len counts them all, buf keeps those that fit. */
struct digits {
	char *buf;
	size_t size;
	size_t len;
	bool plus;
	bool bad;
};

/* What the parse found in the input. */
struct number {
	struct cur num;         /* the number, before any ';' */
	struct cur ctx;         /* phone-context value, p == NULL if none */
};

struct e164 {
	char d[E164_MAX + 1];
	size_t n;
};

/* Decodes one byte at p into *ch; returns how many bytes it took. */
static size_t dec(const char *p, const char *end, int *ch)
{
	if (*p == '%' && end - p >= 3) {
		int hi = hex_digit((unsigned char)p[1]);
		int lo = hex_digit((unsigned char)p[2]);

		if (hi >= 0 && lo >= 0) {
			*ch = hi << 4 | lo;
			return 3;
		}
	}
	*ch = (unsigned char)*p;
	return 1;
}

/* The k-th decoded byte ahead, or -1 past the end. */
static int peek(const struct cur *c, size_t k)
{
	const char *p = c->p;
	int ch = -1;

	for (;;) {
		if (p >= c->end)
			return -1;
		p += dec(p, c->end, &ch);
		if (!k--)
			return ch;
	}
}

static void skip(struct cur *c, size_t k)
{
	int ch;

	while (k-- && c->p < c->end)
		c->p += dec(c->p, c->end, &ch);
}

static bool is_space(int ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Bytes taken by the visual separator at c, 0 if there is none. */
static size_t sep_len(const struct cur *c)
{
	int a = peek(c, 0), b, x;

	if (is_space(a) || a == 0xa0 || (a > 0 && strchr("-.()/", a)))
		return 1;
	b = peek(c, 1);
	if (a == 0xc2)
		return b == 0xa0 ? 2 : 0;
	x = peek(c, 2);
	if (a == 0xe2 && b == 0x80)             /* U+2000 - U+203F */
		return (x >= 0x80 && x <= 0x8b) || (x >= 0x90 && x <= 0x95) ||
		       x == 0xaf ? 3 : 0;
	if (a == 0xe2 && b == 0x81 && x == 0xa0)        /* U+2060 */
		return 3;
	if (a == 0xe2 && b == 0x88 && x == 0x92)        /* U+2212 */
		return 3;
	if (a == 0xef && b == 0xbb && x == 0xbf)        /* U+FEFF */
		return 3;
	return 0;
}

static bool is_ext(const struct cur *c)
{
	int a = peek(c, 0);

	if (a == ';' || a == ',' || a == '#' || a == 'x' || a == 'X')
		return true;
	if ((a | 0x20) == 'e' && (peek(c, 1) | 0x20) == 'x' &&
	    (peek(c, 2) | 0x20) == 't')
		return true;
	/* "доб" / "Доб": D0 B4 (or D0 94) D0 BE D0 B1 */
	return a == 0xd0 && (peek(c, 1) == 0xb4 || peek(c, 1) == 0x94) &&
	       peek(c, 2) == 0xd0 && peek(c, 3) == 0xbe &&
	       peek(c, 4) == 0xd0 && peek(c, 5) == 0xb1;
}

static void push(struct digits *dg, int ch)
{
	if (dg->len + 1 < dg->size)
		dg->buf[dg->len] = (char)ch;
	dg->len++;
}

/* Reads a number's characters (normalize.h, rule 2) into dg. */
static void scan(struct cur c, struct digits *dg)
{
	int ch;
	size_t k;

	dg->len = 0;
	dg->plus = dg->bad = false;
	while ((ch = peek(&c, 0)) >= 0) {
		if (ch >= '0' && ch <= '9') {
			push(dg, ch);
			skip(&c, 1);
		} else if (ch == '+') {
			if (dg->plus || dg->len)
				dg->bad = true;
			dg->plus = true;
			skip(&c, 1);
		} else if (ch == '(' && dg->len && peek(&c, 1) == '0' &&
			   peek(&c, 2) == ')') {
			skip(&c, 3);    /* "+49 (0)30": 0 is dialled at home only */
		} else if ((k = sep_len(&c))) {
			skip(&c, k);
		} else if (is_ext(&c)) {
			break;
		} else {
			dg->bad = true;
			skip(&c, 1);
		}
	}
	if (dg->size)
		dg->buf[dg->len < dg->size ? dg->len : dg->size - 1] = '\0';
}

/* ASCII case-insensitive, whatever the locale (strncasecmp is not). */
static bool prefix(const char *s, const char *end, const char *pfx)
{
	for (; *pfx; s++, pfx++) {
		if (s >= end)
			return false;
		if ((*s >= 'A' && *s <= 'Z' ? (char)(*s | 0x20) : *s) != *pfx)
			return false;
	}
	return true;
}

static const char *find(const char *s, const char *end, int ch)
{
	return memchr(s, ch, (size_t)(end - s));
}

/* Skips a quoted display name; returns where it ends. */
static const char *skip_quoted(const char *s, const char *end)
{
	for (s++; s < end; s++) {
		if (*s == '\\' && s + 1 < end)
			s++;
		else if (*s == '"')
			return s + 1;
	}
	return end;
}

/* Narrows [*sp, *ep) to the number and its parameters (rule 1). */
static void locate(const char **sp, const char **ep)
{
	const char *s = *sp, *e = *ep, *t;

	while (s < e && is_space((unsigned char)*s))
		s++;
	if (s < e && *s == '"')
		s = skip_quoted(s, e);
	if ((t = find(s, e, '<'))) {
		s = t + 1;
		if ((t = find(s, e, '>')))
			e = t;
	}
	while (s < e && is_space((unsigned char)*s))
		s++;
	if (prefix(s, e, "sip:") || prefix(s, e, "sips:")) {
		s = find(s, e, ':') + 1;
		t = find(s, e, '@');
		e = t ? t : s;
		if ((t = find(s, e, ':')))
			e = t;
	} else if (prefix(s, e, "tel:")) {
		s += 4;
	} else if ((t = find(s, e, '@'))) {
		e = t;
	}
	*sp = s;
	*ep = e;
}

/* Finds the phone-context parameter in [s, e), s at a ';'. */
static void find_ctx(const char *s, const char *e, struct cur *ctx)
{
	static const char name[] = "phone-context=";
	const char *next;

	for (; s < e; s = next) {
		s++;
		next = find(s, e, ';');
		if (!next)
			next = e;
		if (prefix(s, next, name)) {
			ctx->p = s + strlen(name);
			ctx->end = next;
			return;
		}
	}
}

static void parse(const char *in, struct number *nb)
{
	const char *s = in, *e = in + strlen(in), *semi;

	locate(&s, &e);
	semi = find(s, e, ';');
	nb->num.p = s;
	nb->num.end = semi ? semi : e;
	nb->ctx.p = nb->ctx.end = NULL;
	if (semi)
		find_ctx(semi, e, &nb->ctx);
}

static int cat(struct e164 *r, const char *d, size_t n)
{
	if (r->n + n > E164_MAX)
		return EINVAL;
	memcpy(r->d + r->n, d, n);
	r->n += n;
	r->d[r->n] = '\0';
	return 0;
}

static bool starts(const char *d, size_t n, const char *pfx)
{
	size_t k = strlen(pfx);

	return k && n >= k && !memcmp(d, pfx, k);
}

/* Rule 3, the international prefix: its length, 0 if there is none. */
static size_t intl_prefix(const char *d, size_t n, const struct plan *pl)
{
	if (pl->intl && starts(d, n, pl->intl))
		return strlen(pl->intl);
	return starts(d, n, "00") ? 2 : 0;
}

/* Rule 4. */
static int national(struct e164 *r, const char *d, size_t n,
		    const char *cc, const struct plan *pl)
{
	size_t tl = strlen(pl->trunk), cl = strlen(cc);

	if (pl->nsn) {
		if (n == tl + pl->nsn && starts(d, n, pl->trunk))
			d += tl;
		else if (n == cl + pl->nsn && starts(d, n, cc))
			d += cl;
		else if (n != pl->nsn)
			return EINVAL;
		n = pl->nsn;
	} else {
		if (n < NATIONAL_MIN)
			return EINVAL;
		if (starts(d, n, pl->trunk)) {
			d += tl;
			n -= tl;
		}
	}
	if (cat(r, cc, cl))
		return EINVAL;
	return cat(r, d, n);
}

/* Rule 5. */
static bool valid(const struct e164 *r)
{
	if (r->n < E164_MIN || r->d[0] == '0')
		return false;
	if (r->d[0] == '7')
		return r->n == 11 && r->d[1] != '0';
	if (r->d[0] == '1')
		return r->n == 11 && r->d[1] >= '2';
	return true;
}

/* The country code as digits, or NULL (rule 4). */
static const char *country(const char *cc)
{
	size_t n;

	if (!cc)
		return NULL;
	if (*cc == '+')
		cc++;
	n = strspn(cc, "0123456789");
	if (n < 1 || n > 3 || cc[n] || cc[0] == '0')
		return NULL;
	return cc;
}

static const struct plan *plan_of(const char *cc)
{
	if (!cc)
		return &generic;
	for (size_t i = 0; i < sizeof(plans) / sizeof(plans[0]); i++)
		if (!strcmp(plans[i].cc, cc))
			return &plans[i];
	return &generic;
}

/* The E.164 digits (no '+') of the number in nb, or EINVAL. */
static int resolve(const struct number *nb, const char *cc,
		   struct e164 *r)
{
	const struct plan *pl = plan_of(cc);
	char buf[24], cbuf[E164_MAX + 1];
	struct digits dg = { buf, sizeof(buf), 0, false, false };
	struct digits ctx = { cbuf, sizeof(cbuf), 0, false, false };
	size_t k;
	int err;

	scan(nb->num, &dg);
	if (dg.bad || !dg.len || dg.len >= sizeof(buf))
		return EINVAL;
	if (nb->ctx.p)
		scan(nb->ctx, &ctx);
	r->n = 0;
	if (dg.plus)
		err = cat(r, buf, dg.len);
	else if (ctx.plus && !ctx.bad && ctx.len && ctx.len < sizeof(cbuf))
		err = (cat(r, cbuf, ctx.len) || cat(r, buf, dg.len)) ? EINVAL : 0;
	else if ((k = intl_prefix(buf, dg.len, pl)))
		err = cat(r, buf + k, dg.len - k);
	else if (cc)
		err = national(r, buf, dg.len, cc, pl);
	else
		err = EINVAL;
	if (!err && !valid(r))
		err = EINVAL;
	return err;
}

int crm_normalize(const char *in, const char *country_code, char *out,
		  size_t outsz)
{
	struct number nb;
	struct digits dg = { out, outsz, 0, false, false };
	struct e164 r;

	if (!out || !outsz)
		return ENOSPC;
	*out = '\0';
	if (!in)
		return EINVAL;
	parse(in, &nb);
	if (!resolve(&nb, country(country_code), &r)) {
		if (r.n + 2 > outsz)
			return ENOSPC;
		out[0] = '+';
		memcpy(out + 1, r.d, r.n + 1);
		return 0;
	}
	scan(nb.num, &dg);
	if (dg.len >= outsz) {
		*out = '\0';
		return ENOSPC;
	}
	return EINVAL;
}
