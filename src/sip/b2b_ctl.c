/*
 * b2b_ctl.c: call control. Transfers (REFER from a phone, blind or with
 * Replaces; or from the API), click-to-call, and hangup from the API.
 *
 * A transfer replaces the callee side (SIDE_OUT) of an answered call: the
 * customer stays on the caller's side, the target is rung on a relay port
 * of its own, and on its answer the customer is bridged to it, the old
 * leg gets BYE, and the new leg becomes the call's winner. The customer
 * hears ringback meanwhile. Until then the old leg is kept, so that a
 * target that fails hands the customer back (REFER and attended API
 * transfers); a blind API transfer drops the agent at once.
 *
 * Click-to-call rings the agent's phones first (the client's number as
 * caller); the agent's answered branch then stands for the caller's side
 * (c->in_leg), and the client is dialled through the trunk like any
 * outbound call.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/sip_tag.h>
#include <sofia-sip/url.h>

#define LOG_MODULE "b2b"
#include "log.h"
#include "clk.h"
#include "conf.h"
#include "hmap.h"
#include "metrics.h"
#include "crm/crm.h"
#include "crm/normalize.h"
#include "http/api.h"
#include "sip/b2b.h"
#include "sip/b2b_int.h"
#include "sip/registrar.h"
#include "sip/sipd.h"

struct xfer {
	media_ep_t ep;
	uint16_t port;
	char offer[1024];               /* our SDP to the target */
	char by[33];                    /* the transferring agent */
	char target[64];
	const char *mode;               /* "blind" or "attended" */
	nta_leg_t *notify_dlg;          /* REFER: NOTIFYs go into this dialog */
	struct leg *old;                /* the transferor's leg (SIDE_OUT) */
	bool old_gone;                  /* it has ended */
	su_timer_t *tmr;
};

/* ---- NOTIFY (RFC 3515) --------------------------------------------------------- */

static int notify_done(nta_outgoing_magic_t *magic, nta_outgoing_t *orq,
		       const sip_t *sip)
{
	struct call *c = (struct call *)magic;

	(void)sip;
	if (nta_outgoing_status(orq) < 200)
		return 0;
	nta_outgoing_destroy(orq);
	c->pending--;
	b2b_call_maybe_free(c);
	return 0;
}

/* The transfer's progress as message/sipfrag into the REFER's dialog. */
static void notify(struct call *c, nta_leg_t *dlg, int status, const char *phrase,
		   bool final)
{
	char frag[128], cbuf[256];
	const char *contact = b2b_contact(c, cbuf, sizeof(cbuf));
	nta_outgoing_t *orq;

	if (!dlg)
		return;
	snprintf(frag, sizeof(frag), "SIP/2.0 %d %s\r\n", status,
		 phrase && *phrase ? phrase : sip_status_phrase(status) ?
		 sip_status_phrase(status) : "Unknown");
	orq = nta_outgoing_tcreate(dlg, notify_done, (nta_outgoing_magic_t *)c, NULL,
				   SIP_METHOD_NOTIFY, NULL,
				   TAG_IF(contact, SIPTAG_CONTACT_STR(contact)),
				   SIPTAG_EVENT_STR("refer"),
				   SIPTAG_SUBSCRIPTION_STATE_STR(final ?
					"terminated;reason=noresource" :
					"active;expires=60"),
				   SIPTAG_CONTENT_TYPE_STR("message/sipfrag;version=2.0"),
				   SIPTAG_PAYLOAD_STR(frag), TAG_END());
	if (orq)
		c->pending++;
}

/* ---- transfers ------------------------------------------------------------------- */

void b2b_xfer_free(struct call *c)
{
	struct xfer *x = c->xfer;

	if (!x)
		return;
	c->xfer = NULL;
	b2b_timer_disarm(&x->tmr);
	if (x->ep != MEDIA_EP_NONE && x->ep != c->ep_out)
		media_ep_free(c->b2b->media, x->ep);
	free(x);
}

