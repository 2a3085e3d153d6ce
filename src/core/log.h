/*
 * log.h: levelled, per-module logging.
 *
 * Each .c file defines LOG_MODULE before including this header and calls
 * log_err/log_warn/log_info/log_debug. Output goes to stderr (with
 * timestamps) in the foreground, otherwise to syslog.
 */
#ifndef SIPCRM_LOG_H
#define SIPCRM_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LVL_ERR = 0,
	LOG_LVL_WARN,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
};

/* Sets the destination. ident is the syslog identity. */
void log_init(const char *ident, bool to_stderr);
void log_close(void);

/*
 * Applies a level spec: "info" or "info sip=debug crm=warn".
 * Returns 0, or EINVAL with the offending word in err.
 */
int log_apply_spec(const char *spec, char *err, size_t errsz);
/* Validates a spec without applying it. */
int log_spec_check(const char *spec, char *err, size_t errsz);
int log_level_parse(const char *s, enum log_level *lvl);
const char *log_level_name(enum log_level lvl);

/* Forces one level on every module (the -l command line option). */
void log_force_level(const char *spec);

bool log_enabled(enum log_level lvl, const char *module);
void log_msg(enum log_level lvl, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Routes sofia-sip's su_log output into ours (module "sofia"). */
void log_redirect_sofia(void);

#ifndef LOG_MODULE
#define LOG_MODULE "main"
#endif

#define log_at(lvl, ...) \
	do { \
		if (log_enabled((lvl), LOG_MODULE)) \
			log_msg((lvl), LOG_MODULE, __VA_ARGS__); \
	} while (0)

#define log_err(...)   log_at(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_at(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
