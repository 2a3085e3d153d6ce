/*
 * prompt.c: prompts, that is ready-made 20 ms G.711 frames in both laws.
 *
 * WAV files are read in blocks, mixed down to mono and resampled to 8 kHz
 * as they stream in, so memory stays proportional to the 8 kHz result and
 * not to the source (a 10 minute 192 kHz 8-channel file is 3.7 GB).
 *
 * Resampling is a windowed sinc (Blackman window, RS_ZC zero crossings
 * each side) evaluated at the exact fractional input position of every
 * output sample, with the kernel read from a table. The cut-off is 3.6 kHz
 * when downsampling, so that nothing above the 4 kHz Nyquist limit folds
 * back into the voice band, and 0.9 of the input's Nyquist frequency when
 * upsampling. Each output is divided by the sum of the taps it used, which
 * keeps the DC gain at exactly one whatever the phase. 8 kHz input is
 * copied untouched.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LOG_MODULE "media"
#include "log.h"
#include "g711.h"
#include "media_int.h"

#define OUT_RATE 8000
#define MAX_SECONDS 600                 /* longer files are refused */
#define MAX_CHANNELS 64
#define RS_ZC 10                        /* kernel half-width, zero crossings */
#define RS_RES 256                      /* kernel table points per crossing */
#define BLOCK_FRAMES 4096               /* input frames read at a time */

#define TONE_HZ 425.0
#define TONE_ON_MS 1000
#define TONE_CYCLE_MS 5000
#define TONE_PEAK 10362.0               /* -10 dBFS: 32767 * 10^(-10/20) */

enum wav_kind { WAV_INT, WAV_FLOAT };

struct wav {
	enum wav_kind kind;
	unsigned channels, rate, bits, block;
	bool have_fmt, have_data;
	uint64_t data_off, data_len;
};

/* The streaming resampler: a window of mono input and the 8 kHz output. */
struct rs {
	double step;                    /* input samples per output sample */
	double scale;                   /* kernel units per input sample */
	long half;                      /* input samples used either side */
	float *win;
	size_t len, cap;
	int64_t base;                   /* input index of win[0] */
	int16_t *out;
	size_t nout, out_total;
};

static float kern[RS_ZC * RS_RES + 2];

static void seterr(char *err, size_t errsz, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errsz, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errsz)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errsz, fmt, ap);
	va_end(ap);
}

static uint32_t le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* ---- prompt objects ---------------------------------------------------- */

static struct media_prompt *prompt_new(uint32_t nframes)
{
	size_t n = (size_t)nframes * MEDIA_FRAME;
	struct media_prompt *p = malloc(sizeof(*p) + 2 * n);

	if (!p)
		return NULL;
	atomic_init(&p->refs, 1);
	p->nframes = nframes;
	p->pcma = p->data;
	p->pcmu = p->data + n;
	return p;
}

/* Encodes 8 kHz linear samples; the last frame is padded with silence. */
static struct media_prompt *prompt_encode(const int16_t *s, size_t n)
{
	uint32_t nframes = (uint32_t)((n + MEDIA_FRAME - 1) / MEDIA_FRAME);
	struct media_prompt *p = prompt_new(nframes);

	if (!p)
		return NULL;
	media_g711_init();
	for (size_t i = 0; i < (size_t)nframes * MEDIA_FRAME; i++) {
		int16_t v = i < n ? s[i] : 0;

		p->pcma[i] = media_g711_lin2alaw(v);
		p->pcmu[i] = media_g711_lin2ulaw(v);
	}
	return p;
}

struct media_prompt *media_prompt_ref(struct media_prompt *p)
{
	if (p)
		atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return p;
}

struct media_prompt *media_prompt_deref(struct media_prompt *p)
{
	if (p && atomic_fetch_sub_explicit(&p->refs, 1,
					   memory_order_acq_rel) == 1)
		free(p);
	return NULL;
}

uint32_t media_prompt_ms(const struct media_prompt *p)
{
	return p ? p->nframes * 20 : 0;
}

