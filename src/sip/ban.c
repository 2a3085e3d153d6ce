/*
 * ban.c: per-address authentication failure counting and bans.
 *
 * The table is a chained hash over a pool of max_entries slots allocated
 * up front, so a flood of distinct source addresses can never grow it.
 * Every slot in use sits on one of two lists:
 *   counting: not banned, ordered by window start (oldest first);
 *   banned:   ordered by ban end (soonest first).
 * Both orders let expiry look only at list heads, so every call is O(1)
 * amortised. When the pool is full a new address takes, in this order:
 * an expired entry, the oldest counting entry, and only when every slot
 * is banned, the ban closest to its end. Bans thus survive a flood of
 * one-off failures from other addresses.
 *
 * Windows are fixed: one opens at the first failure and lasts window_ms;
 * a failure after it closes opens a new one with a count of one. An
 * address spreading max_failures - 1 failures per window is never banned;
 * that is the accepted price of O(1) state per address.
 *
 * Buckets are chosen with SipHash-2-4 under a random key, because the
 * addresses come from the network and a guessable hash would let one
 * sender pile every entry into one chain.
 */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "ban.h"

#define NIL UINT32_MAX
#define BAN_TABLE_LIMIT (1u << 24)

struct ban_ent {
	uint8_t addr[16];               /* IPv6, or IPv4 as ::ffff:a.b.c.d */
	uint32_t hnext;                 /* hash chain */
	uint32_t prev, next;            /* counting or banned list; free list */
	uint32_t failures;
	bool banned;
	int64_t start;                  /* window opened (counting) */
	int64_t until;                  /* ban ends (banned) */
};

struct ban_list {
	uint32_t head, tail;
	size_t n;
};

struct ban {
	unsigned max_failures;
	int64_t window_ms, ban_ms;
	size_t max_entries;
	struct ban_ent *ents;
	uint32_t *buckets, mask;
	uint32_t free_head;
	struct ban_list counting, banned;
	uint64_t key[2];
};

/* ---- keys ---- */

/* The 16-byte key of sa; false for families we do not track. */
static bool addr_key(const struct sockaddr *sa, uint8_t key[16])
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		memcpy(key, mapped, sizeof(mapped));
		memcpy(key + 12, &in->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		/* An IPv4-mapped address is already in the IPv4 key form. */
		memcpy(key, &in6->sin6_addr, 16);
		return true;
	}
	return false;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_round(uint64_t v[4])
{
	v[0] += v[1]; v[1] = ROTL(v[1], 13); v[1] ^= v[0]; v[0] = ROTL(v[0], 32);
	v[2] += v[3]; v[3] = ROTL(v[3], 16); v[3] ^= v[2];
	v[0] += v[3]; v[3] = ROTL(v[3], 21); v[3] ^= v[0];
	v[2] += v[1]; v[1] = ROTL(v[1], 17); v[1] ^= v[2]; v[2] = ROTL(v[2], 32);
}

