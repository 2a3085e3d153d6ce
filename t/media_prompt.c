/*
 * media_prompt.c: WAV loading (formats, channels, rates, resampling),
 * rejection of bad files, the ringback tone and reference counting.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "media/g711.h"
#include "media/media.h"
#include "media/media_int.h"

enum { FMT_PCM = 1, FMT_FLOAT = 3, FMT_EXT = 0xFFFE };

/* One channel's value at input frame i, in [-1, 1]. */
typedef double (wav_gen_h)(long i, int ch, unsigned rate, void *arg);

struct wavspec {
	int tag;                /* FMT_PCM, FMT_FLOAT or FMT_EXT (PCM subtype) */
	unsigned channels, rate, bits;
	long frames;
};

static char dir[64];

static void put16(FILE *f, unsigned v)
{
	fputc(v & 0xFF, f);
	fputc((v >> 8) & 0xFF, f);
}

static void put32(FILE *f, uint32_t v)
{
	put16(f, v & 0xFFFF);
	put16(f, v >> 16);
}

static void put_sample(FILE *f, const struct wavspec *w, double v)
{
	float fv = (float)v;
	int64_t iv;

	if (w->tag == FMT_FLOAT) {
		fwrite(&fv, 4, 1, f);   /* little-endian host */
		return;
	}
	if (w->bits == 8) {
		fputc((int)lrint(v * 127.0) + 128, f);
		return;
	}
	iv = llrint(v * (double)((1LL << (w->bits - 1)) - 1));
	for (unsigned b = 0; b < w->bits; b += 8)
		fputc((int)((iv >> b) & 0xFF), f);
}

static void put_fmt(FILE *f, const struct wavspec *w)
{
	static const uint8_t tail[14] = { 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0,
					  0xAA, 0, 0x38, 0x9B, 0x71 };
	unsigned block = w->channels * w->bits / 8;

	fwrite("fmt ", 1, 4, f);
	put32(f, w->tag == FMT_EXT ? 40 : 16);
	put16(f, (unsigned)w->tag);
	put16(f, w->channels);
	put32(f, w->rate);
	put32(f, w->rate * block);
	put16(f, block);
	put16(f, w->bits);
	if (w->tag != FMT_EXT)
		return;
	put16(f, 22);
	put16(f, w->bits);
	put32(f, 0);
	put16(f, FMT_PCM);
	fwrite(tail, 1, sizeof(tail), f);
}

/* Writes a WAV with an extra chunk before fmt, as real files have. */
static const char *wav_write(const char *name, const struct wavspec *w,
			     wav_gen_h *gen, void *arg)
{
	static char path[128];
	uint32_t data = (uint32_t)(w->frames * w->channels * (w->bits / 8));
	uint32_t fmt = w->tag == FMT_EXT ? 40 : 16;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		return path;
	fwrite("RIFF", 1, 4, f);
	put32(f, 4 + 8 + 3 + 1 + 8 + fmt + 8 + data);
	fwrite("WAVELIST", 1, 8, f);
	put32(f, 3);
	fwrite("abc\0", 1, 4, f);       /* odd size: one pad byte */
	put_fmt(f, w);
	fwrite("data", 1, 4, f);
	put32(f, data);
	for (long i = 0; i < w->frames; i++)
		for (unsigned c = 0; c < w->channels; c++)
			put_sample(f, w, gen(i, (int)c, w->rate, arg));
	fclose(f);
	return path;
}

static double gen_sine(long i, int ch, unsigned rate, void *arg)
{
	double hz = *(double *)arg;

	return 0.5 * sin(2 * M_PI * hz * (double)i / rate);
}

/* Left and right in opposite phase: the mono mix is silence. */
static double gen_antiphase(long i, int ch, unsigned rate, void *arg)
{
	return (ch ? -1 : 1) * gen_sine(i, ch, rate, arg);
}

