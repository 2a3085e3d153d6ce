/*
 * sipd.h: the nta agent: listeners, the default leg, and per-method
 * dispatch of out-of-dialog requests to the registrar and the B2BUA.
 */
#ifndef SIPCRM_SIPD_H
#define SIPCRM_SIPD_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sofia-sip/nta.h>
#include <sofia-sip/sip.h>
#include <sofia-sip/su_wait.h>

struct conf;
struct sipd;

/*
 * Handles an out-of-dialog request. Returns as an nta leg callback does:
 * 0 keeps the transaction (the handler replies later with
 * nta_incoming_treply), a status >= 200 after the handler has replied
 * (or for nta to reply with that status).
 */
typedef int (sipd_request_h)(void *arg, nta_incoming_t *irq, const sip_t *sip);

/* Binds every [sip] listen address. err gets a readable reason. */
int sipd_alloc(struct sipd **sp, su_root_t *root, const struct conf *conf,
	       char *err, size_t errsz);
/* Destroys the agent (and every transaction); NULL safe. */
struct sipd *sipd_free(struct sipd *s);

/* Applies what can change at SIGHUP (Server header, domain). */
void sipd_reload(struct sipd *s, const struct conf *conf);

/*
 * Decides, before any transaction exists, whether to drop a request
 * without an answer (banned sources, scanners). Returns true to drop.
 */
typedef bool (sipd_filter_h)(void *arg, msg_t *msg, const sip_t *sip);
void sipd_set_filter(struct sipd *s, sipd_filter_h *h, void *arg);

/* Sends requests of method to h. name is used for unknown methods. */
void sipd_handle(struct sipd *s, sip_method_t method, sipd_request_h *h,
		 void *arg);

nta_agent_t *sipd_agent(const struct sipd *s);
/* The configured Server header text, or NULL. */
const char *sipd_server(const struct sipd *s);

/*
 * Replies with the common headers (Server, Allow on 405/OPTIONS) and
 * counts the response in the metrics. tags as for nta_incoming_treply.
 */
int sipd_reply(struct sipd *s, nta_incoming_t *irq, int status,
	       const char *phrase, tag_type_t tag, tag_value_t value, ...);

/* The source address of a received request; 0 or EINVAL. */
int sipd_source(nta_incoming_t *irq, struct sockaddr_storage *ss,
		socklen_t *lenp);
/* An address as text (no port; v4-mapped shown as IPv4). */
const char *sipd_addr_str(const struct sockaddr_storage *ss, char *buf, size_t sz);
/* The source address as text (no port), for logs. */
const char *sipd_source_str(nta_incoming_t *irq, char *buf, size_t sz);

/* Counts one request of this method in the metrics. */
void sipd_count_request(const sip_t *sip);

/* An option tag of Require that sipcrm does not know, or NULL. */
const char *sipd_unsupported(const sip_t *sip);

#define SIPD_ALLOW "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, REFER, " \
		   "NOTIFY, INFO, UPDATE, PRACK, SUBSCRIBE"

#endif
