/*
 * api_core.c: the built-in endpoints, health and Prometheus metrics.
 *
 * The state is static because metrics collect hooks cannot be removed:
 * the uptime hook must stay valid for as long as the registry keeps it,
 * i.e. until metrics_reset().
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_MODULE "api"
#include "log.h"
#include "metrics.h"
#include "api.h"

static struct {
	char version[64];
	int64_t base;                   /* uptime (s) when mono0 was taken */
	int64_t mono0;                  /* CLOCK_MONOTONIC (s) at register */
	struct metric *uptime;
} core;

static int64_t mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec;
}

/* Wall-clock steps after start do not move the uptime. */
static int64_t uptime_s(void)
{
	return core.base + (mono_s() - core.mono0);
}

/* GET /api/v1/health */
static int on_health(struct api_req *r, void *arg)
{
	return api_reply_json(r, 200, json_pack("{s:s, s:s, s:I}",
						"status", "ok",
						"version", core.version,
						"uptime",
						(json_int_t)uptime_s()));
}

/* GET /metrics */
static int on_metrics(struct api_req *r, void *arg)
{
	size_t len = 0;
	char *text = metrics_render(&len);
	int err;

	if (!text)
		return api_reply_error(r, 500, "out of memory");
	err = api_reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8",
			     text, len);
	free(text);
	return err;
}

static void collect(void *arg)
{
	metrics_set(core.uptime, uptime_s());
}

/* version="..." with the value escaped as label values must be. */
static void version_label(char *buf, size_t size, const char *version)
{
	size_t n = (size_t)snprintf(buf, size, "version=\"");

	for (const char *s = version; *s && n + 4 < size; s++) {
		if (*s == '\\' || *s == '"') {
			buf[n++] = '\\';
			buf[n++] = *s;
		} else if (*s == '\n') {
			buf[n++] = '\\';
			buf[n++] = 'n';
		} else {
			buf[n++] = *s;
		}
	}
	buf[n++] = '"';
	buf[n] = '\0';
}

static void register_metrics(void)
{
	char label[sizeof(core.version) * 2 + 16];

	core.uptime = metrics_gauge("sipcrm_uptime_seconds",
				    "Seconds since sipcrmd started", NULL);
	metrics_on_collect(collect, NULL);

	version_label(label, sizeof(label), core.version);
	metrics_set(metrics_gauge("sipcrm_build_info",
				  "Always 1; the version is in the label",
				  label), 1);
}

/*
 * Both routes need no token:
 * - /api/v1/health, as CONTRACT §5 says, for load balancers and
 *   "sipcrmctl status";
 * - /metrics, because Prometheus usually scrapes without credentials.
 *   It reveals counters only, no numbers or names; bind [api] listen to a
 *   private address (or firewall it) where that matters.
 */
int api_core_register(struct api *a, time_t started, const char *version)
{
	time_t now = time(NULL);
	int err;

	if (!a)
		return EINVAL;
	snprintf(core.version, sizeof(core.version), "%s",
		 version ? version : "unknown");
	core.base = now > started ? (int64_t)(now - started) : 0;
	core.mono0 = mono_s();

	err = api_route(a, "GET", "/api/v1/health", false, on_health, NULL);
	if (!err)
		err = api_route(a, "GET", "/metrics", false, on_metrics, NULL);
	if (err) {
		log_err("cannot register the core endpoints: %s",
			strerror(err));
		return err;
	}
	register_metrics();
	return 0;
}
