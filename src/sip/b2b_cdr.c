/*
 * b2b_cdr.c: one CDR row per call, one row per branch that was tried, and
 * the calls and CDR endpoints of the HTTP API.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#define LOG_MODULE "b2b"
#include "log.h"
#include "clk.h"
#include "conf.h"
#include "db.h"
#include "hmap.h"
#include "metrics.h"
#include "http/api.h"
#include "sip/b2b.h"
#include "sip/b2b_int.h"

static const char *const dir_names[] = { "inbound", "internal", "outbound" };

static void rfc3339(int64_t ms, char *buf, size_t sz)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	if (ms <= 0) {
		buf[0] = '\0';
		return;
	}
	gmtime_r(&s, &tm);
	n = strftime(buf, sz, "%Y-%m-%dT%H:%M:%S", &tm);
	if (n && n + 6 <= sz)
		snprintf(buf + n, sz - n, ".%03dZ", (int)(ms % 1000));
}

static void write_leg(struct call *c, const struct leg *l)
{
	static const char sql[] =
		"INSERT INTO cdr_legs (call_id, idx, target, agent, result, started, "
		"answered, ended) VALUES (?,?,?,?,?,?,?,?)";
	sqlite3_stmt *st = db_stmt(c->b2b->db, sql);

	if (!st)
		return;
	sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, (int)l->idx);
	sqlite3_bind_text(st, 3, l->uri, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, *l->agent ? l->agent : NULL, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 5, l->status ? l->status : 487);
	sqlite3_bind_int64(st, 6, l->started_ms);
	if (l->answered_ms)
		sqlite3_bind_int64(st, 7, l->answered_ms);
	sqlite3_bind_int64(st, 8, l->ended_ms ? l->ended_ms : c->ended_ms);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_err("CDR leg of %s not written", c->id);
}

void b2b_cdr_write(struct call *c)
{
	static const char sql[] =
		"INSERT OR REPLACE INTO cdr (call_id, direction, src, dst, did, "
		"disposition, started, answered, ended, first_agent, last_agent, "
		"recording_url, recordings, end_reason) "
		"VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
	sqlite3_stmt *st;
	char url[512];

	db_tx(c->b2b->db);
	st = db_stmt(c->b2b->db, sql);
	if (!st)
		return;
	sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, dir_names[c->dir], -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, c->from, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, c->to, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, c->did, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, c->disposition, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, c->started_ms);
	if (c->answered_ms)
		sqlite3_bind_int64(st, 8, c->answered_ms);
	sqlite3_bind_int64(st, 9, c->ended_ms);
	sqlite3_bind_text(st, 10, *c->first_agent ? c->first_agent : NULL, -1,
			  SQLITE_STATIC);
	sqlite3_bind_text(st, 11, *c->last_agent ? c->last_agent : NULL, -1,
			  SQLITE_STATIC);
	if (b2b_rec_first_url(c, url, sizeof(url)))
		sqlite3_bind_text(st, 12, url, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 13, *c->recs ? c->recs : NULL, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 14, *c->end_reason ? c->end_reason : NULL, -1,
			  SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		log_err("CDR of %s not written", c->id);
		return;
	}
	for (const struct leg *l = c->legs; l; l = l->next)
		write_leg(c, l);
	st = db_stmt(c->b2b->db, "DELETE FROM open_calls WHERE call_id = ?");
	if (st) {
		sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			log_err("open call %s not deleted", c->id);
	}
}

/* ---- calls a crash cut short ------------------------------------------------------ */

void b2b_cdr_note_open(struct call *c, json_t *ev)
{
	static const char sql[] =
		"INSERT OR REPLACE INTO open_calls (call_id, direction, src, dst, did, "
		"started, answered, first_agent, last_agent, ev, seq) "
		"VALUES (?,?,?,?,?,?,?,?,?,?,?)";
	json_t *base = json_pack("{s:O?, s:O?, s:O?}", "from", json_object_get(ev, "from"),
				 "to", json_object_get(ev, "to"), "did",
				 json_object_get(ev, "did"));
	char *text = base ? json_dumps(base, JSON_COMPACT) : NULL;
	sqlite3_stmt *st;

	json_decref(base);
	if (!c->b2b->db || !text)
		goto out;
	db_tx(c->b2b->db);
	st = db_stmt(c->b2b->db, sql);
	if (!st)
		goto out;
	sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, dir_names[c->dir], -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, c->from, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, c->to, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, c->did, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, c->started_ms);
	if (c->answered_ms)
		sqlite3_bind_int64(st, 7, c->answered_ms);
	sqlite3_bind_text(st, 8, *c->first_agent ? c->first_agent : NULL, -1,
			  SQLITE_STATIC);
	sqlite3_bind_text(st, 9, *c->last_agent ? c->last_agent : NULL, -1,
			  SQLITE_STATIC);
	sqlite3_bind_text(st, 10, text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 11, (sqlite3_int64)c->ev_seq);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_err("open call %s not noted", c->id);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
