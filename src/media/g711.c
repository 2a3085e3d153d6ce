/*
 * g711.c: G.711 companding, written from the ITU-T G.711 definition.
 *
 * A-law works on 13-bit magnitudes: segment 0 and 1 both have a step of 2,
 * each further segment doubles the step; the even bits of the code word are
 * inverted (XOR 0x55) and a set sign bit means positive. µ-law works on
 * 14-bit magnitudes offset by a bias of 33 (132 in 16-bit units) so that
 * every segment boundary is a power of two; the whole code word is inverted.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "g711.h"

#define ULAW_BIAS 0x84          /* 33 in 14-bit units, scaled to 16 bits */
#define ULAW_CLIP 32635         /* largest magnitude that fits after bias */

uint8_t media_g711_a2u[256];
uint8_t media_g711_u2a[256];

/* Index of the highest set bit; v > 0. */
static int msb(unsigned v)
{
	return 31 - __builtin_clz(v);
}

uint8_t media_g711_lin2alaw(int16_t pcm)
{
	int v = pcm >> 3;               /* 13-bit two's complement */
	uint8_t mask = 0xD5;            /* positive: sign bit set, 0x55 inversion */
	int seg;

	if (v < 0) {
		/* one's complement keeps -1..-8 (16-bit) in the smallest step,
		 * which is what the standard's decision levels do */
		v = -v - 1;
		mask = 0x55;
	}
	if (v < 32)
		return (uint8_t)((v >> 1) ^ mask);
	seg = msb((unsigned)v) - 4;     /* 32..63 -> 1, ..., 2048..4095 -> 7 */
	return (uint8_t)(((seg << 4) | ((v >> seg) & 0x0F)) ^ mask);
}

int16_t media_g711_alaw2lin(uint8_t a)
{
	int seg, t;

	a ^= 0x55;
	seg = (a >> 4) & 0x07;
	t = (a & 0x0F) << 4;
	if (seg == 0)
		t += 8;
	else
		t = (t + 0x108) << (seg - 1);
	return (int16_t)((a & 0x80) ? t : -t);
}

uint8_t media_g711_lin2ulaw(int16_t pcm)
{
	int v = pcm;
	uint8_t mask = 0xFF;
	int seg;

	if (v < 0) {
		v = -v;
		mask = 0x7F;
	}
	if (v > ULAW_CLIP)
		v = ULAW_CLIP;
	v += ULAW_BIAS;                 /* 132..32767: msb is 7..14 */
	seg = msb((unsigned)v) - 7;
	return (uint8_t)(((seg << 4) | ((v >> (seg + 3)) & 0x0F)) ^ mask);
}

int16_t media_g711_ulaw2lin(uint8_t u)
{
	int t;

	u = (uint8_t)~u;
	t = (((u & 0x0F) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4);
	return (int16_t)((u & 0x80) ? ULAW_BIAS - t : t - ULAW_BIAS);
}

static int better_tie(uint8_t code, int c, int best, int16_t (*to)(uint8_t))
{
	int same_c = (c & 0x80) == (code & 0x80);
	int same_b = (best & 0x80) == (code & 0x80);

	if (same_c != same_b)
		return same_c;
	return abs(to((uint8_t)c)) < abs(to((uint8_t)best));
}

/*
 * A code word of one law becomes the code word of the other law whose
 * reconstruction value is nearest; ties go to the same sign, then towards
 * zero. Both laws keep the sign in bit 7 (set: positive), so a positive or
 * negative zero stays on its side. Nearest is the least-error choice; it is
 * not always transparent (A->u->A can move to an adjacent code word).
 */
static uint8_t nearest(uint8_t code, int16_t (*from)(uint8_t),
		       int16_t (*to)(uint8_t))
{
	int v = from(code), best = -1, best_err = 0;

	for (int c = 0; c < 256; c++) {
		int err = abs(to((uint8_t)c) - v);

		if (best < 0 || err < best_err ||
		    (err == best_err && better_tie(code, c, best, to))) {
			best = c;
			best_err = err;
		}
	}
	return (uint8_t)best;
}

static void tables_fill(void)
{
	for (int i = 0; i < 256; i++) {
		media_g711_a2u[i] = nearest((uint8_t)i, media_g711_alaw2lin,
					    media_g711_ulaw2lin);
		media_g711_u2a[i] = nearest((uint8_t)i, media_g711_ulaw2lin,
					    media_g711_alaw2lin);
	}
}

void media_g711_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, tables_fill);
}
