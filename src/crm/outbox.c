/*
 * outbox.c: the durable event sender (see outbox.h).
 *
 * sqlite holds every undelivered event; memory holds only row ids, per
 * key, so a long CRM outage costs a few bytes per event here. A key's
 * queue is in one of three places: in flight (one delivery), on the ready
 * list, or waiting out its backoff on the wait list, which a one-second
 * tick walks.
 *
 * A queue older than BACKLOG_AGE_MS is backlog (a CRM outage, or events
 * from an earlier run): its deliveries take a token from a bucket that
 * fills at BACKLOG_RATE a second, and wait on the slow list meanwhile, so
 * that catching up after an outage does not take the loop from the calls.
 * Newer queues go at once.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#define LOG_MODULE "outbox"
#include "log.h"
#include "clk.h"
#include "tokens.h"
#include "conf.h"
#include "db.h"
#include "hmap.h"
#include "metrics.h"
#include "crm/crm_int.h"
#include "crm/outbox.h"

#define MAX_IN_FLIGHT 32        /* deliveries at once, over every key */
#define TICK_MS       1000
#define BACKLOG_AGE_MS 2000
#define BACKLOG_RATE   500      /* backlog deliveries a second */

struct oq {
	struct outbox *ob;
	char key[64];
	int64_t *ids;                   /* committed rows, oldest first */
	size_t head, n, cap;
	unsigned attempts;              /* of the head event */
	int64_t next_try;               /* monotonic ms */
	int64_t born;                   /* monotonic ms; 0: from an earlier run */
	bool busy;                      /* its head is in flight */
	bool queued;                    /* on the ready or the wait list */
	struct oq *next;
	struct crm_delivery *d;
};

/*
 * An event on its way into sqlite: inserted in the open transaction
 * (staged, id set) or waiting for the database to take it again
 * (unstored: its insert or the commit that held it failed, e.g. on a full
 * disk). Both keep the body until the commit succeeds.
 */
struct staged {
	int64_t id;
	char key[64];
	char *body;
	size_t len;
	int64_t created;
};

#define UNSTORED_MAX_BYTES (16u << 20)  /* memory for events sqlite refused */

struct outbox {
	struct crm *crm;
	struct db *db;
	su_root_t *root;
	struct hmap *keys;              /* key -> struct oq */
	struct oq *ready, **ready_tail;
	struct oq *slow, **slow_tail;   /* backlog waiting for a token */
	struct tokens backlog;          /* deliveries the backlog may start */
	struct oq *waiting;
	su_timer_t *tick, *kick;
	struct staged *staged;          /* added, not committed yet */
	size_t nstaged, capstaged;
	struct staged *unstored;        /* refused by sqlite, oldest first */
	size_t nunstored, capunstored, unstored_bytes;
	bool storing;                   /* retrying the unstored ones */
	size_t inflight;
	size_t depth;
	int64_t last_warn;
};

static struct metric *m_depth, *m_delivered, *m_retried, *m_dead, *m_added;
static struct metric *m_unstored, *m_lost;

static void pump(struct outbox *o);

/* ---- queues ------------------------------------------------------------------ */

static struct oq *oq_get(struct outbox *o, const char *key)
{
	struct oq *q = hmap_get(o->keys, key);

	if (q)
		return q;
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->ob = o;
	q->born = clk_mono_ms();
	snprintf(q->key, sizeof(q->key), "%s", key);
	if (hmap_set(o->keys, q->key, q)) {
		free(q);
		return NULL;
	}
	return q;
}

static int oq_push(struct oq *q, int64_t id)
{
	if (q->head + q->n == q->cap) {
		if (q->head) {
			memmove(q->ids, q->ids + q->head, q->n * sizeof(*q->ids));
			q->head = 0;
		}
		else {
			size_t cap = q->cap ? q->cap * 2 : 4;
			int64_t *ids = realloc(q->ids, cap * sizeof(*ids));

			if (!ids)
				return ENOMEM;
			q->ids = ids;
			q->cap = cap;
		}
	}
	q->ids[q->head + q->n++] = id;
	return 0;
}

static void make_ready(struct outbox *o, struct oq *q)
{
	if (q->busy || q->queued || !q->n)
		return;
	q->queued = true;
	q->next = NULL;
	*o->ready_tail = q;
	o->ready_tail = &q->next;
}

