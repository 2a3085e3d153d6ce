/*
 * crm.h: who is responsible for a caller (CONTRACT §4). Adapters sit
 * behind one table of functions; this is the interface the call core uses.
 */
#ifndef SIPCRM_CRM_H
#define SIPCRM_CRM_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <sofia-sip/su_wait.h>

struct conf;
struct db;
struct httpc;
struct crm;
struct crm_lookup;

enum crm_status {
	CRM_UNKNOWN,            /* the CRM does not know the caller (404) */
	CRM_FAILED,             /* timeout, refused, 5xx, garbage */
	CRM_KNOWN,              /* known caller */
};

struct crm_result {
	enum crm_status status;
	char contact_id[64];
	char contact_name[128];
	char contact_url[256];
	char responsible_id[64];        /* the CRM's user id, "" if none */
	char responsible_name[128];
	char responsible_ext[33];       /* the extension, as given or mapped */
	char given_ext[33];             /* responsible.extension as the CRM sent it */
	const char *cause;              /* failures: "timeout", "http_500", ... */
};

/* Fires once per lookup, never inside crm_lookup(). */
typedef void (crm_lookup_h)(const struct crm_result *r, void *arg);

int crm_alloc(struct crm **cp, su_root_t *root, struct httpc *http,
	      struct db *db, const struct conf *conf);
struct crm *crm_free(struct crm *c);
void crm_reload(struct crm *c, const struct conf *conf);

/*
 * Starts a lookup for phone (E.164) dialled to did. *lp lets the caller
 * cancel; forget it once the callback has run.
 */
int crm_lookup(struct crm_lookup **lp, struct crm *c, const char *phone,
	       const char *did, const char *call_id, crm_lookup_h *cb, void *arg);
/* No callback after this. NULL safe; returns NULL. */
struct crm_lookup *crm_lookup_cancel(struct crm_lookup *l);
/*
 * No callback after this either, but the request runs to its end so that
 * a late answer still fills the cache (the lookup deadline passed).
 * NULL safe; returns NULL.
 */
struct crm_lookup *crm_lookup_detach(struct crm_lookup *l);

/*
 * Events (CONTRACT §4). crm_event_new() makes {"id","type","time"}; the
 * caller adds the other fields and passes it to crm_event_emit(), which
 * takes it, stores it for delivery (when the CRM takes events) under key,
 * the ordering key (a call's id: its events go one at a time, in order),
 * and shows it to the listeners. Returns 0 or an errno value (logged).
 */
json_t *crm_event_new(const char *type);
int crm_event_emit(struct crm *c, const char *key, json_t *ev);

/* Sees every event as JSON text; h NULL removes the listener with arg. */
typedef void (crm_event_h)(const char *type, const char *json, size_t len,
			   void *arg);
void crm_on_event(struct crm *c, crm_event_h *h, void *arg);

/*
 * Click-to-call on behalf of a CRM (e.g. Bitrix24's ONEXTERNALCALLSTART):
 * the call core registers the handler; adapters call crm_click_to_call().
 * caller_id and crm_ref may be NULL; crm_ref is the CRM's own id for the
 * call, kept by the adapter. On success call_id holds sipcrm's call id.
 * Returns 0, ENOENT (unknown agent), EHOSTDOWN (agent offline), EINVAL
 * (bad number or caller id), ENOTSUP (no call core) or another errno.
 */
typedef int (crm_c2c_h)(void *arg, const char *agent, const char *number,
			const char *caller_id, const char *crm_ref, char call_id[40]);
void crm_on_click_to_call(struct crm *c, crm_c2c_h *h, void *arg);
int crm_click_to_call(struct crm *c, const char *agent, const char *number,
		      const char *caller_id, const char *crm_ref, char call_id[40]);

/* Events stored and not yet delivered. */
size_t crm_outbox_depth(const struct crm *c);

struct api;
/* Adds POST /api/v1/crm/{type}: the adapter's webhook. */
int crm_api_register(struct crm *c, struct api *api);

#endif
