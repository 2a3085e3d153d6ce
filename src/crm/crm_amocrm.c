/*
 * crm_amocrm.c: [crm] type = amocrm, through amoCRM's API v4.
 *
 * Auth: "Authorization: Bearer" with a long-lived token ([crm] token) or
 * with OAuth tokens (client_id, client_secret, refresh_token,
 * redirect_uri; see crm_kit.h). The account is https://SUBDOMAIN.amocrm.ru
 * unless [crm] url names another address.
 *
 * Lookup: GET /api/v4/contacts?query=<national digits>, then the same for
 * companies. The search is fuzzy, so a contact counts only when one of its
 * PHONE field values normalises to the caller's number exactly. Its
 * responsible_user_id maps to an agent by crm_user.
 *
 * Events: amoCRM has nothing to show while a call rings, so a call is
 * written once it has ended, from the rule's plan (crm_rules.h), step by
 * step with the progress kept in sqlite so a retry never creates twice:
 *   - a number the call's lookup did not know is searched again;
 *   - unsorted: POST /api/v4/leads/unsorted/sip (in the rule's pipeline,
 *     with its contact, its deal and the call event); or else
 *   - contact: POST /api/v4/contacts; deal: POST /api/v4/leads, bound to
 *     the client; the call: POST /api/v4/calls (uniq = our call id), which
 *     amoCRM files with the contact or company of that number;
 *   - task: POST /api/v4/tasks, on the deal or else the client, when the
 *     rule names a responsible user.
 *
 * Webhook (POST /api/v1/crm/amocrm?token=[crm] webhook_token, no Bearer
 * token; amoCRM posts form-encoded): contacts and companies deleted,
 * updated or given another responsible user drop the cached lookups of
 * their numbers. Lead events are accepted and change nothing: lookups do
 * not depend on leads.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
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
#define LIMIT_RETRY_MS  500
#define STATE_KEEP_MS   (48LL * 3600 * 1000)

struct amo;
typedef void (amo_done_h)(struct amo *a, long status, json_t *body);

struct amo {
	struct crm_job job;             /* first: l->astate / d->astate */
	char method[8];                 /* the request in flight */
	char path[512];
	json_t *body;
	amo_done_h *done;
	bool resent, waited, limited, starting;
	int start_err;
	int search_stage;               /* 0: contacts, 1: companies */
	char used[2048];                /* the token the request carries */
	bool dup_ok;                    /* a 400 means "already there" */
	/* deliveries */
	json_t *ev;                     /* borrowed from d->ev */
	json_t *st;
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

static void base_url(const struct conf *cf, char *out, size_t sz)
{
	if (*cf->crm.url) {
		size_t n = strlen(cf->crm.url);

		snprintf(out, sz, "%.*s", (int)(cf->crm.url[n - 1] == '/' ? n - 1 : n),
			 cf->crm.url);
	}
	else {
		snprintf(out, sz, "https://%s.amocrm.ru", cf->crm.subdomain);
	}
}

static void oauth_params(const struct conf *cf, struct crm_oauth_params *p, char *url,
			 size_t sz)
{
	if (*cf->crm.oauth_url) {
		snprintf(url, sz, "%s", cf->crm.oauth_url);
	}
	else {
		base_url(cf, url, sz);
		snprintf(url + strlen(url), sz - strlen(url), "/oauth2/access_token");
	}
	p->account = "amocrm";
	p->token_url = url;
	p->client_id = cf->crm.client_id;
	p->client_secret = cf->crm.client_secret;
	p->refresh_seed = cf->crm.refresh_token;
	p->redirect_uri = cf->crm.redirect_uri;
	p->post_json = true;
}

/* ---- requests ------------------------------------------------------------------------------ */

static void send_req(struct amo *a);
static void req_fail(struct amo *a, int err, const char *cause);

static void on_token(struct crm_job *j, int err)
{
	struct amo *a = (struct amo *)j;

	if (err)
		req_fail(a, EACCES, "oauth");
	else
		send_req(a);
}