out:
	free(text);
}

static json_t *col_json(sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);

	return s ? json_string(s) : json_null();
}

/* The rows of open_calls, as JSON objects (read before any is changed). */
static json_t *open_rows(struct db *db)
{
	sqlite3_stmt *st = db_stmt(db, "SELECT call_id, direction, src, dst, did, started, "
				   "answered, first_agent, last_agent, ev, seq FROM open_calls");
	json_t *rows = json_array();

	while (st && rows && sqlite3_step(st) == SQLITE_ROW) {
		json_t *ev = json_loads((const char *)sqlite3_column_text(st, 9), 0, NULL);

		json_array_append_new(rows, json_pack("{s:o, s:o, s:o, s:o, s:o, s:I, s:I, "
			"s:o, s:o, s:o, s:I}", "call_id", col_json(st, 0), "direction",
			col_json(st, 1), "src", col_json(st, 2), "dst", col_json(st, 3),
			"did", col_json(st, 4), "started",
			(json_int_t)sqlite3_column_int64(st, 5), "answered",
			(json_int_t)sqlite3_column_int64(st, 6), "first_agent",
			col_json(st, 7), "last_agent", col_json(st, 8), "ev",
			json_is_object(ev) ? ev : json_object(), "seq",
			(json_int_t)sqlite3_column_int64(st, 10)));
		if (!json_is_object(ev))
			json_decref(ev);
	}
	if (st)
		sqlite3_reset(st);
	return rows;
}

static const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static json_t *or_null(json_t *v)
{
	return v ? json_incref(v) : json_null();
}

/* One leftover call: its CDR row, its call.ended, out of open_calls. */
static void recover_one(struct b2b *b, json_t *r, int64_t now)
{
	static const char sql[] =
		"INSERT OR IGNORE INTO cdr (call_id, direction, src, dst, did, "
		"disposition, started, answered, ended, first_agent, last_agent, "
		"end_reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,'restart')";
	const char *id = jstr(r, "call_id");
	int64_t started = json_integer_value(json_object_get(r, "started"));
	int64_t answered = json_integer_value(json_object_get(r, "answered"));
	const char *disp = answered ? "answered" : "failed";
	sqlite3_stmt *st = db_stmt(b->db, sql);
	json_t *ev = crm_event_new("call.ended"), *base = json_object_get(r, "ev");

	if (!id || !st || !ev) {
		json_decref(ev);
		return;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	for (int i = 0; i < 4; i++) {
		static const char *const cols[] = { "direction", "src", "dst", "did" };
		const char *v = jstr(r, cols[i]);

		sqlite3_bind_text(st, 2 + i, v ? v : "", -1, SQLITE_STATIC);
	}
	sqlite3_bind_text(st, 6, disp, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, started);
	if (answered)
		sqlite3_bind_int64(st, 8, answered);
	sqlite3_bind_int64(st, 9, now);
	sqlite3_bind_text(st, 10, jstr(r, "first_agent"), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 11, jstr(r, "last_agent"), -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_err("CDR of %s not written after the restart", id);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);

	json_object_set_new(ev, "call_id", json_string(id));
	json_object_set_new(ev, "seq", json_integer(json_integer_value(json_object_get(r,
							"seq")) + 1));
	json_object_set_new(ev, "direction", or_null(json_object_get(r, "direction")));
	json_object_set_new(ev, "from", or_null(json_object_get(base, "from")));
	json_object_set_new(ev, "to", or_null(json_object_get(base, "to")));
	json_object_set_new(ev, "did", or_null(json_object_get(base, "did")));
	json_object_set_new(ev, "disposition", json_string(disp));
	json_object_set_new(ev, "duration", json_integer((now - started) / 1000));
	json_object_set_new(ev, "billsec", json_integer(answered ? (now - answered) / 1000 : 0));
	json_object_set_new(ev, "first_agent", or_null(json_object_get(r, "first_agent")));
	json_object_set_new(ev, "last_agent", or_null(json_object_get(r, "last_agent")));
	json_object_set_new(ev, "recording_url", json_null());
	json_object_set_new(ev, "recordings", json_array());
	json_object_set_new(ev, "end_reason", json_string("restart"));
	if (crm_event_emit(b->crm, id, ev))
		log_err("call %s: its call.ended was not stored", id);

	st = db_stmt(b->db, "DELETE FROM open_calls WHERE call_id = ?");
	if (st) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		sqlite3_step(st);
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	log_warn("call %s was in progress when sipcrmd stopped: ended (%s, restart)",
		 id, disp);
}

void b2b_cdr_recover(struct b2b *b)
{
	json_t *rows;
	int64_t now = clk_wall_ms();

	if (!b->db)
		return;
	rows = open_rows(b->db);
	if (!json_array_size(rows)) {
		json_decref(rows);
		return;
	}
	db_tx(b->db);
	for (size_t i = 0; i < json_array_size(rows); i++)
		recover_one(b, json_array_get(rows, i), now);
	log_info("%zu call%s cut short by the last stop: CDR rows and call.ended written",
		 json_array_size(rows), json_array_size(rows) == 1 ? "" : "s");
	json_decref(rows);
}

/* ---- API ------------------------------------------------------------------------- */

static json_t *time_json(int64_t ms)
{
	char buf[40];

	rfc3339(ms, buf, sizeof(buf));
	return ms > 0 ? json_string(buf) : json_null();
}

static const char *state_name(const struct call *c)
{
	static const char *const n[] = { "new", "early", "ringing", "answered", "ended" };

	return n[c->state];
}

static json_t *legs_json(const struct call *c)
{
	json_t *a = json_array();

	for (const struct leg *l = c->legs; l; l = l->next)
		json_array_append_new(a, json_pack("{s:s, s:s?, s:i, s:o, s:o, s:o}",
			"target", l->uri, "agent", *l->agent ? l->agent : NULL,
			"result", l->status, "started", time_json(l->started_ms),
			"answered", time_json(l->answered_ms),
			"ended", time_json(l->ended_ms)));
	return a;
}

/* RTP counters of one relay port: what the call's detail view shows */
static json_t *media_json(struct media *m, media_ep_t ep)
{
	struct media_stats st = { 0 };

	if (ep == MEDIA_EP_NONE)
		return json_null();
	media_ep_stats(m, ep, &st);
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			 "rx_packets", (json_int_t)st.rx_packets,
			 "tx_packets", (json_int_t)st.tx_packets,
			 "rx_bytes", (json_int_t)st.rx_bytes,
			 "tx_bytes", (json_int_t)st.tx_bytes,
			 "lost", (json_int_t)st.lost,
			 "late", (json_int_t)st.late,
			 "dropped", (json_int_t)st.dropped,
			 "srtp_auth_failures", (json_int_t)st.srtp_auth,
			 "srtp_replays", (json_int_t)st.srtp_replay);
}

