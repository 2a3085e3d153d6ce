/*
 * hmap.c: string-keyed hash map (FNV-1a, chaining).
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"

struct hmap_ent {
	struct hmap_ent *next;
	uint32_t hash;
	void *val;
	char key[];
};

struct hmap {
	struct hmap_ent **b;
	size_t nb;              /* power of two */
	size_t n;
};

static uint32_t hash_str(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 16777619u;
	}
	return h;
}

int hmap_alloc(struct hmap **mp, size_t hint)
{
	struct hmap *m = calloc(1, sizeof(*m));
	size_t nb = 16;

	if (!m)
		return ENOMEM;
	while (nb < hint)
		nb *= 2;
	m->b = calloc(nb, sizeof(*m->b));
	if (!m->b) {
		free(m);
		return ENOMEM;
	}
	m->nb = nb;
	*mp = m;
	return 0;
}

struct hmap *hmap_free(struct hmap *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < m->nb; i++) {
		struct hmap_ent *e = m->b[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(m->b);
	free(m);
	return NULL;
}

static struct hmap_ent **find(const struct hmap *m, const char *key, uint32_t h)
{
	struct hmap_ent **pp = &m->b[h & (m->nb - 1)];

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && !strcmp((*pp)->key, key))
			return pp;
	return pp;
}

static void grow(struct hmap *m)
{
	size_t nb = m->nb * 2;
	struct hmap_ent **b = calloc(nb, sizeof(*b));

	if (!b)
		return;         /* keep working with longer chains */
	for (size_t i = 0; i < m->nb; i++) {
		struct hmap_ent *e = m->b[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
}

int hmap_set(struct hmap *m, const char *key, void *val)
{
	uint32_t h = hash_str(key);
	struct hmap_ent **pp = find(m, key, h), *e;
	size_t len;

	if (*pp) {
		(*pp)->val = val;
		return 0;
	}
	len = strlen(key) + 1;
	e = malloc(sizeof(*e) + len);
	if (!e)
		return ENOMEM;
	e->next = NULL;
	e->hash = h;
	e->val = val;
	memcpy(e->key, key, len);
	*pp = e;
	if (++m->n > m->nb)
		grow(m);
	return 0;
}

void *hmap_get(const struct hmap *m, const char *key)
{
	struct hmap_ent **pp = find(m, key, hash_str(key));

	return *pp ? (*pp)->val : NULL;
}

void *hmap_del(struct hmap *m, const char *key)
{
	struct hmap_ent **pp = find(m, key, hash_str(key)), *e = *pp;
	void *val;

	if (!e)
		return NULL;
	*pp = e->next;
	val = e->val;
	free(e);
	m->n--;
	return val;
}

size_t hmap_count(const struct hmap *m)
{
	return m->n;
}

int hmap_apply(struct hmap *m, hmap_apply_h *h, void *arg)
{
	for (size_t i = 0; i < m->nb; i++) {
		struct hmap_ent *e = m->b[i], *next;

		for (; e; e = next) {
			int r;

			next = e->next;
			r = h(e->key, e->val, arg);
			if (r)
				return r;
		}
	}
	return 0;
}
