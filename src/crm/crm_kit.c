/*
 * crm_kit.c: jobs, OAuth tokens, the adapters' sqlite state, entity notes
 * and form bodies (see crm_kit.h).
 *
 * A token refresh is not tied to the lookup or delivery that asked for it:
 * the refresh token is used up by the request, so its answer must never be
 * lost to a cancelled lookup. It goes out as a delivery of its own that
 * only this file owns (crm_delivery_http() on a crm_delivery with no
 * outbox entry), and every job that needs the new token waits for it.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sqlite3.h>

#define LOG_MODULE "crm"
#include "log.h"
#include "hex.h"
#include "clk.h"
#include "conf.h"
#include "db.h"
#include "crm/crm_kit.h"

#define STALE_MS        (5 * 60 * 1000)  /* refresh this long before expiry */
#define REFRESH_BACKOFF 30000            /* after a failed refresh */
#define TOKEN_MAX       2048

/* ---- jobs ---------------------------------------------------------------------------- */

void crm_job_init(struct crm_job *j, struct crm *c, struct crm_lookup *l,
		  struct crm_delivery *d)
{
	j->crm = c;
	j->l = l;
	j->d = d;
}

static void on_lookup_resp(struct crm_lookup *l, const struct httpc_resp *r)
{
	struct crm_job *j = l->astate;

	j->resp_h(j, r);
}

static void on_delivery_resp(struct crm_delivery *d, const struct httpc_resp *r)
{
	struct crm_job *j = d->astate;

	j->resp_h(j, r);
}

int crm_job_http(struct crm_job *j, const struct httpc_opts *o, crm_job_resp_h *h)
{
	j->resp_h = h;
	if (j->l)
		return crm_lookup_http(j->l, o, on_lookup_resp);
	return crm_delivery_http(j->d, o, on_delivery_resp);
}

static void on_job_timer(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct crm_job *j = (struct crm_job *)arg;

	(void)m;
	(void)t;
	j->tmr_h(j);
}

int crm_job_later(struct crm_job *j, int64_t ms, crm_job_tmr_h *h)
{
	if (!j->tmr)
		j->tmr = su_timer_create(su_root_task(crm_root(j->crm)), 0);
	j->tmr_h = h;
	if (!j->tmr || su_timer_set_interval(j->tmr, on_job_timer, j,
					     (su_duration_t)(ms > 0 ? ms : 0)))
		return ENOMEM;
	return 0;
}

static void on_job_end(struct crm_job *j)
{
	crm_delivery_done(j->d, j->end_err, j->end_err ? j->end_cause : NULL);
}

void crm_job_end(struct crm_job *j, int err, const char *cause)
{
	j->end_err = err;
	snprintf(j->end_cause, sizeof(j->end_cause), "%s", cause ? cause : "");
	if (crm_job_later(j, 0, on_job_end))
		log_err("out of memory ending a CRM delivery");
}

static void wait_unlink(struct crm_job *j)
{
	if (!j->wprevp)
		return;
	*j->wprevp = j->wnext;
	if (j->wnext)
		j->wnext->wprevp = j->wprevp;
	j->wnext = NULL;
	j->wprevp = NULL;
	j->wait_on = NULL;
}

void crm_job_fini(struct crm_job *j)
{
	if (!j)
		return;
	wait_unlink(j);
	su_timer_destroy(j->tmr);
	j->tmr = NULL;
}

/* ---- OAuth 2 ---------------------------------------------------------------------------- */

struct crm_oauth {
	char account[16];
	bool loaded;
	char access[TOKEN_MAX];
	char refresh[TOKEN_MAX];
	char seed[TOKEN_MAX];           /* the [crm] refresh_token they came from */
	int64_t expires;                /* Unix ms; 0: expired */
	struct crm_delivery *rd;        /* the refresh in flight */
	int64_t failed_at;              /* monotonic ms */
	struct crm_job *waiters;
	struct crm_job *waking;         /* being woken (a callback may unlink) */
};

/* One per CRM type that uses OAuth; they outlive reloads. */
static struct crm_oauth oauths[2];

