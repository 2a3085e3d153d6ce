/*
 * outbox.h: durable delivery of events to the CRM (CONTRACT §4).
 *
 * An event is inserted into the sqlite outbox in the current batched
 * transaction (so in the same commit as the CDR change that caused it) and
 * is handed to the CRM adapter only once that commit has succeeded. Events
 * with the same key (a call's id, or an agent) go one at a time, in the
 * order they were added, so that seq order holds; different keys go in
 * parallel. A 2xx deletes the row. Anything else retries with a doubling
 * backoff (1 s, 2 s, ... capped at [crm] event_backoff_max) until
 * [crm] event_retry has passed since the event was created; then the row is
 * kept with dead = 1 and counted. A restart resends every pending row.
 */
#ifndef SIPCRM_OUTBOX_H
#define SIPCRM_OUTBOX_H

#include <stddef.h>
#include <sofia-sip/su_wait.h>

struct crm;
struct db;
struct outbox;

/* Loads the pending rows of an earlier run. Returns 0 or an errno value. */
int outbox_alloc(struct outbox **op, struct crm *crm, struct db *db,
		 su_root_t *root);
/* Cancels deliveries in flight (they stay pending in sqlite). NULL safe. */
struct outbox *outbox_free(struct outbox *o);

/* Stores one event (JSON text) under key. Returns 0 or EIO. */
int outbox_add(struct outbox *o, const char *key, const char *body, size_t len);

/* Starts sending whatever is ready (e.g. after a reload changed the CRM). */
void outbox_kick(struct outbox *o);

/* Events stored and not yet delivered or dead. */
size_t outbox_depth(const struct outbox *o);

#endif
