/*
 * registrar.h: agents' registrations (RFC 3261 §10), digest authentication
 * of agents for REGISTER and INVITE, brute-force bans and scanner drops.
 */
#ifndef SIPCRM_REGISTRAR_H
#define SIPCRM_REGISTRAR_H

#include <stdbool.h>
#include <stdint.h>
#include <sofia-sip/nta.h>
#include <sofia-sip/sip.h>
#include <sofia-sip/su_wait.h>

struct conf;
struct db;
struct sipd;
struct api;
struct reg;

/* One registered device of an agent. */
struct reg_contact {
	struct reg_contact *next;
	char *uri;              /* the Contact URI as registered */
	char *received;         /* sip:IP:PORT;transport=T it came from (NAT) */
	char *path;             /* Path header value, or NULL */
	char *instance;         /* +sip.instance, or NULL */
	int reg_id;             /* RFC 5626 reg-id, 0 when absent */
	char *user_agent;
	char *call_id;
	uint32_t cseq;
	unsigned q1000;         /* q times 1000 */
	int64_t expires;        /* absolute, Unix seconds */
};

int reg_alloc(struct reg **rp, su_root_t *root, struct sipd *sipd,
	      struct db *db, const struct conf *conf);
struct reg *reg_free(struct reg *r);

/* Applies a new config: agents removed lose their registrations. */
void reg_reload(struct reg *r, const struct conf *conf);

/* Adds GET /api/v1/agents. */
int reg_api_register(struct reg *r, struct api *api);

/* The agent's live contacts (a list; NULL when offline). */
const struct reg_contact *reg_contacts(const struct reg *r, const char *ext);

/*
 * Authenticates an agent's request (INVITE, REFER, ...). Returns the
 * agent's extension when the request carries valid credentials. Otherwise
 * it has replied (401/407 challenge) or dropped the request (banned source)
 * and returns NULL. proxy selects 407/Proxy-Authenticate.
 */
const char *reg_authenticate(struct reg *r, nta_incoming_t *irq,
			     const sip_t *sip, bool proxy);

/* Called when an agent goes from no contact to some, or back. */
typedef void (reg_status_h)(const char *ext, bool online, void *arg);
void reg_on_status(struct reg *r, reg_status_h *h, void *arg);

/*
 * Tells the registrar how busy an agent is ("ringing", "busy") or NULL
 * when the calls do not involve the agent; the call core sets it.
 */
typedef const char *(reg_activity_h)(const char *ext, void *arg);
void reg_on_activity(struct reg *r, reg_activity_h *h, void *arg);

/* offline | idle | ringing | busy */
const char *reg_agent_status(const struct reg *r, const char *ext);

/*
 * A Contact's q parameter (RFC 3261 qvalue, "0" to "1") times 1000: 1000
 * when absent, unparsable or NaN; clamped to 0..1000 otherwise.
 */
unsigned reg_q1000(const char *q);

/* Drops expired contacts now (the periodic timer does this every second). */
void reg_expire(struct reg *r);

#endif
