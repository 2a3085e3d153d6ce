/*
 * metrics_render.c: the Prometheus registry and its text rendering.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "tap.h"

#define THREAD_INCS 200000

/* Occurrences of needle in hay. */
static int count_of(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; p && (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* The text of the line that starts with prefix, or "" (static buffer). */
static const char *line_of(const char *text, const char *prefix)
{
	static char line[256];
	size_t plen = strlen(prefix);
	const char *p = text;

	line[0] = '\0';
	while (p && *p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);

		if (len >= plen && !strncmp(p, prefix, plen)) {
			if (len >= sizeof(line))
				len = sizeof(line) - 1;
			memcpy(line, p, len);
			line[len] = '\0';
			break;
		}
		p = eol ? eol + 1 : NULL;
	}
	return line;
}

static char *render(void)
{
	size_t len = 0;
	char *s = metrics_render(&len);

	ok(s != NULL, "metrics_render returns text");
	if (s)
		is_int(len, strlen(s), "render length matches the text");
	return s;
}

static void test_counters(void)
{
	struct metric *a = metrics_counter("t_plain_total", "Plain counter", NULL);
	struct metric *b = metrics_counter("t_lab_total", "Labelled counter",
					   "method=\"INVITE\"");
	struct metric *other = metrics_counter("t_other_total", "Between", NULL);
	struct metric *c = metrics_counter("t_lab_total", "Labelled counter",
					   "method=\"BYE\"");
	struct metric *again = metrics_counter("t_lab_total", "ignored",
					       "method=\"INVITE\"");
	char *s;

	ok(a && b && c && other, "counters registered");
	ok(again == b, "same name and labels return the same handle (%p, %p)",
	   (void *)again, (void *)b);
	ok(b != c, "other labels give another series");
	ok(metrics_counter("t_plain_total", NULL, "") == a,
	   "\"\" and NULL labels are the same series");

	metrics_inc(a);
	metrics_add(a, 41);
	metrics_inc(b);
	metrics_add(c, 3);
	is_int(metrics_value(a), 42, "counter value after inc + add");

	s = render();
	is_str(line_of(s, "t_plain_total "), "t_plain_total 42",
	       "unlabelled counter line");
	is_str(line_of(s, "t_lab_total{method=\"INVITE\"}"),
	       "t_lab_total{method=\"INVITE\"} 1", "labelled counter line");
	is_str(line_of(s, "t_lab_total{method=\"BYE\"}"),
	       "t_lab_total{method=\"BYE\"} 3", "second labelled series");
	is_int(count_of(s, "# HELP t_lab_total "), 1, "HELP once per name");
	is_int(count_of(s, "# TYPE t_lab_total "), 1, "TYPE once per name");
	is_str(line_of(s, "# TYPE t_lab_total"), "# TYPE t_lab_total counter",
	       "TYPE counter");
	is_str(line_of(s, "# HELP t_lab_total"),
	       "# HELP t_lab_total Labelled counter",
	       "the first HELP text is kept");
	ok(strstr(s, "# TYPE t_lab_total counter\n") <
	   strstr(s, "t_lab_total{method=\"INVITE\"}"),
	   "TYPE comes before the samples");
	like(s, "# TYPE t_lab_total counter\n"
	     "t_lab_total{method=\"INVITE\"} 1\n"
	     "t_lab_total{method=\"BYE\"} 3\n"
	     "# HELP t_other_total Between\n",
	     "series of one name are grouped, even if registered apart");
	free(s);
}

static void test_gauges(void)
{
	struct metric *g = metrics_gauge("t_g", "A gauge\nwith \\ escapes", NULL);
	char *s;

	metrics_set(g, 10);
	metrics_gauge_add(g, -15);
	is_int(metrics_value(g), -5, "gauge set then add(-15)");
	metrics_gauge_add(g, 7);
	is_int(metrics_value(g), 2, "gauge add(+7)");

	s = render();
	is_str(line_of(s, "t_g "), "t_g 2", "gauge line");
	is_str(line_of(s, "# TYPE t_g"), "# TYPE t_g gauge", "TYPE gauge");
	is_str(line_of(s, "# HELP t_g"), "# HELP t_g A gauge\\nwith \\\\ escapes",
	       "HELP escapes newline and backslash");
	metrics_set(g, -3);
	free(s);
	s = render();
	is_str(line_of(s, "t_g "), "t_g -3", "negative gauge rendered signed");
	free(s);
}

static void test_histogram(void)
{
	static const double bounds[] = { 0.125, 0.5, 2.5 };
	struct metric_hist *h = metrics_histogram("t_lat_seconds", "Latency",
						  "crm=\"generic\"", bounds, 3);
	struct metric_hist *h2 = metrics_histogram("t_lat_seconds", "Latency",
						   "crm=\"generic\"", bounds, 3);
	struct metric_hist *u = metrics_histogram("t_plain_seconds", "Plain",
						  NULL, bounds, 3);
	char *s;

	ok(h == h2, "same histogram name and labels return the same handle");
	metrics_observe(h, 0.0625); /* le 0.125 */
	metrics_observe(h, 0.125);  /* le 0.125: bounds are inclusive */
	metrics_observe(h, 0.25);   /* le 0.5 */
	metrics_observe(h, 10);     /* +Inf only */
	metrics_observe(u, 1);

	s = render();
	is_str(line_of(s, "# TYPE t_lat_seconds"),
	       "# TYPE t_lat_seconds histogram", "TYPE histogram");
	is_str(line_of(s, "t_lat_seconds_bucket{crm=\"generic\",le=\"0.125\"}"),
	       "t_lat_seconds_bucket{crm=\"generic\",le=\"0.125\"} 2",
	       "bucket 0.125 (inclusive bound)");
	is_str(line_of(s, "t_lat_seconds_bucket{crm=\"generic\",le=\"0.5\"}"),
	       "t_lat_seconds_bucket{crm=\"generic\",le=\"0.5\"} 3",
	       "bucket 0.5 is cumulative");
	is_str(line_of(s, "t_lat_seconds_bucket{crm=\"generic\",le=\"2.5\"}"),
	       "t_lat_seconds_bucket{crm=\"generic\",le=\"2.5\"} 3",
	       "bucket 2.5 is cumulative");
	is_str(line_of(s, "t_lat_seconds_bucket{crm=\"generic\",le=\"+Inf\"}"),
	       "t_lat_seconds_bucket{crm=\"generic\",le=\"+Inf\"} 4",
	       "+Inf bucket counts everything");
	is_str(line_of(s, "t_lat_seconds_sum{"),
	       "t_lat_seconds_sum{crm=\"generic\"} 10.4375", "sum");
	is_str(line_of(s, "t_lat_seconds_count{"),
	       "t_lat_seconds_count{crm=\"generic\"} 4", "count");
	is_str(line_of(s, "t_plain_seconds_bucket{le=\"0.5\"}"),
	       "t_plain_seconds_bucket{le=\"0.5\"} 0",
	       "unlabelled histogram bucket");
	is_str(line_of(s, "t_plain_seconds_sum"), "t_plain_seconds_sum 1",
	       "unlabelled sum");
	is_str(line_of(s, "t_plain_seconds_count"), "t_plain_seconds_count 1",
	       "unlabelled count");
	is_int(count_of(s, "# TYPE t_lat_seconds "), 1,
	       "histogram TYPE once");
	free(s);
}

static int hook_calls;

static void hook(void *arg)
{
	struct metric *g = arg;

	hook_calls++;
	metrics_set(g, 1234);
}

static void test_collect(void)
{
	struct metric *g = metrics_gauge("t_collected", "Set by a hook", NULL);
	char *s;

	metrics_on_collect(hook, g);
	metrics_on_collect(hook, g);    /* twice: must still run once */
	hook_calls = 0;
	s = render();
	is_int(hook_calls, 1, "collect hook ran once per render");
	is_str(line_of(s, "t_collected "), "t_collected 1234",
	       "value set by the hook is rendered");
	free(s);
}

static void test_type_clash(void)
{
	struct metric *m = metrics_gauge("t_plain_total", "clash", NULL);
	char *s;

	ok(m != NULL, "a type clash still returns a usable handle");
	metrics_set(m, 99);
	s = render();
	is_int(count_of(s, "# TYPE t_plain_total "), 1,
	       "a clashing registration is not rendered");
	is_str(line_of(s, "t_plain_total "), "t_plain_total 42",
	       "the original counter is untouched");
	free(s);
}

static void *worker(void *arg)
{
	struct metric *m = metrics_counter("t_threads_total", "Threads", NULL);
	struct metric_hist *h = arg;

	for (int i = 0; i < THREAD_INCS; i++) {
		metrics_inc(m);
		metrics_observe(h, 1.0);
	}
	return NULL;
}

static void test_threads(void)
{
	static const double bounds[] = { 0.5 };
	struct metric *m = metrics_counter("t_threads_total", "Threads", NULL);
	struct metric_hist *h = metrics_histogram("t_thr_seconds", "Threads",
						  NULL, bounds, 1);
	pthread_t t1, t2;
	char want[64], *s;

	if (pthread_create(&t1, NULL, worker, h)) {
		ok(0, "first thread started");
		return;
	}
	if (pthread_create(&t2, NULL, worker, h)) {
		ok(0, "second thread started");
		pthread_join(t1, NULL);
		return;
	}
	ok(1, "two threads started");
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	is_int(metrics_value(m), 2 * THREAD_INCS,
	       "concurrent increments from 2 threads sum up");

	s = render();
	snprintf(want, sizeof(want), "t_thr_seconds_count %d", 2 * THREAD_INCS);
	is_str(line_of(s, "t_thr_seconds_count"), want,
	       "concurrent observations all counted");
	snprintf(want, sizeof(want), "t_thr_seconds_sum %d", 2 * THREAD_INCS);
	is_str(line_of(s, "t_thr_seconds_sum"), want,
	       "concurrent sums (CAS loop) lose nothing");
	free(s);
}

static void test_reset(void)
{
	char *s;

	metrics_reset();
	hook_calls = 0;
	s = render();
	is_str(s, "", "nothing rendered after reset");
	is_int(hook_calls, 0, "hooks dropped by reset");
	free(s);
	ok(metrics_counter("t_plain_total", "again", NULL) != NULL,
	   "registering works after reset");
	metrics_reset();
}

int main(void)
{
	test_counters();
	test_gauges();
	test_histogram();
	test_collect();
	test_type_clash();
	test_threads();
	test_reset();
	return tap_done();
}