/* The bearer token into tok; true when the request waits for a refresh. */
static bool token(struct amo *a, char *tok, size_t sz)
{
	const struct conf *cf = crm_conf(a->job.crm);
	struct crm_oauth_params p;
	enum crm_token_state ts;
	char url[512];

	if (!oauth_mode(cf)) {
		snprintf(tok, sz, "%s", cf->crm.token);
		return false;
	}
	oauth_params(cf, &p, url, sizeof(url));
	ts = crm_oauth_token(a->job.crm, &p, tok, sz);
	if (ts == CRM_TOKEN_EXPIRED && a->job.d && !a->waited) {
		a->waited = true;
		return !crm_oauth_refresh(a->job.crm, &p, &a->job, on_token);
	}
	if (ts != CRM_TOKEN_FRESH)
		crm_oauth_refresh(a->job.crm, &p, NULL, NULL);
	return false;
}

static void on_resp(struct crm_job *j, const struct httpc_resp *r);

static void send_req(struct amo *a)
{
	const struct conf *cf = crm_conf(a->job.crm);
	char url[1024], tok[2048], auth[2100];
	const char *hdrs[] = { auth, "Accept: application/json",
			       "Content-Type: application/json", NULL };
	struct httpc_opts o = { .headers = hdrs, .timeout_ms = HTTP_TIMEOUT_MS,
				.max_body = MAX_BODY };
	char *body = NULL;
	int e;

	if (token(a, tok, sizeof(tok)))
		return;
	snprintf(a->used, sizeof(a->used), "%s", tok);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
	base_url(cf, url, sizeof(url));
	snprintf(url + strlen(url), sizeof(url) - strlen(url), "%s", a->path);
	o.url = url;
	o.method = a->method;
	if (a->body) {
		body = json_dumps(a->body, JSON_COMPACT);
		o.body = body;
		o.body_len = body ? strlen(body) : 0;
	}
	else {
		hdrs[2] = NULL;
	}
	e = !a->body || body ? crm_job_http(&a->job, &o, on_resp) : ENOMEM;
	free(body);
	if (e)
		req_fail(a, e, "cannot start the request");
}

/* Starts METHOD path (body taken; NULL for GET); done runs with the answer. */
static void call(struct amo *a, const char *method, const char *path, json_t *body,
		 amo_done_h *done)
{
	snprintf(a->method, sizeof(a->method), "%s", method);
	snprintf(a->path, sizeof(a->path), "%s", path);
	json_decref(a->body);
	a->body = body;
	a->done = done;
	a->resent = a->waited = a->limited = false;
	send_req(a);
}

static void retry_limited(struct crm_job *j)
{
	send_req((struct amo *)j);
}

static void on_resp(struct crm_job *j, const struct httpc_resp *r)
{
	struct amo *a = (struct amo *)j;
	const struct conf *cf = crm_conf(j->crm);
	json_t *body;
	char cause[128], path[64];

	if (r->err && j->l) {
		log_warn("amocrm lookup of %s: %s", j->l->phone, r->cause);
		j->l->res.status = CRM_FAILED;
		j->l->res.cause = r->cause;
		crm_lookup_done(j->l);
		return;
	}
	if (r->err) {
		req_fail(a, r->err, r->cause);
		return;
	}
	if (r->status == 401 && oauth_mode(cf) && !a->resent) {
		struct crm_oauth_params p;
		char url[512], tok[2048];

		oauth_params(cf, &p, url, sizeof(url));
		a->resent = true;
		if (crm_oauth_token(j->crm, &p, tok, sizeof(tok)) != CRM_TOKEN_EXPIRED &&
		    strcmp(tok, a->used)) {
			/* refreshed while this request was out: try the new token */
			send_req(a);
			return;
		}
		crm_oauth_refused(j->crm, &p, a->used);
		if (crm_oauth_refresh(j->crm, &p, j, on_token))
			req_fail(a, EACCES, "oauth");
		return;
	}
	if (r->status == 429 && j->l && !a->limited) {
		a->limited = true;
		if (crm_job_later(j, LIMIT_RETRY_MS, retry_limited))
			req_fail(a, ENOMEM, "rate_limited");
		return;
	}
	body = r->body_len ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
	snprintf(path, sizeof(path), "%.*s", (int)strcspn(a->path, "?"), a->path);
	if (r->status == 204 || (r->status >= 200 && r->status < 300 && body)) {
		a->done(a, r->status, body);
		json_decref(body);
		return;
	}
	if (r->status == 400 && a->dup_ok && strstr(a->path, "/unsorted/")) {
		log_info("amocrm: call %s: %s refused as a duplicate: the earlier "
			 "attempt made it", S(a->ev, "call_id"), path);
		json_decref(body);
		a->done(a, r->status, NULL);
		return;
	}
	if (r->status >= 200 && r->status < 300)
		snprintf(cause, sizeof(cause), "%s %s: HTTP %ld, not JSON", a->method, path,
			 r->status);
	else
		snprintf(cause, sizeof(cause), "%s %s: HTTP %ld%s%s", a->method, path,
			 r->status, *S(body, "title") ? " " : "", S(body, "title"));
	json_decref(body);
	req_fail(a, r->status == 401 ? EACCES : r->status == 429 ? EAGAIN : EIO, cause);
}

