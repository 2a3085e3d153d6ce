/*
 * crm_kit.h: what the CRM adapters with an account (Bitrix24, amoCRM)
 * share beyond crm_int.h:
 *
 *  - jobs: a lookup or a delivery carried out as a series of HTTP requests
 *    and waits, through the core's request helpers;
 *  - OAuth 2 tokens, kept in sqlite, refreshed one refresh at a time;
 *  - their own state in sqlite (per call, per account), as JSON;
 *  - the CRM entities behind cached lookups, for webhooks that name an
 *    entity rather than a number;
 *  - form-encoded webhook bodies and secret comparison.
 *
 * Everything runs on the signalling thread and never blocks.
 */
#ifndef SIPCRM_CRM_KIT_H
#define SIPCRM_CRM_KIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "httpc.h"
#include "crm/crm_int.h"

struct crm_job;
struct crm_oauth;

typedef void (crm_job_resp_h)(struct crm_job *j, const struct httpc_resp *r);
typedef void (crm_job_tmr_h)(struct crm_job *j);
typedef void (crm_job_wait_h)(struct crm_job *j, int err);

/*
 * The first member of an adapter's lookup or delivery state (l->astate or
 * d->astate point at it). The adapter's free_state calls crm_job_fini().
 */
struct crm_job {
	struct crm *crm;
	struct crm_lookup *l;           /* a lookup's job, or */
	struct crm_delivery *d;         /* a delivery's */
	crm_job_resp_h *resp_h;
	su_timer_t *tmr;
	crm_job_tmr_h *tmr_h;
	struct crm_oauth *wait_on;      /* waiting for a token refresh */
	crm_job_wait_h *wait_h;
	struct crm_job *wnext, **wprevp;
	int end_err;                    /* crm_job_end(): the delivery's result */
	char end_cause[128];
};

/* Binds j to its lookup or delivery (exactly one of l and d). */
void crm_job_init(struct crm_job *j, struct crm *c, struct crm_lookup *l,
		  struct crm_delivery *d);
/* Starts an HTTP request of j's lookup or delivery; h runs with the answer. */
int crm_job_http(struct crm_job *j, const struct httpc_opts *o, crm_job_resp_h *h);
/* h runs on the loop after ms (0: the next turn). Returns 0 or ENOMEM. */
int crm_job_later(struct crm_job *j, int64_t ms, crm_job_tmr_h *h);
/*
 * Ends j's delivery with err (0: delivered) and cause on the next loop
 * turn, never inside the adapter's deliver().
 */
void crm_job_end(struct crm_job *j, int err, const char *cause);
/* Stops j's timer and its wait for a token; no callback after this. */
void crm_job_fini(struct crm_job *j);

/* ---- OAuth 2 ------------------------------------------------------------------ */

struct crm_oauth_params {
	const char *account;            /* "bitrix24", "amocrm": the sqlite scope */
	const char *token_url;
	const char *client_id;
	const char *client_secret;
	const char *refresh_seed;       /* [crm] refresh_token */
	const char *redirect_uri;       /* amoCRM only */
	bool post_json;                 /* amoCRM: POST JSON; Bitrix24: GET query */
};

enum crm_token_state { CRM_TOKEN_FRESH, CRM_TOKEN_STALE, CRM_TOKEN_EXPIRED };

/*
 * The access token in force ("" when there is none yet) into tok, and
 * whether it is fresh, expires within five minutes, or has expired. A new
 * [crm] refresh_token (after a reload) replaces the stored tokens.
 */
enum crm_token_state crm_oauth_token(struct crm *c, const struct crm_oauth_params *p,
				     char *tok, size_t sz);
/*
 * Asks for a new token pair unless a refresh is running. With j, j waits:
 * h runs once, on the loop, with 0 or EACCES. Returns 0, or EAGAIN when a
 * refresh failed less than 30 s ago (nothing started, h will not run).
 */
int crm_oauth_refresh(struct crm *c, const struct crm_oauth_params *p,
		      struct crm_job *j, crm_job_wait_h *h);
/* The CRM refused tok: the next crm_oauth_token() says expired. */
void crm_oauth_refused(struct crm *c, const struct crm_oauth_params *p, const char *tok);

/* ---- the adapters' own state ---------------------------------------------------- */

/* The JSON object stored under scope, or a new empty one; NULL: no memory. */
json_t *crm_state_load(struct crm *c, const char *scope);
/* Stores it in the current batched transaction. Returns 0 or EIO. */
int crm_state_save(struct crm *c, const char *scope, json_t *state);
int crm_state_drop(struct crm *c, const char *scope);
/* Drops "call:" states untouched since before_ms (Unix ms). */
void crm_state_purge(struct crm *c, int64_t before_ms);

/* ---- entities behind cached lookups --------------------------------------------- */

/* Notes that the lookup of phone found entity ("CONTACT:12", ...). */
void crm_entity_note(struct crm *c, const char *entity, const char *phone);
/* Drops the cached lookups of entity's numbers; returns how many, or -1. */
int crm_entity_drop(struct crm *c, const char *entity);

/* ---- webhooks ------------------------------------------------------------------------ */

/* The value of name in an x-www-form-urlencoded body, decoded. */
bool crm_form_get(const char *body, const char *name, char *out, size_t sz);
/* Calls h with each decoded name and value of the body, in order. */
void crm_form_each(const char *body,
		   void (*h)(const char *name, const char *value, void *arg), void *arg);
/* Compares secrets in time independent of where they differ; "" never matches. */
bool crm_secret_equal(const char *given, const char *want);

/* JSON API bodies: o[key] as a string ("" when absent), numbers as text. */
const char *crm_jstr(json_t *o, const char *key, char *buf, size_t sz);

#endif
