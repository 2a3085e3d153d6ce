/*
 * b2b_blf.c: the dialog event package (RFC 4235) for busy lamp fields. An
 * authenticated agent's phone subscribes to another agent's extension
 * (SUBSCRIBE sip:102@domain, Event: dialog) and gets a NOTIFY with
 * application/dialog-info+xml at once and whenever that agent starts or
 * stops ringing or talking: a dialog in state "early" while it rings,
 * "confirmed" while it is in a call, none when it is idle or offline.
 * Subscriptions live in memory (a phone refreshes them) and end on expiry,
 * on Expires: 0, or when a NOTIFY is answered 481 or not at all.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/sip_tag.h>

#define LOG_MODULE "b2b"
#include "log.h"
#include "clk.h"
#include "conf.h"
#include "sip/b2b.h"
#include "sip/b2b_int.h"
#include "sip/registrar.h"
#include "sip/sipd.h"

#define BLF_MIN_S 60
#define BLF_MAX_S 3600

struct blf_sub {
	struct blf_sub *next;
	struct b2b *b;
	char ext[33];                   /* the agent watched */
	nta_leg_t *dlg;
	su_timer_t *tmr;                /* expiry */
	unsigned version;               /* dialog-info version, per subscription */
	unsigned pending;               /* NOTIFYs without a final answer */
	bool gone;                      /* ended: freed when nothing is pending */
};

static int blf_request(nta_leg_magic_t *magic, nta_leg_t *dlg, nta_incoming_t *irq,
		       const sip_t *sip);