/* ---- the search: contacts, then companies, by exact number ------------------------------------------ */

/* The digits amoCRM's fuzzy search gets: the national number when it can. */
static void query_digits(const char *phone, const char *cc, char *out, size_t sz)
{
	size_t n = 0, cl = strlen(cc);
	const char *p = phone;

	if (*p == '+' && !strncmp(p + 1, cc, cl) && strlen(p + 1 + cl) >= 7)
		p += 1 + cl;
	for (; *p && n + 1 < sz; p++)
		if (isdigit((unsigned char)*p))
			out[n++] = *p;
	out[n] = '\0';
}

/* Whether one of o's PHONE values is phone, once normalised. */
static bool has_phone(json_t *o, const char *phone, const char *cc)
{
	json_t *fields = json_object_get(o, "custom_fields_values");

	for (size_t i = 0; i < json_array_size(fields); i++) {
		json_t *f = json_array_get(fields, i), *vals = json_object_get(f, "values");

		if (strcmp(S(f, "field_code"), "PHONE"))
			continue;
		for (size_t k = 0; k < json_array_size(vals); k++) {
			char e164[CRM_E164_SIZE];
			const char *v = S(json_array_get(vals, k), "value");

			if (!crm_normalize(v, cc, e164, sizeof(e164)) && !strcmp(e164, phone))
				return true;
		}
	}
	return false;
}

/* The first of the search's answers with the very number, into r. */
static bool take_match(struct crm *c, json_t *body, int stage, const char *phone,
		       struct crm_result *r)
{
	const struct conf *cf = crm_conf(c);
	const char *kind = stage ? "companies" : "contacts", *one = stage ? "company" : "contact";
	json_t *list = json_object_get(json_object_get(body, "_embedded"), kind);
	char id[32], base[128];

	for (size_t i = 0; i < json_array_size(list); i++) {
		json_t *e = json_array_get(list, i);

		if (!has_phone(e, phone, cf->crm.country_code))
			continue;
		crm_jstr(e, "id", id, sizeof(id));
		snprintf(r->contact_id, sizeof(r->contact_id), "%s:%s", one, id);
		crm_entity_note(c, r->contact_id, phone);
		crm_json_str(r->contact_name, sizeof(r->contact_name), e, "name");
		base_url(cf, base, sizeof(base));
		snprintf(r->contact_url, sizeof(r->contact_url), "%s/%s/detail/%s", base,
			 kind, id);
		crm_json_str(r->responsible_id, sizeof(r->responsible_id), e,
			     "responsible_user_id");
		r->status = CRM_KNOWN;
		return true;
	}
	return false;
}