static json_t *call_json(const struct call *c, bool legs)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:o, s:o}",
			      "call_id", c->id, "direction", dir_names[c->dir],
			      "from", c->from, "to", c->to, "did", c->did,
			      "state", state_name(c),
			      "agent", c->winner && *c->winner->agent ? c->winner->agent : NULL,
			      "started", time_json(c->started_ms),
			      "answered", time_json(c->answered_ms));

	if (legs && o) {
		json_object_set_new(o, "legs", legs_json(c));
		json_object_set_new(o, "media", json_pack("{s:o, s:o}",
			"caller", media_json(c->b2b->media, c->ep_in),
			"callee", media_json(c->b2b->media, c->ep_out)));
		json_object_set_new(o, "recordings", b2b_recs_json(c->conf, c->recs));
	}
	return o;
}

static int add_call(const char *key, void *val, void *arg)
{
	const struct call *c = val;

	(void)key;
	if (!c->ending)
		json_array_append_new(arg, call_json(c, false));
	return 0;
}

static int api_calls(struct api_req *req, void *arg)
{
	struct b2b *b = arg;
	json_t *a = json_array();

	hmap_apply(b->calls, add_call, a);
	return api_reply_json(req, 200, a);
}

static json_t *cdr_legs(struct db *db, const char *id)
{
	static const char sql[] =
		"SELECT target, agent, result, started, answered, ended FROM cdr_legs "
		"WHERE call_id = ? ORDER BY idx";
	sqlite3_stmt *st = db_stmt(db, sql);
	json_t *a = json_array();

	if (!st)
		return a;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_array_append_new(a, json_pack("{s:s, s:s?, s:i, s:o, s:o, s:o}",
			"target", (const char *)sqlite3_column_text(st, 0),
			"agent", (const char *)sqlite3_column_text(st, 1),
			"result", sqlite3_column_int(st, 2),
			"started", time_json(sqlite3_column_int64(st, 3)),
			"answered", time_json(sqlite3_column_int64(st, 4)),
			"ended", time_json(sqlite3_column_int64(st, 5))));
	}
	sqlite3_reset(st);
	return a;
}

