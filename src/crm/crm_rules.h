/*
 * crm_rules.h: the seven call types and the entity-creation rules
 * ([rule:TYPE] and [rule:TYPE:DID] in the config).
 *
 * Pure code over the config: no network, no sqlite. An adapter turns a
 * finished call into a plan (crm_rule_plan) once, stores the plan with the
 * call's state and then carries it out step by step, so a retried or
 * restarted delivery executes the same plan and never creates an entity
 * twice.
 */
#ifndef SIPCRM_CRM_RULES_H
#define SIPCRM_CRM_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

struct conf;
struct conf_rule;

/* In the order of conf_rule_types[]. */
enum crm_call_type {
	CRM_CT_NONE = -1,
	CRM_CT_IN_UNKNOWN_ANSWERED,
	CRM_CT_IN_KNOWN_ANSWERED,
	CRM_CT_OUT_KNOWN_ANSWERED,
	CRM_CT_OUT_UNKNOWN_ANSWERED,
	CRM_CT_MISSED_UNKNOWN,
	CRM_CT_MISSED_KNOWN,
	CRM_CT_OUT_KNOWN_UNANSWERED,
};

/*
 * The type of a finished call from call.ended's direction and disposition
 * and whether the CRM knew the number. CRM_CT_NONE for internal and
 * redirected calls and for an unanswered call to an unknown number.
 */
enum crm_call_type crm_call_type_of(const char *direction, const char *disposition,
				    bool known);
/* "missed_known", ...; "" for CRM_CT_NONE. */
const char *crm_call_type_name(enum crm_call_type t);
bool crm_call_type_answered(enum crm_call_type t);

/* [rule:TYPE:did] if there is one, else [rule:TYPE], else NULL. */
const struct conf_rule *crm_rule_for(const struct conf *cf, enum crm_call_type t,
				     const char *did);

/*
 * Bitrix24 registers a call (and may create its lead) before the outcome
 * is known: CRM_CREATE is asked for when the rule of any outcome an
 * unknown number's call of this direction can have says crm_create.
 */
bool crm_rule_crm_create(const struct conf *cf, const char *direction,
			 const char *did);

/* What is known of a call when it has ended. Strings may be NULL. */
struct crm_call_facts {
	const char *phone;              /* the client's number (E.164) */
	const char *did;
	const char *first_answered;     /* extensions; for outbound calls the */
	const char *last_answered;      /* calling agent is all three */
	const char *first_rung;
	const char *client_user;        /* the client's responsible CRM user */
	int64_t when_ms;                /* Unix ms, for <Date> and <Time> */
};

/*
 * Expands <PhoneNumber>, <Did>, <Date> (DD.MM.YYYY), <Time> (HH:MM, local
 * time) and <Agent> (the last agent who answered, else the first rung: its
 * name, or its extension) into out, always NUL-terminated. Other text,
 * unknown <words> included, is copied. Returns the length the whole
 * expansion needs (as snprintf does).
 */
size_t crm_template(char *out, size_t sz, const char *tmpl, const struct conf *cf,
		    const struct crm_call_facts *f);

/*
 * The CRM user responsible by the rule's list (or the type's default list
 * when r or its list is NULL): first_answered, last_answered, first_rung
 * (agents, through their crm_user), client, default (the rule's
 * default_user, else [crm] default_user). Returns 0 with user and *how
 * set, or ENOENT when no source applies.
 */
int crm_rule_responsible(const struct conf *cf, const struct conf_rule *r,
			 enum crm_call_type t, const struct crm_call_facts *f,
			 char *user, size_t sz, const char **how);

/*
 * The plan for a finished call of type t, as a new JSON object:
 * {"type", "rule" (the section, or null), "responsible" (a CRM user id or
 * null), "how", and what to create: "contact", "lead", "deal" (names, with
 * "pipeline", "stage"), "unsorted" (true), "task" (title, with
 * "task_deadline" in Unix seconds)}. Keys of things not to create are
 * absent. NULL only without memory.
 */
json_t *crm_rule_plan(const struct conf *cf, enum crm_call_type t,
		      const struct crm_call_facts *f);

#endif