static void search(struct amo *a, const char *phone, amo_done_h *done)
{
	char digits[32], path[128];

	query_digits(phone, crm_conf(a->job.crm)->crm.country_code, digits, sizeof(digits));
	snprintf(path, sizeof(path), "/api/v4/%s?query=%s", a->search_stage ? "companies" :
		 "contacts", digits);
	call(a, "GET", path, NULL, done);
}

/* ---- lookups ------------------------------------------------------------------------------------------ */

static void on_lookup_found(struct amo *a, long status, json_t *body)
{
	struct crm_lookup *l = a->job.l;

	(void)status;
	if (take_match(a->job.crm, body, a->search_stage, l->phone, &l->res)) {
		crm_lookup_done(l);
		return;
	}
	if (!a->search_stage++) {
		search(a, l->phone, on_lookup_found);
		return;
	}
	l->res.status = CRM_UNKNOWN;
	crm_lookup_done(l);
}

static struct amo *amo_new(struct crm *c, struct crm_lookup *l, struct crm_delivery *d)
{
	struct amo *a = calloc(1, sizeof(*a));

	if (a)
		crm_job_init(&a->job, c, l, d);
	return a;
}

static int lookup(struct crm *c, struct crm_lookup *l)
{
	struct amo *a = amo_new(c, l, NULL);

	if (!a)
		return ENOMEM;
	l->astate = a;
	a->starting = true;
	search(a, l->phone, on_lookup_found);
	a->starting = false;
	if (!a->start_err && !l->req)
		a->start_err = EIO;
	return a->start_err;
}

static void free_state(void *astate)
{
	struct amo *a = astate;

	crm_job_fini(&a->job);
	json_decref(a->body);
	json_decref(a->st);
	free(a);
}

/* ---- deliveries: plumbing ----------------------------------------------------------------------------- */

static void deliver_end(struct amo *a, int err, const char *cause)
{
	crm_job_end(&a->job, err, cause);
}

static void req_fail(struct amo *a, int err, const char *cause)
{
	struct crm_lookup *l = a->job.l;

	if (l && a->starting) {
		a->start_err = err ? err : EIO;
		return;
	}
	if (l) {
		log_warn("amocrm lookup of %s: %s", l->phone, cause);
		l->res.status = CRM_FAILED;
		l->res.cause = err == EACCES ? "auth" : err == EAGAIN ? "rate_limited" :
			       strstr(cause, "not JSON") ? "bad_json" :
			       strstr(cause, "HTTP 5") ? "http_5xx" : "http_other";
		crm_lookup_done(l);
		return;
	}
	log_warn("amocrm: call %s: %s", S(a->ev, "call_id"), cause);
	deliver_end(a, err, cause);
}

static void save(struct amo *a)
{
	crm_state_save(a->job.crm, a->scope, a->st);
}

static json_t *done_of(struct amo *a)
{
	json_t *done = json_object_get(a->st, "done");

	if (!done) {
		done = json_object();
		json_object_set_new(a->st, "done", done);
	}
	return done;
}

static bool step_done(struct amo *a, const char *step)
{
	return json_object_get(json_object_get(a->st, "done"), step) != NULL;
}

static const char *client_of(json_t *ev)
{
	return strcmp(S(ev, "direction"), "outbound") ? S(ev, "from") : S(ev, "to");
}

/* A numeric id as a JSON integer, or NULL. */
static json_t *int_of(const char *s)
{
	char *end;
	long long v;

	if (!s || !*s)
		return NULL;
	v = strtoll(s, &end, 10);
	return *end ? NULL : json_integer(v);
}

static void set_int(json_t *o, const char *key, const char *s)
{
	json_t *v = int_of(s);

	if (v)
		json_object_set_new(o, key, v);
}

/* The id of _embedded.<kind>[0] of a create's answer, or "". */
static void first_id(json_t *body, const char *kind, char *out, size_t sz)
{
	crm_json_str(out, sz, json_array_get(json_object_get(json_object_get(body, "_embedded"),
							     kind), 0), "id");
}

static void run(struct amo *a);

/* ---- call.ended ------------------------------------------------------------------------------------------ */

