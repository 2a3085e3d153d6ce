/*
 * crm_rules.c: call types, rule selection, templates and plans (see
 * crm_rules.h).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "conf.h"
#include "crm/crm_rules.h"

/* Who is responsible when a rule does not say. */
#define DEFAULT_ANSWERED "last_answered first_answered client default"
#define DEFAULT_MISSED   "client default first_rung"

enum crm_call_type crm_call_type_of(const char *direction, const char *disposition,
				    bool known)
{
	bool answered = disposition && !strcmp(disposition, "answered");

	if (!direction || !disposition || !strcmp(disposition, "redirected"))
		return CRM_CT_NONE;
	if (!strcmp(direction, "inbound")) {
		if (answered)
			return known ? CRM_CT_IN_KNOWN_ANSWERED : CRM_CT_IN_UNKNOWN_ANSWERED;
		return known ? CRM_CT_MISSED_KNOWN : CRM_CT_MISSED_UNKNOWN;
	}
	if (!strcmp(direction, "outbound")) {
		if (answered)
			return known ? CRM_CT_OUT_KNOWN_ANSWERED : CRM_CT_OUT_UNKNOWN_ANSWERED;
		return known ? CRM_CT_OUT_KNOWN_UNANSWERED : CRM_CT_NONE;
	}
	return CRM_CT_NONE;
}

const char *crm_call_type_name(enum crm_call_type t)
{
	return t == CRM_CT_NONE ? "" : conf_rule_types[t];
}

bool crm_call_type_answered(enum crm_call_type t)
{
	return t == CRM_CT_IN_UNKNOWN_ANSWERED || t == CRM_CT_IN_KNOWN_ANSWERED ||
	       t == CRM_CT_OUT_KNOWN_ANSWERED || t == CRM_CT_OUT_UNKNOWN_ANSWERED;
}

const struct conf_rule *crm_rule_for(const struct conf *cf, enum crm_call_type t,
				     const char *did)
{
	const struct conf_rule *r = NULL;

	if (t == CRM_CT_NONE)
		return NULL;
	if (did && *did)
		r = conf_rule_find(cf, conf_rule_types[t], did);
	return r ? r : conf_rule_find(cf, conf_rule_types[t], NULL);
}

bool crm_rule_crm_create(const struct conf *cf, const char *direction,
			 const char *did)
{
	static const enum crm_call_type in[] = { CRM_CT_IN_UNKNOWN_ANSWERED,
						 CRM_CT_MISSED_UNKNOWN };
	static const enum crm_call_type out[] = { CRM_CT_OUT_UNKNOWN_ANSWERED };
	bool inbound = direction && !strcmp(direction, "inbound");
	const enum crm_call_type *ts = inbound ? in : out;
	size_t n = inbound ? 2 : 1;

	if (!direction || (!inbound && strcmp(direction, "outbound")))
		return false;
	for (size_t i = 0; i < n; i++) {
		const struct conf_rule *r = crm_rule_for(cf, ts[i], did);

		if (r && r->crm_create)
			return true;
	}
	return false;
}

/* ---- templates ---------------------------------------------------------------- */

static const char *agent_label(const struct conf *cf, const struct crm_call_facts *f)
{
	const char *ext = f->last_answered && *f->last_answered ? f->last_answered :
			  f->first_rung && *f->first_rung ? f->first_rung : NULL;
	const struct conf_agent *a = ext ? conf_agent_find(cf, ext) : NULL;

	if (a && a->name && *a->name)
		return a->name;
	return ext ? ext : "";
}

static void put(char *out, size_t sz, size_t *n, const char *s, size_t len)
{
	if (*n + 1 < sz) {
		size_t k = sz - 1 - *n < len ? sz - 1 - *n : len;

		memcpy(out + *n, s, k);
	}
	*n += len;
}

size_t crm_template(char *out, size_t sz, const char *tmpl, const struct conf *cf,
		    const struct crm_call_facts *f)
{
	time_t t = (time_t)(f->when_ms / 1000);
	char date[16], hm[8];
	struct tm tm;
	size_t n = 0;
	static const char *const names[] = { "<PhoneNumber>", "<Did>", "<Date>",
					     "<Time>", "<Agent>" };
	const char *vals[5];

	localtime_r(&t, &tm);
	strftime(date, sizeof(date), "%d.%m.%Y", &tm);
	strftime(hm, sizeof(hm), "%H:%M", &tm);
	vals[0] = f->phone ? f->phone : "";
	vals[1] = f->did ? f->did : "";
	vals[2] = date;
	vals[3] = hm;
	vals[4] = agent_label(cf, f);
	for (const char *p = tmpl ? tmpl : ""; *p; ) {
		size_t i;

		for (i = 0; i < 5; i++)
			if (!strncmp(p, names[i], strlen(names[i])))
				break;
		if (i < 5) {
			put(out, sz, &n, vals[i], strlen(vals[i]));
			p += strlen(names[i]);
		}
		else {
			put(out, sz, &n, p, 1);
			p++;
		}
	}
	if (sz)
		out[n < sz ? n : sz - 1] = '\0';
	return n;
}

