/*
 * reg_qvalue.c: a Contact's q parameter as the registrar stores it
 * (reg_q1000): RFC 3261 qvalues, and what a client may send instead.
 * Before the fix the registrar cast strtod()*1000 to unsigned: -5, 1e300
 * and "inf" were undefined behaviour (and stored nonsense), NaN too.
 */
#include "config.h"

#include "sip/registrar.h"
#include "tap.h"

int main(void)
{
	static const struct {
		const char *q;
		unsigned want;
	} cases[] = {
		{ NULL, 1000 },
		{ "1", 1000 }, { "1.0", 1000 }, { "1.000", 1000 },
		{ "0", 0 }, { "0.0", 0 }, { "0.5", 500 }, { "0.7", 700 },
		{ "0.001", 1 }, { "0.999", 999 }, { "0.1", 100 },
		/* out of range: clamped */
		{ "2", 1000 }, { "1.5", 1000 }, { "1e300", 1000 }, { "inf", 1000 },
		{ "-5", 0 }, { "-0.5", 0 }, { "-1e300", 0 }, { "-inf", 0 },
		/* not a number: as if absent */
		{ "nan", 1000 }, { "NaN", 1000 }, { "-nan", 1000 },
		{ "", 1000 }, { "abc", 1000 }, { "0.5x", 1000 }, { "0.5 1", 1000 },
		{ ".", 1000 }, { "-", 1000 },
		{ "0.5 ", 500 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned got = reg_q1000(cases[i].q);

		ok(got == cases[i].want && got <= 1000, "q=%s -> %u",
		   cases[i].q ? cases[i].q : "(absent)", cases[i].want);
		if (got != cases[i].want)
			printf("#   expected %u, got %u\n", cases[i].want, got);
	}
	return tap_done();
}