int media_prompt_tone(struct media_prompt **pp)
{
	size_t n = TONE_CYCLE_MS * (OUT_RATE / 1000);
	size_t on = TONE_ON_MS * (OUT_RATE / 1000);
	int16_t *s = calloc(n, sizeof(*s));
	struct media_prompt *p;

	if (!s)
		return ENOMEM;
	/* 425 whole periods fit in one second, so the tone starts and stops
	 * at a zero crossing and needs no fade against clicks */
	for (size_t i = 0; i < on; i++)
		s[i] = (int16_t)lrint(TONE_PEAK *
				      sin(2 * M_PI * TONE_HZ * (double)i / OUT_RATE));
	p = prompt_encode(s, n);
	free(s);
	if (!p)
		return ENOMEM;
	*pp = p;
	return 0;
}

/* ---- RIFF/WAVE parsing --------------------------------------------------- */

static const uint8_t guid_tail[14] = {
	0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00,
	0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71
};

/* The format tag, looking through WAVE_FORMAT_EXTENSIBLE to its subtype. */
static int fmt_tag(const uint8_t *b, uint32_t size)
{
	int tag = le16(b);

	if (tag != 0xFFFE)
		return tag;
	if (size < 40 || le16(b + 16) < 22 || memcmp(b + 26, guid_tail, 14))
		return -1;
	return le16(b + 24);
}

static int fmt_check(const struct wav *w, char *err, size_t errsz)
{
	bool ok_bits = w->kind == WAV_FLOAT ? w->bits == 32 || w->bits == 64 :
		w->bits == 8 || w->bits == 16 || w->bits == 24 || w->bits == 32;

	if (w->channels < 1 || w->channels > MAX_CHANNELS) {
		seterr(err, errsz, "unsupported channel count %u", w->channels);
		return EINVAL;
	}
	if (w->rate < 4000 || w->rate > 192000) {
		seterr(err, errsz, "unsupported sample rate %u Hz", w->rate);
		return EINVAL;
	}
	if (!ok_bits) {
		seterr(err, errsz, "unsupported %s sample size %u bits",
		       w->kind == WAV_FLOAT ? "float" : "PCM", w->bits);
		return EINVAL;
	}
	if (w->block != w->channels * (w->bits / 8)) {
		seterr(err, errsz, "inconsistent block align %u", w->block);
		return EINVAL;
	}
	return 0;
}

static int parse_fmt(FILE *f, uint32_t size, struct wav *w,
		     char *err, size_t errsz)
{
	uint8_t b[40] = { 0 };
	size_t want = size < sizeof(b) ? size : sizeof(b);
	int tag;

	if (size < 16 || fread(b, 1, want, f) != want) {
		seterr(err, errsz, "fmt chunk too short");
		return EINVAL;
	}
	tag = fmt_tag(b, size);
	if (tag != 1 && tag != 3) {
		seterr(err, errsz, "unsupported encoding (format tag %d); "
		       "want PCM or IEEE float", tag);
		return EINVAL;
	}
	w->kind = tag == 3 ? WAV_FLOAT : WAV_INT;
	w->channels = le16(b + 2);
	w->rate = le32(b + 4);
	w->block = le16(b + 12);
	w->bits = le16(b + 14);
	w->have_fmt = true;
	return fmt_check(w, err, errsz);
}

/* Walks the chunks after "WAVE", trusting no size beyond the file's end. */
static int parse_chunks(FILE *f, uint64_t fsize, struct wav *w,
			char *err, size_t errsz)
{
	uint64_t off = 12;
	uint8_t h[8];
	int e;

	while (off + 8 <= fsize && !(w->have_fmt && w->have_data)) {
		uint32_t size;

		if (fseeko(f, (off_t)off, SEEK_SET) || fread(h, 1, 8, f) != 8)
			break;
		size = le32(h + 4);
		off += 8;
		if (size > fsize - off) {
			seterr(err, errsz, "truncated: chunk '%.4s' of %u bytes "
			       "but only %llu left", (const char *)h, size,
			       (unsigned long long)(fsize - off));
			return EINVAL;
		}
		if (!memcmp(h, "fmt ", 4)) {
			if ((e = parse_fmt(f, size, w, err, errsz)))
				return e;
		} else if (!memcmp(h, "data", 4)) {
			w->have_data = true;
			w->data_off = off;
			w->data_len = size;
		}
		off += size + (size & 1);       /* chunks are word aligned */
	}
	if (!w->have_fmt || !w->have_data) {
		seterr(err, errsz, "no %s chunk", w->have_fmt ? "data" : "fmt");
		return EINVAL;
	}
	return 0;
}

