/*
 * media_rec.c: call recording. The engine thread taps the RTP arriving on
 * the two eps of a recorded pair and hands raw G.711 payloads, placed in
 * time, to a writer thread through a lock-free single-producer /
 * single-consumer ring of fixed-size chunks; the writer decodes them into
 * a stereo window and writes the WAV file. Nothing on the engine side
 * allocates, locks or blocks per packet: a full ring drops audio (counted)
 * rather than wait.
 *
 * Placing in time: each channel is anchored at its first packet (the
 * arrival time gives the position, 8 kHz samples since the recording
 * started) and follows RTP timestamps from there, so jitter does not move
 * samples and gaps (loss, silence suppression, DTMF) stay silent. A new
 * SSRC, or a timestamp that strays more than a second from the wall clock,
 * anchors again, never back over what the channel already holds.
 *
 * The writer keeps one second per recording in a window, enough for late
 * packets, and writes the oldest part as later audio arrives. Start and
 * end of a recording travel through the same ring (OPEN, CLOSE), so they
 * stay in order with the audio. The ring keeps RING_RESERVE chunks for
 * them; should even those be used up (a writer stuck on a dead disk), they
 * wait on a list that the engine retries every second.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG_MODULE "media"
#include "log.h"
#include "g711.h"
#include "metrics.h"
#include "media_int.h"

#define RING_SIZE 16384u        /* chunks, a power of two (~3 MB) */
#define RING_RESERVE 256u       /* kept for OPEN and CLOSE */
#define WIN 8000u               /* frames held per recording (1 s) */
#define FLUSH_MIN (WIN / 4)     /* write at least this much at a time */
#define REANCHOR 8000           /* samples off the wall clock: anchor again */
#define IDLE_NS 10000000L       /* writer's sleep when the ring is empty */
#define WAV_HDR 44
#define POS_MAX 0x7FFFFFFFu     /* 74 hours at 8 kHz */

enum chunk_kind { CK_AUDIO, CK_OPEN, CK_CLOSE };

struct chunk {
	struct media_rec *rec;
	uint32_t pos;
	uint8_t kind, ch, law, len;
	uint8_t data[MEDIA_FRAME];
};

struct pending {
	struct pending *next;
	struct media_rec *rec;
	uint8_t kind;
};

struct media_recorder {
	struct media *m;
	pthread_t thread;
	atomic_bool stop;
	_Atomic uint32_t head;          /* written by the engine */
	_Atomic uint32_t tail;          /* written by the writer */
	struct chunk *ring;
	struct pending *pend, **pend_tail;      /* engine thread */
	bool err_logged;                /* writer: a failure was logged */
};

struct media_rec {
	/* fixed at creation */
	char *path;
	int64_t min_ms;
	uint64_t tag;
	/* engine thread, until CLOSE is queued */
	struct media_ep *ep[2];
	media_ep_t h[2];
	int64_t start_ms, stop_ms;
	bool discard;
	/* writer thread */
	int fd, err;
	int16_t *win;                   /* WIN stereo frames */
	uint32_t base;                  /* oldest frame not yet written */
	uint32_t hi;                    /* one past the highest frame seen */
	uint64_t frames;                /* written to the file */
};

/* ---- the writer -------------------------------------------------------------- */

static void wav_header(uint8_t *h, uint64_t frames)
{
	uint64_t d = frames * 4;
	uint32_t data = d > 0xFFFFFFFFu - 36 ? 0xFFFFFFFFu - 36 : (uint32_t)d;
	static const uint8_t fmt[] = {
		'f', 'm', 't', ' ', 16, 0, 0, 0,
		1, 0, 2, 0,                     /* PCM, 2 channels */
		0x40, 0x1F, 0, 0,               /* 8000 Hz */
		0x00, 0x7D, 0, 0,               /* 32000 bytes/s */
		4, 0, 16, 0,                    /* 4 bytes per frame, 16 bits */
	};

	memcpy(h, "RIFF", 4);
	for (int i = 0; i < 4; i++) {
		h[4 + i] = (uint8_t)((data + 36) >> (8 * i));
		h[40 + i] = (uint8_t)(data >> (8 * i));
	}
	memcpy(h + 8, "WAVE", 4);
	memcpy(h + 12, fmt, sizeof(fmt));
	memcpy(h + 36, "data", 4);
}

/* Creates the folders above path (mkdir -p of its dirname). */
static int mkdirs(const char *path)
{
	char buf[4096];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *s = buf + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(buf, 0755) && errno != EEXIST)
			return errno;
		*s = '/';
	}
	return 0;
}

