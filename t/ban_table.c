/*
 * ban_table.c: failure counting, bans and their expiry, address
 * normalisation, reconfiguration and the bound under a flood.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "sip/ban.h"
#include "tap.h"

#define N 5
#define WINDOW 60000
#define BANT 600000
#define T0 1000000

/* Fills a sockaddr_storage from text (IPv4 or IPv6) and a port. */
static const struct sockaddr *sa_of(struct sockaddr_storage *ss,
				    const char *ip, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		if (inet_pton(AF_INET6, ip, &s6->sin6_addr) != 1)
			printf("# bad test address %s\n", ip);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1)
			printf("# bad test address %s\n", ip);
	}
	return (const struct sockaddr *)ss;
}

/* Records n failures at now; returns how many of them started a ban. */
static int fail_n(struct ban *b, const struct sockaddr *sa, int n, int64_t now)
{
	int started = 0;

	for (int i = 0; i < n; i++)
		started += ban_failure(b, sa, now);
	return started;
}

static void test_threshold(struct ban *b)
{
	struct sockaddr_storage s1, s2;
	const struct sockaddr *a = sa_of(&s1, "192.0.2.1", 5060);
	const struct sockaddr *other = sa_of(&s2, "192.0.2.2", 5060);

	is_int(fail_n(b, a, N - 1, T0), 0, "N-1 failures start no ban");
	is_int(ban_is_banned(b, a, T0), 0, "not banned after N-1");
	is_int(ban_failure(b, a, T0 + 1), 1, "Nth failure starts a ban");
	is_int(ban_is_banned(b, a, T0 + 1), 1, "banned after N");
	is_int(ban_failure(b, a, T0 + 2), 0, "further failures do not start another ban");
	is_int(ban_count(b, T0 + 2), 1, "one ban in force");
	is_int(ban_is_banned(b, other, T0 + 2), 0, "other address unaffected");

	struct sockaddr_storage s3;
	const struct sockaddr *a_port = sa_of(&s3, "192.0.2.1", 40000);

	is_int(ban_is_banned(b, a_port, T0 + 2), 1, "the port does not matter");
	is_int(ban_is_banned(b, a, T0 + 1 + BANT - 1), 1, "still banned 1 ms before the end");
	is_int(ban_is_banned(b, a, T0 + 1 + BANT), 0, "free once ban_ms has passed");
	is_int(ban_count(b, T0 + 1 + BANT), 0, "no ban in force afterwards");
	is_int(fail_n(b, a, N - 1, T0 + 2 + BANT), 0,
	       "after the ban the count starts again from zero");
	ban_success(b, a, T0 + 3 + BANT);
}

static void test_window(struct ban *b)
{
	struct sockaddr_storage s;
	const struct sockaddr *a = sa_of(&s, "198.51.100.7", 5060);

	is_int(fail_n(b, a, N - 1, T0), 0, "N-1 failures in the window");
	is_int(ban_failure(b, a, T0 + WINDOW), 0,
	       "a failure once the window closed opens a new one");
	is_int(fail_n(b, a, N - 2, T0 + WINDOW + 1), 0,
	       "N-1 failures in the new window: no ban");
	is_int(ban_failure(b, a, T0 + WINDOW + 2), 1, "Nth in the new window bans");

	/*
	 * Times out of order (a caller's clock stepping): d's window closed
	 * but it sits behind e's open one, so only the lookup can see it.
	 */
	struct sockaddr_storage s5, s6;
	const struct sockaddr *d = sa_of(&s5, "198.51.100.20", 5060);
	const struct sockaddr *e = sa_of(&s6, "198.51.100.21", 5060);

	fail_n(b, e, 1, T0 + 100);
	fail_n(b, d, N - 1, T0);
	is_int(ban_failure(b, d, T0 + WINDOW + 50), 0,
	       "closed window behind an open one still resets the count");
	ban_success(b, d, T0 + WINDOW + 50);
	ban_success(b, e, T0 + WINDOW + 50);

	const struct sockaddr *c = sa_of(&s, "198.51.100.8", 5060);

	fail_n(b, c, N - 1, T0);
	ban_success(b, c, T0 + 1);
	is_int(ban_failure(b, c, T0 + 2), 0, "ban_success forgot the failures");
	is_int(ban_entries(b) >= 1, 1, "entries tracked");
	ban_expire(b, T0 + 2 + WINDOW);
	is_int(ban_count(b, T0 + 2 + WINDOW), 1, "ban_expire keeps the ban in force");
	ban_expire(b, T0 + WINDOW + 2 + BANT);
	is_int(ban_entries(b), 0, "ban_expire drops every stale entry");
}

