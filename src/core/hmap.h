/*
 * hmap.h: a string-keyed hash map with chaining, growing by doubling.
 * Keys are copied; values are borrowed pointers.
 */
#ifndef SIPCRM_HMAP_H
#define SIPCRM_HMAP_H

#include <stddef.h>

struct hmap;

int hmap_alloc(struct hmap **mp, size_t hint);
/* Frees the map, not the values; NULL safe. */
struct hmap *hmap_free(struct hmap *m);

/* Sets key to val, replacing any old value. 0 or ENOMEM. */
int hmap_set(struct hmap *m, const char *key, void *val);
void *hmap_get(const struct hmap *m, const char *key);
/* Removes key; returns its value or NULL. */
void *hmap_del(struct hmap *m, const char *key);
size_t hmap_count(const struct hmap *m);

/*
 * Calls h for each entry; h may delete the current entry (only that one).
 * Stops early when h returns non-zero, and returns that value.
 */
typedef int (hmap_apply_h)(const char *key, void *val, void *arg);
int hmap_apply(struct hmap *m, hmap_apply_h *h, void *arg);

#endif