static void oauth_store(struct crm *c, struct crm_oauth *o)
{
	char scope[40];
	json_t *st = json_pack("{s:s, s:s, s:I, s:s}", "access_token", o->access,
			       "refresh_token", o->refresh, "expires", (json_int_t)o->expires,
			       "seed", o->seed);

	snprintf(scope, sizeof(scope), "oauth:%s", o->account);
	if (!st || crm_state_save(c, scope, st))
		log_err("%s: the new OAuth tokens were not stored", o->account);
	json_decref(st);
}

static void oauth_load(struct crm *c, struct crm_oauth *o)
{
	char scope[40];
	json_t *st;

	snprintf(scope, sizeof(scope), "oauth:%s", o->account);
	st = crm_state_load(c, scope);
	crm_jstr(st, "access_token", o->access, sizeof(o->access));
	crm_jstr(st, "refresh_token", o->refresh, sizeof(o->refresh));
	crm_jstr(st, "seed", o->seed, sizeof(o->seed));
	o->expires = json_integer_value(json_object_get(st, "expires"));
	json_decref(st);
	o->loaded = true;
}

static struct crm_oauth *oauth_get(struct crm *c, const struct crm_oauth_params *p)
{
	struct crm_oauth *o = NULL;

	for (size_t i = 0; i < sizeof(oauths) / sizeof(oauths[0]) && !o; i++)
		if (!strcmp(oauths[i].account, p->account))
			o = &oauths[i];
	for (size_t i = 0; i < sizeof(oauths) / sizeof(oauths[0]) && !o; i++)
		if (!*oauths[i].account) {
			o = &oauths[i];
			snprintf(o->account, sizeof(o->account), "%s", p->account);
		}
	if (!o)
		return NULL;
	if (!o->loaded)
		oauth_load(c, o);
	if (strcmp(o->seed, p->refresh_seed)) {
		/* a new refresh token in the config: the operator authorised again */
		snprintf(o->seed, sizeof(o->seed), "%s", p->refresh_seed);
		snprintf(o->refresh, sizeof(o->refresh), "%s", p->refresh_seed);
		o->access[0] = '\0';
		o->expires = 0;
		o->failed_at = 0;
		oauth_store(c, o);
		log_info("%s: starting from the refresh_token in the config", o->account);
	}
	return o;
}

enum crm_token_state crm_oauth_token(struct crm *c, const struct crm_oauth_params *p,
				     char *tok, size_t sz)
{
	struct crm_oauth *o = oauth_get(c, p);
	int64_t now = clk_wall_ms();

	snprintf(tok, sz, "%s", o ? o->access : "");
	if (!o || !*o->access || o->expires <= now)
		return CRM_TOKEN_EXPIRED;
	return o->expires - now < STALE_MS ? CRM_TOKEN_STALE : CRM_TOKEN_FRESH;
}

void crm_oauth_refused(struct crm *c, const struct crm_oauth_params *p, const char *tok)
{
	struct crm_oauth *o = oauth_get(c, p);

	if (o && !strcmp(o->access, tok))
		o->expires = 0;
}

static void oauth_wake(struct crm_oauth *o, int err)
{
	struct crm_job *j;

	/* move the list aside: a callback may unlink any job on it */
	o->waking = o->waiters;
	if (o->waking)
		o->waking->wprevp = &o->waking;
	o->waiters = NULL;
	while ((j = o->waking)) {
		crm_job_wait_h *h = j->wait_h;

		wait_unlink(j);
		h(j, err);
	}
}