/* ---- the responsible user ----------------------------------------------------- */

static const char *agent_user(const struct conf *cf, const char *ext)
{
	const struct conf_agent *a = ext && *ext ? conf_agent_find(cf, ext) : NULL;

	return a && a->crm_user && *a->crm_user ? a->crm_user : NULL;
}

static const char *source_user(const struct conf *cf, const struct conf_rule *r,
			       const struct crm_call_facts *f, const char *word)
{
	if (!strcmp(word, "first_answered"))
		return agent_user(cf, f->first_answered);
	if (!strcmp(word, "last_answered"))
		return agent_user(cf, f->last_answered);
	if (!strcmp(word, "first_rung"))
		return agent_user(cf, f->first_rung);
	if (!strcmp(word, "client"))
		return f->client_user && *f->client_user ? f->client_user : NULL;
	if (!strcmp(word, "default")) {
		if (r && r->default_user && *r->default_user)
			return r->default_user;
		return *cf->crm.default_user ? cf->crm.default_user : NULL;
	}
	return NULL;
}

int crm_rule_responsible(const struct conf *cf, const struct conf_rule *r,
			 enum crm_call_type t, const struct crm_call_facts *f,
			 char *user, size_t sz, const char **how)
{
	static const char *const words[] = { "first_answered", "last_answered",
					     "first_rung", "client", "default" };
	const char *list = r && r->responsible ? r->responsible :
			   crm_call_type_answered(t) ? DEFAULT_ANSWERED : DEFAULT_MISSED;
	const char *p = list;

	while (*p) {
		size_t len = strcspn(p, " \t,");

		for (size_t i = 0; i < sizeof(words) / sizeof(words[0]) && len; i++) {
			const char *u;

			if (strlen(words[i]) != len || strncmp(p, words[i], len))
				continue;
			u = source_user(cf, r, f, words[i]);
			if (u) {
				snprintf(user, sz, "%s", u);
				*how = words[i];
				return 0;
			}
		}
		p += len;
		p += strspn(p, " \t,");
	}
	if (sz)
		user[0] = '\0';
	*how = NULL;
	return ENOENT;
}

/* ---- plans --------------------------------------------------------------------- */

static void plan_text(json_t *plan, const char *key, const char *tmpl,
		      const struct conf *cf, const struct crm_call_facts *f)
{
	char buf[512];

	if (!tmpl || !*tmpl)
		return;
	crm_template(buf, sizeof(buf), tmpl, cf, f);
	json_object_set_new(plan, key, json_string(buf));
}

json_t *crm_rule_plan(const struct conf *cf, enum crm_call_type t,
		      const struct crm_call_facts *f)
{
	const struct conf_rule *r = crm_rule_for(cf, t, f->did);
	json_t *plan = json_object();
	char user[64], sect[96];
	const char *how = NULL;

	if (!plan)
		return NULL;
	json_object_set_new(plan, "type", json_string(crm_call_type_name(t)));
	if (r)
		snprintf(sect, sizeof(sect), "[rule:%s%s%s]", r->type, r->did ? ":" : "",
			 r->did ? r->did : "");
	json_object_set_new(plan, "rule", r ? json_string(sect) : json_null());
	if (t != CRM_CT_NONE && !crm_rule_responsible(cf, r, t, f, user, sizeof(user), &how)) {
		json_object_set_new(plan, "responsible", json_string(user));
		json_object_set_new(plan, "how", json_string(how));
	}
	else {
		json_object_set_new(plan, "responsible", json_null());
	}
	if (!r)
		return plan;
	plan_text(plan, "contact", r->contact, cf, f);
	plan_text(plan, "lead", r->lead, cf, f);
	plan_text(plan, "deal", r->deal, cf, f);
	if ((r->deal && *r->deal) || (r->lead && *r->lead) || r->unsorted) {
		if (r->pipeline && *r->pipeline)
			json_object_set_new(plan, "pipeline", json_string(r->pipeline));
		if (r->stage && *r->stage)
			json_object_set_new(plan, "stage", json_string(r->stage));
	}
	if (r->unsorted)
		json_object_set_new(plan, "unsorted", json_true());
	plan_text(plan, "task", r->task, cf, f);
	if (r->task && *r->task)
		json_object_set_new(plan, "task_deadline",
				    json_integer((f->when_ms + r->task_deadline_ms) / 1000));
	return plan;
}
