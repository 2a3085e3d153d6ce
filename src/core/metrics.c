/*
 * metrics.c: Prometheus counters, gauges and histograms.
 *
 * The registry is a list of families (one per metric name, in registration
 * order), each with its series in registration order. Registration, collect
 * hooks, rendering and reset run on the signalling thread only; the values
 * are relaxed 64-bit atomics, so any thread (RTP included) may update a
 * series through its handle without a lock.
 *
 * A histogram keeps one non-cumulative atomic count per bucket and its sum
 * as the bit pattern of a double, updated with a CAS loop. The rendered
 * _count is the total of the buckets, so it always equals the +Inf bucket
 * even while other threads observe.
 */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MODULE "metrics"
#include "log.h"
#include "metrics.h"

enum metric_type {
	MT_COUNTER,
	MT_GAUGE,
	MT_HISTOGRAM,
};

struct metric {
	struct metric *next;
	char *labels;                   /* "" when none */
	_Atomic uint64_t v;             /* gauges: int64_t in two's complement */
};

struct metric_hist {
	struct metric_hist *next;
	char *labels;
	size_t nbounds;
	double *bounds;
	_Atomic uint64_t *buckets;      /* nbounds + 1, the last one is +Inf */
	_Atomic uint64_t sum;           /* bits of a double */
};

struct metric_family {
	struct metric_family *next;
	char *name;
	char *help;
	enum metric_type type;
	struct metric *series, **stail;
	struct metric_hist *hists, **htail;
};

struct metric_hook {
	struct metric_hook *next;
	metrics_collect_h *h;
	void *arg;
};

static struct {
	struct metric_family *fams, **ftail;
	/* Series refused (bad name, type clash): updated but never rendered. */
	struct metric_family *orphans;
	struct metric_hook *hooks, **hktail;
} reg = { .ftail = &reg.fams, .hktail = &reg.hooks };

static const char *const type_names[] = { "counter", "gauge", "histogram" };

/* ---- allocation: the registry aborts on OOM, as metrics.h promises ---- */

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);

	if (!p) {
		fprintf(stderr, "metrics: out of memory\n");
		abort();
	}
	return p;
}

static char *xstrdup(const char *s)
{
	size_t len = strlen(s) + 1;
	char *p = xcalloc(len, 1);

	memcpy(p, s, len);
	return p;
}

/* ---- registry ---- */

static bool name_valid(const char *name)
{
	if (!name || !*name)
		return false;
	for (const char *p = name; *p; p++) {
		bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     *p == '_' || *p == ':';
		bool digit = *p >= '0' && *p <= '9';

		if (!alpha && !(digit && p != name))
			return false;
	}
	return true;
}

static struct metric_family *family_new(const char *name, const char *help,
					enum metric_type type)
{
	struct metric_family *f = xcalloc(1, sizeof(*f));

	f->name = xstrdup(name ? name : "");
	f->help = xstrdup(help ? help : "");
	f->type = type;
	f->stail = &f->series;
	f->htail = &f->hists;
	return f;
}

/*
 * The family for name, created on first use. A name that is invalid or
 * already registered with another type is a programming error: it is
 * logged and the series goes to an orphan family that is never rendered,
 * so the caller still gets a working handle.
 */
static struct metric_family *family_get(const char *name, const char *help,
					enum metric_type type)
{
	struct metric_family *f;

	if (!name_valid(name)) {
		log_err("invalid metric name '%s'", name ? name : "(null)");
		goto orphan;
	}
	for (f = reg.fams; f; f = f->next) {
		if (strcmp(f->name, name))
			continue;
		if (f->type == type)
			return f;
		log_err("metric %s registered as %s and %s", name,
			type_names[f->type], type_names[type]);
		goto orphan;
	}
	f = family_new(name, help, type);
	*reg.ftail = f;
	reg.ftail = &f->next;
	return f;

orphan:
	f = family_new(name, help, type);
	f->next = reg.orphans;
	reg.orphans = f;
	return f;
}

static struct metric *series_get(const char *name, const char *help,
				 const char *labels, enum metric_type type)
{
	struct metric_family *f = family_get(name, help, type);
	struct metric *m;

	if (!labels)
		labels = "";
	for (m = f->series; m; m = m->next)
		if (!strcmp(m->labels, labels))
			return m;
	m = xcalloc(1, sizeof(*m));
	m->labels = xstrdup(labels);
	atomic_init(&m->v, 0);
	*f->stail = m;
	f->stail = &m->next;
	return m;
}

struct metric *metrics_counter(const char *name, const char *help,
			       const char *labels)
{
	return series_get(name, help, labels, MT_COUNTER);
}

struct metric *metrics_gauge(const char *name, const char *help,
			     const char *labels)
{
	return series_get(name, help, labels, MT_GAUGE);
}

