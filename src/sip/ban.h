/*
 * ban.h: brute-force protection. Counts authentication failures per source
 * address and bans an address that reaches max_failures within window_ms
 * for ban_ms. Pure code: times are passed in, nothing reads a clock, so
 * the behaviour is deterministic under test. Not thread-safe: one table
 * belongs to the signalling thread.
 *
 * Addresses are whole IPv4 or IPv6 addresses; an IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) is the same source as a.b.c.d. Ports are ignored.
 * Other address families are never banned and never recorded.
 */
#ifndef SIPCRM_BAN_H
#define SIPCRM_BAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;
struct ban;

/*
 * Creates a table holding at most max_entries addresses (memory is
 * allocated once, up front: about 64 bytes per entry). max_failures 0
 * disables banning. Failures count in a fixed window that opens at the
 * first failure and lasts window_ms. Returns 0, EINVAL (max_entries 0 or
 * above 2^24, negative times), ENOMEM, or getrandom's errno (hash key).
 */
int ban_alloc(struct ban **bp, unsigned max_failures, int64_t window_ms,
	      int64_t ban_ms, size_t max_entries);
struct ban *ban_free(struct ban *b);

/*
 * Applies new limits (SIGHUP). Bans in force keep their end time and
 * open windows keep their counts; setting max_failures to 0 lifts every
 * ban and forgets every count. Returns 0 or EINVAL (negative times), in
 * which case nothing changes.
 */
int ban_configure(struct ban *b, unsigned max_failures, int64_t window_ms,
		  int64_t ban_ms);

/* True while sa is banned at now_ms. Cheap enough to call per packet. */
bool ban_is_banned(struct ban *b, const struct sockaddr *sa, int64_t now_ms);

/*
 * Records one authentication failure from sa. Returns true only for the
 * failure that starts a ban (log it once, there); failures from an address
 * already banned are ignored and return false.
 */
bool ban_failure(struct ban *b, const struct sockaddr *sa, int64_t now_ms);

/* A successful authentication forgets sa's failures; a ban stays. */
void ban_success(struct ban *b, const struct sockaddr *sa, int64_t now_ms);

/* Bans in force at now_ms (for metrics). Drops expired entries first. */
size_t ban_count(struct ban *b, int64_t now_ms);

/* Drops expired bans and closed failure windows (call from a timer). */
void ban_expire(struct ban *b, int64_t now_ms);

/* Addresses held (banned or counting), never above max_entries. */
size_t ban_entries(const struct ban *b);

#endif
