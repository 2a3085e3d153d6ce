/*
 * crm_int.h: what a CRM adapter sees of the core, and the one table of
 * functions each adapter fills in. One .c per CRM (crm_none.c,
 * crm_generic.c, ...); the core (crm.c) owns the cache, the deadline
 * bookkeeping, the metrics, the durable outbox and the HTTP requests in
 * flight, so that an adapter only speaks its CRM's protocol.
 *
 * Adapters run on the signalling thread and must never block: every HTTP
 * request goes through crm_lookup_http() or crm_delivery_http(), which
 * track the request so that the core can cancel it.
 */
#ifndef SIPCRM_CRM_INT_H
#define SIPCRM_CRM_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "conf.h"
#include "httpc.h"
#include "crm/crm.h"

struct api_req;
struct crm_delivery;

/* One lookup, as the adapter sees it. */
struct crm_lookup {
	struct crm *crm;
	crm_lookup_h *cb;               /* NULL once detached */
	void *arg;
	su_timer_t *tmr;                /* answers without HTTP: next turn */
	struct httpc_req *req;          /* the adapter's request in flight */
	void (*http_h)(struct crm_lookup *l, const struct httpc_resp *r);
	void *astate;                   /* the adapter's own, freed by it */
	struct crm_result res;
	char phone[64], did[64], call_id[48];
	int64_t started;
	bool timed;                     /* its latency was observed */
	bool detached;                  /* on crm->detached */
	struct crm_lookup *next, *prev;
};

/* One event being delivered (one attempt). */
typedef void (crm_delivery_h)(struct crm_delivery *d, const struct httpc_resp *r);
struct crm_delivery {
	struct crm *crm;
	const char *body;               /* the event as stored (JSON text) */
	size_t len;
	json_t *ev;                     /* the same, parsed */
	int64_t created;                /* Unix ms when it was stored */
	struct httpc_req *req;
	crm_delivery_h *http_h;
	void *astate;
	void (*done)(struct crm_delivery *d, int err, const char *cause);
	void *owner;                    /* the outbox's entry */
};

struct crm_adapter {
	const char *name;               /* [crm] type, and /api/v1/crm/{name} */
	/*
	 * Starts a lookup of l->phone (E.164 or digits) dialled to l->did.
	 * Completes later with crm_lookup_done(). NULL: everyone is unknown.
	 * Returns 0 or an errno value (the lookup then fails at once).
	 */
	int (*lookup)(struct crm *c, struct crm_lookup *l);
	/*
	 * Delivers one event. Completes later with crm_delivery_done(): 0 when
	 * the CRM has it, or an error and a cause to retry. NULL: events are
	 * not kept for this CRM (SSE listeners still see them).
	 */
	int (*deliver)(struct crm *c, struct crm_delivery *d);
	/*
	 * POST /api/v1/crm/{name}: what the CRM tells us. Replies once.
	 * NULL: 404.
	 */
	int (*webhook)(struct crm *c, struct api_req *req);
	/* Frees l->astate / d->astate when set; may be NULL. */
	void (*free_state)(void *astate);
	/*
	 * The webhook authenticates the CRM itself (Bitrix24's
	 * application_token, a token in amoCRM's webhook URL): it is reached
	 * without the API's Bearer token.
	 */
	bool webhook_own_auth;
};

extern const struct crm_adapter crm_adapter_none;
extern const struct crm_adapter crm_adapter_generic;
extern const struct crm_adapter crm_adapter_bitrix24;
extern const struct crm_adapter crm_adapter_amocrm;

/* The generic lookup answer (a 200 body) into r; EINVAL: not JSON. */
int crm_generic_parse(const char *body, size_t len, struct crm_result *r);

/* The configuration now in force (valid during the current loop turn). */
const struct conf *crm_conf(const struct crm *c);
/* The sqlite store (adapters keep their own tables: tokens, call ids). */
struct db *crm_db(const struct crm *c);
su_root_t *crm_root(const struct crm *c);

/* Starts an HTTP request for a lookup; h runs with its answer. */
int crm_lookup_http(struct crm_lookup *l, const struct httpc_opts *o,
		    void (*h)(struct crm_lookup *l, const struct httpc_resp *r));
/*
 * Ends a lookup with l->res filled in (status, and for failures a static
 * cause). crm_user is mapped to an extension here. Call at most once.
 */
void crm_lookup_done(struct crm_lookup *l);

/* Starts an HTTP request for a delivery; h runs with its answer. */
int crm_delivery_http(struct crm_delivery *d, const struct httpc_opts *o,
		      crm_delivery_h *h);
/* Ends a delivery: err 0 means the CRM has the event. */
void crm_delivery_done(struct crm_delivery *d, int err, const char *cause);

/* The outbox's side: is there an adapter that delivers, and hand d to it. */
bool crm_delivers(const struct crm *c);
int crm_deliver(struct crm *c, struct crm_delivery *d);
/* Cancels d's request and frees it with its adapter state. */
void crm_delivery_free(struct crm_delivery *d);

/* Copies o[key] (a string or an integer) into dst; "" otherwise. */
void crm_json_str(char *dst, size_t sz, json_t *o, const char *key);

/* Cache invalidation, for webhooks: a number (normalised here) or all. */
int crm_cache_drop(struct crm *c, const char *number);

/* "sha256=<hex>" HMAC-SHA256 of body with key; out holds 72 bytes. */
int crm_sign(const char *key, const void *body, size_t len, char out[72]);

#endif