static void sub_unlink(struct blf_sub *s)
{
	struct blf_sub **pp;

	for (pp = &s->b->blf; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
}

static void sub_free(struct blf_sub *s)
{
	b2b_timer_disarm(&s->tmr);
	if (s->dlg)
		nta_leg_destroy(s->dlg);
	free(s);
}

/* Ends a subscription; it is freed once its NOTIFYs have their answers. */
static void sub_end(struct blf_sub *s)
{
	if (s->gone)
		return;
	s->gone = true;
	sub_unlink(s);
	b2b_timer_disarm(&s->tmr);
	if (!s->pending)
		sub_free(s);
}

static int notify_done(nta_outgoing_magic_t *magic, nta_outgoing_t *orq,
		       const sip_t *sip)
{
	struct blf_sub *s = (struct blf_sub *)magic;
	int status = nta_outgoing_status(orq);

	(void)sip;
	if (status < 200)
		return 0;
	nta_outgoing_destroy(orq);
	s->pending--;
	if (!s->gone && (status == 481 || status == 408 || status >= 500)) {
		log_info("BLF on %s: the subscriber answered %d; subscription ended",
			 s->ext, status);
		sub_end(s);
	}
	if (s->gone && !s->pending)
		sub_free(s);
	return 0;
}

/* The dialog-info document for ext's status. */
static int dialog_info(const struct b2b *b, const struct blf_sub *s, const char *status,
		       char *buf, size_t sz)
{
	const char *state = !strcmp(status, "busy") ? "confirmed" :
			    !strcmp(status, "ringing") ? "early" : NULL;
	char dlg[200] = "";
	int n;

	if (state)
		snprintf(dlg, sizeof(dlg), "  <dialog id=\"%s\" direction=\"%s\">\r\n"
			 "    <state>%s</state>\r\n  </dialog>\r\n", s->ext,
			 !strcmp(state, "early") ? "recipient" : "initiator", state);
	n = snprintf(buf, sz, "<?xml version=\"1.0\"?>\r\n"
		     "<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" "
		     "version=\"%u\" state=\"full\" entity=\"sip:%s@%s\">\r\n%s"
		     "</dialog-info>\r\n", s->version, s->ext, b->conf->sip.domain, dlg);
	return n > 0 && (size_t)n < sz ? 0 : -1;
}

static void send_notify(struct blf_sub *s, const char *status, bool final)
{
	struct b2b *b = s->b;
	char body[600], cbuf[256];
	const char *contact = b2b_contact_of(b, cbuf, sizeof(cbuf));
	nta_outgoing_t *orq;

	if (dialog_info(b, s, status, body, sizeof(body)))
		return;
	s->version++;
	orq = nta_outgoing_tcreate(s->dlg, notify_done, (nta_outgoing_magic_t *)s, NULL,
				   SIP_METHOD_NOTIFY, NULL,
				   TAG_IF(contact, SIPTAG_CONTACT_STR(contact)),
				   SIPTAG_EVENT_STR("dialog"),
				   SIPTAG_SUBSCRIPTION_STATE_STR(final ?
					"terminated;reason=timeout" : "active"),
				   SIPTAG_CONTENT_TYPE_STR("application/dialog-info+xml"),
				   SIPTAG_PAYLOAD_STR(body), TAG_END());
	if (orq)
		s->pending++;
}

static void on_expired(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct blf_sub *s = (struct blf_sub *)arg;

	(void)m;
	(void)t;
	send_notify(s, "idle", true);
	sub_end(s);
}

/* Expires of a SUBSCRIBE, clamped; 0 ends the subscription. */
static unsigned sub_expires(const sip_t *sip)
{
	unsigned long e = sip->sip_expires ? sip->sip_expires->ex_delta : BLF_MAX_S;

	if (e == 0)
		return 0;
	return e < BLF_MIN_S ? BLF_MIN_S : e > BLF_MAX_S ? BLF_MAX_S : (unsigned)e;
}

static bool dialog_event(const sip_t *sip)
{
	return sip->sip_event && sip->sip_event->o_type &&
	       !strcasecmp(sip->sip_event->o_type, "dialog");
}

/* Answers a SUBSCRIBE (new or refresh) and sends the state. */
static int accept_sub(struct blf_sub *s, nta_incoming_t *irq, const sip_t *sip)
{
	struct b2b *b = s->b;
	unsigned exp = sub_expires(sip);
	char e[16], cbuf[256];
	const char *contact = b2b_contact_of(b, cbuf, sizeof(cbuf));

	snprintf(e, sizeof(e), "%u", exp);
	sipd_reply(b->sipd, irq, SIP_200_OK, SIPTAG_EXPIRES_STR(e),
		   TAG_IF(contact, SIPTAG_CONTACT_STR(contact)), TAG_END());
	send_notify(s, b2b_agent_status(b, s->ext), exp == 0);
	if (exp == 0)
		sub_end(s);
	else
		b2b_timer_arm(&s->tmr, b, (int64_t)exp * 1000, on_expired, s);
	return 200;
}

static int blf_request(nta_leg_magic_t *magic, nta_leg_t *dlg, nta_incoming_t *irq,
		       const sip_t *sip)
{
	struct blf_sub *s = (struct blf_sub *)magic;
	sip_method_t m = sip->sip_request->rq_method;

	(void)dlg;
	sipd_count_request(sip);
	if (s->gone) {
		sipd_reply(s->b->sipd, irq, SIP_481_NO_TRANSACTION, TAG_END());
		return 481;
	}
	if (m == sip_method_subscribe) {
		if (!dialog_event(sip)) {
			sipd_reply(s->b->sipd, irq, SIP_489_BAD_EVENT,
				   SIPTAG_ALLOW_EVENTS_STR("dialog"), TAG_END());
			return 489;
		}
		return accept_sub(s, irq, sip);
	}
	if (m == sip_method_ack) {
		nta_incoming_destroy(irq);
		return 0;
	}
	sipd_reply(s->b->sipd, irq, SIP_405_METHOD_NOT_ALLOWED,
		   SIPTAG_ALLOW_STR("SUBSCRIBE"), TAG_END());
	return 405;
}

/* A SUBSCRIBE outside any dialog. */
static int on_subscribe(void *arg, nta_incoming_t *irq, const sip_t *sip)
{
	struct b2b *b = arg;
	const char *who, *ext = sip->sip_request->rq_url->url_user;
	struct blf_sub *s;
	size_t n = 0;

	if (sip->sip_to && sip->sip_to->a_tag) {
		/* a refresh of a subscription that has ended */
		sipd_reply(b->sipd, irq, SIP_481_NO_TRANSACTION, TAG_END());
		return 481;
	}
	if (!dialog_event(sip)) {
		sipd_reply(b->sipd, irq, SIP_489_BAD_EVENT,
			   SIPTAG_ALLOW_EVENTS_STR("dialog"), TAG_END());
		return 489;
	}
	who = reg_authenticate(b->reg, irq, sip, false);
	if (!who)
		return 401;     /* challenged: sipd frees the transaction */
	if (!ext || !conf_agent_find(b->conf, ext)) {
		sipd_reply(b->sipd, irq, SIP_404_NOT_FOUND, TAG_END());
		return 404;
	}
	for (s = b->blf; s; s = s->next)
		n++;
	if (n >= (size_t)b->conf->nagents * 64 + 64) {
		sipd_reply(b->sipd, irq, SIP_503_SERVICE_UNAVAILABLE,
			   SIPTAG_RETRY_AFTER_STR("60"), TAG_END());
		return 503;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		sipd_reply(b->sipd, irq, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
		return 500;
	}
	s->b = b;
	snprintf(s->ext, sizeof(s->ext), "%s", ext);
	s->dlg = nta_leg_tcreate(sipd_agent(b->sipd), blf_request, (nta_leg_magic_t *)s,
				 SIPTAG_CALL_ID(sip->sip_call_id), SIPTAG_FROM(sip->sip_to),
				 SIPTAG_TO(sip->sip_from),
				 NTATAG_REMOTE_CSEQ(sip->sip_cseq->cs_seq), TAG_END());
	if (!s->dlg || !nta_leg_tag(s->dlg, NULL)) {
		sub_free(s);
		sipd_reply(b->sipd, irq, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
		return 500;
	}
	nta_leg_server_route(s->dlg, sip->sip_record_route, sip->sip_contact);
	nta_incoming_tag(irq, nta_leg_get_tag(s->dlg));
	s->next = b->blf;
	b->blf = s;
	log_info("BLF: %s watches %s", who, ext);
	accept_sub(s, irq, sip);
	return 200;
}

/* ext's status changed: every subscription to it gets a NOTIFY. */
void b2b_blf_status(struct b2b *b, const char *ext, const char *status)
{
	for (struct blf_sub *s = b->blf; s; s = s->next)
		if (!strcmp(s->ext, ext))
			send_notify(s, status, false);
}

void b2b_blf_init(struct b2b *b)
{
	sipd_handle(b->sipd, sip_method_subscribe, on_subscribe, b);
}

void b2b_blf_fini(struct b2b *b)
{
	if (b->sipd)
		sipd_handle(b->sipd, sip_method_subscribe, NULL, NULL);
	while (b->blf) {
		struct blf_sub *s = b->blf;

		b->blf = s->next;
		sub_free(s);
	}
}