static bool bounds_equal(const struct metric_hist *h, const double *bounds,
			 size_t nbounds)
{
	if (h->nbounds != nbounds)
		return false;
	for (size_t i = 0; i < nbounds; i++)
		if (h->bounds[i] != bounds[i])
			return false;
	return true;
}

/* Copies the bounds, dropping any that are not strictly ascending. */
static void hist_set_bounds(struct metric_hist *h, const char *name,
			    const double *bounds, size_t nbounds)
{
	h->bounds = xcalloc(nbounds, sizeof(*h->bounds));
	for (size_t i = 0; i < nbounds; i++) {
		if (isnan(bounds[i]) || isinf(bounds[i]) ||
		    (h->nbounds && bounds[i] <= h->bounds[h->nbounds - 1])) {
			log_err("histogram %s: bound %g ignored (not finite "
				"and ascending)", name, bounds[i]);
			continue;
		}
		h->bounds[h->nbounds++] = bounds[i];
	}
	h->buckets = xcalloc(h->nbounds + 1, sizeof(*h->buckets));
	for (size_t i = 0; i <= h->nbounds; i++)
		atomic_init(&h->buckets[i], 0);
	atomic_init(&h->sum, 0);        /* the bits of +0.0 */
}

struct metric_hist *metrics_histogram(const char *name, const char *help,
				      const char *labels, const double *bounds,
				      size_t nbounds)
{
	struct metric_family *f = family_get(name, help, MT_HISTOGRAM);
	struct metric_hist *h;

	if (!labels)
		labels = "";
	if (!bounds)
		nbounds = 0;
	for (h = f->hists; h; h = h->next) {
		if (strcmp(h->labels, labels))
			continue;
		if (!bounds_equal(h, bounds, nbounds))
			log_warn("histogram %s{%s} re-registered with other "
				 "bounds; keeping the first", f->name, labels);
		return h;
	}
	h = xcalloc(1, sizeof(*h));
	h->labels = xstrdup(labels);
	hist_set_bounds(h, f->name, bounds, nbounds);
	*f->htail = h;
	f->htail = &h->next;
	return h;
}

/* ---- updates: any thread ---- */

void metrics_inc(struct metric *m)
{
	atomic_fetch_add_explicit(&m->v, 1, memory_order_relaxed);
}

void metrics_add(struct metric *m, uint64_t v)
{
	atomic_fetch_add_explicit(&m->v, v, memory_order_relaxed);
}

void metrics_set(struct metric *m, int64_t v)
{
	atomic_store_explicit(&m->v, (uint64_t)v, memory_order_relaxed);
}

/* Unsigned wrap-around makes a negative d a subtraction, without UB. */
void metrics_gauge_add(struct metric *m, int64_t d)
{
	atomic_fetch_add_explicit(&m->v, (uint64_t)d, memory_order_relaxed);
}

int64_t metrics_value(const struct metric *m)
{
	/* atomic_load takes a non-const pointer in C11 */
	struct metric *mm = (struct metric *)(uintptr_t)m;

	return (int64_t)atomic_load_explicit(&mm->v, memory_order_relaxed);
}

static uint64_t dbl_bits(double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

static double bits_dbl(uint64_t u)
{
	double d;

	memcpy(&d, &u, sizeof(d));
	return d;
}

void metrics_observe(struct metric_hist *h, double v)
{
	size_t i = 0;
	uint64_t old, upd;

	/* Prometheus buckets are "less than or equal"; NaN lands in +Inf. */
	while (i < h->nbounds && !(v <= h->bounds[i]))
		i++;
	atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);

	old = atomic_load_explicit(&h->sum, memory_order_relaxed);
	do {
		upd = dbl_bits(bits_dbl(old) + v);
	} while (!atomic_compare_exchange_weak_explicit(&h->sum, &old, upd,
			memory_order_relaxed, memory_order_relaxed));
}

/* ---- collect hooks ---- */

void metrics_on_collect(metrics_collect_h *h, void *arg)
{
	struct metric_hook *k;

	if (!h)
		return;
	for (k = reg.hooks; k; k = k->next)
		if (k->h == h && k->arg == arg)
			return;         /* registering twice is harmless */
	k = xcalloc(1, sizeof(*k));
	k->h = h;
	k->arg = arg;
	*reg.hktail = k;
	reg.hktail = &k->next;
}

/* ---- rendering ---- */

struct mbuf {
	char *p;
	size_t len, size;
	bool oom;
};

static void mb_printf(struct mbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void mb_printf(struct mbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		size_t avail = b->size - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, avail, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < avail) {
			b->len += (size_t)n;
			return;
		}
		size_t nsize = b->size * 2 > b->len + (size_t)n + 1 ?
			       b->size * 2 : b->len + (size_t)n + 1;
		char *np = realloc(b->p, nsize);

		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->size = nsize;
	}
}

