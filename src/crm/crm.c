/*
 * crm.c: the CRM core. It runs lookups through the configured adapter
 * (crm_int.h) and caches their answers, and it stamps, stores and
 * publishes the call events that the adapters deliver.
 *
 * Lookups: answers (known and unknown, never failures) are cached in
 * sqlite for [crm] cache, unknown ones for at most a minute. The answer
 * always comes from the event loop, never from inside crm_lookup().
 *
 * Events: crm_event_emit() gives each event its id and time, hands its
 * text to the listeners (SSE) and, when the adapter delivers events,
 * stores it in the outbox (outbox.h) in the current transaction.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#define LOG_MODULE "crm"
#include "log.h"
#include "clk.h"
#include "tokens.h"
#include "rnd.h"
#include "conf.h"
#include "db.h"
#include "httpc.h"
#include "metrics.h"
#include "crm/crm.h"
#include "crm/crm_int.h"
#include "crm/normalize.h"
#include "crm/outbox.h"
#include "http/api.h"

#define NEGATIVE_TTL_MS 60000   /* "unknown" is cached at most this long */

/*
 * Lookups past their call's deadline run on, so that a late answer still
 * fills the cache, but only this many: each holds a connection to the CRM,
 * and libcurl walks every connection to a host to pick one for each new
 * request. A CRM that hangs for 30 s at 200 calls/s would otherwise leave
 * 6,000 of them and make every request cost a walk of that length. The
 * oldest is cancelled first.
 */
#define DETACHED_MAX 64

/*
 * A CRM that fails DOWN_AFTER lookups in a row (an error, or no answer by
 * the call's deadline) is taken as down: until a lookup succeeds again, at
 * most DOWN_RATE lookups a second are sent, evenly spaced, and the other
 * calls route as unknown at once (cause "crm_down") instead of each
 * waiting out its deadline with a connection of its own. At a few calls a
 * second every call still asks; under load the loop is spared the churn.
 */
#define DOWN_AFTER 5
#define DOWN_RATE  10
#define MAX_LISTENERS   4

struct crm {
	su_root_t *root;
	struct httpc *http;
	struct db *db;
	struct conf *conf;
	const struct crm_adapter *ad;
	struct outbox *outbox;
	struct crm_lookup *detached, *detached_last;    /* oldest last */
	size_t ndetached;
	unsigned fails;                 /* lookups failed or late in a row */
	struct tokens probes;           /* lookups that may go while down */
	struct {
		crm_event_h *h;
		void *arg;
	} listeners[MAX_LISTENERS];
	size_t nlisteners;
	crm_c2c_h *c2c_h;
	void *c2c_arg;
};

static struct metric *m_ok, *m_unknown, *m_failed, *m_hit, *m_unmapped;
static struct metric *m_evicted, *m_down;
static struct metric_hist *m_latency;

static const struct crm_adapter *adapter_for(int type)
{
	switch (type) {
	case CONF_CRM_GENERIC: return &crm_adapter_generic;
	case CONF_CRM_BITRIX24: return &crm_adapter_bitrix24;
	case CONF_CRM_AMOCRM: return &crm_adapter_amocrm;
	case CONF_CRM_NONE: return &crm_adapter_none;
	default: return NULL;
	}
}

static void use_conf(struct crm *c, const struct conf *conf)
{
	const struct crm_adapter *ad = adapter_for(conf->crm.type);

	if (!ad) {
		log_warn("[crm] type %d has no adapter in this build: no lookups, "
			 "no events delivered", conf->crm.type);
		ad = &crm_adapter_none;
	}
	conf_deref(c->conf);
	c->conf = conf_ref((struct conf *)conf);
	c->ad = ad;
}

int crm_alloc(struct crm **cp, su_root_t *root, struct httpc *http,
	      struct db *db, const struct conf *conf)
{
	static const double bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
					 1, 1.5, 2.5, 5 };
	struct crm *c = calloc(1, sizeof(*c));
	int e = 0;

	if (!c)
		return ENOMEM;
	c->root = root;
	c->http = http;
	c->db = db;
	use_conf(c, conf);
	m_hit = metrics_counter("sipcrm_crm_cache_hits_total",
				"lookups answered from the cache", NULL);
	m_down = metrics_counter("sipcrm_crm_lookup_failures_total",
				 "failed CRM lookups by cause", "cause=\"crm_down\"");
	m_evicted = metrics_counter("sipcrm_crm_late_lookups_cancelled_total",
				    "lookups past their deadline cancelled, oldest "
				    "first, to bound how many run on", NULL);
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
	if (db)
		e = outbox_alloc(&c->outbox, c, db, root);
	if (e) {
		crm_free(c);
		return e;
	}
	*cp = c;
	return 0;
}

