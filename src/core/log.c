/*
 * log.c: levelled, per-module logging to stderr or syslog.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <sys/time.h>

#include <sofia-sip/su_log.h>

#include "log.h"

#define LOG_MAX_MODULES 24

struct log_mod {
	char name[16];
	enum log_level lvl;
};

static struct {
	bool to_stderr;
	bool forced;
	enum log_level deflt;
	enum log_level max;     /* highest level of any module: fast path */
	struct log_mod mods[LOG_MAX_MODULES];
	size_t nmods;
} lg = { .to_stderr = true, .deflt = LOG_LVL_INFO, .max = LOG_LVL_INFO };

static const char *const lvl_names[] = { "error", "warn", "info", "debug" };

const char *log_level_name(enum log_level lvl)
{
	return lvl <= LOG_LVL_DEBUG ? lvl_names[lvl] : "?";
}

int log_level_parse(const char *s, enum log_level *lvl)
{
	for (size_t i = 0; i < sizeof(lvl_names) / sizeof(lvl_names[0]); i++) {
		if (!strcasecmp(s, lvl_names[i])) {
			*lvl = (enum log_level)i;
			return 0;
		}
	}
	if (!strcasecmp(s, "err") || !strcasecmp(s, "crit")) {
		*lvl = LOG_LVL_ERR;
		return 0;
	}
	if (!strcasecmp(s, "warning") || !strcasecmp(s, "notice")) {
		*lvl = LOG_LVL_WARN;
		return 0;
	}
	return EINVAL;
}

void log_init(const char *ident, bool to_stderr)
{
	lg.to_stderr = to_stderr;
	if (!to_stderr)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_close(void)
{
	if (!lg.to_stderr)
		closelog();
}

static void recompute_max(void)
{
	lg.max = lg.deflt;
	for (size_t i = 0; i < lg.nmods; i++)
		if (lg.mods[i].lvl > lg.max)
			lg.max = lg.mods[i].lvl;
}

/* Parses a spec into a private table, so a bad spec changes nothing. */
static int parse_spec(const char *spec, struct log_mod *mods, size_t *nmodsp,
		      enum log_level *defltp, char *err, size_t errsz)
{
	size_t nmods = 0;
	enum log_level deflt = LOG_LVL_INFO;
	char buf[512], *save = NULL;
	if (strlen(spec) >= sizeof(buf)) {
		snprintf(err, errsz, "log level spec too long");
		return EINVAL;
	}
	strcpy(buf, spec);
	for (char *w = strtok_r(buf, " ,\t", &save); w;
	     w = strtok_r(NULL, " ,\t", &save)) {
		char *eq = strchr(w, '=');
		enum log_level lvl;

		if (log_level_parse(eq ? eq + 1 : w, &lvl)) {
			snprintf(err, errsz, "unknown log level '%s' "
				 "(error | warn | info | debug)", eq ? eq + 1 : w);
			return EINVAL;
		}
		if (!eq) {
			deflt = lvl;
			continue;
		}
		*eq = '\0';
		if (nmods == LOG_MAX_MODULES || eq - w >= (long)sizeof(mods[0].name) ||
		    eq == w) {
			snprintf(err, errsz, "bad log module name '%s'", w);
			return EINVAL;
		}
		strcpy(mods[nmods].name, w);
		mods[nmods++].lvl = lvl;
	}
	*nmodsp = nmods;
	*defltp = deflt;
	return 0;
}

int log_spec_check(const char *spec, char *err, size_t errsz)
{
	struct log_mod mods[LOG_MAX_MODULES];
	enum log_level deflt;
	size_t n;

	return parse_spec(spec, mods, &n, &deflt, err, errsz);
}

int log_apply_spec(const char *spec, char *err, size_t errsz)
{
	struct log_mod mods[LOG_MAX_MODULES];
	enum log_level deflt;
	size_t n;
	int e;

	if (lg.forced)
		return 0;
	e = parse_spec(spec, mods, &n, &deflt, err, errsz);
	if (e)
		return e;
	memcpy(lg.mods, mods, sizeof(mods));
	lg.nmods = n;
	lg.deflt = deflt;
	recompute_max();
	return 0;
}

void log_force_level(const char *spec)
{
	char err[128];

	lg.forced = false;
	if (log_apply_spec(spec, err, sizeof(err)) == 0)
		lg.forced = true;
}

bool log_enabled(enum log_level lvl, const char *module)
{
	if (lvl > lg.max)
		return false;
	for (size_t i = 0; i < lg.nmods; i++)
		if (!strcmp(lg.mods[i].name, module))
			return lvl <= lg.mods[i].lvl;
	return lvl <= lg.deflt;
}

/* fmt comes from log_msg's (printf-checked) callers or from sofia-sip */
__attribute__((format(printf, 3, 0)))
static void vlog(enum log_level lvl, const char *module, const char *fmt,
		 va_list ap)
{
	static const int sysprio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[2048];
	int n;

	n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	/* sofia-sip lines end with a newline of their own */
	n = (int)strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';

	if (lg.to_stderr) {
		struct timeval tv;
		struct tm tm;
		char ts[32];

		gettimeofday(&tv, NULL);
		gmtime_r(&tv.tv_sec, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03dZ %-5s [%s] %s\n", ts,
			(int)(tv.tv_usec / 1000), log_level_name(lvl), module, line);
	}
	else {
		syslog(sysprio[lvl], "%s [%s] %s", log_level_name(lvl), module, line);
	}
}

void log_msg(enum log_level lvl, const char *module, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(lvl, module, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 2, 0)))
static void sofia_logger(void *stream, char const *fmt, va_list ap)
{
	(void)stream;
	if (!log_enabled(LOG_LVL_DEBUG, "sofia"))
		return;
	vlog(LOG_LVL_DEBUG, "sofia", fmt, ap);
}

void log_redirect_sofia(void)
{
	su_log_redirect(NULL, sofia_logger, NULL);
	su_log_redirect(su_log_default, sofia_logger, NULL);
}