/* The target did not answer: the customer goes back, or the call ends. */
static void xfer_failed(struct call *c, int status, const char *phrase)
{
	struct xfer *x = c->xfer;

	log_info("call %s: transfer to %s failed (%d)", c->id, x->target, status);
	b2b_cancel_role(c, LEG_XFER, NULL);
	notify(c, x->notify_dlg, status, phrase, true);
	if (!x->old_gone && c->winner == x->old) {
		/* back to the transferring agent (its phone takes it off hold) */
		media_bridge(c->b2b->media, c->ep_in, c->ep_out);
		b2b_xfer_free(c);
		return;
	}
	b2b_xfer_free(c);
	b2b_send_bye(c, c->in_dlg);
	b2b_call_end(c, "answered");
}

static void on_xfer_timeout(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct call *c = (struct call *)arg;

	(void)m;
	(void)t;
	if (c->xfer)
		xfer_failed(c, 408, "Request Timeout");
}

/* The target answered: the customer is bridged to it, the old leg ends. */
static void xfer_answered(struct call *c, struct leg *l, const sip_t *sip)
{
	struct xfer *x = c->xfer;
	struct leg *old = c->winner;
	struct msdp_info info;

	b2b_leg_answer_ack(l, sip);
	if (!x || c->ending || !sip->sip_payload ||
	    msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
		       c->conf->media.codecs, &info) ||
	    b2b_srtp_check(c, l->savp && c->conf->media.srtp == CONF_SRTP_REQUIRE,
			   &info)) {
		b2b_log_sdp(c, "the transfer target's answer cannot be used", sip);
		b2b_send_bye(c, l->dlg);
		if (x && !c->ending)
			xfer_failed(c, 488, "Not Acceptable Here");
		return;
	}
	b2b_timer_disarm(&x->tmr);
	b2b_cancel_role(c, LEG_XFER, l);
	/* the old leg stops counting as its agent's call */
	b2b_act_busy(c, false, false);
	if (old && !x->old_gone) {
		notify(c, x->notify_dlg, 200, "OK", true);
		b2b_send_bye(c, old->dlg);
	}
	if (old)
		old->ended_ms = clk_wall_ms();
	media_ep_free(c->b2b->media, c->ep_out);
	c->ep_out = x->ep;
	c->port_out = x->port;
	snprintf(c->out_offer, sizeof(c->out_offer), "%s", x->offer);
	c->winner = l;
	l->answered_ms = clk_wall_ms();
	b2b_side_reset(c, SIDE_OUT);
	c->side[SIDE_OUT].ver = 1;
	b2b_side_take_leg(c, SIDE_OUT, l);
	b2b_side_secure(c, SIDE_OUT);
	b2b_apply_peer(c, SIDE_OUT, &info);
	b2b_se_response(c, SIDE_OUT, sip);
	media_bridge(c->b2b->media, c->ep_in, c->ep_out);
	b2b_rec_segment(c);
	b2b_act_leg(l, false);
	b2b_act_busy(c, false, true);
	if (*l->agent) {
		if (!*c->first_agent)
			snprintf(c->first_agent, sizeof(c->first_agent), "%s", l->agent);
		snprintf(c->last_agent, sizeof(c->last_agent), "%s", l->agent);
	}
	b2b_ev_transferred(c, *l->agent ? l->agent : x->target, x->by, x->mode);
	log_info("call %s: transferred to %s (%s, by %s)", c->id, l->uri, x->mode,
		 *x->by ? x->by : "the API");
	x->ep = MEDIA_EP_NONE;
	b2b_xfer_free(c);
	b2b_se_start(c, SIDE_OUT);
	/* the customer was put on hold before the transfer: take it off */
	if (c->side[SIDE_IN].sent_mode != MSDP_SENDRECV)
		b2b_side_reoffer(c, SIDE_IN, MSDP_SENDRECV);
}

