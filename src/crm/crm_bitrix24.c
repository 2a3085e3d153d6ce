/*
 * crm_bitrix24.c: [crm] type = bitrix24, through Bitrix24's REST API
 * (telephony.externalCall.*, crm.*.add, tasks.task.add).
 *
 * Auth: an inbound webhook (url = https://PORTAL/rest/USER/TOKEN/), or an
 * application's OAuth tokens (url = https://PORTAL/rest/, client_id,
 * client_secret, refresh_token; see crm_kit.h). Every method is a POST of
 * a JSON object to url + method; with OAuth the access token goes in it
 * as "auth". An answer is {"result": ...} or {"error", "error_description"}.
 *
 * Lookup: telephony.externalCall.searchCrmEntities; the first entity
 * found is the client, ASSIGNED_BY_ID its responsible user (mapped to an
 * agent by ASSIGNED_BY.USER_PHONE_INNER when that is an agent's
 * extension, else by crm_user). With [crm] timeman, a user whose
 * TIMEMAN_STATUS is CLOSED, PAUSED or EXPIRED is not at work: the client
 * is known but nobody is rung for it.
 *
 * Events, per call, in order (the state of each call is kept in sqlite,
 * so a retried or restarted delivery skips what was done):
 *   call.started   register once (EXTERNAL_CALL_ID = our call id, which
 *                  Bitrix24 also uses to drop a repeated registration);
 *                  outbound calls are looked up first (no lookup ran for
 *                  them); calls started by ONEXTERNALCALLSTART are
 *                  registered already
 *   call.ringing   show the card to the agent's user
 *   call.answered  hide it from the others who were shown it
 *   call.ended     the rule's plan (crm_rules.h); hide; finish (USER_ID
 *                  of the answering or responsible user, DURATION,
 *                  STATUS_CODE); attachRecord when there is a recording;
 *                  then the plan's contact, lead, deal and task
 * Internal calls are not reported. show and hide are best effort; any
 * other failure fails the delivery, which the outbox retries.
 *
 * Webhook (POST /api/v1/crm/bitrix24, no Bearer token: Bitrix24 signs
 * its events with the application's auth[application_token], checked
 * against [crm] webhook_token): ONEXTERNALCALLSTART starts a
 * click-to-call with Bitrix24's CALL_ID; ONCRM{CONTACT,COMPANY,LEAD}
 * {UPDATE,DELETE} drop the cached lookups of that entity's numbers.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#define LOG_MODULE "crm"
#include "log.h"
#include "clk.h"
#include "conf.h"
#include "crm/crm_int.h"
#include "crm/crm_kit.h"
#include "crm/crm_rules.h"
#include "crm/normalize.h"
#include "http/api.h"

#define HTTP_TIMEOUT_MS 15000
#define MAX_BODY        (1 << 20)
#define LIMIT_RETRY_MS  500     /* a lookup told QUERY_LIMIT_EXCEEDED tries once more */
#define STATE_KEEP_MS   (48LL * 3600 * 1000)

struct b24;
typedef void (b24_done_h)(struct b24 *b, json_t *result);

struct b24 {
	struct crm_job job;             /* first: l->astate / d->astate */
	char method[64];                /* the request in flight */
	json_t *params;
	b24_done_h *done;
	bool best_effort;               /* a failure is logged and skipped */
	bool resent;                    /* after a token refresh */
	bool waited;                    /* for a token before sending */
	bool limited;                   /* a lookup retried after the rate limit */
	bool starting;                  /* inside lookup(): failures are returned */
	char used[2048];                /* the access token the request carries */
	int start_err;
	/* deliveries */
	json_t *ev;                     /* borrowed from d->ev */
	json_t *st;                     /* the call's state */
	char scope[64];
};

