/*
 * media_record.c: recording a bridged pair to a stereo WAV (caller left,
 * agent right, 8 kHz 16-bit PCM decoded from G.711): the samples of each
 * channel, the header, recordings shorter than the minimum, new segments,
 * a folder that cannot be written and a write failing mid-call (the call
 * goes on), the path convention and the metrics.
 */
#include "config.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "tap.h"
#include "media_test.h"
#include "metrics.h"
#include "media/g711.h"

static struct media *m;
static char tmp[256];
static uint8_t code_c, code_a;          /* the constant each side sends */
static int16_t lin_c, lin_a;            /* what they decode to */

struct wav {
	long size;
	int fmt, channels, rate, bits, block;
	uint32_t riff, data;
	int16_t *pcm;
	size_t frames;
};

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		(uint32_t)p[3] << 24;
}

static bool wav_read(const char *path, struct wav *w)
{
	FILE *f = fopen(path, "rb");
	uint8_t h[44];

	memset(w, 0, sizeof(*w));
	if (!f)
		return false;
	fseek(f, 0, SEEK_END);
	w->size = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (fread(h, 1, 44, f) != 44 || memcmp(h, "RIFF", 4) || memcmp(h + 8, "WAVE", 4) ||
	    memcmp(h + 12, "fmt ", 4) || memcmp(h + 36, "data", 4)) {
		fclose(f);
		return false;
	}
	w->riff = le32(h + 4);
	w->fmt = le16(h + 20);
	w->channels = le16(h + 22);
	w->rate = (int)le32(h + 24);
	w->block = le16(h + 32);
	w->bits = le16(h + 34);
	w->data = le32(h + 40);
	w->frames = (size_t)(w->size - 44) / 4;
	w->pcm = calloc(w->frames * 2 + 1, sizeof(int16_t));
	if (fread(w->pcm, 4, w->frames, f) != w->frames)
		w->frames = 0;
	fclose(f);
	return true;
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* n frames from both phones, one every 20 ms. */
static void talk(struct mt_side *c, struct mt_side *a, int n, uint16_t *seq)
{
	uint8_t pc[160], pa[160];

	/* the engine takes commands after the packets of its loop pass:
	 * let it take the recording command first */
	mt_msleep(10);
	memset(pc, code_c, sizeof(pc));
	memset(pa, code_a, sizeof(pa));
	for (int i = 0; i < n; i++, (*seq)++) {
		mt_rtp_send(c->rtp, &c->ep_rtp, MEDIA_PCMA, *seq, (uint32_t)*seq * 160,
			    0xC0, pc, 160);
		mt_rtp_send(a->rtp, &a->ep_rtp, MEDIA_PCMU, *seq, (uint32_t)*seq * 160 + 7,
			    0xA0, pa, 160);
		mt_msleep(20);
		if (i % 10 == 9) {
			mt_drain(c->rtp, 0);
			mt_drain(a->rtp, 0);
		}
	}
	mt_drain(c->rtp, 20);
	mt_drain(a->rtp, 20);
}

static void pair_open(struct mt_side *c, struct mt_side *a)
{
	mt_side_open(m, c);
	mt_side_open(m, a);
	mt_set_peer(m, c, MEDIA_PCMA, 101, true, NULL);
	mt_set_peer(m, a, MEDIA_PCMU, 96, true, NULL);
	media_bridge(m, c->ep, a->ep);
	mt_msleep(20);
}

static void pair_close(struct mt_side *c, struct mt_side *a)
{
	media_ep_free(m, c->ep);
	media_ep_free(m, a->ep);
	mt_side_close(c);
	mt_side_close(a);
}

/* Waits for the RECORDED event of tag. */
static bool recorded(uint64_t tag, struct media_event *ev)
{
	for (int i = 0; i < 10; i++)
		if (mt_event(m, ev, 2000) && ev->kind == MEDIA_EV_RECORDED && ev->tag == tag)
			return true;
	return false;
}

/* ---- one recording, checked sample by sample --------------------------------- */

static void channels(const struct wav *w, size_t *left, size_t *right,
		     size_t *wrong, size_t *first_l, size_t *first_r)
{
	*left = *right = *wrong = 0;
	*first_l = *first_r = SIZE_MAX;
	for (size_t i = 0; i < w->frames; i++) {
		int16_t l = w->pcm[2 * i], r = w->pcm[2 * i + 1];

		if (l == lin_c && (*left)++ == 0)
			*first_l = i;
		if (r == lin_a && (*right)++ == 0)
			*first_r = i;
		*wrong += (l && l != lin_c) || (r && r != lin_a);
	}
}

static void basic(void)
{
	char path[512];
	struct mt_side c, a;
	struct media_event ev;
	struct wav w;
	size_t l, r, wrong, fl, fr;
	uint16_t seq = 1;

	pair_open(&c, &a);
	snprintf(path, sizeof(path), "%s/rec/2026-11-21/call-1.wav", tmp);
	is_int(media_record_start(m, c.ep, a.ep, path, 500, 42), 0, "record the pair");
	talk(&c, &a, 50, &seq);
	is_int(media_record_stop(m, c.ep, false), 0, "stop");
	if (!recorded(42, &ev)) {
		ok(0, "the RECORDED event arrives");
		pair_close(&c, &a);
		return;
	}
	ok(ev.kept && ev.err == 0, "the event: kept %d, err %d", ev.kept, ev.err);
	ok(ev.a == c.ep && ev.b == a.ep, "the event names the pair");
	ok(ev.ms >= 900 && ev.ms < 3000, "its length: %lld ms", (long long)ev.ms);
	if (!wav_read(path, &w)) {
		ok(0, "%s is a WAV file", path);
		pair_close(&c, &a);
		return;
	}
	ok(w.fmt == 1 && w.channels == 2 && w.rate == 8000 && w.bits == 16 && w.block == 4,
	   "PCM, 2 channels, 8000 Hz, 16 bits (%d %d %d %d %d)", w.fmt, w.channels,
	   w.rate, w.bits, w.block);
	ok(w.data == (uint32_t)(w.size - 44) && w.riff == w.data + 36,
	   "the sizes in the header match the file (%u data, %ld file)", w.data, w.size);
	ok(w.frames >= 7600 && w.frames <= 8000 * 3, "about a second: %zu frames",
	   w.frames);
	channels(&w, &l, &r, &wrong, &fl, &fr);
	is_int(l, 50 * 160, "left: every caller sample, decoded (A-law %02x -> %d)",
	       code_c, lin_c);
	is_int(r, 50 * 160, "right: every agent sample, decoded (µ-law %02x -> %d)",
	       code_a, lin_a);
	is_int(wrong, 0, "no sample of one side in the other's channel");
	ok(fl != SIZE_MAX && fr != SIZE_MAX && (fl > fr ? fl - fr : fr - fl) <= 480,
	   "both channels start together (%zu, %zu)", fl, fr);
	free(w.pcm);
	pair_close(&c, &a);
}

/* ---- too short, segments, freeing while recording -------------------------------- */

static void too_short(void)
{
	char path[512];
	struct mt_side c, a;
	struct media_event ev;
	uint16_t seq = 1;

	pair_open(&c, &a);
	snprintf(path, sizeof(path), "%s/rec/short.wav", tmp);
	media_record_start(m, c.ep, a.ep, path, 5000, 43);
	talk(&c, &a, 10, &seq);
	media_record_stop(m, a.ep, false);
	ok(recorded(43, &ev) && !ev.kept && ev.err == 0,
	   "under record_min: not kept, no error");
	ok(!exists(path), "and no file is left");
	media_record_start(m, c.ep, a.ep, path, 0, 44);
	talk(&c, &a, 5, &seq);
	media_record_stop(m, a.ep, true);
	ok(recorded(44, &ev) && !ev.kept && !exists(path), "discarded on request");
	pair_close(&c, &a);
}

static void segments(void)
{
	char p1[512], p2[512];
	struct mt_side c, a, b;
	struct media_event ev;
	struct wav w1, w2;
	uint16_t seq = 1;
	size_t l, r, wrong, fl, fr;

	pair_open(&c, &a);
	snprintf(p1, sizeof(p1), "%s/rec/seg.wav", tmp);
	snprintf(p2, sizeof(p2), "%s/rec/seg-2.wav", tmp);
	media_record_start(m, c.ep, a.ep, p1, 0, 45);
	talk(&c, &a, 25, &seq);
	/* a transfer: the caller is now bridged to b, a new segment starts */
	mt_side_open(m, &b);
	mt_set_peer(m, &b, MEDIA_PCMU, 96, true, NULL);
	media_bridge(m, c.ep, b.ep);
	is_int(media_record_start(m, c.ep, b.ep, p2, 0, 46), 0, "a new segment (c, b)");
	ok(recorded(45, &ev) && ev.kept, "the first segment ends, kept");
	talk(&c, &b, 25, &seq);
	media_ep_free(m, b.ep);
	ok(recorded(46, &ev) && ev.kept, "freeing an ep ends the second segment, kept");
	wav_read(p1, &w1);
	wav_read(p2, &w2);
	channels(&w1, &l, &r, &wrong, &fl, &fr);
	ok(l == 25 * 160 && r == 25 * 160 && !wrong,
	   "segment 1: 25 frames of each side (%zu, %zu, %zu wrong)", l, r, wrong);
	channels(&w2, &l, &r, &wrong, &fl, &fr);
	ok(l == 25 * 160 && r == 25 * 160 && !wrong,
	   "segment 2: the next 25 of each side (%zu, %zu, %zu wrong)", l, r, wrong);
	free(w1.pcm);
	free(w2.pcm);
	mt_side_close(&b);
	pair_close(&c, &a);
}

/* ---- failures: the call goes on -------------------------------------------------- */

static void unwritable(void)
{
	char path[600], file[512];
	struct mt_side c, a;
	struct media_event ev;
	struct mt_pkt p;
	uint16_t seq = 1;
	bool got;
	FILE *f;

	pair_open(&c, &a);
	snprintf(file, sizeof(file), "%s/not-a-dir", tmp);
	f = fopen(file, "w");
	if (f)
		fclose(f);
	snprintf(path, sizeof(path), "%s/2026-11-21/x.wav", file);
	is_int(media_record_start(m, c.ep, a.ep, path, 0, 47), 0,
	       "recording below a file is accepted (found out by the writer)");
	talk(&c, &a, 5, &seq);
	mt_rtp_send(c.rtp, &c.ep_rtp, MEDIA_PCMA, seq, seq * 160u, 0xC0, (uint8_t[160]){ 0 }, 160);
	ok(mt_recv(a.rtp, &p, MT_WAIT_MS) == 172, "the call goes on");
	media_record_stop(m, c.ep, false);
	got = recorded(47, &ev);
	ok(got && !ev.kept && ev.err == ENOTDIR,
	   "the event says why: err %d (%s)", ev.err, strerror(ev.err));
	pair_close(&c, &a);
}

/* A write failing mid-call (a file size limit stands in for a full disk). */
static void write_fails(void)
{
	char path[512];
	struct mt_side c, a;
	struct media_event ev;
	struct rlimit old, lim;
	uint16_t seq = 1;
	bool got;

	pair_open(&c, &a);
	snprintf(path, sizeof(path), "%s/rec/big.wav", tmp);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = 20000;
	signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &lim);
	media_record_start(m, c.ep, a.ep, path, 0, 48);
	talk(&c, &a, 100, &seq);
	media_record_stop(m, c.ep, false);
	got = recorded(48, &ev);
	ok(got && !ev.kept && ev.err == EFBIG,
	   "a write that fails: not kept, err %d (%s)", ev.err, strerror(ev.err));
	ok(!exists(path), "the partial file is removed");
	setrlimit(RLIMIT_FSIZE, &old);
	pair_close(&c, &a);
}