struct crm *crm_free(struct crm *c)
{
	if (!c)
		return NULL;
	while (c->detached)
		crm_lookup_cancel(c->detached);
	outbox_free(c->outbox);
	conf_deref(c->conf);
	free(c);
	return NULL;
}

void crm_reload(struct crm *c, const struct conf *conf)
{
	use_conf(c, conf);
	outbox_kick(c->outbox);
}

const struct conf *crm_conf(const struct crm *c)
{
	return c->conf;
}

struct db *crm_db(const struct crm *c)
{
	return c->db;
}

su_root_t *crm_root(const struct crm *c)
{
	return c->root;
}

void crm_on_click_to_call(struct crm *c, crm_c2c_h *h, void *arg)
{
	c->c2c_h = h;
	c->c2c_arg = arg;
}

int crm_click_to_call(struct crm *c, const char *agent, const char *number,
		      const char *caller_id, const char *crm_ref, char call_id[40])
{
	if (!c->c2c_h)
		return ENOTSUP;
	return c->c2c_h(c->c2c_arg, agent, number, caller_id, crm_ref, call_id);
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
	o = json_pack("{s:b, s:s, s:s, s:s, s:s, s:s, s:s}",
		      "known", l->res.status == CRM_KNOWN,
		      "contact_id", l->res.contact_id, "contact_name", l->res.contact_name,
		      "contact_url", l->res.contact_url,
		      "responsible_id", l->res.responsible_id,
		      "responsible_name", l->res.responsible_name,
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

void crm_json_str(char *dst, size_t sz, json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (json_is_string(v))
		snprintf(dst, sz, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(dst, sz, "%lld", (long long)json_integer_value(v));
	else if (sz)
		dst[0] = '\0';
}

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
		crm_json_str(l->res.contact_id, sizeof(l->res.contact_id), o, "contact_id");
		crm_json_str(l->res.contact_name, sizeof(l->res.contact_name), o,
			     "contact_name");
		crm_json_str(l->res.contact_url, sizeof(l->res.contact_url), o,
			     "contact_url");
		crm_json_str(l->res.responsible_id, sizeof(l->res.responsible_id), o,
			     "responsible_id");
		crm_json_str(l->res.responsible_name, sizeof(l->res.responsible_name), o,
			     "responsible_name");
		crm_json_str(l->res.given_ext, sizeof(l->res.given_ext), o, "extension");
		map_user(c, &l->res);
		hit = true;
	}
	json_decref(o);
	return hit;
}

int crm_cache_drop(struct crm *c, const char *number)
{
	char e164[CRM_E164_SIZE];
	sqlite3_stmt *st;
	int n;

	if (!c->db)
		return 0;
	if (number && crm_normalize(number, c->conf->crm.country_code, e164,
				    sizeof(e164)))
		snprintf(e164, sizeof(e164), "%.16s", number);
	st = number ? db_stmt(c->db, "DELETE FROM crm_cache WHERE phone = ?") :
		      db_stmt(c->db, "DELETE FROM crm_cache");
	if (!st)
		return -1;
	db_tx(c->db);
	if (number)
		sqlite3_bind_text(st, 1, e164, -1, SQLITE_STATIC);
	n = sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(sqlite3_db_handle(st)) : -1;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return n;
}

/* ---- lookups ---------------------------------------------------------------- */

static void lookup_failed(struct crm *c)
{
	if (++c->fails == DOWN_AFTER) {
		log_warn("CRM: %u lookups in a row failed or came late; until one "
			 "succeeds, at most %d lookups/s are sent and other calls "
			 "route as unknown at once", c->fails, DOWN_RATE);
		c->probes = (struct tokens){ 1, clk_mono_ms() };
	}
}

static void lookup_succeeded(struct crm *c)
{
	if (c->fails >= DOWN_AFTER)
		log_info("CRM: lookups succeed again after %u failed", c->fails);
	c->fails = 0;
}

/* May a lookup go to the CRM now? Always, unless it is down. */
static bool lookup_may_go(struct crm *c)
{
	/* evenly spaced: no bursts */
	return c->fails < DOWN_AFTER ||
	       tokens_take(&c->probes, clk_mono_ms(), DOWN_RATE, 1);
}

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

void crm_lookup_done(struct crm_lookup *l)
{
	if (l->res.status == CRM_FAILED) {
		char lbl[64];

		if (!l->res.cause)
			l->res.cause = "failed";
		snprintf(lbl, sizeof(lbl), "cause=\"%s\"", l->res.cause);
		metrics_inc(metrics_counter("sipcrm_crm_lookup_failures_total",
					    "failed CRM lookups by cause", lbl));
		log_warn("lookup of %s%s%s failed: %s%s", l->phone,
			 *l->call_id ? " for call " : "", l->call_id, l->res.cause,
			 l->cb ? "" : " (after its deadline)");
		if (l->cb)              /* a late one was counted at its deadline */
			lookup_failed(l->crm);
	}
	else {
		lookup_succeeded(l->crm);
		map_user(l->crm, &l->res);
		cache_put(l->crm, l);
	}
	finish(l);
}

static void on_lookup_http(const struct httpc_resp *r, void *arg)
{
	struct crm_lookup *l = arg;

	l->req = NULL;
	if (!l->timed) {
		l->timed = true;
		metrics_observe(m_latency, (double)(clk_mono_ms() - l->started) / 1000.0);
	}
	l->http_h(l, r);
}

int crm_lookup_http(struct crm_lookup *l, const struct httpc_opts *o,
		    void (*h)(struct crm_lookup *l, const struct httpc_resp *r))
{
	l->http_h = h;
	return httpc_request(&l->req, l->crm->http, o, on_lookup_http, l);
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
	snprintf(l->call_id, sizeof(l->call_id), "%s", call_id ? call_id : "");
	if (c->ad->lookup && cache_get(c, l)) {
		metrics_inc(m_hit);
	}
	else if (c->ad->lookup && !lookup_may_go(c)) {
		metrics_inc(m_down);
		l->res.status = CRM_FAILED;
		l->res.cause = "crm_down";
	}
	else if (c->ad->lookup) {
		e = c->ad->lookup(c, l);
	}
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
	struct crm *c;

	if (!l)
		return NULL;
	c = l->crm;
	lookup_failed(c);               /* its call's deadline passed */
	if (!l->req)
		return crm_lookup_cancel(l);
	l->cb = NULL;
	l->detached = true;
	l->prev = NULL;
	l->next = c->detached;
	if (l->next)
		l->next->prev = l;
	else
		c->detached_last = l;
	c->detached = l;
	if (++c->ndetached > DETACHED_MAX) {
		metrics_inc(m_evicted);
		crm_lookup_cancel(c->detached_last);
	}
	return NULL;
}

struct crm_lookup *crm_lookup_cancel(struct crm_lookup *l)
{
	if (!l)
		return NULL;
	if (l->detached) {
		struct crm *c = l->crm;

		if (l->prev)
			l->prev->next = l->next;
		else
			c->detached = l->next;
		if (l->next)
			l->next->prev = l->prev;
		else
			c->detached_last = l->prev;
		c->ndetached--;
	}
	httpc_cancel(l->req);
	su_timer_destroy(l->tmr);
	if (l->astate && l->crm->ad->free_state)
		l->crm->ad->free_state(l->astate);
	free(l);
	return NULL;
}

/* ---- events ------------------------------------------------------------------ */

static void rfc3339_now(char *buf, size_t sz)
{
	int64_t ms = clk_wall_ms();
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	gmtime_r(&s, &tm);
	n = strftime(buf, sz, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, sz - n, ".%03dZ", (int)(ms % 1000));
}

/* A random (version 4) UUID. */
static void new_uuid(char out[37])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[16];
	size_t k = 0;

	if (rnd_bytes(r, sizeof(r))) {
		int64_t t = clk_mono_ms() ^ clk_wall_ms();

		for (size_t i = 0; i < sizeof(r); i++)
			r[i] = (unsigned char)((t >> (i % 8 * 8)) ^ random());
	}
	r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
	r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
	for (size_t i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[k++] = '-';
		out[k++] = hex[r[i] >> 4];
		out[k++] = hex[r[i] & 15];
	}
	out[k] = '\0';
}