/*
 * Starts ringing to (an extension, a number for the trunk, or a SIP URI).
 * Returns 0, or a SIP status for the failure.
 */
static int xfer_ring(struct call *c, struct xfer *x, const char *to)
{
	const struct conf *cf = c->conf;
	char uri[ROUTE_URI_MAX + 64], num[CRM_E164_SIZE];
	struct leg *l;
	int pts[2], npts = 0;

	for (size_t i = 0; i < cf->media.ncodecs && npts < 2; i++)
		pts[npts++] = cf->media.codec_order[i] == CONF_CODEC_PCMA ? 8 : 0;
	if (msdp_build(x->offer, sizeof(x->offer), cf->media.ip, x->port, pts,
		       (size_t)npts, 101, MSDP_SENDRECV, c->sess_id, 1) < 0)
		return 500;
	if (conf_agent_find(cf, to))
		return b2b_ring_agent(c, to, LEG_XFER, x->offer, NULL) ? 0 : 480;
	if (!strncasecmp(to, "sip:", 4) || !strncasecmp(to, "sips:", 5)) {
		snprintf(uri, sizeof(uri), "%s", to);
		l = b2b_leg_new(c, uri, NULL, NULL);
	}
	else {
		if (!cf->ntrunks || crm_normalize(to, cf->crm.country_code, num, sizeof(num)))
			return 404;
		/* an agent's REFER is held to the agent's dial plan */
		if (*x->by && !b2b_dial_allowed(cf, conf_agent_find(cf, x->by), num)) {
			log_warn("call %s: agent %s may not transfer to %s ([routing] "
				 "agent_dial)", c->id, x->by, num);
			return 403;
		}
		b2b_trunk_uri(c, num[0] == '+' ? num : to, uri, sizeof(uri));
		l = b2b_leg_new(c, uri, NULL, NULL);
		if (l) {
			l->trunk = &cf->trunks[0];
			/* the provider sees the company's number */
			if (*cf->trunks[0].caller_id)
				l->from_user = cf->trunks[0].caller_id;
		}
	}
	if (!l)
		return 500;
	l->role = LEG_XFER;
	l->offer = x->offer;
	return b2b_leg_invite(c, l) ? 500 : 0;
}

/*
 * Transfers the callee side of an answered call to `to`. by: the agent
 * asking; notify_dlg: the REFER's dialog, or NULL from the API; drop: end
 * the agent's leg now (blind from the API). Returns 0 or a SIP status.
 */
static int xfer_start(struct call *c, const char *to, const char *mode,
		      const char *by, nta_leg_t *notify_dlg, bool drop)
{
	struct xfer *x;
	int status;

	if (c->xfer)
		return 491;
	x = calloc(1, sizeof(*x));
	if (!x)
		return 500;
	if (media_ep_alloc(c->b2b->media, &x->ep, &x->port)) {
		free(x);
		return 503;
	}
	snprintf(x->by, sizeof(x->by), "%s", by ? by : "");
	snprintf(x->target, sizeof(x->target), "%s", to);
	x->mode = mode;
	x->notify_dlg = notify_dlg;
	x->old = c->winner;
	c->xfer = x;
	status = xfer_ring(c, x, to);
	if (status) {
		b2b_cancel_role(c, LEG_XFER, NULL);
		b2b_xfer_free(c);
		return status;
	}
	/* the customer hears ringback while the target rings */
	media_unbridge(c->b2b->media, c->ep_in);
	media_ep_play(c->b2b->media, c->ep_in, NULL, c->b2b->ringback);
	b2b_timer_arm(&x->tmr, c->b2b, c->conf->routing.transfer_ring_ms > 0 ?
		      c->conf->routing.transfer_ring_ms : 30000, on_xfer_timeout, c);
	if (drop && x->old) {
		b2b_send_bye(c, x->old->dlg);
		x->old_gone = true;
		b2b_act_busy(c, false, false);
	}
	log_info("call %s: %s transfer to %s by %s", c->id, mode, to,
		 by && *by ? by : "the API");
	return 0;
}

