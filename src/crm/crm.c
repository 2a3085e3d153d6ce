/*
 * crm.c: CRM lookups. [crm] type = none answers "unknown" for everyone;
 * generic asks lookup_url (CONTRACT §4). Answers (known and unknown, not
 * failures) are cached in sqlite for [crm] cache, unknown ones for at most
 * a minute. The answer always comes from the event loop, never from
 * inside crm_lookup().
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#define LOG_MODULE "crm"
#include "log.h"
#include <sqlite3.h>

#include "clk.h"
#include "conf.h"
#include "db.h"
#include "httpc.h"
#include "metrics.h"
#include "crm/crm.h"
#include "crm/normalize.h"
#include "http/api.h"

#define NEGATIVE_TTL_MS 60000   /* "unknown" is cached at most this long */

struct crm {
	su_root_t *root;
	struct httpc *http;
	struct db *db;
	struct conf *conf;
	struct crm_lookup *detached;    /* running on after their deadline */
};

struct crm_lookup {
	struct crm *crm;
	crm_lookup_h *cb;               /* NULL once detached */
	void *arg;
	su_timer_t *tmr;                /* none and cache hits: next turn */
	struct httpc_req *req;
	struct crm_result res;
	char phone[64], did[64];
	int64_t started;
	struct crm_lookup *next, **prevp;       /* on crm->detached */
};

static struct metric *m_ok, *m_unknown, *m_failed, *m_hit, *m_unmapped;
static struct metric_hist *m_latency;

int crm_alloc(struct crm **cp, su_root_t *root, struct httpc *http,
	      struct db *db, const struct conf *conf)
{
	static const double bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
					 1, 1.5, 2.5, 5 };
	struct crm *c = calloc(1, sizeof(*c));

	if (!c)
		return ENOMEM;
	c->root = root;
	c->http = http;
	c->db = db;
	c->conf = conf_ref((struct conf *)conf);
	m_hit = metrics_counter("sipcrm_crm_cache_hits_total",
				"lookups answered from the cache", NULL);
	m_unmapped = metrics_counter("sipcrm_crm_unmapped_users_total",
				     "responsible users of the CRM that map to no agent", NULL);
	m_latency = metrics_histogram("sipcrm_crm_lookup_seconds",
				      "CRM lookup latency over HTTP", NULL, bounds,
				      sizeof(bounds) / sizeof(bounds[0]));
	m_ok = metrics_counter("sipcrm_crm_lookups_total", "CRM lookups by result",
			       "result=\"known\"");
	m_unknown = metrics_counter("sipcrm_crm_lookups_total",
				    "CRM lookups by result", "result=\"unknown\"");
	m_failed = metrics_counter("sipcrm_crm_lookups_total",
				   "CRM lookups by result", "result=\"failed\"");
	*cp = c;
	return 0;
}

struct crm *crm_free(struct crm *c)
{
	if (!c)
		return NULL;
	while (c->detached)
		crm_lookup_cancel(c->detached);
	conf_deref(c->conf);
	free(c);
	return NULL;
}

void crm_reload(struct crm *c, const struct conf *conf)
{
	conf_deref(c->conf);
	c->conf = conf_ref((struct conf *)conf);
}

/* ---- the cache ------------------------------------------------------------ */