static void test_ipv6(struct ban *b)
{
	struct sockaddr_storage s1, s2, s3, s4;
	const struct sockaddr *v6 = sa_of(&s1, "2001:db8::1", 5060);
	const struct sockaddr *v6b = sa_of(&s2, "2001:db8::2", 5060);
	const struct sockaddr *v4 = sa_of(&s3, "203.0.113.9", 5060);
	const struct sockaddr *mapped = sa_of(&s4, "::ffff:203.0.113.9", 5060);

	is_int(fail_n(b, v6, N, T0), 1, "IPv6 address banned after N");
	is_int(ban_is_banned(b, v6, T0), 1, "IPv6 ban in force");
	is_int(ban_is_banned(b, v6b, T0), 0, "neighbouring IPv6 address unaffected");

	is_int(fail_n(b, v4, N - 1, T0), 0, "N-1 failures as IPv4");
	is_int(ban_failure(b, mapped, T0), 1, "Nth as IPv4-mapped IPv6 bans the same source");
	is_int(ban_is_banned(b, v4, T0), 1, "banned as IPv4");
	is_int(ban_is_banned(b, mapped, T0), 1, "banned as IPv4-mapped");

	struct sockaddr unix_sa = { .sa_family = AF_UNIX };

	is_int(ban_failure(b, &unix_sa, T0), 0, "other families are ignored");
	is_int(ban_is_banned(b, NULL, T0), 0, "NULL address is not banned");
	ban_expire(b, T0 + BANT);
	is_int(ban_entries(b), 0, "all expired");
}

static void test_disabled(void)
{
	struct ban *b = NULL;
	struct sockaddr_storage s;
	const struct sockaddr *a = sa_of(&s, "192.0.2.50", 5060);

	is_int(ban_alloc(&b, 0, WINDOW, BANT, 16), 0, "alloc with max_failures 0");
	is_int(fail_n(b, a, 1000, T0), 0, "max_failures 0 never bans");
	is_int(ban_is_banned(b, a, T0), 0, "... and the address is not banned");
	is_int(ban_entries(b), 0, "... and nothing is recorded");

	is_int(ban_configure(b, 2, WINDOW, BANT), 0, "configure enables");
	is_int(fail_n(b, a, 2, T0), 1, "2 failures now ban");
	is_int(ban_configure(b, 2, WINDOW, -1), EINVAL, "negative time rejected");
	is_int(ban_is_banned(b, a, T0 + 1), 1, "rejected configure changed nothing");
	is_int(ban_configure(b, 0, WINDOW, BANT), 0, "configure disables");
	is_int(ban_is_banned(b, a, T0 + 1), 0, "disabling lifts bans");
	b = ban_free(b);
	ok(b == NULL, "ban_free returns NULL");
	ok(ban_free(NULL) == NULL, "ban_free(NULL)");

	is_int(ban_alloc(&b, 3, WINDOW, BANT, 0), EINVAL, "max_entries 0 rejected");
	ok(b == NULL, "*bp untouched on error");
}

/* Distinct addresses for the flood: 10.x.y.z and 2001:db8::/96 + i. */
static const struct sockaddr *flood_addr(struct sockaddr_storage *ss, uint32_t i)
{
	memset(ss, 0, sizeof(*ss));
	if (i & 1) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, "2001:db8::", &s6->sin6_addr);
		uint32_t be = htonl(i);
		memcpy(&s6->sin6_addr.s6_addr[12], &be, 4);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(0x0a000000u | i);
	}
	return (const struct sockaddr *)ss;
}