static void on_searched(struct amo *a, long status, json_t *body)
{
	struct crm_result r = { 0 };

	(void)status;
	if (!take_match(a->job.crm, body, a->search_stage, client_of(a->ev), &r) &&
	    !a->search_stage++) {
		search(a, client_of(a->ev), on_searched);
		return;
	}
	json_object_set_new(a->st, "searched", json_true());
	if (r.status == CRM_KNOWN) {
		json_object_set_new(a->st, "known", json_true());
		json_object_set_new(a->st, "entity", json_string(r.contact_id));
		if (*r.responsible_id)
			json_object_set_new(a->st, "client_user", json_string(r.responsible_id));
	}
	save(a);
	run(a);
}

static void make_plan(struct amo *a)
{
	const struct conf *cf = crm_conf(a->job.crm);
	json_t *ev = a->ev, *plan;
	bool out = !strcmp(S(ev, "direction"), "outbound");
	bool known = json_is_true(json_object_get(a->st, "known"));
	enum crm_call_type t = crm_call_type_of(S(ev, "direction"), S(ev, "disposition"), known);
	const char *first_ans = out ? S(ev, "from") : S(a->st, "first_answered");
	struct crm_call_facts f = {
		.phone = client_of(ev), .did = S(ev, "did"),
		.first_answered = first_ans,
		.last_answered = out ? S(ev, "from") : *S(ev, "last_agent") ? S(ev, "last_agent") :
				 first_ans,
		.first_rung = out ? S(ev, "from") : S(ev, "first_agent"),
		.client_user = S(a->st, "client_user"),
		.when_ms = clk_wall_ms(),
	};

	plan = crm_rule_plan(cf, t, &f);
	json_object_set_new(a->st, "plan", plan ? plan : json_object());
	log_info("call %s: %s, %s", S(ev, "call_id"), t == CRM_CT_NONE ? "no call type" :
		 crm_call_type_name(t), json_is_null(json_object_get(plan, "rule")) ?
		 "no rule" : S(plan, "rule"));
	save(a);
}

/* Unix seconds when the call started. */
static json_int_t started_at(json_t *ev)
{
	return (json_int_t)(clk_wall_ms() / 1000 -
			    json_integer_value(json_object_get(ev, "duration")));
}

static json_t *phone_field(const char *phone)
{
	return json_pack("[{s:s, s:[{s:s, s:s}]}]", "field_code", "PHONE", "values",
			 "value", phone, "enum_code", "WORK");
}

static void on_unsorted(struct amo *a, long status, json_t *body)
{
	json_t *u = json_array_get(json_object_get(json_object_get(body, "_embedded"),
						   "unsorted"), 0);
	json_t *done = done_of(a);
	char id[32];

	(void)status;
	json_object_set_new(done, "unsorted", json_string(S(u, "uid")));
	first_id(u, "leads", id, sizeof(id));
	if (*id)
		json_object_set_new(a->st, "lead", json_string(id));
	first_id(u, "contacts", id, sizeof(id));
	if (*id)
		json_object_set_new(a->st, "contact", json_string(id));
	save(a);
	run(a);
}

