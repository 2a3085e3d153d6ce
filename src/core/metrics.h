/*
 * metrics.h: Prometheus counters, gauges and histograms.
 *
 * Series are registered once (at module start) and updated through the
 * returned handle, so the hot path is one atomic add. Updates are safe
 * from any thread; registration and rendering happen on the signalling
 * thread only.
 */
#ifndef SIPCRM_METRICS_H
#define SIPCRM_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct metric;
struct metric_hist;

/*
 * Registers a series, or returns the one already registered with the same
 * name and labels. labels is Prometheus label text without braces, e.g.
 * "method=\"INVITE\"", or NULL. Never returns NULL (aborts on OOM).
 */
struct metric *metrics_counter(const char *name, const char *help,
			       const char *labels);
struct metric *metrics_gauge(const char *name, const char *help,
			     const char *labels);
/* bounds: ascending upper bounds (seconds, or any unit), +Inf is implied */
struct metric_hist *metrics_histogram(const char *name, const char *help,
				      const char *labels, const double *bounds,
				      size_t nbounds);

void metrics_inc(struct metric *m);
void metrics_add(struct metric *m, uint64_t v);
void metrics_set(struct metric *m, int64_t v);      /* gauges */
void metrics_gauge_add(struct metric *m, int64_t d); /* gauges, +/- */
int64_t metrics_value(const struct metric *m);
void metrics_observe(struct metric_hist *h, double v);

/* Called just before rendering, to refresh gauges computed on demand. */
typedef void (metrics_collect_h)(void *arg);
void metrics_on_collect(metrics_collect_h *h, void *arg);

/* Renders every series in text exposition format 0.0.4; caller frees. */
char *metrics_render(size_t *lenp);

/* Frees every series (at exit, for leak checkers). */
void metrics_reset(void);

#endif