static int parse_wav(FILE *f, uint64_t fsize, struct wav *w,
		     char *err, size_t errsz)
{
	uint8_t h[12];
	int e;

	memset(w, 0, sizeof(*w));
	if (fsize < 12 || fread(h, 1, 12, f) != 12 ||
	    memcmp(h, "RIFF", 4) || memcmp(h + 8, "WAVE", 4)) {
		seterr(err, errsz, "not a RIFF/WAVE file");
		return EINVAL;
	}
	if ((e = parse_chunks(f, fsize, w, err, errsz)))
		return e;
	w->data_len -= w->data_len % w->block;
	if (!w->data_len) {
		seterr(err, errsz, "no audio in the data chunk");
		return EINVAL;
	}
	if (w->data_len / w->block > (uint64_t)MAX_SECONDS * w->rate) {
		seterr(err, errsz, "longer than %d minutes", MAX_SECONDS / 60);
		return EINVAL;
	}
	return 0;
}

/* One sample in [-1, 1]. WAV is little-endian, as are the hosts we run on
 * for the float case (memcpy of the raw bytes). */
static float sample_get(const uint8_t *p, const struct wav *w)
{
	float fv;
	double dv;

	if (w->kind == WAV_FLOAT) {
		if (w->bits == 32) {
			memcpy(&fv, p, 4);
			return isfinite(fv) ? fv : 0.0f;
		}
		memcpy(&dv, p, 8);
		return isfinite(dv) ? (float)dv : 0.0f;
	}
	switch (w->bits) {
	case 8:
		return (float)(p[0] - 128) / 128.0f;
	case 16:
		return (float)(int16_t)le16(p) / 32768.0f;
	case 24:
		return (float)((int32_t)((uint32_t)p[0] << 8 | (uint32_t)p[1] << 16 |
					 (uint32_t)p[2] << 24) >> 8) / 8388608.0f;
	default:
		return (float)((double)(int32_t)le32(p) / 2147483648.0);
	}
}

/* Mixes one block of interleaved frames down to mono. */
static void mixdown(const uint8_t *in, size_t frames, const struct wav *w,
		    float *out)
{
	size_t bps = w->bits / 8;

	for (size_t i = 0; i < frames; i++) {
		const uint8_t *p = in + i * w->block;
		float acc = 0;

		for (unsigned c = 0; c < w->channels; c++)
			acc += sample_get(p + c * bps, w);
		out[i] = acc / (float)w->channels;
	}
}

/* ---- resampling -------------------------------------------------------- */

static void kern_fill(void)
{
	for (int i = 0; i <= RS_ZC * RS_RES + 1; i++) {
		double u = (double)i / RS_RES, x = M_PI * u;
		double r = u / RS_ZC;           /* 0 .. 1 across the half window */
		double win = r >= 1 ? 0 :
			0.42 + 0.5 * cos(M_PI * r) + 0.08 * cos(2 * M_PI * r);

		kern[i] = (float)((i ? sin(x) / x : 1.0) * win);
	}
}

static double kern_at(double u)
{
	double a = fabs(u) * RS_RES;
	long i = (long)a;

	if (i >= RS_ZC * RS_RES)
		return 0;
	return kern[i] + (a - (double)i) * (kern[i + 1] - kern[i]);
}

static int rs_init(struct rs *r, unsigned rate, uint64_t n_in)
{
	double fc = rate > OUT_RATE ? 3600.0 : 0.45 * rate;

	memset(r, 0, sizeof(*r));
	r->step = (double)rate / OUT_RATE;
	r->scale = 2.0 * fc / rate;
	r->half = (long)ceil(RS_ZC / r->scale) + 1;
	r->out_total = (size_t)((n_in * OUT_RATE + rate - 1) / rate);
	r->cap = BLOCK_FRAMES + 2 * (size_t)r->half + 4;
	r->win = malloc(r->cap * sizeof(*r->win));
	r->out = malloc(r->out_total * sizeof(*r->out));
	if (!r->win || !r->out)
		return ENOMEM;
	return 0;
}

static void rs_fini(struct rs *r)
{
	free(r->win);
	free(r->out);
}

static int16_t to_pcm16(double v)
{
	v *= 32768.0;
	if (v > 32767.0)
		return 32767;
	if (v < -32768.0)
		return -32768;
	return (int16_t)lrint(v);
}

