/*
 * crm.c: CRM lookups. [crm] type = none answers "unknown" for everyone;
 * generic asks lookup_url (CONTRACT §4). The answer always comes from the
 * event loop, never from inside crm_lookup().
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
#include "conf.h"
#include "httpc.h"
#include "metrics.h"
#include "crm/crm.h"

struct crm {
	su_root_t *root;
	struct httpc *http;
	struct conf *conf;
};

struct crm_lookup {
	struct crm *crm;
	crm_lookup_h *cb;
	void *arg;
	su_timer_t *tmr;                /* type none: answer on the next turn */
	struct httpc_req *req;
	struct crm_result res;
};

static struct metric *m_ok, *m_unknown, *m_failed;

int crm_alloc(struct crm **cp, su_root_t *root, struct httpc *http,
	      struct db *db, const struct conf *conf)
{
	struct crm *c = calloc(1, sizeof(*c));

	(void)db;
	if (!c)
		return ENOMEM;
	c->root = root;
	c->http = http;
	c->conf = conf_ref((struct conf *)conf);
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
	conf_deref(c->conf);
	free(c);
	return NULL;
}

void crm_reload(struct crm *c, const struct conf *conf)
{
	conf_deref(c->conf);
	c->conf = conf_ref((struct conf *)conf);
}

static void finish(struct crm_lookup *l)
{
	metrics_inc(l->res.status == CRM_KNOWN ? m_ok :
		    l->res.status == CRM_UNKNOWN ? m_unknown : m_failed);
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
	const struct conf_agent *a;

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
	copy_str(l->res.responsible_ext, sizeof(l->res.responsible_ext), resp,
		 "extension");
	if (!*l->res.responsible_ext && *l->res.responsible_id &&
	    (a = conf_agent_by_crm_user(l->crm->conf, l->res.responsible_id)))
		snprintf(l->res.responsible_ext, sizeof(l->res.responsible_ext),
			 "%s", a->ext);
	json_decref(root);
}

static void on_http(const struct httpc_resp *r, void *arg)
{
	struct crm_lookup *l = arg;

	l->req = NULL;
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
	if (l->res.status == CRM_FAILED)
		log_warn("lookup failed: %s", l->res.cause);
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
	if (c->conf->crm.type == CONF_CRM_GENERIC)
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

struct crm_lookup *crm_lookup_cancel(struct crm_lookup *l)
{
	if (!l)
		return NULL;
	httpc_cancel(l->req);
	su_timer_destroy(l->tmr);
	free(l);
	return NULL;
}
