/*
 * crm_rules.c: the seven call types, rule selection (per DID first), the
 * name templates, who is responsible and the plans, with no network; and
 * the [rule:] and [crm] account checks of the config parser.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "tap.h"
#include "conf.h"
#include "crm/crm_rules.h"

static char err[512];

static struct conf *parse(const char *text)
{
	struct conf *c = NULL;

	err[0] = '\0';
	if (conf_parse_string(&c, "/tmp/r.conf", text, err, sizeof(err)))
		return NULL;
	return c;
}

#define AGENTS \
	"[agent:101]\npassword = a\nname = Ivan Petrov\ncrm_user = 42\n" \
	"[agent:102]\npassword = b\ncrm_user = 43\n" \
	"[agent:103]\npassword = c\n"

static const char *rules_conf =
	"[crm]\ndefault_user = 7\n"
	AGENTS
	"[rule:missed_unknown]\ncontact = New contact <PhoneNumber>\n"
	"deal = Missed call <PhoneNumber> on <Did>\npipeline = 11\nstage = 22\n"
	"task = Call back <PhoneNumber>\ntask_deadline = 2h\n"
	"[rule:missed_unknown:+74951234567]\ncontact = Sales <PhoneNumber>\n"
	"responsible = default\ndefault_user = 99\n"
	"[rule:incoming_known_answered]\ntask = Follow up <Agent> <Date> <Time>\n"
	"responsible = first_answered client\n"
	"[rule:outgoing_known_unanswered]\ntask = Try again\n"
	"[rule:incoming_unknown_answered]\ncrm_create = yes\nunsorted = no\n";

/* ---- config ------------------------------------------------------------------------ */

static void test_conf_errors(void)
{
	static const struct { const char *text, *want, *name; } bad[] = {
		{ "[rule:missed]\n", "the type is one of", "unknown call type" },
		{ "[rule]\n", "needs a call type", "[rule] without a type" },
		{ "[rule:missed_known:+7495x]\n", "a DID is a number", "bad DID" },
		{ "[rule:missed_known]\n[rule:missed_known]\n", "defined twice", "twice" },
		{ "[rule:missed_known]\nresponsible = boss\n", "'boss' is not one of",
		  "unknown responsible source" },
		{ "[rule:missed_known]\nresponsible = client client\n", "listed twice",
		  "a source twice" },
		{ "[rule:missed_known]\nresponsible =\n", "name at least one", "empty list" },
		{ "[rule:missed_known]\ncontact = X\n", "contact is for unknown numbers only",
		  "contact on a known type" },
		{ "[rule:incoming_known_answered]\nunsorted = yes\n",
		  "unsorted is for unknown numbers only", "unsorted on a known type" },
		{ "[rule:missed_known]\ntask_deadline = 5\n", "bad duration", "deadline unit" },
		{ "[rule:missed_known]\nsubject = x\n", "unknown key 'subject' in [rule]",
		  "unknown key" },
		{ "[crm]\ntype = amocrm\nsubdomain = x\ntoken = t\n[rule:missed_unknown]\n"
		  "lead = L\n", "amoCRM has no leads apart from deals", "lead for amoCRM" },
		{ "[crm]\ntype = bitrix24\nurl = https://p/rest/1/x/\ndefault_user = 1\n"
		  "[rule:missed_unknown]\nunsorted = yes\n", "unsorted is for amocrm",
		  "unsorted for Bitrix24" },
		{ "[crm]\ntype = bitrix24\ndefault_user = 1\n", "needs url", "bitrix24 url" },
		{ "[crm]\ntype = bitrix24\nurl = https://p/rest/1/x/\n", "needs default_user",
		  "bitrix24 default_user" },
		{ "[crm]\ntype = bitrix24\nurl = https://p/rest/\ndefault_user = 1\n"
		  "client_id = a\n", "OAuth needs client_id, client_secret and refresh_token",
		  "partial OAuth" },
		{ "[crm]\ntype = amocrm\ntoken = t\n", "needs subdomain", "amocrm subdomain" },
		{ "[crm]\ntype = amocrm\nsubdomain = x\n", "needs token", "amocrm token" },
		{ "[crm]\ntype = amocrm\nsubdomain = x\nclient_id = a\nclient_secret = b\n"
		  "refresh_token = c\n", "needs redirect_uri", "amocrm OAuth redirect_uri" },
	};
	struct conf *c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = parse(bad[i].text);
		ok(c == NULL, "rejected: %s", bad[i].name);
		like(err, bad[i].want, "message for %s", bad[i].name);
		conf_deref(c);
	}
	c = parse("[crm]\ntype = bitrix24\nurl = https://p/rest/1/x/\ndefault_user = 1\n"
		  "webhook_token = t\n[rule:missed_unknown]\ncrm_create = yes\nlead = L\n");
	ok(c != NULL, "a Bitrix24 account with a lead rule is accepted (%s)", err);
	conf_deref(c);
	c = parse("[crm]\ntype = amocrm\nsubdomain = x\nclient_id = a\nclient_secret = b\n"
		  "refresh_token = c\nredirect_uri = https://x/\n[rule:missed_unknown]\n"
		  "unsorted = yes\npipeline = 5\n");
	ok(c != NULL, "an amoCRM OAuth account with an unsorted rule is accepted (%s)", err);
	conf_deref(c);
}