/* Decodes all of p's µ-law frames to linear. */
static int16_t *decode(const struct media_prompt *p, size_t *n)
{
	int16_t *s;

	*n = (size_t)p->nframes * MEDIA_FRAME;
	s = malloc(*n * sizeof(*s));
	for (size_t i = 0; s && i < *n; i++)
		s[i] = media_g711_ulaw2lin(p->pcmu[i]);
	return s;
}

/* Sign changes and RMS over [from, to) of s. */
static void analyse(const int16_t *s, size_t from, size_t to, int *zc, double *rms)
{
	double acc = 0;

	*zc = 0;
	for (size_t i = from; i < to; i++) {
		acc += (double)s[i] * s[i];
		if (i > from && (s[i - 1] < 0) != (s[i] < 0))
			(*zc)++;
	}
	*rms = to > from ? sqrt(acc / (double)(to - from)) : 0;
}

static struct media_prompt *load(const char *path, const char *what)
{
	struct media_prompt *p = NULL;
	char err[256] = "";
	int e = media_prompt_load(&p, path, err, sizeof(err));

	is_int(e, 0, "%s loads (%s)", what, err);
	return e ? NULL : p;
}

static void check_frames(const struct media_prompt *p, long want, const char *what)
{
	long got = p ? (long)p->nframes : -1;

	ok(labs(got - want) <= 1, "%s: %ld frames, want %ld +-1", what, got, want);
	ok(p && labs((long)media_prompt_ms(p) - want * 20) <= 20,
	   "%s: %u ms, want %ld +-20", what, p ? media_prompt_ms(p) : 0, want * 20);
}

static void test_8k_mono(void)
{
	double hz = 1000;
	struct wavspec w = { FMT_PCM, 1, 8000, 16, 8000 };
	struct media_prompt *p = load(wav_write("m8.wav", &w, gen_sine, &hz),
				      "8 kHz mono 16-bit");
	int bad = 0;

	check_frames(p, 50, "8 kHz mono");
	/* 8 kHz input is not filtered: each sample is exactly the encoded input */
	for (long i = 0; p && i < 8000; i++) {
		int16_t v = (int16_t)lrint(gen_sine(i, 0, 8000, &hz) * 32767);

		bad += p->pcma[i] != media_g711_lin2alaw(v) ||
			p->pcmu[i] != media_g711_lin2ulaw(v);
	}
	is_int(bad, 0, "8 kHz samples are copied, then encoded in both laws");
	media_prompt_deref(p);
}

static void test_44k_stereo(void)
{
	double hz = 1000, rms;
	struct wavspec w = { FMT_PCM, 2, 44100, 16, 44100 };
	struct media_prompt *p = load(wav_write("s44.wav", &w, gen_sine, &hz),
				      "44.1 kHz stereo 16-bit");
	int16_t *s;
	size_t n;
	int zc;

	check_frames(p, 50, "44.1 kHz stereo");
	if (!p || !(s = decode(p, &n)))
		return;
	analyse(s, 400, 7600, &zc, &rms);       /* 0.9 s away from the edges */
	ok(abs(zc - 1800) <= 4, "1 kHz survives: %d zero crossings in 0.9 s, want 1800", zc);
	ok(fabs(rms - 16384 / M_SQRT2) < 0.05 * 16384 / M_SQRT2,
	   "amplitude kept: RMS %.0f, want %.0f +-5%%", rms, 16384 / M_SQRT2);
	free(s);
	media_prompt_deref(p);
}

/* 6 kHz would fold to 2 kHz at 8 kHz; the low-pass must remove it. */
static void test_antialias(void)
{
	double hz = 6000, rms;
	struct wavspec w = { FMT_PCM, 1, 44100, 16, 44100 };
	struct media_prompt *p = load(wav_write("a44.wav", &w, gen_sine, &hz),
				      "44.1 kHz 6 kHz tone");
	int16_t *s;
	size_t n;
	int zc;

	if (!p || !(s = decode(p, &n)))
		return;
	analyse(s, 400, 7600, &zc, &rms);
	ok(rms < 0.01 * 16384, "6 kHz is filtered out, not aliased: RMS %.0f, want < %.0f",
	   rms, 0.01 * 16384);
	free(s);
	media_prompt_deref(p);
}