static void add_unsorted(struct amo *a)
{
	const struct conf *cf = crm_conf(a->job.crm);
	json_t *ev = a->ev, *plan = json_object_get(a->st, "plan");
	const char *phone = client_of(ev);
	json_t *meta = json_pack("{s:b, s:s, s:I, s:s, s:s, s:I, s:s}",
				 "is_call_event_needed", 1, "uniq", S(ev, "call_id"),
				 "duration", (json_int_t)json_integer_value(json_object_get(ev,
									    "billsec")),
				 "service_code", cf->crm.source, "phone", phone,
				 "called_at", started_at(ev), "from", phone);
	json_t *contact = json_pack("{s:s, s:o}", "name", *S(plan, "contact") ?
				    S(plan, "contact") : phone,
				    "custom_fields_values", phone_field(phone));
	json_t *emb = json_pack("{s:[o]}", "contacts", contact);
	json_t *u = json_pack("{s:s, s:s, s:I, s:o, s:o}", "source_uid", S(ev, "call_id"),
			      "source_name", cf->crm.source, "created_at", started_at(ev),
			      "metadata", meta, "_embedded", emb);

	if (*S(ev, "recording_url"))
		json_object_set_new(meta, "link", json_string(S(ev, "recording_url")));
	set_int(meta, "call_responsible", S(plan, "responsible"));
	set_int(contact, "responsible_user_id", S(plan, "responsible"));
	set_int(u, "pipeline_id", S(plan, "pipeline"));
	if (*S(plan, "deal")) {
		json_t *lead = json_pack("{s:s}", "name", S(plan, "deal"));

		set_int(lead, "responsible_user_id", S(plan, "responsible"));
		json_object_set_new(emb, "leads", json_pack("[o]", lead));
	}
	/*
	 * amoCRM refuses a second unsorted entry for the same data: after an
	 * attempt whose answer was lost, a refusal means the entry is there.
	 */
	a->dup_ok = json_is_true(json_object_get(a->st, "unsorted_tried"));
	if (!a->dup_ok) {
		json_object_set_new(a->st, "unsorted_tried", json_true());
		save(a);
	}
	call(a, "POST", "/api/v4/leads/unsorted/sip", json_pack("[o]", u), on_unsorted);
}

static void on_contact(struct amo *a, long status, json_t *body)
{
	char id[32];

	(void)status;
	first_id(body, "contacts", id, sizeof(id));
	json_object_set_new(done_of(a), "contact", json_string(id));
	if (*id)
		json_object_set_new(a->st, "contact", json_string(id));
	save(a);
	run(a);
}

static void add_contact(struct amo *a)
{
	json_t *plan = json_object_get(a->st, "plan");
	json_t *c = json_pack("{s:s, s:o}", "name", S(plan, "contact"),
			      "custom_fields_values", phone_field(client_of(a->ev)));

	set_int(c, "responsible_user_id", S(plan, "responsible"));
	call(a, "POST", "/api/v4/contacts", json_pack("[o]", c), on_contact);
}

/* The client as "contact:ID" / "company:ID": the one made, else the one found. */
static const char *client_entity(struct amo *a, char *buf, size_t sz)
{
	if (*S(a->st, "contact")) {
		snprintf(buf, sz, "contact:%s", S(a->st, "contact"));
		return buf;
	}
	return S(a->st, "entity");
}

static void on_lead(struct amo *a, long status, json_t *body)
{
	char id[32];

	(void)status;
	first_id(body, "leads", id, sizeof(id));
	json_object_set_new(done_of(a), "lead", json_string(id));
	if (*id)
		json_object_set_new(a->st, "lead", json_string(id));
	save(a);
	run(a);
}

static void add_lead(struct amo *a)
{
	json_t *plan = json_object_get(a->st, "plan");
	json_t *l = json_pack("{s:s}", "name", S(plan, "deal"));
	char buf[64];
	const char *ent = client_entity(a, buf, sizeof(buf)), *colon = strchr(ent, ':');

	set_int(l, "pipeline_id", S(plan, "pipeline"));
	set_int(l, "status_id", S(plan, "stage"));
	set_int(l, "responsible_user_id", S(plan, "responsible"));
	json_t *id = colon ? int_of(colon + 1) : NULL;

	if (id)
		json_object_set_new(l, "_embedded", json_pack("{s:[{s:o}]}",
			!strncmp(ent, "company", 7) ? "companies" : "contacts", "id", id));
	call(a, "POST", "/api/v4/leads", json_pack("[o]", l), on_lead);
}

static void on_step(struct amo *a, long status, json_t *body)
{
	(void)status;
	(void)body;
	json_object_set_new(done_of(a), a->path[8] == 'c' ? "call" : "task", json_true());
	save(a);
	run(a);
}