/* HELP text escapes backslash and newline (exposition format 0.0.4). */
static void mb_help(struct mbuf *b, const struct metric_family *f)
{
	mb_printf(b, "# HELP %s ", f->name);
	for (const char *s = f->help; *s; s++) {
		if (*s == '\\')
			mb_printf(b, "\\\\");
		else if (*s == '\n')
			mb_printf(b, "\\n");
		else
			mb_printf(b, "%c", *s);
	}
	mb_printf(b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
}

/*
 * Integers print in full ("400000", not "4e+05"); anything else as the
 * shortest text that reads back as the same double.
 */
static void fmt_double(char *buf, size_t size, double d)
{
	if (isnan(d)) {
		snprintf(buf, size, "NaN");
		return;
	}
	if (isinf(d)) {
		snprintf(buf, size, d > 0 ? "+Inf" : "-Inf");
		return;
	}
	if (d == trunc(d) && fabs(d) < 1e15) {
		snprintf(buf, size, "%.0f", d == 0 ? 0.0 : d);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, size, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			return;
	}
}

static void render_series(struct mbuf *b, const struct metric_family *f)
{
	for (const struct metric *m = f->series; m; m = m->next) {
		int64_t v = metrics_value(m);

		mb_printf(b, "%s", f->name);
		if (*m->labels)
			mb_printf(b, "{%s}", m->labels);
		if (f->type == MT_COUNTER)
			mb_printf(b, " %" PRIu64 "\n", (uint64_t)v);
		else
			mb_printf(b, " %" PRId64 "\n", v);
	}
}

static void render_hist(struct mbuf *b, const struct metric_family *f,
			struct metric_hist *h)
{
	const char *sep = *h->labels ? "," : "";
	uint64_t cum = 0;
	char num[40];

	for (size_t i = 0; i <= h->nbounds; i++) {
		cum += atomic_load_explicit(&h->buckets[i],
					    memory_order_relaxed);
		if (i < h->nbounds)
			fmt_double(num, sizeof(num), h->bounds[i]);
		else
			snprintf(num, sizeof(num), "+Inf");
		mb_printf(b, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n",
			  f->name, h->labels, sep, num, cum);
	}
	fmt_double(num, sizeof(num),
		   bits_dbl(atomic_load_explicit(&h->sum,
						 memory_order_relaxed)));
	if (*h->labels) {
		mb_printf(b, "%s_sum{%s} %s\n", f->name, h->labels, num);
		mb_printf(b, "%s_count{%s} %" PRIu64 "\n", f->name, h->labels,
			  cum);
	} else {
		mb_printf(b, "%s_sum %s\n%s_count %" PRIu64 "\n", f->name, num,
			  f->name, cum);
	}
}

/*
 * Runs the collect hooks, then renders. Returns NULL (and *lenp 0) only
 * when memory runs out, so that the HTTP layer can answer 500.
 */
char *metrics_render(size_t *lenp)
{
	struct mbuf b = { .size = 4096 };

	for (struct metric_hook *k = reg.hooks; k; k = k->next)
		k->h(k->arg);

	b.p = malloc(b.size);
	if (!b.p)
		goto oom;
	b.p[0] = '\0';
	for (const struct metric_family *f = reg.fams; f; f = f->next) {
		if (!f->series && !f->hists)
			continue;
		mb_help(&b, f);
		render_series(&b, f);
		for (struct metric_hist *h = f->hists; h; h = h->next)
			render_hist(&b, f, h);
	}
	if (b.oom)
		goto oom;
	if (lenp)
		*lenp = b.len;
	return b.p;

oom:
	free(b.p);
	if (lenp)
		*lenp = 0;
	return NULL;
}

/* ---- teardown ---- */

static void family_free(struct metric_family *f)
{
	while (f->series) {
		struct metric *m = f->series;

		f->series = m->next;
		free(m->labels);
		free(m);
	}
	while (f->hists) {
		struct metric_hist *h = f->hists;

		f->hists = h->next;
		free(h->labels);
		free(h->bounds);
		free((void *)h->buckets);
		free(h);
	}
	free(f->name);
	free(f->help);
	free(f);
}

/* Every handle and hook is invalid afterwards. */
void metrics_reset(void)
{
	while (reg.fams) {
		struct metric_family *f = reg.fams;

		reg.fams = f->next;
		family_free(f);
	}
	reg.ftail = &reg.fams;
	while (reg.orphans) {
		struct metric_family *f = reg.orphans;

		reg.orphans = f->next;
		family_free(f);
	}
	while (reg.hooks) {
		struct metric_hook *k = reg.hooks;

		reg.hooks = k->next;
		free(k);
	}
	reg.hktail = &reg.hooks;
}