/* One output sample centred on input position c; outside input is 0. */
static int16_t rs_one(const struct rs *r, double c)
{
	long lo = (long)ceil(c - (double)r->half);
	long hi = (long)floor(c + (double)r->half);
	double acc = 0, wsum = 0;

	for (long k = lo; k <= hi; k++) {
		double w = kern_at(((double)k - c) * r->scale);
		int64_t i = k - r->base;

		wsum += w;
		if (i >= 0 && i < (int64_t)r->len)
			acc += w * r->win[i];
	}
	return to_pcm16(wsum > 0 ? acc / wsum : 0);
}

/* Produces every output whose taps are all in the window (all remaining
 * ones at the end), then drops the input no later output needs. */
static void rs_run(struct rs *r, bool final)
{
	int64_t keep;

	while (r->nout < r->out_total) {
		double c = (double)r->nout * r->step;

		if (!final && (int64_t)floor(c) + r->half >= r->base + (int64_t)r->len)
			break;
		r->out[r->nout++] = rs_one(r, c);
	}
	keep = (int64_t)floor((double)r->nout * r->step) - r->half - 1;
	if (keep > r->base) {
		size_t drop = (size_t)(keep - r->base);

		if (drop > r->len)
			drop = r->len;
		memmove(r->win, r->win + drop, (r->len - drop) * sizeof(*r->win));
		r->len -= drop;
		r->base += (int64_t)drop;
	}
}

/* ---- loading ----------------------------------------------------------- */

/* Appends mono input; 8 kHz input goes straight to the output. */
static void rs_feed(struct rs *r, const float *in, size_t n, bool copy)
{
	if (copy) {
		for (size_t i = 0; i < n && r->nout < r->out_total; i++)
			r->out[r->nout++] = to_pcm16(in[i]);
		return;
	}
	memcpy(r->win + r->len, in, n * sizeof(*in));
	r->len += n;
	rs_run(r, false);
}

static int read_audio(FILE *f, const struct wav *w, struct rs *r,
		      char *err, size_t errsz)
{
	uint64_t left = w->data_len / w->block;
	uint8_t *raw = malloc((size_t)BLOCK_FRAMES * w->block);
	float *mono = malloc(BLOCK_FRAMES * sizeof(*mono));
	int e = 0;

	if (!raw || !mono) {
		e = ENOMEM;
		goto out;
	}
	if (fseeko(f, (off_t)w->data_off, SEEK_SET)) {
		seterr(err, errsz, "cannot seek to the data chunk");
		e = EINVAL;
		goto out;
	}
	while (left) {
		size_t n = left < BLOCK_FRAMES ? (size_t)left : BLOCK_FRAMES;

		if (fread(raw, w->block, n, f) != n) {
			seterr(err, errsz, "read error in the data chunk");
			e = EINVAL;
			goto out;
		}
		mixdown(raw, n, w, mono);
		rs_feed(r, mono, n, w->rate == OUT_RATE);
		left -= n;
	}
	if (w->rate != OUT_RATE)
		rs_run(r, true);
out:
	free(raw);
	free(mono);
	return e;
}

static int load_open(FILE *f, struct media_prompt **pp, char *err, size_t errsz)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct stat st;
	struct wav w;
	struct rs r;
	int e;

	if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
		seterr(err, errsz, "not a regular file");
		return EINVAL;
	}
	if ((e = parse_wav(f, (uint64_t)st.st_size, &w, err, errsz)))
		return e;
	pthread_once(&once, kern_fill);
	if ((e = rs_init(&r, w.rate, w.data_len / w.block)) ||
	    (e = read_audio(f, &w, &r, err, errsz)))
		goto out;
	*pp = prompt_encode(r.out, r.nout);
	if (!*pp)
		e = ENOMEM;
out:
	if (e == ENOMEM)
		seterr(err, errsz, "out of memory");
	rs_fini(&r);
	return e;
}

int media_prompt_load(struct media_prompt **pp, const char *path,
		      char *err, size_t errsz)
{
	struct media_prompt *p = NULL;
	FILE *f;
	int e;

	seterr(err, errsz, "%s", "");
	f = fopen(path, "rb");
	if (!f) {
		e = errno;
		seterr(err, errsz, "%s: %s", path, strerror(e));
		return e == ENOENT ? ENOENT : EINVAL;
	}
	e = load_open(f, &p, err, errsz);
	fclose(f);
	if (e)
		return e;
	log_debug("loaded %s: %u ms", path, media_prompt_ms(p));
	*pp = p;
	return 0;
}