static void test_flood(void)
{
	enum { MAX = 1000, FLOOD = 200000 };
	struct ban *b = NULL;
	struct sockaddr_storage s1, s2, sf;
	const struct sockaddr *bad1 = sa_of(&s1, "192.0.2.66", 5060);
	const struct sockaddr *bad2 = sa_of(&s2, "2001:db8:1::66", 5060);
	size_t most = 0;
	int bans = 0;

	is_int(ban_alloc(&b, N, WINDOW, BANT, MAX), 0, "alloc bounded table");
	fail_n(b, bad1, N, T0);
	fail_n(b, bad2, N, T0);
	for (uint32_t i = 0; i < FLOOD; i++) {
		/* All within one window, so nothing expires on its own. */
		bans += ban_failure(b, flood_addr(&sf, i), T0 + 1 + i / 100);
		if (ban_entries(b) > most)
			most = ban_entries(b);
	}
	is_int(bans, 0, "one failure per address bans nobody");
	ok(most <= MAX, "entries never exceeded max_entries: expected <= %d, got %zu",
	   MAX, most);
	is_int(ban_entries(b), MAX, "the table is full, not larger");
	is_int(ban_is_banned(b, bad1, T0 + 3000), 1, "IPv4 ban survived the flood");
	is_int(ban_is_banned(b, bad2, T0 + 3000), 1, "IPv6 ban survived the flood");
	is_int(ban_count(b, T0 + 3000), 2, "two bans in force");

	/* The newest flood entries are kept, the oldest were evicted. */
	is_int(ban_failure(b, flood_addr(&sf, FLOOD - 1), T0 + 3000), 0,
	       "recent flood address counts its second failure");
	fail_n(b, flood_addr(&sf, FLOOD - 1), N - 3, T0 + 3000);
	is_int(ban_failure(b, flood_addr(&sf, FLOOD - 1), T0 + 3000), 1,
	       "recent flood address kept its count: banned at N");
	b = ban_free(b);

	/* A table full of bans evicts the ban closest to its end. */
	is_int(ban_alloc(&b, 1, WINDOW, BANT, 4), 0, "alloc tiny table");
	for (uint32_t i = 0; i < 5; i++)
		ban_failure(b, flood_addr(&sf, 2 * i), T0 + i);
	is_int(ban_entries(b), 4, "tiny table stays at 4");
	is_int(ban_is_banned(b, flood_addr(&sf, 0), T0 + 5), 0,
	       "the earliest ban made room");
	is_int(ban_is_banned(b, flood_addr(&sf, 8), T0 + 5), 1, "the newest ban is held");
	b = ban_free(b);
}

static void test_reconfigure_order(void)
{
	struct ban *b = NULL;
	struct sockaddr_storage s1, s2;
	const struct sockaddr *a = sa_of(&s1, "192.0.2.10", 5060);
	const struct sockaddr *c = sa_of(&s2, "192.0.2.11", 5060);

	is_int(ban_alloc(&b, 1, WINDOW, BANT, 16), 0, "alloc for reconfigure");
	ban_failure(b, a, T0);                  /* ends T0 + BANT */
	ban_configure(b, 1, WINDOW, 1000);
	ban_failure(b, c, T0 + 1);              /* ends T0 + 1001 */
	is_int(ban_count(b, T0 + 1001), 1, "shorter new ban expires first");
	is_int(ban_is_banned(b, a, T0 + 1001), 1, "older, longer ban still in force");
	is_int(ban_count(b, T0 + BANT), 0, "then it ends too");
	b = ban_free(b);
}

int main(void)
{
	struct ban *b = NULL;

	is_int(ban_alloc(&b, N, WINDOW, BANT, 1024), 0, "ban_alloc");
	if (!b)
		return tap_done();
	test_threshold(b);
	test_window(b);
	test_ipv6(b);
	ban_free(b);
	test_disabled();
	test_flood();
	test_reconfigure_order();
	return tap_done();
}