static void test_conf_values(struct conf *c)
{
	const struct conf_rule *r = conf_rule_find(c, "missed_unknown", NULL);
	const struct conf_rule *d = conf_rule_find(c, "missed_unknown", "+74951234567");

	is_int(c->nrules, 5, "five rule sections");
	ok(r && d && r != d, "[rule:missed_unknown] and its DID override are apart");
	if (!r || !d)
		return;
	is_str(r->contact, "New contact <PhoneNumber>", "contact template kept as written");
	is_str(r->pipeline, "11", "pipeline");
	is_str(r->stage, "22", "stage");
	is_int(r->task_deadline_ms, 2 * 3600 * 1000, "task_deadline 2h");
	is_int(d->task_deadline_ms, 24 * 3600 * 1000, "task_deadline defaults to 24h");
	ok(!r->unsorted && !r->crm_create, "unsorted and crm_create default to no");
	ok(r->responsible == NULL, "no responsible list: the type's default applies");
	is_str(d->did, "+74951234567", "the override's DID");
	is_str(d->default_user, "99", "the override's default_user");
	ok(conf_rule_find(c, "missed_known", NULL) == NULL, "no rule for missed_known");
}

/* ---- call types ------------------------------------------------------------------------- */

static void test_types(void)
{
	static const struct {
		const char *dir, *disp;
		bool known;
		enum crm_call_type want;
	} m[] = {
		{ "inbound", "answered", false, CRM_CT_IN_UNKNOWN_ANSWERED },
		{ "inbound", "answered", true, CRM_CT_IN_KNOWN_ANSWERED },
		{ "outbound", "answered", true, CRM_CT_OUT_KNOWN_ANSWERED },
		{ "outbound", "answered", false, CRM_CT_OUT_UNKNOWN_ANSWERED },
		{ "inbound", "missed", false, CRM_CT_MISSED_UNKNOWN },
		{ "inbound", "busy", false, CRM_CT_MISSED_UNKNOWN },
		{ "inbound", "cancelled", false, CRM_CT_MISSED_UNKNOWN },
		{ "inbound", "failed", true, CRM_CT_MISSED_KNOWN },
		{ "inbound", "missed", true, CRM_CT_MISSED_KNOWN },
		{ "outbound", "missed", true, CRM_CT_OUT_KNOWN_UNANSWERED },
		{ "outbound", "busy", true, CRM_CT_OUT_KNOWN_UNANSWERED },
		{ "outbound", "missed", false, CRM_CT_NONE },
		{ "internal", "answered", true, CRM_CT_NONE },
		{ "inbound", "redirected", true, CRM_CT_NONE },
		{ NULL, "answered", true, CRM_CT_NONE },
	};

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		is_int(crm_call_type_of(m[i].dir, m[i].disp, m[i].known), m[i].want,
		       "%s %s %s -> %s", m[i].dir ? m[i].dir : "(null)", m[i].disp,
		       m[i].known ? "known" : "unknown", m[i].want == CRM_CT_NONE ? "none" :
		       crm_call_type_name(m[i].want));
	is_str(crm_call_type_name(CRM_CT_OUT_KNOWN_UNANSWERED), "outgoing_known_unanswered",
	       "type names follow the config's");
	ok(crm_call_type_answered(CRM_CT_OUT_UNKNOWN_ANSWERED) &&
	   !crm_call_type_answered(CRM_CT_MISSED_KNOWN), "answered types");
}