/* The token endpoint's answer: {"access_token", "refresh_token", "expires_in"} */
static int oauth_take(struct crm_oauth *o, const struct httpc_resp *r, char *why,
		      size_t wsz)
{
	json_t *b = r->err ? NULL : json_loadb(r->body, r->body_len, 0, NULL);
	json_t *at = json_object_get(b, "access_token"), *rt = json_object_get(b, "refresh_token");
	json_int_t ttl = json_integer_value(json_object_get(b, "expires_in"));
	char err[64];
	int e = 0;

	if (r->err) {
		snprintf(why, wsz, "%s", r->cause);
		e = EIO;
	}
	else if (r->status != 200 || !json_is_string(at) || !json_is_string(rt) ||
		 strlen(json_string_value(at)) >= TOKEN_MAX ||
		 strlen(json_string_value(rt)) >= TOKEN_MAX) {
		/* the error code only: descriptions may echo what was sent */
		crm_jstr(b, "error", err, sizeof(err));
		if (!*err)
			crm_jstr(b, "hint", err, sizeof(err));
		snprintf(why, wsz, "HTTP %ld%s%s", r->status, *err ? " " : "", err);
		e = EACCES;
	}
	else {
		snprintf(o->access, sizeof(o->access), "%s", json_string_value(at));
		snprintf(o->refresh, sizeof(o->refresh), "%s", json_string_value(rt));
		o->expires = clk_wall_ms() + (ttl > 0 ? ttl : 3600) * 1000;
	}
	json_decref(b);
	return e;
}

static void on_refreshed(struct crm_delivery *d, const struct httpc_resp *r)
{
	struct crm_oauth *o = NULL;
	char why[96];
	int e;

	for (size_t i = 0; i < sizeof(oauths) / sizeof(oauths[0]); i++)
		if (oauths[i].rd == d)
			o = &oauths[i];
	if (!o)
		return;         /* cannot happen: each refresh has its entry */
	o->rd = NULL;
	e = oauth_take(o, r, why, sizeof(why));
	if (e) {
		o->failed_at = clk_mono_ms();
		log_err("%s: OAuth token refresh failed: %s%s", o->account, why,
			e == EACCES ? " (is the refresh_token still valid? a new one "
			"goes in [crm] refresh_token)" : "");
	}
	else {
		o->failed_at = 0;
		oauth_store(d->crm, o);
		log_info("%s: OAuth tokens refreshed, valid for %lld s", o->account,
			 (long long)((o->expires - clk_wall_ms()) / 1000));
	}
	crm_delivery_free(d);
	oauth_wake(o, e ? EACCES : 0);
}

static int oauth_start(struct crm *c, const struct crm_oauth_params *p,
		       struct crm_oauth *o)
{
	struct crm_delivery *d = calloc(1, sizeof(*d));
	const char *json_hdrs[] = { "Content-Type: application/json",
				    "Accept: application/json", NULL };
	const char *get_hdrs[] = { "Accept: application/json", NULL };
	struct httpc_opts opt = { .timeout_ms = 15000, .max_body = 64 * 1024 };
	char *url = NULL, *body = NULL;
	int e = ENOMEM;

	if (!d)
		return ENOMEM;
	d->crm = c;
	if (p->post_json) {
		json_t *b = json_pack("{s:s, s:s, s:s, s:s, s:s}", "client_id", p->client_id,
				      "client_secret", p->client_secret,
				      "grant_type", "refresh_token", "refresh_token", o->refresh,
				      "redirect_uri", p->redirect_uri ? p->redirect_uri : "");

		body = b ? json_dumps(b, JSON_COMPACT) : NULL;
		json_decref(b);
		url = strdup(p->token_url);
		opt.method = "POST";
		opt.body = body;
		opt.body_len = body ? strlen(body) : 0;
		opt.headers = json_hdrs;
		if (!body)
			goto out;
	}
	else {
		char *ci = curl_easy_escape(NULL, p->client_id, 0);
		char *cs = curl_easy_escape(NULL, p->client_secret, 0);
		char *rt = curl_easy_escape(NULL, o->refresh, 0);

		if (ci && cs && rt &&
		    asprintf(&url, "%s%sgrant_type=refresh_token&client_id=%s&client_secret=%s"
			     "&refresh_token=%s", p->token_url,
			     strchr(p->token_url, '?') ? "&" : "?", ci, cs, rt) < 0)
			url = NULL;
		curl_free(ci);
		curl_free(cs);
		curl_free(rt);
		opt.headers = get_hdrs;
	}
	if (!url)
		goto out;
	opt.url = url;
	o->rd = d;
	e = crm_delivery_http(d, &opt, on_refreshed);
	if (e)
		o->rd = NULL;
out:
	free(url);
	free(body);
	if (e)
		free(d);
	return e;
}

