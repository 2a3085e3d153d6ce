/*
 * g711_codec.c: G.711 A-law and µ-law against the definition, and the
 * PCMA<->PCMU translation tables.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tap.h"
#include "media/g711.h"

/* ITU-T G.711 reconstruction values: A-law in 13-bit units, µ-law in
 * 14-bit units, for a magnitude code (segment << 4 | step). */
static int alaw_ref(int c)
{
	int seg = c >> 4, m = c & 15;

	return seg ? (2 * m + 33) << (seg - 1) : 2 * m + 1;
}

static int ulaw_ref(int c)
{
	int seg = c >> 4, m = c & 15;

	return ((2 * m + 33) << seg) - 33;
}

static void test_reference(void)
{
	int bad_a = -1, bad_u = -1;

	is_int(media_g711_lin2alaw(0), 0xD5, "A-law of 0 is 0xD5");
	is_int(media_g711_lin2ulaw(0), 0xFF, "µ-law of 0 is 0xFF");
	is_int(media_g711_lin2alaw(-1), 0x55, "A-law of -1 is 0x55");
	is_int(media_g711_lin2alaw(32767), 0xAA, "A-law of +full scale is 0xAA");
	is_int(media_g711_lin2alaw(-32768), 0x2A, "A-law of -full scale is 0x2A");
	is_int(media_g711_lin2ulaw(32767), 0x80, "µ-law of +full scale is 0x80");
	is_int(media_g711_lin2ulaw(-32768), 0x00, "µ-law of -full scale is 0x00");
	is_int(media_g711_ulaw2lin(0xFF), 0, "µ-law 0xFF decodes to 0");
	is_int(media_g711_ulaw2lin(0x80), 32124, "µ-law 0x80 decodes to 32124");
	is_int(media_g711_alaw2lin(0xAA), 32256, "A-law 0xAA decodes to 32256");
	is_int(media_g711_alaw2lin(0x55), -8, "A-law 0x55 decodes to -8");
	for (int c = 0; c < 128; c++) {
		if (bad_a < 0 &&
		    (media_g711_alaw2lin((uint8_t)(c ^ 0xD5)) != alaw_ref(c) * 8 ||
		     media_g711_alaw2lin((uint8_t)(c ^ 0x55)) != -alaw_ref(c) * 8))
			bad_a = c;
		if (bad_u < 0 &&
		    (media_g711_ulaw2lin((uint8_t)(c ^ 0xFF)) != ulaw_ref(c) * 4 ||
		     media_g711_ulaw2lin((uint8_t)(c ^ 0x7F)) != -ulaw_ref(c) * 4))
			bad_u = c;
	}
	is_int(bad_a, -1, "all 256 A-law decodes match the G.711 table (first bad code)");
	is_int(bad_u, -1, "all 256 µ-law decodes match the G.711 table (first bad code)");
}

/* Quantisation error: half a step of the segment holding x, plus the
 * one's complement offset of A-law negatives; more where the laws clip. */
static int err_bound(int x)
{
	int ax = abs(x);

	if (ax > 32000)
		return 1100;
	return (ax + 132) / 32 + 9;
}

static void test_sweep(void)
{
	int worst_a = 0, worst_u = 0, at_a = 0, at_u = 0, bad_a = 0, bad_u = 0;
	int mono_a = 1, mono_u = 1, prev_a = -40000, prev_u = -40000;

	for (int x = -32768; x <= 32767; x++) {
		int a = media_g711_alaw2lin(media_g711_lin2alaw((int16_t)x));
		int u = media_g711_ulaw2lin(media_g711_lin2ulaw((int16_t)x));

		if (abs(a - x) > err_bound(x) && !bad_a++)
			at_a = x, worst_a = a;
		if (abs(u - x) > err_bound(x) && !bad_u++)
			at_u = x, worst_u = u;
		mono_a &= a >= prev_a;
		mono_u &= u >= prev_u;
		prev_a = a;
		prev_u = u;
	}
	ok(!bad_a, "A-law round trip within quantisation error for all 65536 values"
	   " (first bad: %d -> %d)", at_a, worst_a);
	ok(!bad_u, "µ-law round trip within quantisation error for all 65536 values"
	   " (first bad: %d -> %d)", at_u, worst_u);
	ok(mono_a && mono_u, "decode(encode(x)) is monotonic (A %d, µ %d)",
	   mono_a, mono_u);
}

static void test_codewords(void)
{
	int bad_a = -1, bad_u = -1;

	for (int c = 0; c < 256; c++) {
		if (bad_a < 0 &&
		    media_g711_lin2alaw(media_g711_alaw2lin((uint8_t)c)) != c)
			bad_a = c;
		/* 0x7F is µ-law's negative zero; it re-encodes as 0xFF */
		if (bad_u < 0 && c != 0x7F &&
		    media_g711_lin2ulaw(media_g711_ulaw2lin((uint8_t)c)) != c)
			bad_u = c;
	}
	is_int(bad_a, -1, "every A-law code word survives decode+encode (first bad)");
	is_int(bad_u, -1, "every µ-law code word survives decode+encode (first bad)");
	is_int(media_g711_lin2ulaw(media_g711_ulaw2lin(0x7F)), 0xFF,
	       "µ-law negative zero re-encodes as 0xFF");
}

static void test_tables(void)
{
	int transparent = 0, far = -1, sign = -1, idem = -1, maxerr = 0;

	media_g711_init();
	media_g711_init();
	for (int a = 0; a < 256; a++) {
		uint8_t u = media_g711_a2u[a], a2 = media_g711_u2a[u];
		int va = media_g711_alaw2lin((uint8_t)a);
		int e = abs(media_g711_ulaw2lin(u) - va);

		transparent += a2 == a;
		if (e > maxerr)
			maxerr = e;
		/* within one A-law step: the step is 16 below 512, else 1/16 */
		if (far < 0 && abs(media_g711_alaw2lin(a2) - va) >
		    (abs(va) < 512 ? 16 : abs(va) / 16))
			far = a;
		if (sign < 0 && ((u ^ a) & 0x80))
			sign = a;
		if (idem < 0 &&
		    media_g711_u2a[media_g711_a2u[a2]] != a2)
			idem = a;
	}
	ok(transparent >= 224, "A->µ->A gives back the code word for most codes "
	   "(%d of 256, want >= 224)", transparent);
	is_int(far, -1, "A->µ->A lands within one step (first code that does not)");
	is_int(sign, -1, "A->µ keeps the sign (first code that does not)");
	is_int(idem, -1, "A->µ->A is stable when applied twice (first code that is not)");
	ok(maxerr <= 512, "A->µ error at most 512 (got %d)", maxerr);
	is_int(media_g711_ulaw2lin(media_g711_a2u[0xD5]), 8, "A-law +8 maps to µ-law +8");
	is_int(media_g711_u2a[0xFF], 0xD5, "µ-law +0 maps to A-law 0xD5");
	is_int(media_g711_u2a[0x7F], 0x55, "µ-law -0 maps to A-law 0x55");
	for (int u = 0; u < 256; u++) {
		int vu = media_g711_ulaw2lin((uint8_t)u);
		int e = abs(media_g711_alaw2lin(media_g711_u2a[u]) - vu);

		if (e > err_bound(vu) + 8) {
			ok(0, "µ->A error for 0x%02x within bound (got %d)", u, e);
			return;
		}
	}
	ok(1, "µ->A error within a quantisation step for all 256 codes");
}

int main(void)
{
	test_reference();
	test_sweep();
	test_codewords();
	test_tables();
	return tap_done();
}