static void cache_put(struct crm *c, const struct crm_lookup *l)
{
	sqlite3_stmt *st;
	int64_t ttl = c->conf->crm.cache_ms;
	json_t *o;
	char *text;

	if (!c->db || ttl <= 0 || l->res.status == CRM_FAILED || !*l->phone)
		return;
	if (l->res.status == CRM_UNKNOWN && ttl > NEGATIVE_TTL_MS)
		ttl = NEGATIVE_TTL_MS;
	/* the CRM's answer as given: crm_user is mapped again on use */
	o = json_pack("{s:b, s:s, s:s, s:s, s:s, s:s}",
		      "known", l->res.status == CRM_KNOWN,
		      "contact_id", l->res.contact_id, "contact_name", l->res.contact_name,
		      "contact_url", l->res.contact_url,
		      "responsible_id", l->res.responsible_id,
		      "extension", l->res.given_ext);
	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	st = text ? db_stmt(c->db, "INSERT OR REPLACE INTO crm_cache (phone, did, result, "
			    "expires) VALUES (?, ?, ?, ?)") : NULL;
	if (st) {
		db_tx(c->db);
		sqlite3_bind_text(st, 1, l->phone, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, l->did, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, clk_wall_ms() + ttl);
		if (sqlite3_step(st) != SQLITE_DONE)
			log_warn("cannot cache the lookup of %s: %s", l->phone,
				 sqlite3_errmsg(sqlite3_db_handle(st)));
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	free(text);
}

static void map_user(struct crm *c, struct crm_result *r)
{
	const struct conf_agent *a;

	snprintf(r->responsible_ext, sizeof(r->responsible_ext), "%s", r->given_ext);
	if (*r->responsible_ext || !*r->responsible_id)
		return;
	a = conf_agent_by_crm_user(c->conf, r->responsible_id);
	if (a)
		snprintf(r->responsible_ext, sizeof(r->responsible_ext), "%s", a->ext);
	else
		metrics_inc(m_unmapped);
}

static void copy_str(char *dst, size_t sz, json_t *o, const char *key);

/* A fresh cached answer for l, into l->res. */
static bool cache_get(struct crm *c, struct crm_lookup *l)
{
	sqlite3_stmt *st;
	json_t *o = NULL;
	bool hit = false;

	if (!c->db || c->conf->crm.cache_ms <= 0 || !*l->phone)
		return false;
	st = db_stmt(c->db, "SELECT result FROM crm_cache WHERE phone = ? AND did = ? "
		     "AND expires > ?");
	if (!st)
		return false;
	sqlite3_bind_text(st, 1, l->phone, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, l->did, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, clk_wall_ms());
	if (sqlite3_step(st) == SQLITE_ROW)
		o = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (json_is_object(o)) {
		l->res.status = json_is_true(json_object_get(o, "known")) ? CRM_KNOWN :
				CRM_UNKNOWN;
		copy_str(l->res.contact_id, sizeof(l->res.contact_id), o, "contact_id");
		copy_str(l->res.contact_name, sizeof(l->res.contact_name), o, "contact_name");
		copy_str(l->res.contact_url, sizeof(l->res.contact_url), o, "contact_url");
		copy_str(l->res.responsible_id, sizeof(l->res.responsible_id), o,
			 "responsible_id");
		copy_str(l->res.given_ext, sizeof(l->res.given_ext), o, "extension");
		map_user(c, &l->res);
		hit = true;
	}
	json_decref(o);
	return hit;
}

/* Drops the cached answers for one number (any DID), or all with NULL. */
static int cache_drop(struct crm *c, const char *phone)
{
	sqlite3_stmt *st = phone ?
		db_stmt(c->db, "DELETE FROM crm_cache WHERE phone = ?") :
		db_stmt(c->db, "DELETE FROM crm_cache");
	int n;

	if (!st)
		return -1;
	db_tx(c->db);
	if (phone)
		sqlite3_bind_text(st, 1, phone, -1, SQLITE_STATIC);
	n = sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(sqlite3_db_handle(st)) : -1;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return n;
}

/* ---- lookups ---------------------------------------------------------------- */

static void finish(struct crm_lookup *l)
{
	metrics_inc(l->res.status == CRM_KNOWN ? m_ok :
		    l->res.status == CRM_UNKNOWN ? m_unknown : m_failed);
	if (l->cb)
		l->cb(&l->res, l->arg);
	crm_lookup_cancel(l);
}

static void on_timer(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	(void)m;
	(void)t;
	finish((struct crm_lookup *)arg);
}

static void copy_str(char *dst, size_t sz, json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (json_is_string(v))
		snprintf(dst, sz, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(dst, sz, "%lld", (long long)json_integer_value(v));
}

/* Fills res from a 200 body; a body that does not parse is a failure. */
static void parse_known(struct crm_lookup *l, const char *body, size_t len)
{
	json_t *root = json_loadb(body, len, 0, NULL), *resp;

	if (!json_is_object(root)) {
		l->res.status = CRM_FAILED;
		l->res.cause = "bad_json";
		json_decref(root);
		return;
	}
	copy_str(l->res.contact_id, sizeof(l->res.contact_id),
		 json_object_get(root, "contact"), "id");
	copy_str(l->res.contact_name, sizeof(l->res.contact_name),
		 json_object_get(root, "contact"), "name");
	copy_str(l->res.contact_url, sizeof(l->res.contact_url),
		 json_object_get(root, "contact"), "url");
	resp = json_object_get(root, "responsible");
	l->res.status = json_is_object(resp) ? CRM_KNOWN : CRM_UNKNOWN;
	copy_str(l->res.responsible_id, sizeof(l->res.responsible_id), resp, "id");
	copy_str(l->res.given_ext, sizeof(l->res.given_ext), resp, "extension");
	map_user(l->crm, &l->res);
	json_decref(root);
}

static void on_http(const struct httpc_resp *r, void *arg)
{
	struct crm_lookup *l = arg;

	l->req = NULL;
	metrics_observe(m_latency, (double)(clk_mono_ms() - l->started) / 1000.0);
	if (r->err) {
		l->res.status = CRM_FAILED;
		l->res.cause = r->cause;
	}
	else if (r->status == 404) {
		l->res.status = CRM_UNKNOWN;
	}
	else if (r->status == 200) {
		parse_known(l, r->body, r->body_len);
	}
	else {
		l->res.status = CRM_FAILED;
		l->res.cause = r->status >= 500 ? "http_5xx" : "http_other";
	}
	if (l->res.status == CRM_FAILED) {
		char lbl[64];

		snprintf(lbl, sizeof(lbl), "cause=\"%s\"", l->res.cause);
		metrics_inc(metrics_counter("sipcrm_crm_lookup_failures_total",
					    "failed CRM lookups by cause", lbl));
		log_warn("lookup of %s failed: %s%s", l->phone, l->res.cause,
			 l->cb ? "" : " (after its deadline)");
	}
	else {
		cache_put(l->crm, l);
	}
	finish(l);
}

static int start_generic(struct crm_lookup *l, const char *phone, const char *did,
			 const char *call_id)
{
	const struct conf *c = l->crm->conf;
	char url[2048], auth[512];
	const char *hdrs[] = { auth, "Accept: application/json", NULL };
	char *p = curl_easy_escape(NULL, phone ? phone : "", 0);
	char *d = curl_easy_escape(NULL, did ? did : "", 0);
	char *i = curl_easy_escape(NULL, call_id ? call_id : "", 0);
	struct httpc_opts o = { .url = url, .headers = hdrs,
				.timeout_ms = 30000, .max_body = 1 << 20 };
	int e;

	snprintf(url, sizeof(url), "%s%sphone=%s&did=%s&call_id=%s", c->crm.lookup_url,
		 strchr(c->crm.lookup_url, '?') ? "&" : "?", p ? p : "", d ? d : "",
		 i ? i : "");
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->crm.secret);
	curl_free(p);
	curl_free(d);
	curl_free(i);
	e = httpc_request(&l->req, l->crm->http, &o, on_http, l);
	return e;
}

int crm_lookup(struct crm_lookup **lp, struct crm *c, const char *phone,
	       const char *did, const char *call_id, crm_lookup_h *cb, void *arg)
{
	struct crm_lookup *l = calloc(1, sizeof(*l));
	int e = 0;

	if (!l)
		return ENOMEM;
	l->crm = c;
	l->cb = cb;
	l->arg = arg;
	l->res.status = CRM_UNKNOWN;
	l->started = clk_mono_ms();
	snprintf(l->phone, sizeof(l->phone), "%s", phone ? phone : "");
	snprintf(l->did, sizeof(l->did), "%s", did ? did : "");
	if (c->conf->crm.type != CONF_CRM_NONE && cache_get(c, l))
		metrics_inc(m_hit);
	else if (c->conf->crm.type == CONF_CRM_GENERIC)
		e = start_generic(l, phone, did, call_id);
	if (!e && !l->req) {
		l->tmr = su_timer_create(su_root_task(c->root), 0);
		if (!l->tmr || su_timer_set_interval(l->tmr, on_timer, l, 0))
			e = ENOMEM;
	}
	if (e) {
		crm_lookup_cancel(l);
		return e;
	}
	*lp = l;
	return 0;
}

struct crm_lookup *crm_lookup_detach(struct crm_lookup *l)
{
	if (!l)
		return NULL;
	if (!l->req)
		return crm_lookup_cancel(l);
	l->cb = NULL;
	l->next = l->crm->detached;
	if (l->next)
		l->next->prevp = &l->next;
	l->prevp = &l->crm->detached;
	l->crm->detached = l;
	return NULL;
}

struct crm_lookup *crm_lookup_cancel(struct crm_lookup *l)
{
	if (!l)
		return NULL;
	if (l->prevp) {
		*l->prevp = l->next;
		if (l->next)
			l->next->prevp = l->prevp;
	}
	httpc_cancel(l->req);
	su_timer_destroy(l->tmr);
	free(l);
	return NULL;
}

/* ---- POST /api/v1/crm/generic: what the CRM tells us ------------------------------ */

static int api_generic(struct api_req *req, void *arg)
{
	struct crm *c = arg;
	json_t *body = api_req_json(req), *list;
	size_t i;
	int dropped = 0;

	if (!json_is_object(body))
		return api_reply_error(req, 400, "a JSON object is expected");
	if (json_is_true(json_object_get(body, "invalidate_all"))) {
		dropped = cache_drop(c, NULL);
	}
	else if (json_is_array(list = json_object_get(body, "invalidate"))) {
		for (i = 0; i < json_array_size(list); i++) {
			const char *num = json_string_value(json_array_get(list, i));
			char e164[CRM_E164_SIZE];
			int k;

			if (!num)
				return api_reply_error(req, 400, "invalidate holds numbers");
			if (crm_normalize(num, c->conf->crm.country_code, e164, sizeof(e164)))
				snprintf(e164, sizeof(e164), "%.16s", num);
			k = cache_drop(c, e164);
			dropped += k > 0 ? k : 0;
		}
	}
	else {
		return api_reply_error(req, 400, "expected invalidate or invalidate_all");
	}
	if (dropped < 0)
		return api_reply_error(req, 500, "database error");
	db_flush(c->db);
	log_info("CRM cache: %d entr%s dropped on request", dropped, dropped == 1 ? "y" : "ies");
	return api_reply_json(req, 200, json_pack("{s:i}", "invalidated", dropped));
}

int crm_api_register(struct crm *c, struct api *api)
{
	return api_route(api, "POST", "/api/v1/crm/generic", true, api_generic, c);
}