#define CDR_COLS "call_id, direction, src, dst, did, disposition, started, " \
		 "answered, ended, first_agent, last_agent, recording_url, " \
		 "recordings, end_reason"

static json_t *cdr_row(const struct b2b *b, sqlite3_stmt *st)
{
	const unsigned char *recs = sqlite3_column_text(st, 12);
	const unsigned char *why = sqlite3_column_text(st, 13);
	json_t *o;

	int64_t started = sqlite3_column_int64(st, 6);
	int64_t answered = sqlite3_column_int64(st, 7);
	int64_t ended = sqlite3_column_int64(st, 8);

	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:I, s:I, "
			 "s:s?, s:s?, s:s?}",
		"call_id", (const char *)sqlite3_column_text(st, 0),
		"direction", (const char *)sqlite3_column_text(st, 1),
		"from", (const char *)sqlite3_column_text(st, 2),
		"to", (const char *)sqlite3_column_text(st, 3),
		"did", (const char *)sqlite3_column_text(st, 4),
		"disposition", (const char *)sqlite3_column_text(st, 5),
		"started", time_json(started), "answered", time_json(answered),
		"ended", time_json(ended),
		"duration", (json_int_t)((ended - started) / 1000),
		"billsec", (json_int_t)(answered ? (ended - answered) / 1000 : 0),
		"first_agent", (const char *)sqlite3_column_text(st, 9),
		"last_agent", (const char *)sqlite3_column_text(st, 10),
		"recording_url", (const char *)sqlite3_column_text(st, 11));
	if (o) {
		json_object_set_new(o, "recordings", b2b_recs_json(b->conf,
				    recs ? (const char *)recs : ""));
		json_object_set_new(o, "end_reason", why ?
				    json_string((const char *)why) : json_null());
	}
	return o;
}

static int api_call(struct api_req *req, void *arg)
{
	static const char sql[] = "SELECT " CDR_COLS " FROM cdr WHERE call_id = ?";
	struct b2b *b = arg;
	const char *id = api_req_patharg(req, 0);
	const struct call *c = id ? hmap_get(b->calls, id) : NULL;
	sqlite3_stmt *st;
	json_t *o = NULL;

	if (c && !c->ending)
		return api_reply_json(req, 200, call_json(c, true));
	db_flush(b->db);
	st = db_stmt(b->db, sql);
	if (st && id) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
		if (sqlite3_step(st) == SQLITE_ROW) {
			o = cdr_row(b, st);
			json_object_set_new(o, "state", json_string("ended"));
		}
		sqlite3_reset(st);
	}
	if (!o)
		return api_reply_error(req, 404, "no such call");
	json_object_set_new(o, "legs", cdr_legs(b->db, id));
	return api_reply_json(req, 200, o);
}

static int64_t parse_since(const char *s)
{
	struct tm tm = { 0 };
	const char *end;

	if (!s || !(end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)))
		return 0;
	return (int64_t)timegm(&tm) * 1000;
}

static int api_cdr(struct api_req *req, void *arg)
{
	static const char sql[] = "SELECT " CDR_COLS " FROM cdr WHERE started >= ? "
				  "ORDER BY started DESC LIMIT ?";
	struct b2b *b = arg;
	const char *lim = api_req_query(req, "limit");
	long limit = lim ? strtol(lim, NULL, 10) : 100;
	sqlite3_stmt *st;
	json_t *a = json_array();

	if (limit <= 0 || limit > 10000)
		limit = 100;
	db_flush(b->db);
	st = db_stmt(b->db, sql);
	if (!st)
		return api_reply_error(req, 500, "database error");
	sqlite3_bind_int64(st, 1, parse_since(api_req_query(req, "since")));
	sqlite3_bind_int64(st, 2, limit);
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_t *o = cdr_row(b, st);

		json_object_set_new(o, "legs", json_array());
		json_array_append_new(a, o);
	}
	sqlite3_reset(st);
	for (size_t i = 0; i < json_array_size(a); i++) {
		json_t *o = json_array_get(a, i);

		json_object_set_new(o, "legs", cdr_legs(b->db, json_string_value(
			json_object_get(o, "call_id"))));
	}
	return api_reply_json(req, 200, a);
}

int b2b_api_register(struct b2b *b, struct api *api)
{
	return b2b_ctl_register(b, api) || b2b_media_register(b, api) ||
	       api_route(api, "GET", "/api/v1/calls", true, api_calls, b) ||
	       api_route(api, "GET", "/api/v1/calls/*", true, api_call, b) ||
	       api_route(api, "GET", "/api/v1/cdr", true, api_cdr, b);
}
