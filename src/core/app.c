/*
 * app.c: module start, reload and stop order.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_MODULE "main"
#include "log.h"
#include "app.h"
#include "conf.h"
#include "db.h"
#include "httpc.h"
#include "metrics.h"
#include "sip/sipd.h"
#include "sip/registrar.h"
#include "sip/b2b.h"
#include "media/media.h"
#include "crm/crm.h"
#include "http/api.h"
#include "http/sse.h"

static struct metric *m_reload_ok, *m_reload_err;

/*
 * The loop's lag: how late a timer set for every LAG_MS fires. A loop that
 * blocks, or is too busy for its load, shows here first (every timer it
 * runs, such as a call's CRM deadline, is that late too).
 */
#define LAG_MS 100
static struct metric_hist *m_lag;

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_lag(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct app *app = (struct app *)arg;
	int64_t now = mono_us();

	(void)m;
	metrics_observe(m_lag, now > app->lag_due_us ?
			(double)(now - app->lag_due_us) / 1e6 : 0.0);
	app->lag_due_us = now + LAG_MS * 1000;
	su_timer_set_interval(t, on_lag, arg, LAG_MS);
}

static void lag_start(struct app *app)
{
	static const double bounds[] = { 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
					 0.1, 0.25, 1 };

	m_lag = metrics_histogram("sipcrm_loop_lag_seconds",
				  "how late the signalling loop runs a timer "
				  "(one every 100 ms)", NULL, bounds,
				  sizeof(bounds) / sizeof(bounds[0]));
	app->lag = su_timer_create(su_root_task(app->root), LAG_MS);
	app->lag_due_us = mono_us() + LAG_MS * 1000;
	if (!app->lag || su_timer_set_interval(app->lag, on_lag, app, LAG_MS))
		log_warn("cannot start the loop lag probe");
}

static int api_reload_h(struct api_req *req, void *arg)
{
	struct app *app = arg;

	if (app_reload(app))
		return api_reply_error(req, 400, "reload failed: the configuration "
				       "is invalid; see the log");
	return api_reply_json(req, 200, json_pack("{s:s}", "status", "reloaded"));
}

static void apply_log_level(struct app *app)
{
	char err[160];

	if (app->log_override)
		return;
	if (log_apply_spec(app->conf->core.log_level, err, sizeof(err)))
		log_warn("log_level: %s", err);
}

int app_start(struct app *app, su_root_t *root, struct conf *conf,
	      const char *conf_path, char *err, size_t errsz)
{
	int e;

	app->root = root;
	app->conf = conf;
	app->started = time(NULL);
	app->conf_path = strdup(conf_path);
	if (!app->conf_path)
		return ENOMEM;
	m_reload_ok = metrics_counter("sipcrm_config_reloads_total",
				      "configuration reloads", "result=\"ok\"");
	m_reload_err = metrics_counter("sipcrm_config_reloads_total",
				       "configuration reloads", "result=\"error\"");
	apply_log_level(app);
	lag_start(app);

	e = db_open(&app->db, conf->core.db, root, err, errsz);
	if (e)
		return e;
	e = httpc_alloc(&app->httpc, root);
	if (e) {
		snprintf(err, errsz, "cannot start the HTTP client: %s", strerror(e));
		return e;
	}
	e = sipd_alloc(&app->sipd, root, conf, err, errsz);
	if (e)
		return e;
	e = reg_alloc(&app->reg, root, app->sipd, app->db, conf);
	if (e) {
		snprintf(err, errsz, "cannot start the registrar: %s", strerror(e));
		return e;
	}
	e = media_alloc(&app->media, conf->media.ip, conf->media.rtp_min,
			conf->media.rtp_max);
	if (e) {
		snprintf(err, errsz, "cannot start the media engine on %s: %s",
			 conf->media.ip, strerror(e));
		return e;
	}
	e = crm_alloc(&app->crm, root, app->httpc, app->db, conf);
	if (!e) {
		struct b2b_deps deps = { root, app->sipd, app->reg, app->media,
					 app->crm, app->db };

		e = b2b_alloc(&app->b2b, &deps, conf);
	}
	if (e) {
		snprintf(err, errsz, "cannot start the call core: %s", strerror(e));
		return e;
	}
	e = api_alloc(&app->api, root, conf->api.listen_host, conf->api.listen_port,
		      conf->api.token, &(struct api_tls){ conf->api.tls_cert,
							  conf->api.tls_key });
	if (e) {
		snprintf(err, errsz, "cannot %s the HTTP API on %s:%u: %s",
			 *conf->api.tls_cert ? "start HTTPS for" : "listen for",
			 conf->api.listen_host, conf->api.listen_port, strerror(e));
		return e;
	}
	api_core_register(app->api, app->started, PACKAGE_VERSION);
	api_route(app->api, "POST", "/api/v1/reload", true, api_reload_h, app);
	reg_api_register(app->reg, app->api);
	b2b_api_register(app->b2b, app->api);
	crm_api_register(app->crm, app->api);
	e = sse_alloc(&app->sse, app->api, root);
	if (e) {
		snprintf(err, errsz, "cannot start the event stream: %s", strerror(e));
		return e;
	}
	crm_on_event(app->crm, sse_publish, app->sse);
	log_info("sipcrmd %s started, config %s", PACKAGE_VERSION, conf_path);
	return 0;
}

