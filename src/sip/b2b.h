/*
 * b2b.h: the back-to-back user agent: calls made of an inbound leg and
 * outbound branches, each its own SIP dialog (CONTRACT §3).
 */
#ifndef SIPCRM_B2B_H
#define SIPCRM_B2B_H

#include <stddef.h>
#include <sofia-sip/su_wait.h>

struct api;
struct conf;
struct crm;
struct db;
struct media;
struct reg;
struct sipd;
struct b2b;

struct b2b_deps {
	su_root_t *root;
	struct sipd *sipd;
	struct reg *reg;
	struct media *media;
	struct crm *crm;
	struct db *db;
};

int b2b_alloc(struct b2b **bp, const struct b2b_deps *deps,
	      const struct conf *conf);
/* Ends every call (BYE / final answers) and frees; NULL safe. */
struct b2b *b2b_free(struct b2b *b);
void b2b_reload(struct b2b *b, const struct conf *conf);
int b2b_api_register(struct b2b *b, struct api *api);
size_t b2b_active(const struct b2b *b);

#endif