int crm_oauth_refresh(struct crm *c, const struct crm_oauth_params *p,
		      struct crm_job *j, crm_job_wait_h *h)
{
	struct crm_oauth *o = oauth_get(c, p);
	int e;

	if (!o)
		return ENOMEM;
	if (!o->rd) {
		if (o->failed_at && clk_mono_ms() - o->failed_at < REFRESH_BACKOFF)
			return EAGAIN;
		e = oauth_start(c, p, o);
		if (e) {
			log_err("%s: cannot start the OAuth token refresh: %s", o->account,
				strerror(e));
			return e;
		}
	}
	if (j) {
		wait_unlink(j);
		j->wait_on = o;
		j->wait_h = h;
		j->wnext = o->waiters;
		if (j->wnext)
			j->wnext->wprevp = &j->wnext;
		j->wprevp = &o->waiters;
		o->waiters = j;
	}
	return 0;
}

/* ---- state ------------------------------------------------------------------------------ */

json_t *crm_state_load(struct crm *c, const char *scope)
{
	sqlite3_stmt *st = crm_db(c) ? db_stmt(crm_db(c), "SELECT state FROM crm_state "
					       "WHERE scope = ?") : NULL;
	json_t *o = NULL;

	if (st) {
		sqlite3_bind_text(st, 1, scope, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW)
			o = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	if (!json_is_object(o)) {
		json_decref(o);
		o = json_object();
	}
	return o;
}

int crm_state_save(struct crm *c, const char *scope, json_t *state)
{
	struct db *db = crm_db(c);
	sqlite3_stmt *st = db ? db_stmt(db, "INSERT OR REPLACE INTO crm_state (scope, state, "
					"updated) VALUES (?, ?, ?)") : NULL;
	char *text = json_dumps(state, JSON_COMPACT);
	int e = 0;

	if (!st || !text) {
		free(text);
		return db ? EIO : 0;
	}
	db_tx(db);
	sqlite3_bind_text(st, 1, scope, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, clk_wall_ms());
	if (sqlite3_step(st) != SQLITE_DONE) {
		log_err("CRM state %s not stored: %s", scope, sqlite3_errmsg(db_handle(db)));
		e = EIO;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	free(text);
	return e;
}

int crm_state_drop(struct crm *c, const char *scope)
{
	sqlite3_stmt *st = crm_db(c) ? db_stmt(crm_db(c), "DELETE FROM crm_state "
					       "WHERE scope = ?") : NULL;

	if (!st)
		return crm_db(c) ? EIO : 0;
	db_tx(crm_db(c));
	sqlite3_bind_text(st, 1, scope, -1, SQLITE_STATIC);
	sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return 0;
}

void crm_state_purge(struct crm *c, int64_t before_ms)
{
	sqlite3_stmt *st = crm_db(c) ? db_stmt(crm_db(c), "DELETE FROM crm_state WHERE "
					       "updated < ? AND scope LIKE 'call:%'") : NULL;

	if (!st)
		return;
	db_tx(crm_db(c));
	sqlite3_bind_int64(st, 1, before_ms);
	sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* ---- entities ----------------------------------------------------------------------------- */

void crm_entity_note(struct crm *c, const char *entity, const char *phone)
{
	static int64_t last_purge;
	struct db *db = crm_db(c);
	int64_t now = clk_wall_ms(), keep = crm_conf(c)->crm.cache_ms + 60000;
	sqlite3_stmt *st;

	if (!db || crm_conf(c)->crm.cache_ms <= 0 || !*entity || !*phone)
		return;
	db_tx(db);
	if (now - last_purge > 60000 && (st = db_stmt(db, "DELETE FROM crm_entities "
						       "WHERE updated < ?"))) {
		/* a note outlives the cache entries it explains by a minute */
		last_purge = now;
		sqlite3_bind_int64(st, 1, now - keep);
		sqlite3_step(st);
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	st = db_stmt(db, "INSERT OR REPLACE INTO crm_entities (entity, phone, updated) "
		     "VALUES (?, ?, ?)");
	if (!st)
		return;
	sqlite3_bind_text(st, 1, entity, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, phone, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_warn("cannot note the entity of %s: %s", phone,
			 sqlite3_errmsg(db_handle(db)));
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

int crm_entity_drop(struct crm *c, const char *entity)
{
	struct db *db = crm_db(c);
	sqlite3_stmt *st = db ? db_stmt(db, "SELECT phone FROM crm_entities WHERE "
					"entity = ?") : NULL;
	char phones[16][64];
	int n = 0, dropped = 0;

	if (!st)
		return db ? -1 : 0;
	sqlite3_bind_text(st, 1, entity, -1, SQLITE_STATIC);
	while (n < 16 && sqlite3_step(st) == SQLITE_ROW)
		snprintf(phones[n++], sizeof(phones[0]), "%s",
			 (const char *)sqlite3_column_text(st, 0));
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	for (int i = 0; i < n; i++) {
		int k = crm_cache_drop(c, phones[i]);

		if (k < 0)
			return -1;
		dropped += k;
	}
	if (n == 16)            /* an entity with that many numbers: play safe */
		dropped += crm_cache_drop(c, NULL);
	st = db_stmt(db, "DELETE FROM crm_entities WHERE entity = ?");
	if (st) {
		db_tx(db);
		sqlite3_bind_text(st, 1, entity, -1, SQLITE_STATIC);
		sqlite3_step(st);
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	return dropped;
}

/* ---- webhooks ----------------------------------------------------------------------------- */

/* Decodes s[0..len) (+ is a space, %XX a byte) into out. */
static void form_decode(const char *s, size_t len, char *out, size_t sz)
{
	size_t n = 0;

	for (size_t i = 0; i < len && n + 1 < sz; i++) {
		if (s[i] == '+') {
			out[n++] = ' ';
		}
		else if (s[i] == '%' && i + 2 < len + 0 && hex_digit(s[i + 1]) >= 0 &&
			 hex_digit(s[i + 2]) >= 0) {
			out[n++] = (char)(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
			i += 2;
		}
		else {
			out[n++] = s[i];
		}
	}
	if (sz)
		out[n] = '\0';
}

void crm_form_each(const char *body,
		   void (*h)(const char *name, const char *value, void *arg), void *arg)
{
	char name[256], value[1024];

	for (const char *p = body ? body : ""; *p; ) {
		size_t len = strcspn(p, "&");
		const char *eq = memchr(p, '=', len);
		size_t nl = eq ? (size_t)(eq - p) : len;

		if (nl) {
			form_decode(p, nl, name, sizeof(name));
			if (eq)
				form_decode(eq + 1, len - nl - 1, value, sizeof(value));
			else
				value[0] = '\0';
			h(name, value, arg);
		}
		p += len;
		if (*p == '&')
			p++;
	}
}

struct form_find {
	const char *name;
	char *out;
	size_t sz;
	bool found;
};

static void form_find_h(const char *name, const char *value, void *arg)
{
	struct form_find *f = arg;

	if (!f->found && !strcmp(name, f->name)) {
		snprintf(f->out, f->sz, "%s", value);
		f->found = true;
	}
}

bool crm_form_get(const char *body, const char *name, char *out, size_t sz)
{
	struct form_find f = { name, out, sz, false };

	crm_form_each(body, form_find_h, &f);
	if (!f.found && sz)
		out[0] = '\0';
	return f.found;
}

bool crm_secret_equal(const char *given, const char *want)
{
	size_t gl = given ? strlen(given) : 0, wl = strlen(want);
	unsigned char diff = gl != wl;

	if (!wl || !given)
		return false;
	/* time depends on the length of what was given only */
	for (size_t i = 0; i < gl; i++)
		diff |= (unsigned char)(given[i] ^ want[i % wl]);
	return !diff;
}

const char *crm_jstr(json_t *o, const char *key, char *buf, size_t sz)
{
	crm_json_str(buf, sz, o, key);
	return buf;
}
