/*
 * sse.c: the live event stream (see sse.h).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MODULE "api"
#include "log.h"
#include "metrics.h"
#include "http/api.h"
#include "http/sse.h"

#define SSE_MAX_BEHIND  (1024 * 1024)   /* bytes buffered per client */
#define SSE_PING_MS     15000

struct sse_client {
	struct sse *hub;
	struct api_stream *st;
	struct sse_client *next, **prevp;
};

struct sse {
	struct sse_client *clients;
	size_t n;
	su_timer_t *ping;
	struct metric *m_clients, *m_dropped;
};

static void client_unlink(struct sse_client *c)
{
	*c->prevp = c->next;
	if (c->next)
		c->next->prevp = c->prevp;
	c->hub->n--;
	metrics_gauge_add(c->hub->m_clients, -1);
}

static void on_close(struct api_stream *st, void *arg)
{
	struct sse_client *c = arg;

	(void)st;
	client_unlink(c);
	free(c);
}

/* Writes to every client; those that fall too far behind are dropped. */
static void broadcast(struct sse *s, const char *text, size_t len)
{
	for (struct sse_client *c = s->clients, *next; c; c = next) {
		next = c->next;
		if (api_stream_write(c->st, text, len) == ENOBUFS)
			metrics_inc(s->m_dropped);
	}
}

void sse_publish(const char *type, const char *json, size_t len, void *arg)
{
	struct sse *s = arg;
	char *text;
	size_t n;

	(void)type;
	if (!s->clients)
		return;
	/* the JSON is compact: no newline inside, one data line */
	text = malloc(len + 9);
	if (!text)
		return;
	memcpy(text, "data: ", 6);
	memcpy(text + 6, json, len);
	n = len + 6;
	text[n++] = '\n';
	text[n++] = '\n';
	broadcast(s, text, n);
	free(text);
}

static void on_ping(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	static const char ping[] = ": ping\n\n";

	(void)m;
	(void)t;
	broadcast((struct sse *)arg, ping, sizeof(ping) - 1);
}

static int api_events(struct api_req *req, void *arg)
{
	static const char hello[] = "retry: 3000\n: sipcrm events\n\n";
	struct sse *s = arg;
	struct sse_client *c = calloc(1, sizeof(*c));

	if (!c)
		return api_reply_error(req, 500, "out of memory");
	c->hub = s;
	c->st = api_reply_stream(req, "text/event-stream", SSE_MAX_BEHIND, on_close, c);
	if (!c->st) {
		free(c);
		return 0;               /* answered already */
	}
	c->next = s->clients;
	if (c->next)
		c->next->prevp = &c->next;
	c->prevp = &s->clients;
	s->clients = c;
	s->n++;
	metrics_gauge_add(s->m_clients, 1);
	/* the first bytes get the headers out at once */
	api_stream_write(c->st, hello, sizeof(hello) - 1);
	return 0;
}

int sse_alloc(struct sse **sp, struct api *api, su_root_t *root)
{
	struct sse *s = calloc(1, sizeof(*s));

	if (!s)
		return ENOMEM;
	s->m_clients = metrics_gauge("sipcrm_sse_clients",
				     "clients of GET /api/v1/events", NULL);
	s->m_dropped = metrics_counter("sipcrm_sse_dropped_total",
				       "event stream clients dropped for being too slow",
				       NULL);
	s->ping = su_timer_create(su_root_task(root), SSE_PING_MS);
	if (!s->ping || su_timer_run(s->ping, on_ping, s) ||
	    api_route(api, "GET", "/api/v1/events", true, api_events, s)) {
		sse_free(s);
		return ENOMEM;
	}
	*sp = s;
	return 0;
}

struct sse *sse_free(struct sse *s)
{
	if (!s)
		return NULL;
	while (s->clients) {
		struct sse_client *c = s->clients;

		api_stream_close(c->st, false);
		client_unlink(c);
		free(c);
	}
	su_timer_destroy(s->ping);
	free(s);
	return NULL;
}

size_t sse_clients(const struct sse *s)
{
	return s->n;
}