/* Settings that only a restart can change: say so instead of ignoring. */
static void warn_restart_only(const struct conf *old, const struct conf *c)
{
	bool listen_changed = old->sip.nlisten != c->sip.nlisten ||
		memcmp(old->sip.listen, c->sip.listen,
		       c->sip.nlisten * sizeof(*c->sip.listen));

	if (listen_changed)
		log_warn("[sip] listen changed: takes effect after a restart");
	if (strcmp(old->core.db, c->core.db))
		log_warn("[core] db changed: takes effect after a restart");
	if (strcmp(old->api.listen_host, c->api.listen_host) ||
	    old->api.listen_port != c->api.listen_port)
		log_warn("[api] listen changed: takes effect after a restart");
	if (strcmp(old->media.ip, c->media.ip) ||
	    old->media.rtp_min != c->media.rtp_min ||
	    old->media.rtp_max != c->media.rtp_max)
		log_warn("[media] ip/rtp_ports changed: takes effect after a restart");
}

int app_reload(struct app *app)
{
	struct conf *c;
	char err[512];
	int e;

	e = conf_load(&c, app->conf_path, err, sizeof(err));
	if (e) {
		log_err("reload failed, keeping the current configuration: %s", err);
		metrics_inc(m_reload_err);
		return e;
	}
	warn_restart_only(app->conf, c);
	conf_deref(app->conf);
	app->conf = c;
	apply_log_level(app);
	sipd_reload(app->sipd, c);
	reg_reload(app->reg, c);
	crm_reload(app->crm, c);
	b2b_reload(app->b2b, c);
	api_set_token(app->api, c->api.token);
	metrics_inc(m_reload_ok);
	log_info("configuration reloaded from %s", app->conf_path);
	return 0;
}

void app_stop(struct app *app)
{
	su_timer_destroy(app->lag);
	app->lag = NULL;
	if (app->crm && app->sse)
		crm_on_event(app->crm, NULL, app->sse);
	app->sse = sse_free(app->sse);
	app->api = api_free(app->api);
	app->b2b = b2b_free(app->b2b);
	app->crm = crm_free(app->crm);
	app->reg = reg_free(app->reg);
	app->sipd = sipd_free(app->sipd);
	app->httpc = httpc_free(app->httpc);
	app->media = media_free(app->media);
	app->db = db_close(app->db);
	app->conf = conf_deref(app->conf);
	free(app->conf_path);
	app->conf_path = NULL;
}