static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = write(fd, b, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return errno;
		if (w == 0)
			return EIO;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A recording that cannot be written: the call goes on without it. The
 * first failure after a success is logged; every one is counted. */
static void rec_fail(struct media_recorder *R, struct media_rec *r, int e)
{
	r->err = e;
	metrics_inc(R->m->mx.rec_errors);
	if (!R->err_logged)
		log_err("recording %s: %s; calls go on unrecorded until "
			"recordings can be written again", r->path, strerror(e));
	R->err_logged = true;
	if (r->fd >= 0) {
		close(r->fd);
		unlink(r->path);
		r->fd = -1;
	}
}

static void rec_open(struct media_recorder *R, struct media_rec *r)
{
	uint8_t h[WAV_HDR];
	int e;

	r->win = calloc((size_t)WIN * 2, sizeof(*r->win));
	if (!r->win) {
		rec_fail(R, r, ENOMEM);
		return;
	}
	if ((e = mkdirs(r->path))) {
		rec_fail(R, r, e);
		return;
	}
	r->fd = open(r->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (r->fd < 0) {
		rec_fail(R, r, errno);
		return;
	}
	wav_header(h, 0);
	if ((e = write_all(r->fd, h, sizeof(h))))
		rec_fail(R, r, e);
}

/* Writes frames [base, target) and clears them in the window; positions
 * beyond the window map onto slots already cleared, that is silence. */
static void flush_to(struct media_recorder *R, struct media_rec *r, uint32_t target)
{
	while (r->fd >= 0 && r->base < target) {
		uint32_t at = r->base % WIN, k = target - r->base;
		int16_t *p = r->win + (size_t)at * 2;
		int e;

		if (k > WIN - at)
			k = WIN - at;
		if ((e = write_all(r->fd, p, (size_t)k * 4))) {
			rec_fail(R, r, e);
			return;
		}
		memset(p, 0, (size_t)k * 4);
		r->base += k;
		r->frames += k;
	}
}

static void rec_audio(struct media_recorder *R, struct media_rec *r,
		      const struct chunk *c)
{
	uint32_t end = c->pos + c->len;

	if (r->fd < 0)
		return;
	if (end <= r->base) {
		metrics_inc(R->m->mx.rec_dropped);      /* later than the window */
		return;
	}
	if (end > r->base + WIN) {
		uint32_t t = end - WIN;

		flush_to(R, r, t < r->base + FLUSH_MIN ? r->base + FLUSH_MIN : t);
	}
	for (uint32_t i = 0; i < c->len; i++) {
		uint32_t pos = c->pos + i;
		int16_t v;

		if (pos < r->base)
			continue;
		v = c->law == MEDIA_PCMA ? media_g711_alaw2lin(c->data[i]) :
			media_g711_ulaw2lin(c->data[i]);
		r->win[(size_t)(pos % WIN) * 2 + c->ch] = v;
	}
	if (end > r->hi)
		r->hi = end;
}

static bool rec_finish_file(struct media_recorder *R, struct media_rec *r)
{
	uint8_t h[WAV_HDR];

	flush_to(R, r, r->hi);
	if (r->fd < 0)
		return false;
	wav_header(h, r->frames);
	if (pwrite(r->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
		rec_fail(R, r, errno ? errno : EIO);
		return false;
	}
	return true;
}

static void rec_close(struct media_recorder *R, struct media_rec *r)
{
	struct media_event ev = { .kind = MEDIA_EV_RECORDED };
	int64_t ms = r->stop_ms - r->start_ms;
	bool written = rec_finish_file(R, r);

	ev.kept = written && !r->discard && ms >= r->min_ms;
	if (r->fd >= 0) {
		int fd = r->fd;

		r->fd = -1;
		if (close(fd) && ev.kept) {
			rec_fail(R, r, errno);
			ev.kept = false;
		}
		if (!ev.kept)
			unlink(r->path);
	}
	if (ev.kept)
		R->err_logged = false;
	metrics_inc(ev.kept ? R->m->mx.rec_kept : r->err ? R->m->mx.rec_failed :
		    R->m->mx.rec_discarded);
	ev.a = r->h[0];
	ev.b = r->h[1];
	ev.tag = r->tag;
	ev.err = r->err;
	ev.ms = ms;
	media_event_post(R->m, &ev);
	media_rec_discard(r);
}

static void chunk_run(struct media_recorder *R, const struct chunk *c)
{
	switch (c->kind) {
	case CK_OPEN:
		rec_open(R, c->rec);
		break;
	case CK_AUDIO:
		rec_audio(R, c->rec, c);
		break;
	case CK_CLOSE:
		rec_close(R, c->rec);
		break;
	default:
		break;
	}
}

static size_t ring_drain(struct media_recorder *R)
{
	uint32_t t = atomic_load_explicit(&R->tail, memory_order_relaxed);
	uint32_t h = atomic_load_explicit(&R->head, memory_order_acquire);
	size_t n = 0;

	for (; t != h; t++, n++) {
		chunk_run(R, &R->ring[t & (RING_SIZE - 1)]);
		if ((n & 63) == 63)
			atomic_store_explicit(&R->tail, t + 1, memory_order_release);
	}
	atomic_store_explicit(&R->tail, t, memory_order_release);
	return n;
}

static void *writer_main(void *arg)
{
	struct media_recorder *R = arg;
	struct timespec idle = { 0, IDLE_NS };

	for (;;) {
		bool stop = atomic_load(&R->stop);

		if (ring_drain(R))
			continue;
		if (stop)
			break;
		nanosleep(&idle, NULL);
	}
	return NULL;
}

/* ---- the engine's side of the ring ------------------------------------------- */

/* The next free chunk if more than reserve are free, else NULL. */
static struct chunk *ring_slot(struct media_recorder *R, uint32_t reserve)
{
	uint32_t h = atomic_load_explicit(&R->head, memory_order_relaxed);
	uint32_t t = atomic_load_explicit(&R->tail, memory_order_acquire);

	if (RING_SIZE - (h - t) <= reserve)
		return NULL;
	return &R->ring[h & (RING_SIZE - 1)];
}

static void ring_commit(struct media_recorder *R)
{
	uint32_t h = atomic_load_explicit(&R->head, memory_order_relaxed);

	atomic_store_explicit(&R->head, h + 1, memory_order_release);
}

static bool ctl_put(struct media_recorder *R, struct media_rec *r, uint8_t kind)
{
	struct chunk *c = ring_slot(R, 0);

	if (!c)
		return false;
	c->rec = r;
	c->kind = kind;
	ring_commit(R);
	return true;
}

static void pending_flush(struct media_recorder *R)
{
	struct pending *p;

	while ((p = R->pend) && ctl_put(R, p->rec, p->kind)) {
		R->pend = p->next;
		free(p);
	}
	if (!R->pend)
		R->pend_tail = &R->pend;
}

static void ctl_push(struct media_recorder *R, struct media_rec *r, uint8_t kind)
{
	struct pending *p;

	pending_flush(R);
	if (!R->pend && ctl_put(R, r, kind))
		return;
	if (!(p = calloc(1, sizeof(*p)))) {
		/* out of memory with the writer stuck: lose this one */
		log_err("recording %s: cannot queue its %s", r->path,
			kind == CK_OPEN ? "start" : "end");
		return;
	}
	p->rec = r;
	p->kind = kind;
	*R->pend_tail = p;
	R->pend_tail = &p->next;
}

void media_rec_begin(struct media *m, struct media_rec *r, struct media_ep *a,
		     struct media_ep *b)
{
	if (!m->rec_eng)
		m->rec_eng = m->rec;    /* published before the command */
	r->start_ms = m->now;
	r->ep[0] = a;
	r->ep[1] = b;
	r->h[0] = a->h;
	r->h[1] = b->h;
	memset(&a->tap, 0, sizeof(a->tap));
	memset(&b->tap, 0, sizeof(b->tap));
	a->tap.rec = b->tap.rec = r;
	a->tap.ch = 0;
	b->tap.ch = 1;
	ctl_push(m->rec_eng, r, CK_OPEN);
}

void media_rec_end(struct media *m, struct media_rec *r, bool discard)
{
	r->stop_ms = m->now;
	r->discard = discard;
	for (int i = 0; i < 2; i++) {
		if (r->ep[i] && r->ep[i]->tap.rec == r)
			memset(&r->ep[i]->tap, 0, sizeof(r->ep[i]->tap));
		r->ep[i] = NULL;
	}
	ctl_push(m->rec_eng, r, CK_CLOSE);
}

void media_rec_house(struct media *m)
{
	if (m->rec_eng && m->rec_eng->pend)
		pending_flush(m->rec_eng);
}

/* Anchors t's timestamps at the wall clock, but never before what the
 * channel already holds: a late first packet must not make a later
 * anchor overwrite audio. */
static void tap_anchor(struct media_tap *t, uint32_t ssrc, uint32_t ts, int64_t pos)
{
	t->anchored = true;
	t->ssrc = ssrc;
	t->ts0 = ts;
	t->pos0 = pos > t->end ? pos : t->end;
}

void media_rec_tap(struct media *m, struct media_ep *e, const uint8_t *p,
		   size_t hlen, size_t plen)
{
	struct media_tap *t = &e->tap;
	struct media_recorder *R = m->rec_eng;
	uint8_t pt = p[1] & 0x7F;
	uint32_t ts = media_rd32(p + 4), ssrc = media_rd32(p + 8);
	int64_t now_pos = (m->now - t->rec->start_ms) * 8, pos;

	if ((pt != MEDIA_PCMA && pt != MEDIA_PCMU) || !plen)
		return;
	if (!t->anchored || ssrc != t->ssrc)
		tap_anchor(t, ssrc, ts, now_pos);
	pos = t->pos0 + (int32_t)(ts - t->ts0);
	if (pos < now_pos - REANCHOR || pos > now_pos + REANCHOR) {
		tap_anchor(t, ssrc, ts, now_pos);
		pos = t->pos0;
	}
	if (pos < 0 || pos + (int64_t)plen > POS_MAX)
		return;
	if (pos + (int64_t)plen > t->end)
		t->end = pos + (int64_t)plen;
	for (size_t off = 0; off < plen; off += MEDIA_FRAME) {
		size_t n = plen - off < MEDIA_FRAME ? plen - off : MEDIA_FRAME;
		struct chunk *c = R->pend ? NULL : ring_slot(R, RING_RESERVE);

		if (!c) {
			metrics_inc(m->mx.rec_dropped);
			return;
		}
		c->rec = t->rec;
		c->kind = CK_AUDIO;
		c->pos = (uint32_t)(pos + (int64_t)off);
		c->ch = t->ch;
		c->law = pt;
		c->len = (uint8_t)n;
		memcpy(c->data, p + hlen + off, n);
		ring_commit(R);
	}
}

/* ---- life cycle ---------------------------------------------------------------- */

static int recorder_start(struct media *m)
{
	struct media_recorder *R = calloc(1, sizeof(*R));
	sigset_t all, old;
	int e;

	if (!R)
		return ENOMEM;
	R->m = m;
	R->pend_tail = &R->pend;
	atomic_init(&R->stop, false);
	atomic_init(&R->head, 0);
	atomic_init(&R->tail, 0);
	if (!(R->ring = calloc(RING_SIZE, sizeof(*R->ring)))) {
		free(R);
		return ENOMEM;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = pthread_create(&R->thread, NULL, writer_main, R);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e) {
		free(R->ring);
		free(R);
		return e;
	}
	pthread_setname_np(R->thread, "recorder");
	m->rec = R;
	return 0;
}

int media_rec_new(struct media *m, struct media_rec **rp, const char *path,
		  int64_t min_ms, uint64_t tag)
{
	struct media_rec *r;
	int e = 0;

	pthread_mutex_lock(&m->alloc_lock);
	if (!m->rec)
		e = recorder_start(m);
	pthread_mutex_unlock(&m->alloc_lock);
	if (e)
		return e;
	if (!(r = calloc(1, sizeof(*r))) || !(r->path = strdup(path))) {
		free(r);
		return ENOMEM;
	}
	r->min_ms = min_ms;
	r->tag = tag;
	r->fd = -1;
	*rp = r;
	return 0;
}

void media_rec_refuse(struct media *m, struct media_rec *r, media_ep_t a,
		      media_ep_t b, int err)
{
	struct media_event ev = { .kind = MEDIA_EV_RECORDED, .a = a, .b = b,
				  .tag = r->tag, .err = err };

	media_event_post(m, &ev);
	media_rec_discard(r);
}

void media_rec_discard(struct media_rec *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	free(r->win);
	free(r->path);
	free(r);
}

void media_rec_shutdown(struct media *m)
{
	struct media_recorder *R = m->rec;
	struct timespec idle = { 0, IDLE_NS };

	if (!R)
		return;
	while (R->pend) {
		pending_flush(R);
		if (R->pend)
			nanosleep(&idle, NULL);
	}
	atomic_store(&R->stop, true);
	pthread_join(R->thread, NULL);
	free(R->ring);
	free(R);
	m->rec = m->rec_eng = NULL;
}

/* ---- the path convention ----------------------------------------------------------- */

int media_record_path(char *buf, size_t size, const char *dir,
		      const char *call_id, unsigned seg, int64_t wall_ms)
{
	time_t t = (time_t)(wall_ms / 1000);
	char id[128], day[16];
	struct tm tm;
	size_t i;
	int n;

	for (i = 0; call_id[i] && i < sizeof(id) - 1; i++) {
		char c = call_id[i];
		bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';

		id[i] = safe && !(i == 0 && c == '.') ? c : '_';
	}
	id[i] = '\0';
	if (!gmtime_r(&t, &tm) || !strftime(day, sizeof(day), "%Y-%m-%d", &tm))
		return -1;
	if (seg > 1)
		n = snprintf(buf, size, "%s/%s/%s-%u.wav", dir, day, id, seg);
	else
		n = snprintf(buf, size, "%s/%s/%s.wav", dir, day, id);
	return n < 0 || (size_t)n >= size ? -1 : n;
}