bool b2b_xfer_bye(struct call *c, struct leg *l)
{
	struct xfer *x = c->xfer;

	if (!x || !l || l != x->old || x->old_gone)
		return false;
	/* the transferor hangs up after REFER: the transfer goes on */
	x->old_gone = true;
	x->notify_dlg = NULL;
	l->ended_ms = clk_wall_ms();
	b2b_act_busy(c, false, false);
	return true;
}

/* Replaces=callid;to-tag=..;from-tag=.. (RFC 3891), URL-escaped in Refer-To. */
static bool replaces_callid(const url_t *u, char *out, size_t sz)
{
	char buf[512];
	const char *h = u->url_headers, *p;
	size_t n;

	if (!h)
		return false;
	p = strcasestr(h, "Replaces=");
	if (!p)
		return false;
	p += 9;
	n = strcspn(p, "&");
	if (n >= sizeof(buf))
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	url_unescape(buf, buf);
	n = strcspn(buf, ";");
	if (!n || n >= sz)
		return false;
	memcpy(out, buf, n);
	out[n] = '\0';
	return true;
}

/*
 * Attended transfer: the agent's consultation call y (the agent is its
 * caller) is joined with the customer of c; both of the agent's legs end.
 */
static void join(struct call *c, struct call *y, const char *by)
{
	struct leg *b = y->winner, **pp;
	struct leg *old = c->winner;

	/* the customer's side stays; y's callee becomes c's */
	for (pp = &y->legs; *pp && *pp != b; pp = &(*pp)->next)
		;
	if (!*pp)
		return;
	*pp = b->next;
	b->next = c->legs;
	c->legs = b;
	b->call = c;
	b->idx = c->nlegs++;
	/* the agent leaves both calls */
	b2b_act_busy(c, false, false);
	if (old)
		old->ended_ms = clk_wall_ms();
	b2b_send_bye(c, old ? old->dlg : NULL);
	b2b_send_bye(y, y->in_dlg);
	/* the callee's relay port moves with it */
	media_ep_free(c->b2b->media, c->ep_out);
	c->ep_out = y->ep_out;
	c->port_out = y->port_out;
	y->ep_out = MEDIA_EP_NONE;
	memcpy(c->out_offer, y->out_offer, sizeof(c->out_offer));
	b2b_side_reset(c, SIDE_OUT);
	c->side[SIDE_OUT].ver = y->side[SIDE_OUT].ver;
	c->side[SIDE_OUT].se_ms = y->side[SIDE_OUT].se_ms;
	c->side[SIDE_OUT].we_refresh = y->side[SIDE_OUT].we_refresh;
	c->side[SIDE_OUT].allow_update = y->side[SIDE_OUT].allow_update;
	c->side[SIDE_OUT].timer_feature = y->side[SIDE_OUT].timer_feature;
	c->side[SIDE_OUT].sent_mode = y->side[SIDE_OUT].sent_mode;
	c->side[SIDE_OUT].savp = y->side[SIDE_OUT].savp;
	c->side[SIDE_OUT].srtp_required = y->side[SIDE_OUT].srtp_required;
	c->side[SIDE_OUT].nsdes = y->side[SIDE_OUT].nsdes;
	memcpy(c->side[SIDE_OUT].sdes, y->side[SIDE_OUT].sdes, sizeof(c->side[SIDE_OUT].sdes));
	if (y->side[SIDE_OUT].have_cur)
		b2b_apply_peer(c, SIDE_OUT, &y->side[SIDE_OUT].cur);
	b2b_side_reset(y, SIDE_OUT);
	c->winner = b;
	y->winner = NULL;
	/* the callee's "busy" moves from y to c without a flicker */
	c->act_winner = y->act_winner;
	y->act_winner = false;
	media_bridge(c->b2b->media, c->ep_in, c->ep_out);
	b2b_rec_segment(c);
	if (*b->agent) {
		snprintf(c->last_agent, sizeof(c->last_agent), "%s", b->agent);
		if (!*c->first_agent)
			snprintf(c->first_agent, sizeof(c->first_agent), "%s", b->agent);
	}
	b2b_ev_transferred(c, *b->agent ? b->agent : y->to, by, "attended");
	log_info("call %s: joined with %s's callee %s (attended transfer by %s)",
		 c->id, y->id, b->uri, by);
	b2b_call_end(y, "answered");
	b2b_se_start(c, SIDE_OUT);
	if (c->side[SIDE_IN].sent_mode != MSDP_SENDRECV)
		b2b_side_reoffer(c, SIDE_IN, MSDP_SENDRECV);
	if (c->side[SIDE_OUT].sent_mode != MSDP_SENDRECV)
		b2b_side_reoffer(c, SIDE_OUT, MSDP_SENDRECV);
}