static void metrics(void)
{
	char *text;
	size_t len;

	text = metrics_render(&len);
	like(text, "sipcrm_recording_errors_total 2", "/metrics: two recordings failed");
	like(text, "sipcrm_recordings_total{result=\"kept\"} 3", "/metrics: three kept");
	like(text, "sipcrm_recordings_total{result=\"discarded\"} 2",
	     "/metrics: two discarded");
	free(text);
}

static void paths(void)
{
	char buf[256];

	/* 2026-11-21 12:00:00 UTC */
	is_int(media_record_path(buf, sizeof(buf), "/var/rec", "abc-1", 0,
				 1795262400000LL), (int)strlen("/var/rec/2026-11-21/abc-1.wav"),
	       "path length");
	is_str(buf, "/var/rec/2026-11-21/abc-1.wav", "dir/date/call.wav");
	media_record_path(buf, sizeof(buf), "/var/rec", "abc-1", 2, 1795262400000LL);
	is_str(buf, "/var/rec/2026-11-21/abc-1-2.wav", "segment 2");
	media_record_path(buf, sizeof(buf), "r", "../x/y z", 1, 1795262400000LL);
	is_str(buf, "r/2026-11-21/_._x_y_z.wav", "unsafe characters replaced");
	is_int(media_record_path(buf, 10, "/var/rec", "abc", 0, 0), -1, "too small: -1");
}

int main(void)
{
	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	lin_c = 1000;
	lin_a = -2000;
	code_c = media_g711_lin2alaw(lin_c);
	code_a = media_g711_lin2ulaw(lin_a);
	lin_c = media_g711_alaw2lin(code_c);
	lin_a = media_g711_ulaw2lin(code_a);
	snprintf(tmp, sizeof(tmp), "/tmp/sipcrm-media-record-%d", (int)getpid());
	if (mkdir(tmp, 0700)) {
		ok(0, "temporary folder %s", tmp);
		return tap_done();
	}
	if (!(m = mt_engine(10))) {
		ok(0, "engine starts");
		return tap_done();
	}
	basic();
	too_short();
	segments();
	unwritable();
	write_fails();
	metrics();
	paths();
	m = media_free(m);
	metrics_reset();
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
		if (system(cmd))
			printf("# could not remove %s\n", tmp);
	}
	return tap_done();
}