static const char *S(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static bool oauth_mode(const struct conf *cf)
{
	return *cf->crm.client_id != '\0';
}

static void oauth_params(const struct conf *cf, struct crm_oauth_params *p)
{
	p->account = "bitrix24";
	p->token_url = *cf->crm.oauth_url ? cf->crm.oauth_url :
		       "https://oauth.bitrix24.tech/oauth/token/";
	p->client_id = cf->crm.client_id;
	p->client_secret = cf->crm.client_secret;
	p->refresh_seed = cf->crm.refresh_token;
	p->redirect_uri = NULL;
	p->post_json = false;
}

/* ---- requests ------------------------------------------------------------------------ */

static void send_req(struct b24 *b);

static void req_fail(struct b24 *b, int err, const char *cause);

static void on_token(struct crm_job *j, int err)
{
	struct b24 *b = (struct b24 *)j;

	if (err)
		req_fail(b, EACCES, "oauth");
	else
		send_req(b);
}

/* With OAuth, waits for a token first when there is none (deliveries). */
static bool need_token_first(struct b24 *b)
{
	const struct conf *cf = crm_conf(b->job.crm);
	struct crm_oauth_params p;
	char tok[8];
	enum crm_token_state ts;

	if (!oauth_mode(cf))
		return false;
	oauth_params(cf, &p);
	ts = crm_oauth_token(b->job.crm, &p, tok, sizeof(tok));
	if (ts == CRM_TOKEN_FRESH)
		return false;
	if (ts == CRM_TOKEN_EXPIRED && b->job.d && !b->waited) {
		b->waited = true;
		return !crm_oauth_refresh(b->job.crm, &p, &b->job, on_token);
	}
	/* stale, or a lookup (which cannot wait before its first request) */
	crm_oauth_refresh(b->job.crm, &p, NULL, NULL);
	return false;
}

static void on_resp(struct crm_job *j, const struct httpc_resp *r);

static void send_req(struct b24 *b)
{
	const struct conf *cf = crm_conf(b->job.crm);
	const char *hdrs[] = { "Content-Type: application/json", "Accept: application/json",
			       NULL };
	struct httpc_opts o = { .method = "POST", .headers = hdrs,
				.timeout_ms = HTTP_TIMEOUT_MS, .max_body = MAX_BODY };
	char url[1024], tok[2048];
	char *body;
	int e;

	if (need_token_first(b))
		return;
	if (oauth_mode(cf)) {
		struct crm_oauth_params p;

		oauth_params(cf, &p);
		crm_oauth_token(b->job.crm, &p, tok, sizeof(tok));
		json_object_set_new(b->params, "auth", json_string(tok));
		snprintf(b->used, sizeof(b->used), "%s", tok);
	}
	snprintf(url, sizeof(url), "%s%s%s", cf->crm.url,
		 cf->crm.url[strlen(cf->crm.url) - 1] == '/' ? "" : "/", b->method);
	body = json_dumps(b->params, JSON_COMPACT);
	json_object_del(b->params, "auth");
	o.url = url;
	o.body = body;
	o.body_len = body ? strlen(body) : 0;
	e = body ? crm_job_http(&b->job, &o, on_resp) : ENOMEM;
	free(body);
	if (e)
		req_fail(b, e, "cannot start the request");
}

/* Starts method with params (taken); done runs with the result. */
static void call(struct b24 *b, const char *method, json_t *params, b24_done_h *done)
{
	snprintf(b->method, sizeof(b->method), "%s", method);
	json_decref(b->params);
	b->params = params ? params : json_object();
	b->done = done;
	b->resent = b->waited = b->limited = false;
	send_req(b);
}

static void retry_limited(struct crm_job *j)
{
	send_req((struct b24 *)j);
}

static bool auth_error(const char *code)
{
	return !strcmp(code, "expired_token") || !strcmp(code, "invalid_token") ||
	       !strcmp(code, "NO_AUTH_FOUND");
}

static void on_resp(struct crm_job *j, const struct httpc_resp *r)
{
	struct b24 *b = (struct b24 *)j;
	const struct conf *cf = crm_conf(j->crm);
	json_t *body = r->err ? NULL : json_loadb(r->body, r->body_len, 0, NULL);
	json_t *result = json_object_get(body, "result");
	const char *code = S(body, "error");
	char cause[96];
	int err;

	if (r->err && j->l) {
		log_warn("bitrix24 lookup of %s: %s", j->l->phone, r->cause);
		j->l->res.status = CRM_FAILED;
		j->l->res.cause = r->cause;
		crm_lookup_done(j->l);
		return;
	}
	if (r->err) {
		req_fail(b, r->err, r->cause);
		return;
	}
	if (*code && auth_error(code) && oauth_mode(cf) && !b->resent) {
		struct crm_oauth_params p;
		char cur[2048];

		oauth_params(cf, &p);
		b->resent = true;
		json_decref(body);
		if (crm_oauth_token(j->crm, &p, cur, sizeof(cur)) != CRM_TOKEN_EXPIRED &&
		    strcmp(cur, b->used)) {
			/* refreshed while this request was out: try the new token */
			send_req(b);
			return;
		}
		crm_oauth_refused(j->crm, &p, b->used);
		if (crm_oauth_refresh(j->crm, &p, j, on_token))
			req_fail(b, EACCES, "oauth");
		return;
	}
	if (!strcmp(code, "QUERY_LIMIT_EXCEEDED") && b->job.l && !b->limited) {
		b->limited = true;
		json_decref(body);
		if (crm_job_later(j, LIMIT_RETRY_MS, retry_limited))
			req_fail(b, ENOMEM, "rate_limited");
		return;
	}
	if (r->status != 200 || *code || !result) {
		if (*code)
			snprintf(cause, sizeof(cause), "%s: %s", b->method, code);
		else if (!body)
			snprintf(cause, sizeof(cause), "%s: HTTP %ld, not JSON", b->method,
				 r->status);
		else
			snprintf(cause, sizeof(cause), "%s: HTTP %ld", b->method, r->status);
		err = !strcmp(code, "QUERY_LIMIT_EXCEEDED") ? EAGAIN : EIO;
		json_decref(body);
		req_fail(b, err, cause);
		return;
	}
	json_incref(result);
	json_decref(body);
	b->done(b, result);
	json_decref(result);
}

/* ---- lookups --------------------------------------------------------------------------- */

static void lookup_fail(struct b24 *b, int err, const char *cause)
{
	struct crm_lookup *l = b->job.l;

	l->res.status = CRM_FAILED;
	l->res.cause = err == EACCES ? "auth" : strstr(cause, "QUERY_LIMIT") ? "rate_limited" :
		       strstr(cause, "HTTP 5") ? "http_5xx" :
		       strstr(cause, "not JSON") ? "bad_json" :
		       strchr(cause, ':') ? "api_error" : "http_other";
	log_warn("bitrix24 lookup of %s: %s", l->phone, cause);
	crm_lookup_done(l);
}

static bool not_at_work(const char *timeman)
{
	return !strcmp(timeman, "CLOSED") || !strcmp(timeman, "PAUSED") ||
	       !strcmp(timeman, "EXPIRED");
}

/* "https://portal.bitrix24.ru/rest/1/x/" -> "https://portal.bitrix24.ru" */
static void portal_of(const char *url, char *out, size_t sz)
{
	const char *h = strstr(url, "://"), *slash = h ? strchr(h + 3, '/') : NULL;

	snprintf(out, sz, "%.*s", slash ? (int)(slash - url) : (int)strlen(url), url);
}

/* The entities found for a number into r; notes each for the webhooks. */
static void take_entities(struct crm *c, json_t *list, const char *phone,
			  struct crm_result *r)
{
	const struct conf *cf = crm_conf(c);
	json_t *first = json_array_get(list, 0), *by = json_object_get(first, "ASSIGNED_BY");
	char type[32], id[32], portal[128], inner[33], timeman[24];

	for (size_t i = 0; i < json_array_size(list); i++) {
		json_t *e = json_array_get(list, i);
		char ent[80];

		snprintf(ent, sizeof(ent), "%s:%s", crm_jstr(e, "CRM_ENTITY_TYPE", type,
			 sizeof(type)), crm_jstr(e, "CRM_ENTITY_ID", id, sizeof(id)));
		crm_entity_note(c, ent, phone);
	}
	if (!json_is_object(first)) {
		r->status = CRM_UNKNOWN;
		return;
	}
	r->status = CRM_KNOWN;
	crm_jstr(first, "CRM_ENTITY_TYPE", type, sizeof(type));
	crm_jstr(first, "CRM_ENTITY_ID", id, sizeof(id));
	snprintf(r->contact_id, sizeof(r->contact_id), "%s:%s", type, id);
	crm_json_str(r->contact_name, sizeof(r->contact_name), first, "NAME");
	portal_of(cf->crm.url, portal, sizeof(portal));
	for (char *p = type; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	snprintf(r->contact_url, sizeof(r->contact_url), "%s/crm/%s/details/%s/",
		 portal, type, id);
	crm_json_str(r->responsible_id, sizeof(r->responsible_id), first, "ASSIGNED_BY_ID");
	crm_jstr(by, "USER_PHONE_INNER", inner, sizeof(inner));
	if (*inner && conf_agent_find(cf, inner))
		snprintf(r->given_ext, sizeof(r->given_ext), "%s", inner);
	crm_jstr(by, "TIMEMAN_STATUS", timeman, sizeof(timeman));
	if (cf->crm.timeman && not_at_work(timeman)) {
		log_info("bitrix24: %s's responsible user %s is not at work (%s): "
			 "not rung", phone, r->responsible_id, timeman);
		r->responsible_id[0] = r->given_ext[0] = '\0';
	}
}

static void on_search(struct b24 *b, json_t *result)
{
	take_entities(b->job.crm, result, b->job.l->phone, &b->job.l->res);
	crm_lookup_done(b->job.l);
}

static struct b24 *b24_new(struct crm *c, struct crm_lookup *l, struct crm_delivery *d)
{
	struct b24 *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	crm_job_init(&b->job, c, l, d);
	return b;
}

static int lookup(struct crm *c, struct crm_lookup *l)
{
	struct b24 *b = b24_new(c, l, NULL);

	if (!b)
		return ENOMEM;
	l->astate = b;
	b->starting = true;
	call(b, "telephony.externalCall.searchCrmEntities",
	     json_pack("{s:s}", "PHONE_NUMBER", l->phone), on_search);
	b->starting = false;
	if (!b->start_err && !l->req)
		b->start_err = EIO;
	return b->start_err;
}

static void free_state(void *astate)
{
	struct b24 *b = astate;

	crm_job_fini(&b->job);
	json_decref(b->params);
	json_decref(b->st);
	free(b);
}

/* ---- deliveries: plumbing ------------------------------------------------------------------ */

/* Ends the delivery on the next loop turn (never inside deliver()). */
static void deliver_end(struct b24 *b, int err, const char *cause)
{
	crm_job_end(&b->job, err, cause);
}

static void run(struct b24 *b);

static void req_fail(struct b24 *b, int err, const char *cause)
{
	if (b->job.l && b->starting) {
		b->start_err = err ? err : EIO;
		return;
	}
	if (b->job.l) {
		lookup_fail(b, err, cause);
		return;
	}
	if (b->best_effort) {
		log_info("bitrix24: %s failed (%s): skipped", b->method, cause);
		b->done(b, NULL);
		return;
	}
	log_warn("bitrix24: call %s: %s", S(b->ev, "call_id"), cause);
	deliver_end(b, err, cause);
}

static bool step_done(struct b24 *b, const char *step)
{
	return json_object_get(json_object_get(b->st, "done"), step) != NULL;
}

static void mark(struct b24 *b, const char *step, json_t *value)
{
	json_t *done = json_object_get(b->st, "done");

	if (!done) {
		done = json_object();
		json_object_set_new(b->st, "done", done);
	}
	json_object_set_new(done, step, value ? value : json_true());
}

static void save(struct b24 *b)
{
	crm_state_save(b->job.crm, b->scope, b->st);
}

static const char *user_of(const struct conf *cf, const char *ext)
{
	const struct conf_agent *a = *ext ? conf_agent_find(cf, ext) : NULL;

	return a && a->crm_user && *a->crm_user ? a->crm_user : "";
}

static const char *client_of(json_t *ev)
{
	return strcmp(S(ev, "direction"), "outbound") ? S(ev, "from") : S(ev, "to");
}

/* ---- call.started ---------------------------------------------------------------------------- */

static void on_registered(struct b24 *b, json_t *res)
{
	json_t *made = json_object_get(res, "CRM_CREATED_ENTITIES");
	char type[32], id[32], ent[80];

	json_object_set_new(b->st, "b24", json_string(S(res, "CALL_ID")));
	snprintf(ent, sizeof(ent), "%s:%s", crm_jstr(res, "CRM_ENTITY_TYPE", type, sizeof(type)),
		 crm_jstr(res, "CRM_ENTITY_ID", id, sizeof(id)));
	if (json_array_size(made) || (json_object_get(res, "CRM_CREATED_LEAD") &&
	    !json_is_null(json_object_get(res, "CRM_CREATED_LEAD"))))
		json_object_set_new(b->st, "created", json_string(ent));
	else if (*type && *id && !json_is_true(json_object_get(b->st, "known"))) {
		/* Bitrix24 found the number where our lookup did not answer */
		json_object_set_new(b->st, "known", json_true());
		json_object_set_new(b->st, "entity", json_string(ent));
	}
	save(b);
	run(b);
}

static void register_call(struct b24 *b)
{
	const struct conf *cf = crm_conf(b->job.crm);
	json_t *ev = b->ev, *p;
	bool out = !strcmp(S(ev, "direction"), "outbound");
	const char *user = out ? user_of(cf, S(ev, "from")) :
			   S(json_object_get(ev, "responsible"), "id");
	const char *ent = S(b->st, "entity"), *colon = strchr(ent, ':');

	if (!*user)
		user = cf->crm.default_user;
	p = json_pack("{s:s, s:i, s:s, s:s, s:s, s:i, s:i}",
		      "PHONE_NUMBER", client_of(ev), "TYPE", out ? 1 : 2,
		      "CALL_START_DATE", S(ev, "time"), "EXTERNAL_CALL_ID", S(ev, "call_id"),
		      "LINE_NUMBER", S(ev, "did"),
		      "CRM_CREATE", !json_is_true(json_object_get(b->st, "known")) &&
				    crm_rule_crm_create(cf, S(ev, "direction"), S(ev, "did")),
		      "SHOW", out ? 1 : 0);
	if (*user)
		json_object_set_new(p, "USER_ID", json_string(user));
	else
		json_object_set_new(p, "USER_PHONE_INNER", json_string(S(ev, "from")));
	if (colon) {
		json_object_set_new(p, "CRM_ENTITY_TYPE", json_stringn(ent, (size_t)(colon - ent)));
		json_object_set_new(p, "CRM_ENTITY_ID", json_string(colon + 1));
	}
	json_object_set_new(b->st, "user", json_string(user));
	call(b, "telephony.externalCall.register", p, on_registered);
}

static void on_searched(struct b24 *b, json_t *res)
{
	struct crm_result r = { 0 };

	take_entities(b->job.crm, res, client_of(b->ev), &r);
	json_object_set_new(b->st, "searched", json_true());
	if (r.status == CRM_KNOWN) {
		json_object_set_new(b->st, "known", json_true());
		json_object_set_new(b->st, "entity", json_string(r.contact_id));
		if (*r.responsible_id)
			json_object_set_new(b->st, "client_user", json_string(r.responsible_id));
	}
	save(b);
	run(b);
}

static void started(struct b24 *b)
{
	json_t *ev = b->ev, *resp = json_object_get(ev, "responsible");

	if (!json_object_get(b->st, "direction")) {
		json_object_set_new(b->st, "direction", json_string(S(ev, "direction")));
		if (*S(ev, "contact_id") && !json_object_get(b->st, "entity")) {
			json_object_set_new(b->st, "known", json_true());
			json_object_set_new(b->st, "entity", json_string(S(ev, "contact_id")));
		}
		if (*S(resp, "id"))
			json_object_set_new(b->st, "client_user", json_string(S(resp, "id")));
		save(b);
	}
	if (!strcmp(S(ev, "direction"), "outbound") &&
	    !json_object_get(b->st, "searched")) {
		call(b, "telephony.externalCall.searchCrmEntities",
		     json_pack("{s:s}", "PHONE_NUMBER", client_of(ev)), on_searched);
		return;
	}
	if (!*S(b->st, "b24")) {
		register_call(b);
		return;
	}
	deliver_end(b, 0, NULL);
}

/* ---- ringing, answered --------------------------------------------------------------------------- */

static void on_shown(struct b24 *b, json_t *res)
{
	json_t *shown = json_object_get(b->st, "shown");

	(void)res;
	if (!shown) {
		shown = json_array();
		json_object_set_new(b->st, "shown", shown);
	}
	json_array_append_new(shown, json_string(S(b->params, "USER_ID")));
	save(b);
	deliver_end(b, 0, NULL);
}

static bool in_list(json_t *list, const char *s)
{
	for (size_t i = 0; i < json_array_size(list); i++)
		if (!strcmp(json_string_value(json_array_get(list, i)) ?: "", s))
			return true;
	return false;
}

/* call.ringing, and call.transferred to the new agent */
static void ringing(struct b24 *b)
{
	const char *user = *S(b->ev, "crm_user") ? S(b->ev, "crm_user") :
			   user_of(crm_conf(b->job.crm), S(b->ev, "agent"));

	if (!*S(b->st, "b24") || !*user || in_list(json_object_get(b->st, "shown"), user)) {
		deliver_end(b, 0, NULL);
		return;
	}
	b->best_effort = true;
	call(b, "telephony.externalCall.show", json_pack("{s:s, s:s}", "CALL_ID",
	     S(b->st, "b24"), "USER_ID", user), on_shown);
}

/* The users shown the card, but keep; NULL when there are none. */
static json_t *others(struct b24 *b, const char *keep)
{
	json_t *shown = json_object_get(b->st, "shown"), *hidden = json_object_get(b->st, "hidden");
	json_t *list = json_array();

	for (size_t i = 0; i < json_array_size(shown); i++) {
		const char *u = json_string_value(json_array_get(shown, i));

		if (u && strcmp(u, keep) && !in_list(hidden, u))
			json_array_append_new(list, json_string(u));
	}
	if (!json_array_size(list)) {
		json_decref(list);
		return NULL;
	}
	return list;
}

static void on_hidden(struct b24 *b, json_t *res)
{
	json_t *hidden = json_object_get(b->st, "hidden"), *list = json_object_get(b->params,
										   "USER_ID");

	(void)res;
	if (!hidden) {
		hidden = json_array();
		json_object_set_new(b->st, "hidden", hidden);
	}
	json_array_extend(hidden, list);
	save(b);
	if (!strcmp(S(b->ev, "type"), "call.ended"))
		run(b);
	else
		deliver_end(b, 0, NULL);
}

static bool hide_others(struct b24 *b, const char *keep)
{
	json_t *list = *S(b->st, "b24") ? others(b, keep) : NULL;

	if (!list)
		return false;
	b->best_effort = true;
	call(b, "telephony.externalCall.hide", json_pack("{s:s, s:o}", "CALL_ID",
	     S(b->st, "b24"), "USER_ID", list), on_hidden);
	return true;
}

static void answered(struct b24 *b)
{
	if (!json_object_get(b->st, "first_answered") && *S(b->ev, "agent")) {
		json_object_set_new(b->st, "first_answered", json_string(S(b->ev, "agent")));
		save(b);
	}
	if (!hide_others(b, S(b->ev, "crm_user")))
		deliver_end(b, 0, NULL);
}

/* ---- call.ended --------------------------------------------------------------------------------- */

static void make_plan(struct b24 *b)
{
	const struct conf *cf = crm_conf(b->job.crm);
	json_t *ev = b->ev;
	bool out = !strcmp(S(ev, "direction"), "outbound");
	bool known = json_is_true(json_object_get(b->st, "known"));
	enum crm_call_type t = crm_call_type_of(S(ev, "direction"), S(ev, "disposition"), known);
	const char *first_ans = out ? S(ev, "from") : S(b->st, "first_answered");
	struct crm_call_facts f = {
		.phone = client_of(ev), .did = S(ev, "did"),
		.first_answered = first_ans,
		.last_answered = out ? S(ev, "from") : *S(ev, "last_agent") ? S(ev, "last_agent") :
				 first_ans,
		.first_rung = out ? S(ev, "from") : S(ev, "first_agent"),
		.client_user = S(b->st, "client_user"),
		.when_ms = clk_wall_ms(),
	};
	json_t *plan = crm_rule_plan(cf, t, &f);

	json_object_set_new(b->st, "plan", plan ? plan : json_object());
	log_info("call %s: %s, %s", S(ev, "call_id"), t == CRM_CT_NONE ? "no call type" :
		 crm_call_type_name(t), json_is_null(json_object_get(plan, "rule")) ?
		 "no rule" : S(plan, "rule"));
	save(b);
}

/* 200 answered, 304 missed, 486 busy, 603-S cancelled, 503 failed. */
static const char *status_code(json_t *ev)
{
	const char *d = S(ev, "disposition");
	bool out = !strcmp(S(ev, "direction"), "outbound");

	if (!strcmp(d, "answered"))
		return "200";
	if (!strcmp(d, "busy"))
		return "486";
	if (!strcmp(d, "failed"))
		return "503";
	if (!strcmp(d, "redirected"))
		return "OTHER";
	if (!strcmp(d, "cancelled") && out)
		return "603-S";
	return "304";
}

/* Who finishes the call: the last agent who answered, else the plan's. */
static const char *finisher(struct b24 *b)
{
	const struct conf *cf = crm_conf(b->job.crm);
	json_t *ev = b->ev, *plan = json_object_get(b->st, "plan");
	const char *u = "";

	if (!strcmp(S(ev, "disposition"), "answered")) {
		u = user_of(cf, strcmp(S(ev, "direction"), "outbound") ? S(ev, "last_agent") :
			    S(ev, "from"));
		if (!*u)
			u = user_of(cf, S(b->st, "first_answered"));
	}
	if (!*u)
		u = S(plan, "responsible");
	if (!*u)
		u = S(b->st, "user");
	return *u ? u : cf->crm.default_user;
}

static void on_step(struct b24 *b, json_t *res)
{
	json_t *id = json_is_object(res) && json_object_get(res, "task") ?
		     json_object_get(json_object_get(res, "task"), "id") : res;
	mark(b, b->method, json_is_integer(id) || json_is_string(id) ? json_copy(id) : NULL);
	save(b);
	run(b);
}

static void finish_call(struct b24 *b)
{
	json_t *ev = b->ev;
	json_t *p = json_pack("{s:s, s:s, s:I, s:s}", "CALL_ID", S(b->st, "b24"),
			      "USER_ID", finisher(b), "DURATION",
			      (json_int_t)json_integer_value(json_object_get(ev, "billsec")),
			      "STATUS_CODE", status_code(ev));

	call(b, "telephony.externalCall.finish", p, on_step);
}

static void attach_record(struct b24 *b)
{
	const char *url = S(b->ev, "recording_url"), *base = strrchr(url, '/');
	const char *dot = base ? strrchr(base, '.') : NULL;
	char name[96];

	if (dot && (!strcmp(dot, ".wav") || !strcmp(dot, ".mp3")))
		snprintf(name, sizeof(name), "%s", base + 1);
	else
		snprintf(name, sizeof(name), "%s.wav", S(b->ev, "call_id"));
	call(b, "telephony.externalCall.attachRecord", json_pack("{s:s, s:s, s:s}",
	     "CALL_ID", S(b->st, "b24"), "FILENAME", name, "RECORD_URL", url), on_step);
}

/* "CONTACT:12" -> CONTACT_ID 12 (or COMPANY_ID, LEAD_ID) in fields */
static void bind_entity(json_t *fields, const char *ent, bool lead_too)
{
	const char *colon = strchr(ent, ':');
	char key[40];

	if (!colon || (!lead_too && !strncmp(ent, "LEAD:", 5)))
		return;
	snprintf(key, sizeof(key), "%.*s_ID", (int)(colon - ent), ent);
	json_object_set_new(fields, key, json_string(colon + 1));
}

/* The client as an entity: the contact made for it, else the one found. */
static const char *client_entity(struct b24 *b, char *buf, size_t sz)
{
	json_t *c = json_object_get(json_object_get(b->st, "done"), "crm.contact.add");
	char id[32];

	if (c) {
		snprintf(buf, sz, "CONTACT:%s", crm_jstr(json_object_get(b->st, "done"),
			 "crm.contact.add", id, sizeof(id)));
		return buf;
	}
	return S(b->st, "entity");
}

static json_t *entity_fields(struct b24 *b, const char *title_key, const char *title)
{
	json_t *plan = json_object_get(b->st, "plan");
	json_t *f = json_pack("{s:s, s:s}", title_key, title, "SOURCE_ID", "CALL");
	char buf[64];

	if (*S(plan, "responsible"))
		json_object_set_new(f, "ASSIGNED_BY_ID", json_string(S(plan, "responsible")));
	bind_entity(f, client_entity(b, buf, sizeof(buf)), false);
	return f;
}

static void add_contact(struct b24 *b)
{
	json_t *f = entity_fields(b, "NAME", S(json_object_get(b->st, "plan"), "contact"));

	json_object_set_new(f, "PHONE", json_pack("[{s:s, s:s}]", "VALUE", client_of(b->ev),
						  "VALUE_TYPE", "WORK"));
	call(b, "crm.contact.add", json_pack("{s:o}", "fields", f), on_step);
}

static void add_lead(struct b24 *b)
{
	json_t *plan = json_object_get(b->st, "plan");
	json_t *f = entity_fields(b, "TITLE", S(plan, "lead"));
	char buf[64];

	if (!strchr(client_entity(b, buf, sizeof(buf)), ':'))
		json_object_set_new(f, "PHONE", json_pack("[{s:s, s:s}]", "VALUE",
			client_of(b->ev), "VALUE_TYPE", "WORK"));
	if (*S(plan, "stage") && !*S(plan, "deal"))
		json_object_set_new(f, "STATUS_ID", json_string(S(plan, "stage")));
	call(b, "crm.lead.add", json_pack("{s:o}", "fields", f), on_step);
}

static void add_deal(struct b24 *b)
{
	json_t *plan = json_object_get(b->st, "plan");
	json_t *f = entity_fields(b, "TITLE", S(plan, "deal"));

	if (*S(plan, "pipeline"))
		json_object_set_new(f, "CATEGORY_ID", json_string(S(plan, "pipeline")));
	if (*S(plan, "stage"))
		json_object_set_new(f, "STAGE_ID", json_string(S(plan, "stage")));
	call(b, "crm.deal.add", json_pack("{s:o}", "fields", f), on_step);
}

static void add_task(struct b24 *b)
{
	json_t *plan = json_object_get(b->st, "plan"), *done = json_object_get(b->st, "done");
	time_t dl = (time_t)json_integer_value(json_object_get(plan, "task_deadline"));
	json_t *bind = json_array(), *f;
	char when[40], id[32], buf[64];
	const char *ent = client_entity(b, buf, sizeof(buf)), *colon = strchr(ent, ':');
	struct tm tm;

	gmtime_r(&dl, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S+00:00", &tm);
	if (json_object_get(done, "crm.deal.add"))
		json_array_append_new(bind, json_sprintf("D_%s", crm_jstr(done, "crm.deal.add",
							 id, sizeof(id))));
	if (json_object_get(done, "crm.lead.add"))
		json_array_append_new(bind, json_sprintf("L_%s", crm_jstr(done, "crm.lead.add",
							 id, sizeof(id))));
	if (colon)
		json_array_append_new(bind, json_sprintf("%s_%s", !strncmp(ent, "CONTACT", 7) ?
			"C" : !strncmp(ent, "COMPANY", 7) ? "CO" : "L", colon + 1));
	f = json_pack("{s:s, s:s, s:s, s:o}", "TITLE", S(plan, "task"), "RESPONSIBLE_ID",
		      S(plan, "responsible"), "DEADLINE", when, "UF_CRM_TASK", bind);
	call(b, "tasks.task.add", json_pack("{s:o}", "fields", f), on_step);
}

static void ended_done(struct b24 *b)
{
	crm_state_drop(b->job.crm, b->scope);
	crm_state_purge(b->job.crm, clk_wall_ms() - crm_conf(b->job.crm)->crm.event_retry_ms -
			STATE_KEEP_MS);
	deliver_end(b, 0, NULL);
}

static void ended(struct b24 *b)
{
	json_t *plan, *ev = b->ev;
	bool known;

	if (!json_object_get(b->st, "plan"))
		make_plan(b);
	plan = json_object_get(b->st, "plan");
	known = json_is_true(json_object_get(b->st, "known"));
	b->best_effort = false;
	if (!*S(b->st, "b24")) {
		/* never registered (an internal call, or nothing to register) */
		ended_done(b);
		return;
	}
	if (!step_done(b, "hide")) {
		mark(b, "hide", NULL);
		if (hide_others(b, finisher(b)))
			return;
	}
	b->best_effort = false;
	if (!step_done(b, "telephony.externalCall.finish"))
		finish_call(b);
	else if (*S(ev, "recording_url") && !step_done(b, "telephony.externalCall.attachRecord"))
		attach_record(b);
	else if (*S(plan, "contact") && !known && !step_done(b, "crm.contact.add"))
		add_contact(b);
	else if (*S(plan, "lead") && !step_done(b, "crm.lead.add"))
		add_lead(b);
	else if (*S(plan, "deal") && !step_done(b, "crm.deal.add"))
		add_deal(b);
	else if (*S(plan, "task") && *S(plan, "responsible") && !step_done(b, "tasks.task.add"))
		add_task(b);
	else
		ended_done(b);
}

/* ---- deliveries ------------------------------------------------------------------------------------ */

static void run(struct b24 *b)
{
	const char *type = S(b->ev, "type");

	b->best_effort = false;
	if (!strcmp(type, "call.started"))
		started(b);
	else if (!strcmp(type, "call.ringing") || !strcmp(type, "call.transferred"))
		ringing(b);
	else if (!strcmp(type, "call.answered"))
		answered(b);
	else if (!strcmp(type, "call.ended"))
		ended(b);
	else
		deliver_end(b, 0, NULL);
}

static int deliver(struct crm *c, struct crm_delivery *d)
{
	struct b24 *b;
	const char *type = S(d->ev, "type");

	b = b24_new(c, NULL, d);
	if (!b)
		return ENOMEM;
	d->astate = b;
	b->ev = d->ev;
	if (strncmp(type, "call.", 5) || !strcmp(S(d->ev, "direction"), "internal")) {
		/* agent.status and internal calls: nothing for Bitrix24 */
		deliver_end(b, 0, NULL);
		return 0;
	}
	snprintf(b->scope, sizeof(b->scope), "call:%s", S(d->ev, "call_id"));
	b->st = crm_state_load(c, b->scope);
	if (!b->st)
		return ENOMEM;
	run(b);
	return 0;
}

/* ---- webhook ------------------------------------------------------------------------------------------ */

/* data[KEY] of a Bitrix24 event, form-encoded or JSON. */
static void field(struct api_req *req, const char *obj, const char *key, char *out,
		  size_t sz)
{
	char name[96];
	size_t len;
	const char *body = api_req_body(req, &len);

	if (*body == '{') {
		crm_json_str(out, sz, json_object_get(api_req_json(req), obj), key);
		return;
	}
	snprintf(name, sizeof(name), "%s[%s]", obj, key);
	crm_form_get(body, name, out, sz);
}

/*
 * Bitrix24 stamps every event with ts (Unix seconds). One further than this
 * from our clock is refused: a replay of a captured request, or a clock so
 * far off that its events cannot be trusted either.
 */
#define WEBHOOK_WINDOW_S 300

/* 1: ts is there and outside the window; 0: fresh; -1: no ts. */
static int stale(struct api_req *req, char *ts, size_t sz)
{
	size_t len;
	const char *body = api_req_body(req, &len);
	char *end;
	long long v, now = (long long)time(NULL);

	if (*body == '{')
		crm_json_str(ts, sz, api_req_json(req), "ts");
	else
		crm_form_get(body, "ts", ts, sz);
	if (!*ts)
		return -1;
	v = strtoll(ts, &end, 10);
	return end == ts || *end || v < now - WEBHOOK_WINDOW_S ||
	       v > now + WEBHOOK_WINDOW_S ? 1 : 0;
}

static int click_to_call(struct crm *c, struct api_req *req)
{
	const struct conf *cf = crm_conf(c);
	char user[32], phone[64], b24id[128], line[64], ent_t[32], ent_id[32], e164[CRM_E164_SIZE];
	const struct conf_agent *a;
	char call_id[40] = "";
	json_t *st;
	int e;

	field(req, "data", "USER_ID", user, sizeof(user));
	field(req, "data", "PHONE_NUMBER", phone, sizeof(phone));
	field(req, "data", "CALL_ID", b24id, sizeof(b24id));
	field(req, "data", "LINE_NUMBER", line, sizeof(line));
	field(req, "data", "CRM_ENTITY_TYPE", ent_t, sizeof(ent_t));
	field(req, "data", "CRM_ENTITY_ID", ent_id, sizeof(ent_id));
	if (!*user || !*phone || !*b24id)
		return api_reply_error(req, 400, "ONEXTERNALCALLSTART needs data[USER_ID], "
				       "data[PHONE_NUMBER] and data[CALL_ID]");
	a = conf_agent_by_crm_user(cf, user);
	if (!a)
		return api_reply_error(req, 404, "no agent has crm_user %s", user);
	{
		/* the same CALL_ID twice (a replay within the window, or a
		   retry): one call, and the answer names it again */
		char scope[200];
		const char *prev;

		snprintf(scope, sizeof(scope), "call:b24c2c:%.40s", b24id);
		st = crm_state_load(c, scope);
		prev = st ? json_string_value(json_object_get(st, "call_id")) : NULL;
		if (prev) {
			json_t *r = json_pack("{s:s, s:b}", "call_id", prev, "duplicate", 1);

			json_decref(st);
			log_info("bitrix24: ONEXTERNALCALLSTART %s again: not a new call", b24id);
			return api_reply_json(req, 200, r);
		}
		json_decref(st);
	}
	if (crm_normalize(phone, cf->crm.country_code, e164, sizeof(e164)))
		snprintf(e164, sizeof(e164), "%.16s", phone);
	e = crm_click_to_call(c, a->ext, e164, NULL, b24id, call_id);
	log_info("bitrix24: ONEXTERNALCALLSTART for user %s (agent %s) to %s: %s",
		 user, a->ext, e164, e ? strerror(e) : call_id);
	if (e == ENOTSUP)
		return api_reply_error(req, 503, "click-to-call is not available");
	if (e == ENOENT)
		return api_reply_error(req, 404, "unknown agent %s", a->ext);
	if (e == EHOSTDOWN)
		return api_reply_error(req, 409, "agent %s is offline", a->ext);
	if (e == EINVAL)
		return api_reply_error(req, 400, "bad number %s", phone);
	if (e)
		return api_reply_error(req, 500, "click-to-call failed: %s", strerror(e));
	{
		char scope[64];

		snprintf(scope, sizeof(scope), "call:%s", call_id);
		st = crm_state_load(c, scope);
		if (st) {
			json_object_set_new(st, "b24", json_string(b24id));
			json_object_set_new(st, "c2c", json_true());
			json_object_set_new(st, "user", json_string(user));
			if (*ent_t && *ent_id) {
				json_object_set_new(st, "known", json_true());
				json_object_set_new(st, "entity", json_sprintf("%s:%s", ent_t, ent_id));
			}
			crm_state_save(c, scope, st);
			json_decref(st);
		}
		snprintf(scope, sizeof(scope), "call:b24c2c:%.40s", b24id);
		st = crm_state_load(c, scope);
		if (st) {
			json_object_set_new(st, "call_id", json_string(call_id));
			crm_state_save(c, scope, st);
			json_decref(st);
		}
	}
	return api_reply_json(req, 200, json_pack("{s:s}", "call_id", call_id));
}

static int webhook(struct crm *c, struct api_req *req)
{
	const struct conf *cf = crm_conf(c);
	char event[64], token[128], id[32], ent[64];
	static const char *const kinds[] = { "CONTACT", "COMPANY", "LEAD" };
	int n;

	field(req, "auth", "application_token", token, sizeof(token));
	if (!*cf->crm.webhook_token)
		return api_reply_error(req, 403, "[crm] webhook_token is not set");
	if (!crm_secret_equal(token, cf->crm.webhook_token))
		return api_reply_error(req, 401, "bad application_token");
	switch (stale(req, id, sizeof(id))) {
	case 1:
		log_warn("bitrix24: a webhook stamped ts=%s, more than %d s from now: "
			 "refused as a replay", id, WEBHOOK_WINDOW_S);
		return api_reply_error(req, 403, "ts %s is more than %d s from now: refused "
				       "as a replay", id, WEBHOOK_WINDOW_S);
	case -1:
		id[0] = '\0';
		break;
	default:
		break;
	}
	{
		size_t len;
		const char *body = api_req_body(req, &len);

		if (*body == '{')
			crm_json_str(event, sizeof(event), api_req_json(req), "event");
		else
			crm_form_get(body, "event", event, sizeof(event));
	}
	for (char *p = event; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	if (!strcmp(event, "ONEXTERNALCALLSTART")) {
		char ts[24];

		if (stale(req, ts, sizeof(ts)) < 0)
			return api_reply_error(req, 400, "ONEXTERNALCALLSTART needs ts");
		return click_to_call(c, req);
	}
	for (size_t i = 0; i < 3; i++) {
		char upd[40], del[40];

		snprintf(upd, sizeof(upd), "ONCRM%sUPDATE", kinds[i]);
		snprintf(del, sizeof(del), "ONCRM%sDELETE", kinds[i]);
		if (strcmp(event, upd) && strcmp(event, del))
			continue;
		{
			size_t len;
			const char *body = api_req_body(req, &len);

			if (*body == '{')
				crm_json_str(id, sizeof(id), json_object_get(json_object_get(
					api_req_json(req), "data"), "FIELDS"), "ID");
			else
				crm_form_get(body, "data[FIELDS][ID]", id, sizeof(id));
		}
		if (!*id)
			return api_reply_error(req, 400, "%s needs data[FIELDS][ID]", event);
		snprintf(ent, sizeof(ent), "%s:%s", kinds[i], id);
		n = crm_entity_drop(c, ent);
		if (n < 0)
			return api_reply_error(req, 500, "database error");
		log_info("bitrix24: %s %s: %d cached lookup%s dropped", event, ent, n,
			 n == 1 ? "" : "s");
		return api_reply_json(req, 200, json_pack("{s:i}", "invalidated", n));
	}
	return api_reply_json(req, 200, json_pack("{s:b}", "ignored", 1));
}

const struct crm_adapter crm_adapter_bitrix24 = {
	.name = "bitrix24",
	.lookup = lookup,
	.deliver = deliver,
	.webhook = webhook,
	.free_state = free_state,
	.webhook_own_auth = true,
};