int b2b_refer(struct call *c, struct leg *l, nta_incoming_t *irq, const sip_t *sip)
{
	struct b2b *b = c->b2b;
	int side = b2b_side_of(c, l);
	const url_t *u = sip->sip_refer_to ? sip->sip_refer_to->r_url : NULL;
	char to[64], cid[128], cbuf[256];
	const char *contact = b2b_contact(c, cbuf, sizeof(cbuf));
	const char *user;
	struct call *y;
	int status;

	if (c->state != CALL_ANSWERED || c->ending || (l && l != c->winner)) {
		sipd_reply(b->sipd, irq, SIP_481_NO_TRANSACTION, TAG_END());
		return 481;
	}
	if (side == SIDE_IN) {
		/* the trunk (or a click-to-call's agent): not a transfer point */
		log_info("call %s: REFER from the caller's side refused", c->id);
		sipd_reply(b->sipd, irq, SIP_403_FORBIDDEN, TAG_END());
		return 403;
	}
	if (!u || !u->url_scheme) {
		sipd_reply(b->sipd, irq, 400, "Missing Refer-To", TAG_END());
		return 400;
	}
	if (c->xfer) {
		sipd_reply(b->sipd, irq, SIP_491_REQUEST_PENDING, TAG_END());
		return 491;
	}
	if (replaces_callid(u, cid, sizeof(cid))) {
		y = b2b_call_find(b, cid);
		if (!y || y == c || y->state != CALL_ANSWERED || !y->winner ||
		    strcmp(y->caller_agent, l->agent)) {
			log_info("call %s: REFER with Replaces names no call of %s",
				 c->id, l->agent);
			sipd_reply(b->sipd, irq, SIP_481_NO_TRANSACTION, TAG_END());
			return 481;
		}
		sipd_reply(b->sipd, irq, SIP_202_ACCEPTED,
			   TAG_IF(contact, SIPTAG_CONTACT_STR(contact)), TAG_END());
		notify(c, l->dlg, 200, "OK", true);
		join(c, y, l->agent);
		return 202;
	}
	/* sip:102@host, sip:+7916...@host or tel:+7916... */
	user = u->url_user && *u->url_user ? u->url_user : u->url_type == url_tel ?
	       u->url_host : NULL;
	if (!user || !*user || strlen(user) >= sizeof(to)) {
		sipd_reply(b->sipd, irq, 400, "Bad Refer-To", TAG_END());
		return 400;
	}
	snprintf(to, sizeof(to), "%s", user);
	status = xfer_start(c, to, "blind", l->agent, l->dlg, false);
	if (status) {
		sipd_reply(b->sipd, irq, status, NULL, TAG_END());
		return status;
	}
	sipd_reply(b->sipd, irq, SIP_202_ACCEPTED,
		   TAG_IF(contact, SIPTAG_CONTACT_STR(contact)), TAG_END());
	notify(c, l->dlg, 100, "Trying", false);
	return 202;
}