static void test_selection(struct conf *c)
{
	const struct conf_rule *r;

	r = crm_rule_for(c, CRM_CT_MISSED_UNKNOWN, "+74951234567");
	ok(r && r->did && !strcmp(r->did, "+74951234567"), "the DID's own rule wins");
	r = crm_rule_for(c, CRM_CT_MISSED_UNKNOWN, "+74950000000");
	ok(r && !r->did, "another DID gets the rule without a DID");
	r = crm_rule_for(c, CRM_CT_MISSED_UNKNOWN, NULL);
	ok(r && !r->did, "no DID: the rule without a DID");
	ok(crm_rule_for(c, CRM_CT_MISSED_KNOWN, "+74951234567") == NULL,
	   "no rule for the type: none");
	ok(crm_rule_for(c, CRM_CT_NONE, "+74951234567") == NULL, "no type: no rule");
	ok(crm_rule_crm_create(c, "inbound", "+74950000000"),
	   "crm_create: inbound unknown asks for it (incoming_unknown_answered)");
	ok(!crm_rule_crm_create(c, "outbound", "+74950000000"),
	   "crm_create: outbound does not");
	ok(!crm_rule_crm_create(c, "internal", NULL), "crm_create: never for internal calls");
}

/* ---- templates ------------------------------------------------------------------------------ */

static void test_templates(struct conf *c)
{
	struct crm_call_facts f = { .phone = "+79161234567", .did = "+74951234567",
				    .last_answered = "101", .first_rung = "102",
				    /* 2024-03-05 16:30:00 UTC */
				    .when_ms = 1709656200000LL };
	char out[256], small[8];
	size_t n;

	crm_template(out, sizeof(out), "New contact <PhoneNumber>", c, &f);
	is_str(out, "New contact +79161234567", "<PhoneNumber>");
	crm_template(out, sizeof(out), "<Did>|<Date>|<Time>|<Agent>", c, &f);
	is_str(out, "+74951234567|05.03.2024|16:30|Ivan Petrov",
	       "<Did>, <Date>, <Time>, <Agent> (the agent's name)");
	f.last_answered = NULL;
	crm_template(out, sizeof(out), "<Agent>", c, &f);
	is_str(out, "102", "<Agent> without one who answered: the first rung, by extension");
	f.first_rung = NULL;
	crm_template(out, sizeof(out), "[<Agent>]", c, &f);
	is_str(out, "[]", "<Agent> with nobody: empty");
	crm_template(out, sizeof(out), "<Name> <PhoneNumber", c, &f);
	is_str(out, "<Name> <PhoneNumber", "unknown or broken placeholders are copied");
	n = crm_template(small, sizeof(small), "Call <PhoneNumber>", c, &f);
	is_int(n, strlen("Call +79161234567"), "the length needed is returned");
	is_str(small, "Call +7", "the output is cut and terminated");
	crm_template(out, sizeof(out), NULL, c, &f);
	is_str(out, "", "no template: empty");
}

/* ---- responsible users and plans ------------------------------------------------------------- */

