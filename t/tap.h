/*
 * tap.h: a minimal TAP producer for the C unit tests.
 * Each check prints what was expected and what was got when it fails.
 */
#ifndef SIPCRM_TAP_H
#define SIPCRM_TAP_H

#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <stdarg.h>

static int tap_n, tap_fail;

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

static void tap_ok(int pass, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5), unused));
static void tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	printf("%sok %d - ", pass ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!pass) {
		tap_fail++;
		printf("#   failed at %s:%d\n", file, line);
	}
	fflush(stdout);
}

#define is_int(got, want, ...) do { \
	long long _g = (long long)(got), _w = (long long)(want); \
	ok(_g == _w, __VA_ARGS__); \
	if (_g != _w) printf("#   expected %lld, got %lld\n", _w, _g); \
} while (0)

#define is_str(got, want, ...) do { \
	const char *_g = (got), *_w = (want); \
	int _p = (_g && _w) ? !strcmp(_g, _w) : _g == _w; \
	ok(_p, __VA_ARGS__); \
	if (!_p) printf("#   expected '%s', got '%s'\n", _w ? _w : "(null)", _g ? _g : "(null)"); \
} while (0)

#define like(got, sub, ...) do { \
	const char *_g = (got), *_s = (sub); \
	int _p = _g && strstr(_g, _s); \
	ok(_p, __VA_ARGS__); \
	if (!_p) printf("#   expected to contain '%s', got '%s'\n", _s, _g ? _g : "(null)"); \
} while (0)

static int __attribute__((unused)) tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_fail ? 1 : 0;
}

#endif