/* ---- click-to-call ------------------------------------------------------------------ */

static void c2c_dial(struct call *c);

void b2b_ctl_leg_answered(struct call *c, struct leg *l, const sip_t *sip)
{
	struct msdp_info info;

	if (l->role == LEG_XFER) {
		xfer_answered(c, l, sip);
		return;
	}
	/* LEG_C2C_AGENT */
	b2b_leg_answer_ack(l, sip);
	if (c->in_leg || c->ending || !sip->sip_payload ||
	    msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
		       c->conf->media.codecs, &info) ||
	    b2b_srtp_check(c, l->savp && c->conf->media.srtp == CONF_SRTP_REQUIRE,
			   &info)) {
		nta_leg_t *dlg = l->dlg;

		if (!c->in_leg && !c->ending)
			b2b_log_sdp(c, "the agent's answer cannot be used", sip);
		b2b_send_bye(c, dlg);
		if (!c->in_leg && !c->ending) {
			b2b_cancel_role(c, LEG_C2C_AGENT, NULL);
			b2b_call_end(c, "failed");
		}
		return;
	}
	b2b_timer_disarm(&c->tmr_fork);
	b2b_cancel_role(c, LEG_C2C_AGENT, l);
	b2b_act_leg(l, false);
	c->in_leg = l;
	c->in_dlg = l->dlg;
	c->in_sdp = info;
	b2b_side_take_leg(c, SIDE_IN, l);
	b2b_side_secure(c, SIDE_IN);
	b2b_apply_peer(c, SIDE_IN, &info);
	b2b_se_response(c, SIDE_IN, sip);
	b2b_se_start(c, SIDE_IN);
	b2b_act_busy(c, true, true);
	log_info("call %s: agent %s answered its click-to-call, dialling %s", c->id,
		 c->caller_agent, c->to);
	c2c_dial(c);
}

void b2b_ctl_leg_failed(struct call *c, struct leg *l, int status, const char *phrase)
{
	bool ringing = false;

	for (const struct leg *o = c->legs; o; o = o->next)
		if (o->role == l->role && o->status < 200 && !o->cancelled)
			ringing = true;
	if (ringing)
		return;
	if (l->role == LEG_XFER) {
		if (c->xfer && c->state == CALL_ANSWERED)
			xfer_failed(c, status, phrase);
		return;
	}
	if (!c->in_leg) {
		log_info("call %s: agent %s did not take its click-to-call (%d)", c->id,
			 c->caller_agent, status);
		b2b_timer_disarm(&c->tmr_fork);
		b2b_call_end(c, status == 486 || status == 600 || status == 603 ?
			     "busy" : "missed");
	}
}

static void on_c2c_timeout(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct call *c = (struct call *)arg;

	(void)m;
	(void)t;
	if (c->in_leg || c->ending)
		return;
	log_info("call %s: agent %s did not answer its click-to-call", c->id,
		 c->caller_agent);
	b2b_cancel_role(c, LEG_C2C_AGENT, NULL);
	b2b_call_end(c, "missed");
}

/* The agent is on: the client is dialled through the trunk. */
static void c2c_dial(struct call *c)
{
	/* the agent hears ringback until the provider's early media */
	media_ep_play(c->b2b->media, c->ep_in, NULL, c->b2b->ringback);
	c->state = CALL_EARLY;
	b2b_route(c);
}