static void test_float_16k(void)
{
	double hz = 440, rms;
	struct wavspec w = { FMT_FLOAT, 1, 16000, 32, 8000 };
	struct media_prompt *p = load(wav_write("f16.wav", &w, gen_sine, &hz),
				      "16 kHz float32");
	int16_t *s;
	size_t n;
	int zc;

	check_frames(p, 25, "16 kHz float32");
	if (!p || !(s = decode(p, &n)))
		return;
	analyse(s, 400, 3600, &zc, &rms);
	ok(abs(zc - 352) <= 3, "440 Hz: %d zero crossings in 0.4 s, want 352", zc);
	free(s);
	media_prompt_deref(p);
}

static void test_48k_24bit(void)
{
	double hz = 440, rms;
	struct wavspec w = { FMT_EXT, 2, 48000, 24, 14400 };
	struct media_prompt *p = load(wav_write("x48.wav", &w, gen_sine, &hz),
				      "48 kHz 24-bit (extensible)");
	struct media_prompt *q;
	int16_t *s;
	size_t n;
	int zc;

	check_frames(p, 15, "48 kHz 24-bit");
	if (p && (s = decode(p, &n))) {
		analyse(s, 400, 2000, &zc, &rms);
		ok(fabs(rms - 16384 / M_SQRT2) < 0.05 * 16384 / M_SQRT2,
		   "24-bit level kept: RMS %.0f", rms);
		free(s);
	}
	media_prompt_deref(p);
	q = load(wav_write("ap.wav", &w, gen_antiphase, &hz), "antiphase stereo");
	if (q && (s = decode(q, &n))) {
		analyse(s, 0, n, &zc, &rms);
		ok(rms < 50, "channels are averaged: antiphase mixes to silence (RMS %.1f)", rms);
		free(s);
	}
	media_prompt_deref(q);
}

static void test_other_formats(void)
{
	double hz = 300;
	struct wavspec w8 = { FMT_PCM, 1, 11025, 8, 11025 };
	struct wavspec w32 = { FMT_PCM, 6, 22050, 32, 11025 };
	struct wavspec w4 = { FMT_PCM, 1, 4000, 16, 4000 };
	struct media_prompt *p;

	p = load(wav_write("u8.wav", &w8, gen_sine, &hz), "11.025 kHz 8-bit unsigned");
	check_frames(p, 50, "8-bit");
	media_prompt_deref(p);
	p = load(wav_write("i32.wav", &w32, gen_sine, &hz), "22.05 kHz 6-channel 32-bit");
	check_frames(p, 25, "6-channel 32-bit");
	media_prompt_deref(p);
	p = load(wav_write("up4.wav", &w4, gen_sine, &hz), "4 kHz (upsampled)");
	check_frames(p, 50, "4 kHz");
	media_prompt_deref(p);
}

static const char *raw_write(const char *name, const void *b, size_t n)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((f = fopen(path, "wb"))) {
		fwrite(b, 1, n, f);
		fclose(f);
	}
	return path;
}

static void reject(const char *path, int want, const char *sub, const char *what)
{
	static char sentinel;
	struct media_prompt *p = (struct media_prompt *)&sentinel;
	char err[256] = "";
	int e = media_prompt_load(&p, path, err, sizeof(err));

	is_int(e, want, "%s is rejected", what);
	like(err, sub, "%s: the reason is given", what);
	ok(p == (struct media_prompt *)&sentinel, "%s: *pp is not set", what);
}

/* A good file cut after n bytes. */
static const char *truncated(const char *name, long n)
{
	static uint8_t b[4096];
	double hz = 400;
	struct wavspec w = { FMT_PCM, 1, 8000, 16, 1000 };
	FILE *f = fopen(wav_write(name, &w, gen_sine, &hz), "rb");
	size_t got = f ? fread(b, 1, sizeof(b), f) : 0;

	if (f)
		fclose(f);
	return raw_write(name, b, (size_t)n < got ? (size_t)n : got);
}