static struct oq *pop(struct oq **head, struct oq ***tail)
{
	struct oq *q = *head;

	if (!q)
		return NULL;
	*head = q->next;
	if (!*head)
		*tail = head;
	q->queued = false;
	q->next = NULL;
	return q;
}

static void make_slow(struct outbox *o, struct oq *q)
{
	q->queued = true;
	q->next = NULL;
	*o->slow_tail = q;
	o->slow_tail = &q->next;
}

/* May one more backlog delivery start now? A burst of 100 ms at most. */
static bool backlog_token(struct outbox *o, int64_t now)
{
	return tokens_take(&o->backlog, now, BACKLOG_RATE, BACKLOG_RATE / 10);
}

static void oq_free(struct oq *q)
{
	hmap_del(q->ob->keys, q->key);
	free(q->ids);
	free(q);
}

/* The head event is settled (delivered or dead): on to the next one. */
static void oq_advance(struct outbox *o, struct oq *q)
{
	q->head++;
	q->n--;
	q->attempts = 0;
	o->depth--;
	metrics_gauge_add(m_depth, -1);
	if (!q->n)
		oq_free(q);
	else
		make_ready(o, q);
}

/* ---- rows ---------------------------------------------------------------------- */

static void row_delete(struct outbox *o, int64_t id)
{
	sqlite3_stmt *st = db_stmt(o->db, "DELETE FROM outbox WHERE id = ?");

	if (!st)
		return;
	db_tx(o->db);
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_err("event %lld: cannot mark delivered: %s", (long long)id,
			sqlite3_errmsg(db_handle(o->db)));
	sqlite3_reset(st);
}

static void row_update(struct outbox *o, int64_t id, unsigned attempts, bool dead,
		       const char *cause)
{
	sqlite3_stmt *st = db_stmt(o->db, "UPDATE outbox SET attempts = ?, dead = ?, "
				   "last_error = ? WHERE id = ?");

	if (!st)
		return;
	db_tx(o->db);
	sqlite3_bind_int(st, 1, (int)attempts);
	sqlite3_bind_int(st, 2, dead);
	sqlite3_bind_text(st, 3, cause, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, id);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_err("event %lld: cannot record the attempt: %s", (long long)id,
			sqlite3_errmsg(db_handle(o->db)));
	sqlite3_reset(st);
}

/* ---- delivery ------------------------------------------------------------------- */

static void on_done(struct crm_delivery *d, int err, const char *cause)
{
	struct oq *q = d->owner;
	struct outbox *o = q->ob;
	const struct conf *cf = crm_conf(o->crm);
	int64_t id = q->ids[q->head];
	int64_t created = d->created;

	d->req = NULL;
	q->d = NULL;
	q->busy = false;
	o->inflight--;
	if (!err) {
		row_delete(o, id);
		metrics_inc(m_delivered);
		oq_advance(o, q);
	}
	else if (clk_wall_ms() - created >= cf->crm.event_retry_ms) {
		log_err("event %lld (%s) undelivered since %lld s: kept as dead (%s)",
			(long long)id, q->key,
			(long long)((clk_wall_ms() - created) / 1000), cause);
		row_update(o, id, q->attempts + 1, true, cause);
		metrics_inc(m_dead);
		oq_advance(o, q);
	}
	else {
		int64_t backoff = 1000, now = clk_mono_ms();

		q->attempts++;
		for (unsigned i = 1; i < q->attempts && backoff < cf->crm.event_backoff_max_ms; i++)
			backoff *= 2;
		if (backoff > cf->crm.event_backoff_max_ms)
			backoff = cf->crm.event_backoff_max_ms;
		q->next_try = now + backoff;
		row_update(o, id, q->attempts, false, cause);
		metrics_inc(m_retried);
		if (now - o->last_warn >= 10000) {
			o->last_warn = now;
			log_warn("CRM did not take an event (%s); %zu pending, retrying "
				 "with backoff", cause, o->depth);
		}
		q->queued = true;
		q->next = o->waiting;
		o->waiting = q;
	}
	crm_delivery_free(d);
	pump(o);
}

