/*
 * app.h: the daemon's top-level context. It owns every module and is the
 * one place that knows the order in which they start, reload and stop.
 */
#ifndef SIPCRM_APP_H
#define SIPCRM_APP_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <sofia-sip/su_wait.h>

struct conf;
struct db;
struct httpc;
struct sipd;
struct api;
struct sse;
struct reg;
struct media;
struct crm;
struct b2b;

struct app {
	su_root_t *root;
	struct conf *conf;
	struct db *db;
	struct httpc *httpc;
	struct sipd *sipd;
	struct api *api;
	struct sse *sse;
	struct reg *reg;
	struct media *media;
	struct crm *crm;
	struct b2b *b2b;
	time_t started;
	su_timer_t *lag;                /* the loop lag probe */
	int64_t lag_due_us;
	char *conf_path;
	const char *log_override;       /* -l, wins over the config */
};

/*
 * Starts every module on an already loaded conf (the app takes the
 * reference). Returns 0, or an errno value with a message in err.
 */
int app_start(struct app *app, su_root_t *root, struct conf *conf,
	      const char *conf_path, char *err, size_t errsz);

/* Re-reads the config file; an invalid file keeps the old config. */
int app_reload(struct app *app);

/* Stops every module and frees the context's members. */
void app_stop(struct app *app);

#endif