static int c2c_start(void *arg, const char *agent, const char *number,
		     const char *caller_id, const char *crm_ref, char call_id[40])
{
	struct b2b *b = arg;
	const struct conf *cf = b->conf;
	const struct conf_trunk *t = cf->ntrunks ? &cf->trunks[0] : NULL;
	char num[CRM_E164_SIZE];
	struct call *c;
	const char *host;

	(void)crm_ref;
	if (!agent || !conf_agent_find(cf, agent))
		return ENOENT;
	if (!reg_contacts(b->reg, agent) && !*cf->pbx.extension_uri)
		return EHOSTDOWN;
	if (!number || crm_normalize(number, cf->crm.country_code, num, sizeof(num)) ||
	    !t)
		return EINVAL;
	if (caller_id && *caller_id && !conf_did_find(cf, caller_id))
		return EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return ENOMEM;
	c->b2b = b;
	c->dir = ROUTE_OUTBOUND;
	c->conf = conf_ref(b->conf);
	c->started_ms = clk_wall_ms();
	c->ep_in = c->ep_out = MEDIA_EP_NONE;
	c->sess_id = (uint64_t)c->started_ms & 0x7fffffffffffffffULL;
	b2b_side_init(c);
	do
		b2b_new_id(c->id);
	while (hmap_get(b->calls, c->id));
	snprintf(c->caller_agent, sizeof(c->caller_agent), "%s", agent);
	snprintf(c->c2c_number, sizeof(c->c2c_number), "%s", num);
	snprintf(c->to, sizeof(c->to), "%s", num);
	snprintf(c->from, sizeof(c->from), "%s", caller_id && *caller_id ? caller_id :
		 *t->caller_id ? t->caller_id : agent);
	host = b2b_trunk_host(t->uri);
	snprintf(c->from_host, sizeof(c->from_host), "%.*s", (int)strcspn(host, ";?>"),
		 host);
	route_settings(c->conf, NULL, &c->set);
	if (hmap_set(b->calls, c->id, c)) {
		conf_deref(c->conf);
		free(c);
		return ENOMEM;
	}
	metrics_gauge_add(b->m_active, 1);
	if (media_ep_alloc(b->media, &c->ep_in, &c->port_in) ||
	    media_ep_alloc(b->media, &c->ep_out, &c->port_out) ||
	    b2b_build_sdp(c, SIDE_IN, -1, 101, MSDP_SENDRECV)) {
		b2b_call_end(c, "failed");
		return EAGAIN;
	}
	b2b_ev_started(c);
	/* the agent's phones show the client's number */
	if (!b2b_ring_agent(c, agent, LEG_C2C_AGENT, c->in_answer, c->c2c_number)) {
		b2b_call_end(c, "failed");
		return EHOSTDOWN;
	}
	b2b_timer_arm(&c->tmr_fork, b, cf->routing.c2c_ring_ms > 0 ?
		      cf->routing.c2c_ring_ms : 30000, on_c2c_timeout, c);
	memcpy(call_id, c->id, 40);
	log_info("call %s: click-to-call, agent %s to %s", c->id, agent, num);
	return 0;
}

/* ---- the API ---------------------------------------------------------------------------- */

static struct call *api_call_of(struct api_req *req, struct b2b *b)
{
	const char *id = api_req_patharg(req, 0);
	struct call *c = id ? hmap_get(b->calls, id) : NULL;

	return c && !c->ending ? c : NULL;
}

static int api_hangup(struct api_req *req, void *arg)
{
	struct b2b *b = arg;
	struct call *c = api_call_of(req, b);
	json_t *body = api_req_json(req);
	const char *leg = json_string_value(json_object_get(body, "leg"));
	int status;

	if (!c)
		return api_reply_error(req, 404, "no such call");
	if (leg && strcmp(leg, "agent"))
		return api_reply_error(req, 400, "leg must be \"agent\"");
	if (leg) {
		/* the agent leaves; the customer goes on along the fallback */
		if (c->dir != ROUTE_INBOUND || c->state != CALL_ANSWERED || !c->winner)
			return api_reply_error(req, 409, "only an answered inbound call "
					       "has an agent leg to end");
		if (!*c->set.fallback)
			return api_reply_error(req, 409, "no fallback to continue to");
		status = xfer_start(c, c->set.fallback, "blind", "", NULL, true);
		if (status)
			return api_reply_error(req, status == 491 ? 409 : 502,
					       "cannot reach the fallback (%d)", status);
		return api_reply_json(req, 202, json_pack("{s:s, s:s}", "call_id", c->id,
							  "status", "agent leg ended"));
	}
	log_info("call %s: hangup from the API", c->id);
	if (c->state >= CALL_ANSWERED) {
		b2b_send_bye(c, c->winner ? c->winner->dlg : NULL);
		b2b_send_bye(c, c->in_dlg);
		b2b_call_end(c, "answered");
	}
	else if (c->in_irq) {
		b2b_call_failed(c, 480, "Hung Up");
	}
	else {
		b2b_call_end(c, "cancelled");
	}
	return api_reply_json(req, 200, json_pack("{s:s, s:s}", "call_id", c->id,
						  "status", "ended"));
}