static void test_responsible(struct conf *c)
{
	struct crm_call_facts f = { .phone = "+79161234567", .did = "+74950000000",
				    .first_answered = "103", .last_answered = "102",
				    .first_rung = "101", .client_user = "500" };
	const struct conf_rule *r;
	const char *how;
	char u[32];

	ok(!crm_rule_responsible(c, NULL, CRM_CT_IN_UNKNOWN_ANSWERED, &f, u, sizeof(u), &how),
	   "answered, no rule: someone");
	is_str(u, "43", "answered: the last who answered (102 -> 43)");
	is_str(how, "last_answered", "... by last_answered");
	f.last_answered = "103";
	crm_rule_responsible(c, NULL, CRM_CT_IN_KNOWN_ANSWERED, &f, u, sizeof(u), &how);
	is_str(how, "client", "agents without crm_user are skipped (103), then the client");
	is_str(u, "500", "the client's responsible user");
	crm_rule_responsible(c, NULL, CRM_CT_MISSED_KNOWN, &f, u, sizeof(u), &how);
	is_str(u, "500", "missed known: the client's responsible first");
	f.client_user = NULL;
	crm_rule_responsible(c, NULL, CRM_CT_MISSED_UNKNOWN, &f, u, sizeof(u), &how);
	is_str(u, "7", "missed unknown: [crm] default_user");
	is_str(how, "default", "... by default");
	r = crm_rule_for(c, CRM_CT_MISSED_UNKNOWN, "+74951234567");
	crm_rule_responsible(c, r, CRM_CT_MISSED_UNKNOWN, &f, u, sizeof(u), &how);
	is_str(u, "99", "the rule's default_user comes before [crm]'s");
	r = crm_rule_for(c, CRM_CT_IN_KNOWN_ANSWERED, NULL);
	f.first_answered = "101";
	crm_rule_responsible(c, r, CRM_CT_IN_KNOWN_ANSWERED, &f, u, sizeof(u), &how);
	is_str(u, "42", "the rule's own order: first_answered (101 -> 42)");
	f.first_answered = NULL;
	is_int(crm_rule_responsible(c, r, CRM_CT_IN_KNOWN_ANSWERED, &f, u, sizeof(u), &how),
	       ENOENT, "nothing in the rule's list applies: ENOENT");
	is_str(u, "", "... and no user");
}

static void test_plans(struct conf *c)
{
	struct crm_call_facts f = { .phone = "+79161234567", .did = "+74950000000",
				    .first_rung = "101", .when_ms = 1709656200000LL };
	json_t *p;

	p = crm_rule_plan(c, CRM_CT_MISSED_UNKNOWN, &f);
	is_str(json_string_value(json_object_get(p, "type")), "missed_unknown", "plan: type");
	is_str(json_string_value(json_object_get(p, "rule")), "[rule:missed_unknown]",
	       "plan: the rule used");
	is_str(json_string_value(json_object_get(p, "contact")), "New contact +79161234567",
	       "plan: contact name");
	is_str(json_string_value(json_object_get(p, "deal")),
	       "Missed call +79161234567 on +74950000000", "plan: deal name");
	is_str(json_string_value(json_object_get(p, "pipeline")), "11", "plan: pipeline");
	is_str(json_string_value(json_object_get(p, "stage")), "22", "plan: stage");
	is_str(json_string_value(json_object_get(p, "task")), "Call back +79161234567",
	       "plan: task title");
	is_int(json_integer_value(json_object_get(p, "task_deadline")),
	       1709656200 + 7200, "plan: deadline 2 h after the call");
	is_str(json_string_value(json_object_get(p, "responsible")), "7",
	       "plan: responsible (default_user)");
	ok(!json_object_get(p, "lead") && !json_object_get(p, "unsorted"),
	   "plan: nothing the rule does not ask for");
	json_decref(p);

	f.did = "+74951234567";
	p = crm_rule_plan(c, CRM_CT_MISSED_UNKNOWN, &f);
	is_str(json_string_value(json_object_get(p, "contact")), "Sales +79161234567",
	       "per-DID plan: its own contact name");
	ok(!json_object_get(p, "deal") && !json_object_get(p, "task") &&
	   !json_object_get(p, "pipeline"), "per-DID plan: nothing of the general rule");
	is_str(json_string_value(json_object_get(p, "responsible")), "99",
	       "per-DID plan: its default_user");
	json_decref(p);

	p = crm_rule_plan(c, CRM_CT_MISSED_KNOWN, &f);
	ok(p && json_is_null(json_object_get(p, "rule")) && json_object_size(p) == 4,
	   "no rule: only type, rule, responsible, how");
	json_decref(p);
	p = crm_rule_plan(c, CRM_CT_NONE, &f);
	ok(p && json_is_null(json_object_get(p, "responsible")), "no type: nobody");
	json_decref(p);
}

int main(void)
{
	struct conf *c;

	setenv("TZ", "UTC", 1);
	tzset();
	test_conf_errors();
	c = parse(rules_conf);
	ok(c != NULL, "the rules config parses (%s)", err);
	if (!c)
		return tap_done();
	test_conf_values(c);
	test_types();
	test_selection(c);
	test_templates(c);
	test_responsible(c);
	test_plans(c);
	conf_deref(c);
	return tap_done();
}