static void test_reject(void)
{
	uint8_t junk[1000];
	double hz = 400;
	struct wavspec adpcm = { 2, 1, 8000, 16, 100 };
	struct wavspec slow = { FMT_PCM, 1, 2000, 16, 100 };
	struct wavspec empty = { FMT_PCM, 1, 8000, 16, 0 };
	struct wavspec longf = { FMT_PCM, 1, 4000, 8, 4000L * 601 };
	char path[128];

	snprintf(path, sizeof(path), "%s/none.wav", dir);
	reject(path, ENOENT, "none.wav", "a missing file");
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 7919 >> 3);
	reject(raw_write("junk.wav", junk, sizeof(junk)), EINVAL, "RIFF", "garbage");
	reject(raw_write("text.wav", "hello, world\n", 13), EINVAL, "RIFF", "a text file");
	reject(raw_write("tiny.wav", "RIF", 3), EINVAL, "RIFF", "a 3-byte file");
	reject(truncated("cut1.wav", 40), EINVAL, "truncated", "a file cut inside fmt");
	reject(truncated("cut2.wav", 1000), EINVAL, "truncated", "a file cut inside data");
	reject(truncated("cut3.wav", 24), EINVAL, "no fmt", "a file cut before fmt");
	reject(wav_write("adpcm.wav", &adpcm, gen_sine, &hz), EINVAL,
	       "unsupported encoding", "ADPCM");
	reject(wav_write("slow.wav", &slow, gen_sine, &hz), EINVAL, "sample rate",
	       "a 2 kHz file");
	reject(wav_write("empty.wav", &empty, gen_sine, &hz), EINVAL, "no audio",
	       "an empty data chunk");
	reject(wav_write("long.wav", &longf, gen_sine, &hz), EINVAL, "10 minutes",
	       "a file of 10 min 1 s");
	reject(dir, EINVAL, "regular", "a directory");
}

static void test_tone(void)
{
	struct media_prompt *p = NULL;
	int16_t *s;
	size_t n;
	double rms, rest;
	int zc, zc2;

	is_int(media_prompt_tone(&p), 0, "tone prompt builds");
	if (!p)
		return;
	is_int(media_prompt_ms(p), 5000, "tone cycle is 5 s");
	if ((s = decode(p, &n))) {
		analyse(s, 0, 8000, &zc, &rms);
		analyse(s, 8000, n, &zc2, &rest);
		ok(abs(zc - 850) <= 2, "1 s of 425 Hz: %d zero crossings, want 850", zc);
		ok(rms > 6800 && rms < 7900, "tone at about -10 dBFS: RMS %.0f, want ~7327", rms);
		ok(rest == 0, "then 4 s of silence (RMS %.1f)", rest);
		free(s);
	}
	media_prompt_deref(p);
}

static void test_refs(void)
{
	struct media_prompt *p = NULL;

	media_prompt_tone(&p);
	ok(media_prompt_ref(p) == p, "ref returns the prompt");
	is_int(atomic_load(&p->refs), 2, "two references");
	ok(media_prompt_deref(p) == NULL, "deref returns NULL");
	is_int(atomic_load(&p->refs), 1, "one reference left");
	ok(media_prompt_ref(NULL) == NULL && media_prompt_deref(NULL) == NULL,
	   "NULL is accepted");
	is_int(media_prompt_ms(NULL), 0, "NULL prompt lasts 0 ms");
	media_prompt_deref(p);          /* the last one: ASan sees the free */
}

static void cleanup(void)
{
	char cmd[96];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", dir);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/media_prompt.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_8k_mono();
	test_44k_stereo();
	test_antialias();
	test_float_16k();
	test_48k_24bit();
	test_other_formats();
	test_reject();
	test_tone();
	test_refs();
	cleanup();
	return tap_done();
}