static int api_transfer(struct api_req *req, void *arg)
{
	struct b2b *b = arg;
	struct call *c = api_call_of(req, b);
	json_t *body = api_req_json(req);
	const char *to = json_string_value(json_object_get(body, "to"));
	const char *mode = json_string_value(json_object_get(body, "mode"));
	bool attended;
	int status;

	if (!c)
		return api_reply_error(req, 404, "no such call");
	if (!to || !*to || strlen(to) >= 64)
		return api_reply_error(req, 400, "\"to\" is expected: an extension or a number");
	if (mode && strcmp(mode, "blind") && strcmp(mode, "attended"))
		return api_reply_error(req, 400, "mode is \"blind\" or \"attended\"");
	attended = mode && !strcmp(mode, "attended");
	if (c->state != CALL_ANSWERED || !c->winner)
		return api_reply_error(req, 409, "the call is not answered");
	if (c->xfer)
		return api_reply_error(req, 409, "a transfer is under way");
	status = xfer_start(c, to, attended ? "attended" : "blind",
			    c->winner->agent, NULL, !attended);
	if (status == 404 || status == 480)
		return api_reply_error(req, status == 404 ? 400 : 409,
				       "cannot reach %s (%d)", to, status);
	if (status)
		return api_reply_error(req, 500, "transfer failed (%d)", status);
	return api_reply_json(req, 202, json_pack("{s:s, s:s, s:s}", "call_id", c->id,
						  "to", to, "mode", attended ? "attended" :
						  "blind"));
}

static int api_click_to_call(struct api_req *req, void *arg)
{
	struct b2b *b = arg;
	json_t *body = api_req_json(req);
	const char *agent = json_string_value(json_object_get(body, "agent"));
	const char *to = json_string_value(json_object_get(body, "to"));
	const char *cid = json_string_value(json_object_get(body, "caller_id"));
	char id[40];
	int e;

	if (!json_is_object(body))
		return api_reply_error(req, 400, "a JSON object is expected");
	if (!agent || !to)
		return api_reply_error(req, 400, "\"agent\" and \"to\" are expected");
	e = c2c_start(b, agent, to, cid, NULL, id);
	switch (e) {
	case 0:
		return api_reply_json(req, 202, json_pack("{s:s}", "call_id", id));
	case ENOENT:
		return api_reply_error(req, 404, "no agent %s", agent);
	case EHOSTDOWN:
		return api_reply_error(req, 409, "agent %s is offline", agent);
	case EINVAL:
		return api_reply_error(req, 400, cid && *cid ? "not a number, or caller_id "
				       "is not one of the DIDs" : "not a phone number: %s", to);
	default:
		return api_reply_error(req, 503, "cannot place the call now");
	}
}

int b2b_ctl_register(struct b2b *b, struct api *api)
{
	crm_on_click_to_call(b->crm, c2c_start, b);
	return api_route(api, "POST", "/api/v1/calls", true, api_click_to_call, b) ||
	       api_route(api, "POST", "/api/v1/calls/*/hangup", true, api_hangup, b) ||
	       api_route(api, "POST", "/api/v1/calls/*/transfer", true, api_transfer, b);
}
