/*
 * hmap_basic.c: the string-keyed hash map.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>

#include "tap.h"
#include "hmap.h"

static int count_cb(const char *key, void *val, void *arg)
{
	(void)key;
	(void)val;
	(*(int *)arg)++;
	return 0;
}

static int del_odd(const char *key, void *val, void *arg)
{
	if ((long)(intptr_t)val % 2)
		hmap_del(arg, key);
	return 0;
}

int main(void)
{
	struct hmap *m = NULL;
	char key[32];
	int n = 0, bad = 0;

	ok(hmap_alloc(&m, 4) == 0 && m, "alloc");
	ok(hmap_get(m, "x") == NULL, "empty map misses");
	for (long i = 1; i <= 10000; i++) {
		snprintf(key, sizeof(key), "k%ld", i);
		if (hmap_set(m, key, (void *)(intptr_t)i))
			bad++;
	}
	is_int(bad, 0, "10000 inserts");
	is_int(hmap_count(m), 10000, "count after inserts (grew past the hint)");
	for (long i = 1; i <= 10000; i++) {
		snprintf(key, sizeof(key), "k%ld", i);
		if (hmap_get(m, key) != (void *)(intptr_t)i)
			bad++;
	}
	is_int(bad, 0, "every key finds its value");
	hmap_set(m, "k5", (void *)(intptr_t)42);
	is_int((intptr_t)hmap_get(m, "k5"), 42, "set replaces");
	is_int(hmap_count(m), 10000, "replace does not add");
	is_int((intptr_t)hmap_del(m, "k5"), 42, "del returns the value");
	ok(hmap_get(m, "k5") == NULL, "deleted key is gone");
	ok(hmap_del(m, "nope") == NULL, "del of a missing key");
	hmap_apply(m, count_cb, &n);
	is_int(n, 9999, "apply visits every entry");
	hmap_apply(m, del_odd, m);
	is_int(hmap_count(m), 5000, "apply may delete the current entry");
	ok(hmap_free(m) == NULL, "free returns NULL");
	ok(hmap_free(NULL) == NULL, "free(NULL)");
	return tap_done();
}