static void sip_block(uint64_t v[4], uint64_t m)
{
	v[3] ^= m;
	sip_round(v);
	sip_round(v);
	v[0] ^= m;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* SipHash-2-4 of a 16-byte message. */
static uint64_t siphash16(const uint64_t k[2], const uint8_t in[16])
{
	uint64_t v[4] = {
		k[0] ^ 0x736f6d6570736575ull, k[1] ^ 0x646f72616e646f6dull,
		k[0] ^ 0x6c7967656e657261ull, k[1] ^ 0x7465646279746573ull,
	};

	sip_block(v, le64(in));
	sip_block(v, le64(in + 8));
	sip_block(v, (uint64_t)16 << 56);
	v[2] ^= 0xff;
	for (int i = 0; i < 4; i++)
		sip_round(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static uint32_t bucket_of(const struct ban *b, const uint8_t addr[16])
{
	return (uint32_t)siphash16(b->key, addr) & b->mask;
}

static uint32_t find(const struct ban *b, const uint8_t addr[16])
{
	uint32_t i = b->buckets[bucket_of(b, addr)];

	while (i != NIL && memcmp(b->ents[i].addr, addr, 16))
		i = b->ents[i].hnext;
	return i;
}

/* ---- lists ---- */

static struct ban_list *list_of(struct ban *b, uint32_t i)
{
	return b->ents[i].banned ? &b->banned : &b->counting;
}

static void list_unlink(struct ban *b, struct ban_list *l, uint32_t i)
{
	struct ban_ent *e = &b->ents[i];

	if (e->prev != NIL)
		b->ents[e->prev].next = e->next;
	else
		l->head = e->next;
	if (e->next != NIL)
		b->ents[e->next].prev = e->prev;
	else
		l->tail = e->prev;
	l->n--;
}

/* Links i after 'after' (NIL: at the head). */
static void list_insert(struct ban *b, struct ban_list *l, uint32_t after,
			uint32_t i)
{
	struct ban_ent *e = &b->ents[i];

	e->prev = after;
	e->next = after != NIL ? b->ents[after].next : l->head;
	if (e->next != NIL)
		b->ents[e->next].prev = i;
	else
		l->tail = i;
	if (after != NIL)
		b->ents[after].next = i;
	else
		l->head = i;
	l->n++;
}

/*
 * Keeps the banned list sorted by end time. With a constant ban_ms the
 * new ban ends last and this is O(1); only after ban_configure shortened
 * ban_ms does it walk back over the longer bans still in force.
 */
static void banned_insert(struct ban *b, uint32_t i)
{
	uint32_t after = b->banned.tail;

	while (after != NIL && b->ents[after].until > b->ents[i].until)
		after = b->ents[after].prev;
	list_insert(b, &b->banned, after, i);
}

/* ---- entries ---- */

static void ent_remove(struct ban *b, uint32_t i)
{
	uint32_t *pp = &b->buckets[bucket_of(b, b->ents[i].addr)];

	while (*pp != i)
		pp = &b->ents[*pp].hnext;
	*pp = b->ents[i].hnext;
	list_unlink(b, list_of(b, i), i);
	b->ents[i].next = b->free_head;
	b->free_head = i;
}

static bool window_closed(const struct ban *b, const struct ban_ent *e,
			  int64_t now)
{
	return now - e->start >= b->window_ms;
}

static bool ban_over(const struct ban_ent *e, int64_t now)
{
	return now >= e->until;
}

/* Drops expired entries; the list orders make the heads the candidates. */
static void expire_heads(struct ban *b, int64_t now)
{
	while (b->counting.head != NIL
	       && window_closed(b, &b->ents[b->counting.head], now))
		ent_remove(b, b->counting.head);
	while (b->banned.head != NIL
	       && ban_over(&b->ents[b->banned.head], now))
		ent_remove(b, b->banned.head);
}

/* A slot for a new address, evicting as the file comment describes. */
static uint32_t ent_new(struct ban *b, const uint8_t addr[16], int64_t now)
{
	uint32_t i, h;
	struct ban_ent *e;

	if (b->free_head == NIL)
		ent_remove(b, b->counting.head != NIL ? b->counting.head
						      : b->banned.head);
	i = b->free_head;
	e = &b->ents[i];
	b->free_head = e->next;
	memcpy(e->addr, addr, 16);
	e->failures = 0;
	e->banned = false;
	e->start = now;
	e->until = 0;
	h = bucket_of(b, addr);
	e->hnext = b->buckets[h];
	b->buckets[h] = i;
	list_insert(b, &b->counting, b->counting.tail, i);
	return i;
}

static void flush(struct ban *b)
{
	while (b->counting.head != NIL)
		ent_remove(b, b->counting.head);
	while (b->banned.head != NIL)
		ent_remove(b, b->banned.head);
}

static int64_t add_sat(int64_t a, int64_t d)
{
	return a > INT64_MAX - d ? INT64_MAX : a + d;
}

/* ---- lifetime ---- */

static size_t pow2_at_least(size_t n)
{
	size_t p = 8;

	while (p < n)
		p <<= 1;
	return p;
}

int ban_alloc(struct ban **bp, unsigned max_failures, int64_t window_ms,
	      int64_t ban_ms, size_t max_entries)
{
	struct ban *b;
	size_t nb = pow2_at_least(max_entries);
	int err = ENOMEM;

	if (!bp || !max_entries || max_entries > BAN_TABLE_LIMIT
	    || window_ms < 0 || ban_ms < 0)
		return EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return ENOMEM;
	b->ents = calloc(max_entries, sizeof(*b->ents));
	b->buckets = malloc(nb * sizeof(*b->buckets));
	if (!b->ents || !b->buckets)
		goto out;
	if (getrandom(b->key, sizeof(b->key), 0) != sizeof(b->key)) {
		err = errno ? errno : EIO;
		goto out;
	}
	memset(b->buckets, 0xff, nb * sizeof(*b->buckets));
	b->mask = (uint32_t)(nb - 1);
	b->max_entries = max_entries;
	for (size_t i = 0; i < max_entries; i++)
		b->ents[i].next = i + 1 < max_entries ? (uint32_t)(i + 1) : NIL;
	b->free_head = 0;
	b->counting.head = b->counting.tail = NIL;
	b->banned.head = b->banned.tail = NIL;
	b->max_failures = max_failures;
	b->window_ms = window_ms;
	b->ban_ms = ban_ms;
	*bp = b;
	return 0;
 out:
	ban_free(b);
	return err;
}

struct ban *ban_free(struct ban *b)
{
	if (!b)
		return NULL;
	free(b->ents);
	free(b->buckets);
	free(b);
	return NULL;
}

int ban_configure(struct ban *b, unsigned max_failures, int64_t window_ms,
		  int64_t ban_ms)
{
	if (!b || window_ms < 0 || ban_ms < 0)
		return EINVAL;
	if (!max_failures)
		flush(b);
	b->max_failures = max_failures;
	b->window_ms = window_ms;
	b->ban_ms = ban_ms;
	return 0;
}

/* ---- queries and updates ---- */

bool ban_is_banned(struct ban *b, const struct sockaddr *sa, int64_t now_ms)
{
	uint8_t key[16];
	uint32_t i;

	if (!b || !addr_key(sa, key))
		return false;
	i = find(b, key);
	if (i == NIL || !b->ents[i].banned)
		return false;
	if (!ban_over(&b->ents[i], now_ms))
		return true;
	ent_remove(b, i);
	return false;
}

bool ban_failure(struct ban *b, const struct sockaddr *sa, int64_t now_ms)
{
	uint8_t key[16];
	uint32_t i;
	struct ban_ent *e;

	if (!b || !b->max_failures || !addr_key(sa, key))
		return false;
	expire_heads(b, now_ms);
	i = find(b, key);
	if (i != NIL && b->ents[i].banned) {
		if (!ban_over(&b->ents[i], now_ms))
			return false;   /* no extension: it sends nothing we see */
		ent_remove(b, i);
		i = NIL;
	}
	if (i == NIL)
		i = ent_new(b, key, now_ms);
	e = &b->ents[i];
	if (window_closed(b, e, now_ms)) {
		/* Reopen the window at the tail, keeping the list in order. */
		list_unlink(b, &b->counting, i);
		list_insert(b, &b->counting, b->counting.tail, i);
		e->start = now_ms;
		e->failures = 0;
	}
	if (++e->failures < b->max_failures)
		return false;
	list_unlink(b, &b->counting, i);
	e->banned = true;
	e->until = add_sat(now_ms, b->ban_ms);
	banned_insert(b, i);
	return true;
}

void ban_success(struct ban *b, const struct sockaddr *sa, int64_t now_ms)
{
	uint8_t key[16];
	uint32_t i;

	if (!b || !addr_key(sa, key))
		return;
	i = find(b, key);
	if (i != NIL && !b->ents[i].banned)
		ent_remove(b, i);
}

size_t ban_count(struct ban *b, int64_t now_ms)
{
	if (!b)
		return 0;
	expire_heads(b, now_ms);
	return b->banned.n;
}

void ban_expire(struct ban *b, int64_t now_ms)
{
	if (b)
		expire_heads(b, now_ms);
}

size_t ban_entries(const struct ban *b)
{
	return b ? b->counting.n + b->banned.n : 0;
}