json_t *crm_event_new(const char *type)
{
	char id[37], now[40];

	new_uuid(id);
	rfc3339_now(now, sizeof(now));
	return json_pack("{s:s, s:s, s:s}", "id", id, "type", type, "time", now);
}

int crm_event_emit(struct crm *c, const char *key, json_t *ev)
{
	char *text;
	size_t len;
	int e = 0;

	if (!ev)
		return ENOMEM;
	text = json_dumps(ev, JSON_COMPACT);
	if (!text) {
		json_decref(ev);
		return ENOMEM;
	}
	len = strlen(text);
	if (c->ad->deliver && c->outbox)
		e = outbox_add(c->outbox, key, text, len);
	for (size_t i = 0; i < c->nlisteners; i++)
		c->listeners[i].h(json_string_value(json_object_get(ev, "type")), text,
				  len, c->listeners[i].arg);
	free(text);
	json_decref(ev);
	return e;
}

void crm_on_event(struct crm *c, crm_event_h *h, void *arg)
{
	if (!h) {
		for (size_t i = 0; i < c->nlisteners; i++)
			if (c->listeners[i].arg == arg) {
				memmove(&c->listeners[i], &c->listeners[i + 1],
					(c->nlisteners - i - 1) * sizeof(c->listeners[0]));
				c->nlisteners--;
				break;
			}
		return;
	}
	if (c->nlisteners < MAX_LISTENERS) {
		c->listeners[c->nlisteners].h = h;
		c->listeners[c->nlisteners++].arg = arg;
	}
}

