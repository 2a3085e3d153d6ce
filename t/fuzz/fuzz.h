/*
 * fuzz.h: what every harness in t/fuzz/ shares.
 *
 * Each harness defines LLVMFuzzerTestOneInput (and LLVMFuzzerInitialize).
 * Built with clang -fsanitize=fuzzer they are libFuzzer targets; linked
 * with t/fuzz/driver.c instead (gcc or clang, ASan) they replay files:
 * that is how the seeds and the regressions run in `make check`.
 *
 * A harness must be deterministic for a given input and must not keep
 * state between inputs that changes the outcome, or a crash found by
 * libFuzzer would not reproduce from its file.
 */
#ifndef SIPCRM_FUZZ_H
#define SIPCRM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A NUL-terminated copy of data; NULL only when out of memory. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s) {
		if (size)
			memcpy(s, data, size);
		s[size] = '\0';
	}
	return s;
}

/*
 * Splits a NUL-terminated buffer in place at each sep into at most max
 * fields; returns how many were found. Fields past max stay joined in
 * the last one.
 */
static inline size_t fuzz_split(char *s, char sep, char **f, size_t max)
{
	size_t n = 0;

	if (!max)
		return 0;
	f[n++] = s;
	for (char *p = s; *p && n < max; p++) {
		if (*p == sep) {
			*p = '\0';
			f[n++] = p + 1;
		}
	}
	return n;
}

#endif