static void add_call(struct amo *a)
{
	const struct conf *cf = crm_conf(a->job.crm);
	json_t *ev = a->ev, *plan = json_object_get(a->st, "plan");
	const char *d = S(ev, "disposition");
	json_t *c = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:i, s:I}",
			      "direction", S(ev, "direction"), "uniq", S(ev, "call_id"),
			      "duration", (json_int_t)json_integer_value(json_object_get(ev,
									 "billsec")),
			      "source", cf->crm.source, "phone", client_of(ev),
			      "call_result", d, "call_status", !strcmp(d, "answered") ? 4 :
			      !strcmp(d, "busy") ? 7 : 6, "created_at", started_at(ev));

	if (*S(ev, "recording_url"))
		json_object_set_new(c, "link", json_string(S(ev, "recording_url")));
	set_int(c, "responsible_user_id", S(plan, "responsible"));
	call(a, "POST", "/api/v4/calls", json_pack("[o]", c), on_step);
}

static void add_task(struct amo *a)
{
	json_t *plan = json_object_get(a->st, "plan");
	json_t *t = json_pack("{s:s, s:I, s:i}", "text", S(plan, "task"), "complete_till",
			      (json_int_t)json_integer_value(json_object_get(plan,
									     "task_deadline")),
			      "task_type_id", 1);
	char buf[64];
	const char *ent = client_entity(a, buf, sizeof(buf)), *colon = strchr(ent, ':');

	json_t *lead = int_of(S(a->st, "lead")), *cid = colon ? int_of(colon + 1) : NULL;

	set_int(t, "responsible_user_id", S(plan, "responsible"));
	if (lead) {
		json_object_set_new(t, "entity_id", lead);
		json_object_set_new(t, "entity_type", json_string("leads"));
		json_decref(cid);
	}
	else if (cid) {
		json_object_set_new(t, "entity_id", cid);
		json_object_set_new(t, "entity_type", json_string(
			!strncmp(ent, "company", 7) ? "companies" : "contacts"));
	}
	call(a, "POST", "/api/v4/tasks", json_pack("[o]", t), on_step);
}

static void ended_done(struct amo *a)
{
	crm_state_drop(a->job.crm, a->scope);
	crm_state_purge(a->job.crm, clk_wall_ms() - crm_conf(a->job.crm)->crm.event_retry_ms -
			STATE_KEEP_MS);
	deliver_end(a, 0, NULL);
}

static void ended(struct amo *a)
{
	json_t *plan;
	bool known = json_is_true(json_object_get(a->st, "known")), unsorted;
	char buf[64];

	if (!known && !json_object_get(a->st, "searched")) {
		a->search_stage = 0;
		search(a, client_of(a->ev), on_searched);
		return;
	}
	if (!json_object_get(a->st, "plan"))
		make_plan(a);
	plan = json_object_get(a->st, "plan");
	unsorted = json_is_true(json_object_get(plan, "unsorted")) && !known;
	if (unsorted && !step_done(a, "unsorted"))
		add_unsorted(a);
	else if (!unsorted && *S(plan, "contact") && !known && !step_done(a, "contact"))
		add_contact(a);
	else if (!unsorted && *S(plan, "deal") && !step_done(a, "lead"))
		add_lead(a);
	else if (!unsorted && !step_done(a, "call") &&
		 strchr(client_entity(a, buf, sizeof(buf)), ':'))
		add_call(a);
	else if (*S(plan, "task") && *S(plan, "responsible") && !step_done(a, "task"))
		add_task(a);
	else
		ended_done(a);
}

/* ---- deliveries -------------------------------------------------------------------------------------------- */

static void started(struct amo *a)
{
	json_t *ev = a->ev, *resp = json_object_get(ev, "responsible");

	if (*S(ev, "contact_id")) {
		json_object_set_new(a->st, "known", json_true());
		json_object_set_new(a->st, "entity", json_string(S(ev, "contact_id")));
	}
	if (*S(resp, "id"))
		json_object_set_new(a->st, "client_user", json_string(S(resp, "id")));
	save(a);
	deliver_end(a, 0, NULL);
}