/* Loads the head event of q and hands it to the adapter. */
static int send_head(struct outbox *o, struct oq *q)
{
	sqlite3_stmt *st = db_stmt(o->db, "SELECT body, created FROM outbox "
				   "WHERE id = ?");
	struct crm_delivery *d;
	json_t *ev = NULL;
	char *body = NULL;
	int64_t created = 0;
	size_t len = 0;
	int e;

	if (!st)
		return EIO;
	sqlite3_bind_int64(st, 1, q->ids[q->head]);
	if (sqlite3_step(st) == SQLITE_ROW) {
		len = (size_t)sqlite3_column_bytes(st, 0);
		body = strndup((const char *)sqlite3_column_text(st, 0), len);
		created = sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	if (!body) {
		/* gone (e.g. removed by hand): nothing to send */
		oq_advance(o, q);
		return 0;
	}
	ev = json_loadb(body, len, 0, NULL);
	d = calloc(1, sizeof(*d));
	if (!d || !json_is_object(ev)) {
		if (d && !json_is_object(ev)) {
			log_err("event %lld is not JSON: kept as dead",
				(long long)q->ids[q->head]);
			row_update(o, q->ids[q->head], q->attempts, true, "not JSON");
			metrics_inc(m_dead);
			oq_advance(o, q);
			e = 0;
		}
		else {
			e = ENOMEM;
		}
		free(d);
		free(body);
		json_decref(ev);
		return e;
	}
	d->created = created;
	d->crm = o->crm;
	d->body = body;
	d->len = len;
	d->ev = ev;
	d->owner = q;
	d->done = on_done;
	q->d = d;
	q->busy = true;
	o->inflight++;
	e = crm_deliver(o->crm, d);
	if (e) {
		/* the adapter cannot start it: an attempt that failed */
		crm_delivery_done(d, e, "cannot start the request");
	}
	return 0;
}

static void on_kick(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg);

static void pump(struct outbox *o)
{
	int64_t now = clk_mono_ms();
	struct oq *q;

	if (!crm_delivers(o->crm))
		return;
	while (o->inflight < MAX_IN_FLIGHT) {
		if (o->slow && backlog_token(o, now)) {
			q = pop(&o->slow, &o->slow_tail);
		}
		else if ((q = pop(&o->ready, &o->ready_tail))) {
			if (now - q->born >= BACKLOG_AGE_MS && !backlog_token(o, now)) {
				make_slow(o, q);
				continue;
			}
		}
		else {
			break;
		}
		if (send_head(o, q) == ENOMEM) {
			make_ready(o, q);
			break;
		}
	}
	/* the next token, in 1000 / BACKLOG_RATE ms */
	if (o->slow && o->inflight < MAX_IN_FLIGHT && o->kick)
		su_timer_set_interval(o->kick, on_kick, o, 1000 / BACKLOG_RATE);
}

static void store_unstored(struct outbox *o);

static void on_tick(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct outbox *o = (struct outbox *)arg;
	struct oq **pp = &o->waiting;
	int64_t now = clk_mono_ms();

	(void)m;
	(void)t;
	store_unstored(o);
	while (*pp) {
		struct oq *q = *pp;

		if (q->next_try <= now) {
			*pp = q->next;
			q->queued = false;
			make_ready(o, q);
		}
		else {
			pp = &q->next;
		}
	}
	pump(o);
}

static void on_kick(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	(void)m;
	(void)t;
	pump((struct outbox *)arg);
}

/* ---- storing ----------------------------------------------------------------------- */

static int st_reserve(struct staged **a, size_t n, size_t *cap, size_t more)
{
	size_t c = *cap ? *cap : 64;
	struct staged *x;

	if (n + more <= *cap)
		return 0;
	while (c < n + more)
		c *= 2;
	x = realloc(*a, c * sizeof(*x));
	if (!x)
		return ENOMEM;
	*a = x;
	*cap = c;
	return 0;
}

/*
 * Inserts s in the open transaction and stages it (taking its body), or
 * returns EIO/ENOMEM and leaves s to the caller.
 */
static int stage(struct outbox *o, struct staged *s)
{
	sqlite3_stmt *st;
	int e = 0;

	if (st_reserve(&o->staged, o->nstaged, &o->capstaged, 1))
		return ENOMEM;
	st = db_stmt(o->db, "INSERT INTO outbox (okey, body, created) VALUES (?, ?, ?)");
	if (!st)
		return EIO;
	db_tx(o->db);
	sqlite3_bind_text(st, 1, s->key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, s->body, (int)s->len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, s->created);
	if (sqlite3_step(st) != SQLITE_DONE) {
		e = EIO;
	}
	else {
		s->id = sqlite3_last_insert_rowid(db_handle(o->db));
		o->staged[o->nstaged++] = *s;
	}
	sqlite3_reset(st);
	return e;
}

static void lost(struct outbox *o, struct staged *s, const char *why)
{
	int64_t now = clk_mono_ms();

	metrics_inc(m_lost);
	if (now - o->last_warn >= 10000) {
		o->last_warn = now;
		log_err("event of %s lost: %s", s->key, why);
	}
	free(s->body);
}

/* Keeps s (and its body) until sqlite takes it; bounded. */
static void keep_unstored(struct outbox *o, struct staged *s)
{
	if (o->unstored_bytes + s->len > UNSTORED_MAX_BYTES ||
	    st_reserve(&o->unstored, o->nunstored, &o->capunstored, 1)) {
		lost(o, s, "the database refuses events and too many wait in memory");
		return;
	}
	if (!o->storing)
		log_err("the database refuses events (%s): keeping them in memory "
			"until it takes them again", sqlite3_errmsg(db_handle(o->db)));
	o->storing = true;
	o->unstored[o->nunstored++] = *s;
	o->unstored_bytes += s->len;
	metrics_gauge_add(m_unstored, 1);
}

/* Tries again to insert the events sqlite refused, oldest first. */
static void store_unstored(struct outbox *o)
{
	size_t i = 0, bytes = 0;

	while (i < o->nunstored && !stage(o, &o->unstored[i])) {
		bytes += o->unstored[i].len;
		i++;
	}
	if (!i)
		return;
	memmove(o->unstored, o->unstored + i, (o->nunstored - i) * sizeof(*o->unstored));
	o->nunstored -= i;
	o->unstored_bytes -= bytes;
	metrics_gauge_add(m_unstored, -(int64_t)i);
}

/*
 * After a commit: the staged rows are durable and may be sent. After a
 * failed one they were rolled back: they wait in memory, before any event
 * added since, and are inserted again on a later tick.
 */
static void on_commit(void *arg, int err)
{
	struct outbox *o = arg;

	if (err && o->nstaged) {
		if (st_reserve(&o->unstored, o->nunstored, &o->capunstored, o->nstaged)) {
			for (size_t i = 0; i < o->nstaged; i++)
				lost(o, &o->staged[i], "out of memory");
		}
		else {
			if (!o->storing)
				log_err("events not stored (the commit failed): keeping "
					"them in memory until the database takes them");
			o->storing = true;
			memmove(o->unstored + o->nstaged, o->unstored,
				o->nunstored * sizeof(*o->unstored));
			for (size_t i = 0; i < o->nstaged; i++) {
				o->unstored[i] = o->staged[i];
				o->unstored[i].id = 0;
				o->unstored_bytes += o->staged[i].len;
			}
			o->nunstored += o->nstaged;
			metrics_gauge_add(m_unstored, (int64_t)o->nstaged);
		}
		o->nstaged = 0;
		return;
	}
	if (err)
		return;
	for (size_t i = 0; i < o->nstaged; i++) {
		struct oq *q = oq_get(o, o->staged[i].key);

		free(o->staged[i].body);
		o->depth++;
		metrics_gauge_add(m_depth, 1);
		if (!q || oq_push(q, o->staged[i].id)) {
			/* still in sqlite: the next start sends it */
			log_err("out of memory: event %lld waits for a restart",
				(long long)o->staged[i].id);
			continue;
		}
		make_ready(o, q);
	}
	o->nstaged = 0;
	if (o->storing && !o->nunstored) {
		o->storing = false;
		log_info("the database takes events again; none was lost");
	}
	pump(o);
}

/* ---- API -------------------------------------------------------------------------- */

int outbox_add(struct outbox *o, const char *key, const char *body, size_t len)
{
	struct staged s = { .len = len, .created = clk_wall_ms() };

	s.body = malloc(len + 1);
	if (!s.body)
		return ENOMEM;
	memcpy(s.body, body, len);
	s.body[len] = '\0';
	snprintf(s.key, sizeof(s.key), "%s", key);
	metrics_inc(m_added);
	/* behind those already waiting, so that a key's order holds */
	if (o->nunstored || stage(o, &s))
		keep_unstored(o, &s);
	return 0;
}

void outbox_kick(struct outbox *o)
{
	if (o && o->kick)
		su_timer_set_interval(o->kick, on_kick, o, 0);
}

size_t outbox_depth(const struct outbox *o)
{
	return o ? o->depth : 0;
}

static int load(struct outbox *o)
{
	sqlite3_stmt *st = db_stmt(o->db, "SELECT id, okey FROM outbox WHERE dead = 0 "
				   "ORDER BY id");
	size_t n = 0;
	int e = 0;

	if (!st)
		return EIO;
	while (!e && sqlite3_step(st) == SQLITE_ROW) {
		struct oq *q = oq_get(o, (const char *)sqlite3_column_text(st, 1));

		e = q ? oq_push(q, sqlite3_column_int64(st, 0)) : ENOMEM;
		if (!e) {
			q->born = 0;    /* backlog */
			make_ready(o, q);
			n++;
		}
	}
	sqlite3_reset(st);
	o->depth = n;
	metrics_set(m_depth, (int64_t)n);
	if (n)
		log_info("%zu undelivered event%s from an earlier run", n, n == 1 ? "" : "s");
	return e;
}

int outbox_alloc(struct outbox **op, struct crm *crm, struct db *db, su_root_t *root)
{
	struct outbox *o = calloc(1, sizeof(*o));
	int e;

	if (!o)
		return ENOMEM;
	o->crm = crm;
	o->db = db;
	o->root = root;
	o->ready_tail = &o->ready;
	o->slow_tail = &o->slow;
	o->backlog.ms = clk_mono_ms();
	m_depth = metrics_gauge("sipcrm_events_outbox_depth",
				"events stored and not yet delivered", NULL);
	m_added = metrics_counter("sipcrm_events_total", "events stored for the CRM", NULL);
	m_delivered = metrics_counter("sipcrm_events_delivered_total",
				      "events the CRM accepted", NULL);
	m_retried = metrics_counter("sipcrm_events_retried_total",
				    "delivery attempts that failed and will be retried", NULL);
	m_dead = metrics_counter("sipcrm_events_dead_total",
				 "events given up after [crm] event_retry", NULL);
	m_unstored = metrics_gauge("sipcrm_events_unstored",
				   "events the database refused (e.g. a full disk), kept in "
				   "memory to be stored again", NULL);
	m_lost = metrics_counter("sipcrm_events_lost_total",
				 "events dropped because the database refused them and "
				 "the memory for them was full", NULL);
	metrics_set(m_depth, 0);
	metrics_set(m_unstored, 0);
	e = hmap_alloc(&o->keys, 256);
	if (!e)
		e = load(o);
	if (!e && root) {
		o->tick = su_timer_create(su_root_task(root), TICK_MS);
		o->kick = su_timer_create(su_root_task(root), 0);
		if (!o->tick || !o->kick ||
		    su_timer_run(o->tick, on_tick, o))
			e = ENOMEM;
	}
	if (e) {
		outbox_free(o);
		return e;
	}
	db_on_commit(db, on_commit, o);
	outbox_kick(o);
	*op = o;
	return 0;
}

static int free_cb(const char *key, void *val, void *arg)
{
	struct oq *q = val;

	(void)key;
	(void)arg;
	if (q->d)
		crm_delivery_free(q->d);
	free(q->ids);
	free(q);
	return 0;
}

struct outbox *outbox_free(struct outbox *o)
{
	if (!o)
		return NULL;
	if (o->db)
		db_on_commit(o->db, NULL, o);
	if (o->keys) {
		hmap_apply(o->keys, free_cb, NULL);
		hmap_free(o->keys);
	}
	su_timer_destroy(o->tick);
	su_timer_destroy(o->kick);
	/* staged rows are still committed by db_close */
	for (size_t i = 0; i < o->nstaged; i++)
		free(o->staged[i].body);
	if (o->nunstored)
		log_err("%zu events the database refused are lost", o->nunstored);
	for (size_t i = 0; i < o->nunstored; i++)
		free(o->unstored[i].body);
	free(o->staged);
	free(o->unstored);
	free(o);
	return NULL;
}
