/*
 * crm_normalize.c: phone numbers from SIP into E.164 (crm/normalize.h).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "crm/normalize.h"

struct tc {
	const char *in;
	const char *cc;
	int rc;
	const char *out;
};

#define OK(in, cc, out)  { in, cc, 0, out }
#define BAD(in, cc, out) { in, cc, EINVAL, out }

static const struct tc cases[] = {
	/* Russia, the CONTRACT's own examples and their spellings */
	OK("89161234567", "7", "+79161234567"),
	OK("+79161234567", "7", "+79161234567"),
	OK("79161234567", "7", "+79161234567"),
	OK("9161234567", "7", "+79161234567"),
	OK("+7 (916) 123-45-67", "7", "+79161234567"),
	OK("8-916-123-45-67", "7", "+79161234567"),
	OK("+7.916.123.45.67", "7", "+79161234567"),
	OK("8\xc2\xa0" "916\xc2\xa0" "123\xc2\xa0" "45\xc2\xa0" "67", "7",
	   "+79161234567"),
	OK("8\xa0" "916\xa0" "1234567", "7", "+79161234567"),
	OK("+7\xe2\x80\x91" "916\xe2\x80\x91" "123\xe2\x80\x93" "45 67", "7",
	   "+79161234567"),
	OK("8/916/1234567", "7", "+79161234567"),
	OK("(+7) 916 1234567", "7", "+79161234567"),
	OK("\t +7 916 123 45 67 \r\n", "7", "+79161234567"),
	OK("8 (800) 555-35-35", "7", "+78005553535"),
	OK("8 (495) 123-45-67", "7", "+74951234567"),
	/* Kazakhstan shares zone 7 */
	OK("+7 701 234 5678", "7", "+77012345678"),
	OK("87012345678", "7", "+77012345678"),
	OK("8 (727) 250-12-34", "7", "+77272501234"),
	/* URIs and headers */
	OK("tel:+79161234567", "7", "+79161234567"),
	OK("tel:+7-916-123-45-67;phone-context=example.com", "7",
	   "+79161234567"),
	OK("TEL:89161234567", "7", "+79161234567"),
	OK("sip:+79161234567@host;user=phone", "7", "+79161234567"),
	OK("<sip:89161234567@10.0.0.1:5060>", "7", "+79161234567"),
	OK("\"Ivan\" <sip:89161234567@10.0.0.1>;tag=as5f3e", "7",
	   "+79161234567"),
	OK("\"Ivan \\\"<2>\\\" 8916\" <sips:+79161234567@pbx.example.com>", "7",
	   "+79161234567"),
	OK("Ivan Petrov <sip:79161234567@trunk.example.net;transport=udp>",
	   "7", "+79161234567"),
	OK("SIP:79161234567@host", "7", "+79161234567"),
	OK("sip:+7-916-123-45-67;phone-context=+7@host;user=phone", "7",
	   "+79161234567"),
	OK("sip:%2B79161234567@host", "7", "+79161234567"),
	OK("sip:8%20916%20123%2045%2067@host", "7", "+79161234567"),
	OK("sip:89161234567:secret@host", "7", "+79161234567"),
	OK("<sip:89161234567@host", "7", "+79161234567"),
	OK("89161234567@10.0.0.1", "7", "+79161234567"),
	OK("tel:1234567;phone-context=+7-495", "7", "+74951234567"),
	OK("tel:7042;phone-context=+49-30-1234", NULL, "+493012347042"),
	BAD("tel:863-1234;phone-context=+1-914-555", NULL, "8631234"),
	/* international prefixes */
	OK("0079161234567", "7", "+79161234567"),
	OK("81049301234567", "7", "+49301234567"),
	OK("8 10 44 20 7946 0018", "7", "+442079460018"),
	OK("+1 (212) 555-0100", "7", "+12125550100"),
	OK("0049 30 1234567", NULL, "+49301234567"),
	OK("+49 30 1234567", "", "+49301234567"),
	/* extensions are dropped */
	OK("89161234567;ext=123", "7", "+79161234567"),
	OK("tel:+79161234567;ext=123", "7", "+79161234567"),
	OK("+7 916 123-45-67 ext. 123", "7", "+79161234567"),
	OK("+7 916 123-45-67 EXT 123", "7", "+79161234567"),
	OK("+7 916 123-45-67 x123", "7", "+79161234567"),
	OK("89161234567#123", "7", "+79161234567"),
	OK("89161234567,123", "7", "+79161234567"),
	OK("+7 495 123-45-67 \xd0\xb4\xd0\xbe\xd0\xb1. 1234", "7",
	   "+74951234567"),
	OK("+7 495 123-45-67, \xd0\x94\xd0\xbe\xd0\xb1 1234", "7",
	   "+74951234567"),
	/* Germany, UK: trunk 0, and the "(0)" of international spellings */
	OK("030 1234567", "49", "+49301234567"),
	OK("0049 30 1234567", "49", "+49301234567"),
	OK("+49 (0)30 1234567", "49", "+49301234567"),
	OK("301234567", "49", "+49301234567"),
	OK("0171 2345678", "49", "+491712345678"),
	OK("020 7946 0018", "44", "+442079460018"),
	OK("+44 (0)20 7946 0018", "7", "+442079460018"),
	OK("07700 900123", "44", "+447700900123"),
	/* NANP */
	OK("(212) 555-0100", "1", "+12125550100"),
	OK("1-212-555-0100", "1", "+12125550100"),
	OK("212.555.0100", "1", "+12125550100"),
	OK("+1 800 555 0100", "1", "+18005550100"),
	OK("011 49 30 1234567", "1", "+49301234567"),
	/* the other plans in the table */
	OK("06 1234 5678", "39", "+390612345678"),
	OK("333 123 4567", "39", "+393331234567"),
	OK("06 1 234 5678", "36", "+3612345678"),
	OK("8 029 123-45-67", "375", "+375291234567"),
	OK("810 7 916 123 45 67", "375", "+79161234567"),
	OK("0011 49 30 1234567", "61", "+49301234567"),
	OK("02 9876 5432", "61", "+61298765432"),
	OK("03-1234-5678", "81", "+81312345678"),
	OK("010 1 212 555 0100", "81", "+12125550100"),
	/* the country code itself */
	OK("89161234567", "+7", "+79161234567"),
	BAD("89161234567", "7a", "89161234567"),
	BAD("89161234567", "0", "89161234567"),
	BAD("89161234567", "1234", "89161234567"),
	OK("+79161234567", "bogus", "+79161234567"),
	/* no country code: only international forms */
	BAD("89161234567", "", "89161234567"),
	BAD("89161234567", NULL, "89161234567"),
	BAD("030 1234567", NULL, "0301234567"),
	/* short numbers are not normalised */
	BAD("112", "7", "112"),
	BAD("101", "7", "101"),
	BAD("sip:101@10.0.0.1", "7", "101"),
	BAD("112", "49", "112"),
	BAD("123456", "49", "123456"),
	BAD("911", "1", "911"),
	BAD("1234567", "7", "1234567"),
	BAD("555-0100", "1", "5550100"),
	BAD("tel:1234567;phone-context=moscow.example.ru", "7", "1234567"),
	/* anonymous and garbage */
	BAD("anonymous", "7", ""),
	BAD("Anonymous", "7", ""),
	BAD("unknown", "7", ""),
	BAD("", "7", ""),
	BAD(NULL, "7", ""),
	BAD("abc", "7", ""),
	BAD("+", "7", ""),
	BAD("++7916", "7", "7916"),
	BAD("7+9161234567", "7", "79161234567"),
	BAD("+7916abc1234567", "7", "79161234567"),
	BAD("1-800-FLOWERS", "1", "1800"),
	BAD("*67 8916 1234567", "7", "6789161234567"),
	BAD("sip:anonymous@anonymous.invalid", "7", ""),
	BAD("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1", "7", ""),
	BAD("sip:+79161234567", "7", ""),
	BAD("sip:10.0.0.1", "7", ""),
	BAD("<>", "7", ""),
	BAD("tel:", "7", ""),
	BAD("\"89161234567", "7", ""),
	BAD("x89161234567", "7", ""),
	BAD("8916%001234567", "7", "89161234567"),
	BAD("8916%2", "7", "89162"),
	/* too long, too short, impossible */
	BAD("+1234567890123456", "7", "1234567890123456"),
	BAD("8916123456789012345678901234567890", "7",
	    "8916123456789012345678901234567890"),
	BAD("+7916123456", "7", "7916123456"),
	BAD("+791612345678", "7", "791612345678"),
	BAD("+70161234567", "7", "70161234567"),
	BAD("+1 112 555 0100", "1", "11125550100"),
	BAD("+4930123", "49", "4930123"),
	BAD("+0123456789", "7", "0123456789"),
	BAD("0012", "7", "0012"),
	BAD("8 10", "7", "810"),
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* A printable copy of s for test names. */
static const char *show(const char *s, char *buf, size_t size)
{
	size_t n = 0;

	if (!s)
		return "(null)";
	for (; *s && n + 5 < size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c >= 0x20 && c < 0x7f)
			buf[n++] = (char)c;
		else
			n += (size_t)snprintf(buf + n, size - n, "\\x%02x", c);
	}
	buf[n] = '\0';
	return buf;
}