size_t crm_outbox_depth(const struct crm *c)
{
	return outbox_depth(c->outbox);
}

bool crm_delivers(const struct crm *c)
{
	return c->ad->deliver != NULL;
}

int crm_deliver(struct crm *c, struct crm_delivery *d)
{
	return c->ad->deliver ? c->ad->deliver(c, d) : ENOTSUP;
}

static void on_delivery_http(const struct httpc_resp *r, void *arg)
{
	struct crm_delivery *d = arg;

	d->req = NULL;
	d->http_h(d, r);
}

int crm_delivery_http(struct crm_delivery *d, const struct httpc_opts *o,
		      crm_delivery_h *h)
{
	d->http_h = h;
	return httpc_request(&d->req, d->crm->http, o, on_delivery_http, d);
}

void crm_delivery_done(struct crm_delivery *d, int err, const char *cause)
{
	d->done(d, err, cause ? cause : err ? "failed" : NULL);
}

void crm_delivery_free(struct crm_delivery *d)
{
	if (!d)
		return;
	httpc_cancel(d->req);
	if (d->astate && d->crm->ad->free_state)
		d->crm->ad->free_state(d->astate);
	json_decref(d->ev);
	free((char *)d->body);
	free(d);
}

int crm_sign(const char *key, const void *body, size_t len, char out[72])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!HMAC(EVP_sha256(), key, (int)strlen(key), body, len, mac, &n) || n != 32)
		return EIO;
	memcpy(out, "sha256=", 7);
	for (unsigned i = 0; i < n; i++) {
		out[7 + i * 2] = "0123456789abcdef"[mac[i] >> 4];
		out[8 + i * 2] = "0123456789abcdef"[mac[i] & 15];
	}
	out[7 + n * 2] = '\0';
	return 0;
}

/* ---- POST /api/v1/crm/{type}: what the CRM tells us ------------------------------ */

static int api_webhook(struct api_req *req, void *arg)
{
	struct crm *c = arg;
	const char *type = api_req_patharg(req, 0);

	if (!type || strcmp(type, c->ad->name) || !c->ad->webhook)
		return api_reply_error(req, 404, "no webhook for CRM type '%s' "
				       "([crm] type is %s)", type ? type : "",
				       c->ad->name);
	return c->ad->webhook(c, req);
}

/*
 * The webhooks of CRMs that authenticate themselves (webhook_own_auth),
 * reached without the Bearer token. For any other type (or a type not in
 * force) they answer 401 as the token check would.
 */
static int api_webhook_open(struct api_req *req, void *arg)
{
	struct crm *c = arg;
	const char *path = api_req_path(req), *type = strrchr(path, '/');

	if (!type || strcmp(type + 1, c->ad->name) || !c->ad->webhook ||
	    !c->ad->webhook_own_auth)
		return api_reply_error(req, 401, "unauthorized");
	return c->ad->webhook(c, req);
}

int crm_api_register(struct crm *c, struct api *api)
{
	static const struct crm_adapter *const open[] = { &crm_adapter_bitrix24,
							  &crm_adapter_amocrm };
	char path[64];
	int e = 0;

	for (size_t i = 0; i < sizeof(open) / sizeof(open[0]) && !e; i++) {
		snprintf(path, sizeof(path), "/api/v1/crm/%s", open[i]->name);
		e = api_route(api, "POST", path, false, api_webhook_open, c);
	}
	return e ? e : api_route(api, "POST", "/api/v1/crm/*", true, api_webhook, c);
}