static void run(struct amo *a)
{
	const char *type = S(a->ev, "type");

	if (!strcmp(type, "call.started")) {
		started(a);
	}
	else if (!strcmp(type, "call.answered")) {
		if (!json_object_get(a->st, "first_answered") && *S(a->ev, "agent")) {
			json_object_set_new(a->st, "first_answered", json_string(S(a->ev, "agent")));
			save(a);
		}
		deliver_end(a, 0, NULL);
	}
	else if (!strcmp(type, "call.ended")) {
		ended(a);
	}
	else {
		deliver_end(a, 0, NULL);
	}
}

static int deliver(struct crm *c, struct crm_delivery *d)
{
	struct amo *a = amo_new(c, NULL, d);
	const char *type = S(d->ev, "type");

	if (!a)
		return ENOMEM;
	d->astate = a;
	a->ev = d->ev;
	if (strcmp(type, "call.started") && strcmp(type, "call.answered") &&
	    strcmp(type, "call.ended")) {
		deliver_end(a, 0, NULL);
		return 0;
	}
	snprintf(a->scope, sizeof(a->scope), "call:%s", S(d->ev, "call_id"));
	if (!strcmp(S(d->ev, "direction"), "internal")) {
		deliver_end(a, 0, NULL);
		return 0;
	}
	a->st = crm_state_load(c, a->scope);
	if (!a->st)
		return ENOMEM;
	run(a);
	return 0;
}

/* ---- webhook --------------------------------------------------------------------------------------------------- */

struct hook {
	struct crm *crm;
	int dropped;
	bool failed;
};

/* contacts[delete][0][id]=12, companies[update][0][custom_fields][0][values][0][value]=... */
static void hook_pair(const char *name, const char *value, void *arg)
{
	struct hook *h = arg;
	char kind[16], action[16], ent[48], e164[CRM_E164_SIZE];
	int idx, n = 0, k;

	if (sscanf(name, "%15[a-z][%15[a-z]][%d]%n", kind, action, &idx, &n) != 3 || !n)
		return;
	if (strcmp(kind, "contacts") && strcmp(kind, "companies"))
		return;         /* leads: lookups do not depend on them */
	if (!strcmp(name + n, "[id]") && (!strcmp(action, "delete") ||
	    !strcmp(action, "update") || !strcmp(action, "responsible") ||
	    !strcmp(action, "restore"))) {
		snprintf(ent, sizeof(ent), "%s:%s", !strcmp(kind, "contacts") ? "contact" :
			 "company", value);
		k = crm_entity_drop(h->crm, ent);
	}
	else if (strstr(name + n, "[custom_fields]") && strstr(name + n, "[value]") &&
		 !crm_normalize(value, crm_conf(h->crm)->crm.country_code, e164,
				sizeof(e164))) {
		k = crm_cache_drop(h->crm, e164);
	}
	else {
		return;
	}
	if (k < 0)
		h->failed = true;
	else
		h->dropped += k;
}

static int webhook(struct crm *c, struct api_req *req)
{
	const struct conf *cf = crm_conf(c);
	const char *tok = api_req_query(req, "token");
	struct hook h = { c, 0, false };
	size_t len;

	if (!*cf->crm.webhook_token)
		return api_reply_error(req, 403, "[crm] webhook_token is not set");
	if (!crm_secret_equal(tok, cf->crm.webhook_token))
		return api_reply_error(req, 401, "bad token");
	crm_form_each(api_req_body(req, &len), hook_pair, &h);
	if (h.failed)
		return api_reply_error(req, 500, "database error");
	if (h.dropped)
		log_info("amocrm webhook: %d cached lookup%s dropped", h.dropped,
			 h.dropped == 1 ? "" : "s");
	return api_reply_json(req, 200, json_pack("{s:i}", "invalidated", h.dropped));
}

const struct crm_adapter crm_adapter_amocrm = {
	.name = "amocrm",
	.lookup = lookup,
	.deliver = deliver,
	.webhook = webhook,
	.free_state = free_state,
	.webhook_own_auth = true,
};
