/*
 * fuzz_normalize.c: crm_normalize() against its contract in normalize.h.
 *
 * Input: byte 0 picks the country_code (from a fixed list, NULL and junk
 * included), byte 1 the size of out (0 to 24), the rest is the number
 * (up to its first NUL byte, as it arrives from a SIP user part).
 *
 * Checked: the result is 0, EINVAL or ENOSPC; out is written within its
 * size (an exact-size heap buffer, for ASan), NUL-terminated when it has
 * room and untouched when it has none; on 0, out is '+' and 8-15 digits
 * (11 for zones 7 and 1), the first not 0; the answer with a small out
 * agrees with the answer with a large one (ENOSPC and "" when the number
 * does not fit); and a normalised number normalises to itself.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "crm/normalize.h"

static const char *const codes[] = {
	NULL, "", "7", "+7", "1", "49", "375", "36", "39", "61", "81", "44",
	"380", "0", "abc", "1234", "+", "7 ", "07", "998",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void check_e164(const char *out)
{
	size_t n = strlen(out);

	if (out[0] != '+' || n < 9 || n > 16 || out[1] == '0')
		goto bad;
	for (size_t i = 1; i < n; i++)
		if (!isdigit((unsigned char)out[i]))
			goto bad;
	if ((out[1] == '7' || out[1] == '1') && n != 12)
		goto bad;
	return;
bad:
	fprintf(stderr, "fuzz_normalize: success with \"%s\"\n", out);
	abort();
}

/* A result with out on the heap, exactly outsz bytes. */
static int run(const char *in, const char *cc, size_t outsz, char *copy)
{
	char *out = malloc(outsz ? outsz : 1);
	int e;

	if (!out)
		abort();
	memset(out, 'Z', outsz ? outsz : 1);
	e = crm_normalize(in, cc, out, outsz);
	if (e != 0 && e != EINVAL && e != ENOSPC)
		abort();
	if (outsz == 0) {
		if (out[0] != 'Z')
			abort();        /* no room: untouched */
		copy[0] = '\0';
	}
	else {
		if (!memchr(out, '\0', outsz))
			abort();
		if (e == ENOSPC && out[0])
			abort();
		strcpy(copy, out);
	}
	free(out);
	return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *cc;
	size_t outsz, big;
	char *in, *ref, *small, *again;
	int e_ref, e_small, e_again;

	if (size < 2)
		return 0;
	cc = codes[data[0] % (sizeof(codes) / sizeof(codes[0]))];
	outsz = data[1] % 25;
	in = fuzz_strndup(data + 2, size - 2);
	if (!in)
		return 0;
	big = strlen(in) + CRM_E164_SIZE + 1;
	ref = malloc(big);
	small = malloc(big);
	again = malloc(big);
	if (!ref || !small || !again)
		abort();

	e_ref = run(in, cc, big, ref);
	if (e_ref == ENOSPC)
		abort();        /* a big enough out never runs short */
	if (e_ref == 0) {
		check_e164(ref);
		e_again = run(ref, cc, big, again);
		if (e_again != 0 || strcmp(again, ref)) {
			fprintf(stderr, "fuzz_normalize: \"%s\" -> \"%s\" -> %d \"%s\"\n",
				in, ref, e_again, again);
			abort();
		}
	}

	e_small = run(in, cc, outsz, small);
	if (e_ref == 0 && outsz > strlen(ref) && (e_small || strcmp(small, ref)))
		abort();        /* it fits: the same answer */
	if (e_ref == 0 && outsz > 0 && outsz <= strlen(ref) && e_small != ENOSPC)
		abort();        /* it does not fit: ENOSPC */
	if (e_small == 0 && (e_ref != 0 || strcmp(small, ref)))
		abort();

	free(again);
	free(small);
	free(ref);
	free(in);
	return 0;
}
