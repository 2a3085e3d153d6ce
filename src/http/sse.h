/*
 * sse.h: GET /api/v1/events, the events of CONTRACT §4 as Server-Sent
 * Events, live (no replay of the past: the CRM gets those from the
 * outbox). Each event is one "data:" line holding the event's JSON, the
 * same text that is posted to the CRM. A comment line goes out every 15 s
 * to keep proxies from closing an idle stream. A client that falls more
 * than 1 MiB behind is dropped.
 */
#ifndef SIPCRM_SSE_H
#define SIPCRM_SSE_H

#include <stddef.h>
#include <sofia-sip/su_wait.h>

struct api;
struct sse;

int sse_alloc(struct sse **sp, struct api *api, su_root_t *root);
/* Ends every stream; NULL safe. Call before api_free(). */
struct sse *sse_free(struct sse *s);

/* Sends one event (JSON text) to every client; a crm_event_h. */
void sse_publish(const char *type, const char *json, size_t len, void *arg);

/* Clients connected now. */
size_t sse_clients(const struct sse *s);

#endif