static void table(void)
{
	char out[64], name[160];

	for (size_t i = 0; i < NCASES; i++) {
		const struct tc *t = &cases[i];
		int rc = crm_normalize(t->in, t->cc, out, sizeof(out));

		show(t->in, name, sizeof(name));
		ok(rc == t->rc && !strcmp(out, t->out),
		   "'%s' cc %s -> %s '%s'", name, t->cc ? t->cc : "(null)",
		   t->rc ? "EINVAL" : "0", t->out);
		if (rc != t->rc || strcmp(out, t->out))
			printf("#   expected %d '%s', got %d '%s'\n",
			       t->rc, t->out, rc, out);
	}
}

static bool all_digits(const char *s)
{
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* The contract of a call with enough room: 0 or EINVAL, and out's form. */
static const char *check_form(int rc, const char *out)
{
	size_t n = strlen(out);

	if (rc == 0) {
		if (out[0] != '+' || !all_digits(out + 1))
			return "0 but not '+digits'";
		if (n - 1 < 8 || n - 1 > 15)
			return "0 but not 8-15 digits";
		if (out[1] == '0')
			return "0 but leading 0";
		return NULL;
	}
	if (rc == EINVAL)
		return all_digits(out) ? NULL : "EINVAL but not digits";
	return "neither 0 nor EINVAL";
}

static const char *const fuzz_cc[] = {
	NULL, "", "7", "1", "44", "49", "39", "36", "61", "81", "375", "+7",
	"x", "1234",
};

#define NFUZZ_CC (sizeof(fuzz_cc) / sizeof(fuzz_cc[0]))

static const char alphabet[] =
	"0123456789000888777+++  --..()//;;,,##xXeEtT<>\"@:%2Bsiptel"
	"\xc2\xa0\xe2\x80\x91\xd0\xb4\xbe\xb1";

enum fuzz_mode { UNIFORM, BIASED, MUTATED };

static char random_byte(enum fuzz_mode mode)
{
	if (mode == UNIFORM)
		return (char)(1 + rand() % 255);
	return alphabet[rand() % (int)(sizeof(alphabet) - 1)];
}

/* A table input with a few bytes replaced, inserted or deleted. */
static void mutate(char *buf, size_t size)
{
	const struct tc *t;
	size_t len;

	do
		t = &cases[(size_t)rand() % NCASES];
	while (!t->in);
	len = (size_t)snprintf(buf, size, "%s", t->in);
	len = len < size ? len : size - 1;
	for (int k = 1 + rand() % 3; k > 0; k--) {
		size_t at = len ? (size_t)rand() % len : 0;

		switch (rand() % 3) {
		case 0:
			if (len)
				buf[at] = random_byte(BIASED);
			break;
		case 1:
			if (len + 1 < size) {
				memmove(buf + at + 1, buf + at, len - at + 1);
				buf[at] = random_byte(BIASED);
				len++;
			}
			break;
		default:
			if (len) {
				memmove(buf + at, buf + at + 1, len - at);
				len--;
			}
			break;
		}
	}
}

/* One random input, up to 64 bytes; NUL-free, NUL-terminated. */
static void random_input(char *buf, size_t size, enum fuzz_mode mode)
{
	size_t len = (size_t)(rand() % 65);

	if (mode == MUTATED) {
		mutate(buf, size);
		return;
	}
	for (size_t i = 0; i < len; i++)
		buf[i] = random_byte(mode);
	buf[len] = '\0';
}

/*
 * Runs one call into a buffer with a canary after it; returns a
 * complaint or NULL.
 */
static const char *fuzz_one(const char *in, const char *cc, int *good)
{
	static char again[80];
	char out[81];
	const char *why;
	int rc;

	memset(out, 0x5a, sizeof(out));
	rc = crm_normalize(in, cc, out, sizeof(out) - 1);
	if (out[sizeof(out) - 1] != 0x5a)
		return "canary overwritten";
	if (!memchr(out, '\0', sizeof(out) - 1))
		return "out not NUL-terminated";
	if ((why = check_form(rc, out)))
		return why;
	if (rc)
		return NULL;
	(*good)++;
	/* A result is a fixed point. */
	if (crm_normalize(out, cc, again, sizeof(again)) ||
	    strcmp(out, again))
		return "result does not normalise to itself";
	return NULL;
}

static void fuzz(enum fuzz_mode mode, int rounds)
{
	static const char *const what[] = {
		"uniform", "SIP-flavoured", "mutated table",
	};
	char in[80], name[400];
	const char *why = NULL;
	int bad = 0, good = 0;

	for (int i = 0; i < rounds; i++) {
		const char *cc = fuzz_cc[(size_t)rand() % NFUZZ_CC];
		const char *w;

		random_input(in, sizeof(in), mode);
		w = fuzz_one(in, cc, &good);
		if (w && !bad++) {
			why = w;
			show(in, name, sizeof(name));
		}
	}
	is_int(bad, 0, "%d %s random inputs: 0 or EINVAL, '+digits' or "
	       "digits, NUL within outsz, canary kept, results stable",
	       rounds, what[mode]);
	if (bad)
		printf("#   first: %s on '%s'\n", why, name);
	if (mode == MUTATED)
		ok(good > rounds / 10, "mutated inputs still reach the success "
		   "path (%d of %d)", good, rounds);
}

static const char *const seps[] = {
	"", "", "", " ", "-", ".", "\xc2\xa0", "\xe2\x80\x91", " - ",
};

static const char *const leads[] = {
	"8", "+7", "7", "", "007", "8107", "8 10 7 ", "+7 (", "8 (", "(+7) ",
};

#define NSEPS (sizeof(seps) / sizeof(seps[0]))
#define NLEADS (sizeof(leads) / sizeof(leads[0]))

/* A random Russian mobile, spelt as people and trunks spell them. */
static void spell(char *buf, size_t size, char *want)
{
	char num[64], nsn[11];
	size_t n;

	nsn[0] = '9';
	for (int i = 1; i < 10; i++)
		nsn[i] = (char)('0' + rand() % 10);
	nsn[10] = '\0';
	snprintf(want, 13, "+7%s", nsn);
	n = (size_t)snprintf(num, sizeof(num), "%s",
			     leads[(size_t)rand() % NLEADS]);
	for (int i = 0; i < 10; i++) {
		n += (size_t)snprintf(num + n, sizeof(num) - n, "%s%c",
				      i ? seps[(size_t)rand() % NSEPS] : "",
				      nsn[i]);
	}
	switch (rand() % 5) {
	case 0:
		snprintf(buf, size, "%s", num);
		break;
	case 1:
		snprintf(buf, size, "tel:%s;ext=%d", num, rand() % 1000);
		break;
	case 2:
		snprintf(buf, size, "sip:%s@10.0.0.1;user=phone", num);
		break;
	case 3:
		snprintf(buf, size, "\"Client %d\" <sip:%s@h:5060>;tag=x",
			 rand() % 100, num);
		break;
	default:
		snprintf(buf, size, "%s \xd0\xb4\xd0\xbe\xd0\xb1. %d", num,
			 rand() % 100);
		break;
	}
}

static void spellings(int rounds)
{
	char in[160], want[16], out[CRM_E164_SIZE], name[400];
	int bad = 0;

	for (int i = 0; i < rounds; i++) {
		int rc;

		spell(in, sizeof(in), want);
		rc = crm_normalize(in, "7", out, sizeof(out));
		if (rc == 0 && !strcmp(out, want))
			continue;
		if (!bad++) {
			show(in, name, sizeof(name));
			printf("#   '%s': expected '%s', got %d '%s'\n",
			       name, want, rc, out);
		}
	}
	is_int(bad, 0, "%d random spellings of Russian mobiles", rounds);
}

/* out of size outsz (heap, exact) plus one canary byte. */
static int call_sized(const char *in, const char *cc, size_t outsz,
		      char *got, size_t gotsz, bool *intact)
{
	char *buf = malloc(outsz + 1);
	int rc;

	memset(buf, 0x5a, outsz + 1);
	rc = crm_normalize(in, cc, buf, outsz);
	*intact = buf[outsz] == 0x5a;
	if (outsz && memchr(buf, '\0', outsz))
		snprintf(got, gotsz, "%s", buf);
	else
		snprintf(got, gotsz, "%s", outsz ? "(no NUL)" : "");
	if (!outsz && buf[0] != 0x5a)
		*intact = false;
	free(buf);
	return rc;
}

static void sizes(const char *in, const char *cc, int want_rc,
		  const char *want)
{
	size_t need = strlen(want) + 1;
	char got[64];
	bool intact;

	for (size_t sz = 0; sz <= need; sz++) {
		int rc = call_sized(in, cc, sz, got, sizeof(got), &intact);
		int erc = sz < need ? ENOSPC : want_rc;
		const char *eout = sz < need ? "" : want;

		ok(rc == erc && !strcmp(got, eout) && intact,
		   "'%s' into %zu bytes -> %d '%s', canary kept",
		   in, sz, erc, eout);
		if (rc != erc || strcmp(got, eout) || !intact)
			printf("#   got %d '%s', canary %s\n", rc, got,
			       intact ? "kept" : "OVERWRITTEN");
	}
}

static void small_buffers(void)
{
	char out[CRM_E164_SIZE];

	sizes("8 (916) 123-45-67", "7", 0, "+79161234567");
	sizes("+493012345678901", NULL, 0, "+493012345678901");
	sizes("sip:101@pbx", "7", EINVAL, "101");
	sizes("anonymous", "7", EINVAL, "");
	is_int(crm_normalize("89161234567", "7", NULL, 0), ENOSPC,
	       "NULL out, outsz 0 -> ENOSPC");
	is_int(crm_normalize("89161234567", "7", NULL, 16), ENOSPC,
	       "NULL out -> ENOSPC");
	is_int(crm_normalize("+493012345678901", NULL, out, sizeof(out)), 0,
	       "CRM_E164_SIZE holds the longest E.164 number");
	is_str(out, "+493012345678901", "... and it is written whole");
}

int main(void)
{
	srand(20240601);
	table();
	small_buffers();
	spellings(20000);
	fuzz(UNIFORM, 100000);
	fuzz(BIASED, 100000);
	fuzz(MUTATED, 100000);
	return tap_done();
}
