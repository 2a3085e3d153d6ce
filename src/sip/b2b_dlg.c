/*
 * b2b_dlg.c: a call after its dialogs exist. Requests inside either dialog
 * (BYE, re-INVITE, UPDATE, OPTIONS, INFO), offers relayed from one side to
 * the other with the SDP rewritten to the relay (hold and unhold), glare
 * (RFC 3261 §14: 491 and 500), and one session timer per side (RFC 4028):
 * sipcrm refreshes the sides where it is the refresher and ends the call
 * when a side that should refresh goes quiet.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/sip_tag.h>

#define LOG_MODULE "b2b"
#include "log.h"
#include "db.h"
#include "conf.h"
#include "sip/b2b.h"
#include "sip/b2b_int.h"
#include "sip/msdp.h"
#include "sip/sipd.h"

static const char *const side_names[] = { "caller", "callee" };

static void se_arm(struct side *sd);

/* ---- the two sides ----------------------------------------------------------- */

void b2b_side_init(struct call *c)
{
	for (int i = 0; i < 2; i++) {
		c->side[i].call = c;
		c->side[i].idx = i;
		c->side[i].ver = 1;
	}
}

nta_leg_t *b2b_side_dlg(const struct call *c, int side)
{
	if (side == SIDE_IN)
		return c->in_dlg;
	return c->winner ? c->winner->dlg : NULL;
}

static char *side_sdp(struct call *c, int side)
{
	return side == SIDE_IN ? c->in_answer : c->out_offer;
}

static size_t side_sdp_size(const struct call *c, int side)
{
	return side == SIDE_IN ? sizeof(c->in_answer) : sizeof(c->out_offer);
}

static media_ep_t side_ep(const struct call *c, int side)
{
	return side == SIDE_IN ? c->ep_in : c->ep_out;
}

static uint16_t side_port(const struct call *c, int side)
{
	return side == SIDE_IN ? c->port_in : c->port_out;
}

/* ---- SDES-SRTP (RFC 4568) --------------------------------------------------- */

/*
 * Whether a side can take an SDP as it is: 0, or 488 when it must use SRTP
 * and has no a=crypto line we support, or asks for RTP/SAVP without one.
 */
int b2b_srtp_check(const struct call *c, bool required, const struct msdp_info *info)
{
	(void)c;
	return (required || info->savp) && !info->ncrypto ? 488 : 0;
}

/* A branch becomes a side: the crypto lines we offered it go with it. */
void b2b_side_take_leg(struct call *c, int side, const struct leg *l)
{
	struct side *sd = &c->side[side];

	OPENSSL_cleanse(sd->sdes, sizeof(sd->sdes));
	sd->savp = l->savp;
	sd->srtp_required = l->savp && c->conf->media.srtp == CONF_SRTP_REQUIRE;
	sd->nsdes = l->savp ? l->nsdes : 0;
	memcpy(sd->sdes, l->sdes, sizeof(sd->sdes));
}

/* Our SDP text towards side, as the branch that won it was offered it. */
void b2b_side_secure(struct call *c, int side)
{
	struct side *sd = &c->side[side];
	char sec[sizeof(c->out_offer)];

	if (!sd->savp || !sd->nsdes)
		return;
	if (msdp_secure(sec, sizeof(sec), side_sdp(c, side), sd->sdes, sd->nsdes) < 0)
		log_err("call %s: cannot write our SRTP SDP to the %s side", c->id,
			side_names[side]);
	else
		memcpy(side_sdp(c, side), sec, side_sdp_size(c, side));
	OPENSSL_cleanse(sec, sizeof(sec));
}

/* An SDP that could not be used, for the log: keys redacted. */
void b2b_log_sdp(const struct call *c, const char *what, const sip_t *sip)
{
	char buf[1200];

	if (!sip || !sip->sip_payload || !sip->sip_payload->pl_len) {
		log_warn("call %s: %s (no SDP)", c->id, what);
		return;
	}
	msdp_redact(buf, sizeof(buf), sip->sip_payload->pl_data, sip->sip_payload->pl_len);
	log_warn("call %s: %s; the SDP was:\n%s", c->id, what, buf);
}

/*
 * Points side's relay port at what its SDP says, SRTP keys included, and
 * records it. Returns 0, or 488 when the side needs SRTP and none of its
 * a=crypto lines matches ours (the port is set up all the same).
 */
int b2b_apply_peer(struct call *c, int side, const struct msdp_info *info)
{
	struct side *sd = &c->side[side];
	struct media_peer peer = { .te_pt = -1 };
	int rc = 0;

	memcpy(&peer.rtp, &info->rtp, sizeof(peer.rtp));
	memcpy(&peer.rtcp, &info->rtcp, sizeof(peer.rtcp));
	peer.codec = info->pt == 8 ? MEDIA_PCMA : MEDIA_PCMU;
	peer.pt = info->pt;
	peer.te_pt = info->te_pt;
	peer.sendrecv = !info->hold;
	for (size_t i = 0; i < info->ncrypto && sd->nsdes; i++) {
		const struct msdp_crypto *ours = msdp_crypto_find(sd->sdes, sd->nsdes,
								  info->crypto[i].tag);

		if (ours && !msdp_srtp_keys(ours, &info->crypto[i], &peer.srtp))
			break;
	}
	if (peer.srtp.suite == MEDIA_SRTP_OFF) {
		if (sd->srtp_required || info->savp) {
			log_warn("call %s: the %s side's SDP has no a=crypto line that "
				 "matches ours", c->id, side_names[side]);
			rc = 488;
		}
		else if (sd->savp) {
			/* srtp = offer, answered with plain RTP */
			log_info("call %s: the %s side answered without SRTP: plain RTP",
				 c->id, side_names[side]);
			sd->savp = false;
			sd->nsdes = 0;
			OPENSSL_cleanse(sd->sdes, sizeof(sd->sdes));
		}
	}
	media_ep_set_peer(c->b2b->media, side_ep(c, side), &peer);
	OPENSSL_cleanse(&peer.srtp, sizeof(peer.srtp));
	c->side[side].cur = *info;
	c->side[side].have_cur = true;
	return rc;
}

/*
 * Rewrites our SDP towards side: an offer lists every codec we speak, an
 * answer (answer_pt >= 0) the one the offer chose. The direction is passed
 * through unchanged: sipcrm stands in for the other side.
 */
int b2b_build_sdp(struct call *c, int side, int answer_pt, int te_pt,
		  enum msdp_mode mode)
{
	const struct conf *cf = c->conf;
	int pts[2], npts = 0;
	struct side *sd = &c->side[side];
	struct msdp_out o = {
		.ip = cf->media.ip, .port = side_port(c, side), .pts = pts,
		.te_pt = te_pt, .mode = mode, .sess_id = c->sess_id,
		.savp = sd->savp, .crypto = sd->sdes, .ncrypto = sd->nsdes,
	};

	if (answer_pt >= 0)
		pts[npts++] = answer_pt;
	else
		for (size_t i = 0; i < cf->media.ncodecs && npts < 2; i++)
			pts[npts++] = cf->media.codec_order[i] == CONF_CODEC_PCMA ? 8 : 0;
	o.npts = (size_t)npts;
	o.version = ++sd->ver;
	sd->sent_mode = mode;
	return msdp_write(side_sdp(c, side), side_sdp_size(c, side), &o) < 0 ? -1 : 0;
}

/*
 * Our answer to side's offer: its first a=crypto line is answered with a
 * key of ours (the same key again when the line is the one we answered
 * before, so a re-INVITE keeps the SRTP session), in its profile.
 */
int b2b_build_answer(struct call *c, int side, const struct msdp_info *offer,
		     enum msdp_mode mode)
{
	struct side *sd = &c->side[side];

	if (offer->ncrypto) {
		const struct msdp_crypto *theirs = &offer->crypto[0];
		const struct msdp_crypto *mine = msdp_crypto_find(sd->sdes, sd->nsdes,
								  theirs->tag);
		struct msdp_crypto ans;

		if (mine && mine->suite == theirs->suite)
			ans = *mine;
		else if (msdp_crypto_answer(theirs, &ans))
			return -1;
		OPENSSL_cleanse(sd->sdes, sizeof(sd->sdes));
		sd->sdes[0] = ans;
		sd->nsdes = 1;
		OPENSSL_cleanse(&ans, sizeof(ans));
	}
	else {
		OPENSSL_cleanse(sd->sdes, sizeof(sd->sdes));
		sd->nsdes = 0;
	}
	sd->savp = offer->savp;
	return b2b_build_sdp(c, side, offer->pt, offer->te_pt, mode);
}

static bool has_sdp(const sip_t *sip)
{
	if (!sip->sip_payload || !sip->sip_payload->pl_len)
		return false;
	return !sip->sip_content_type || !sip->sip_content_type->c_type ||
	       !strcasecmp(sip->sip_content_type->c_type, "application/sdp");
}

void b2b_leg_ack(nta_leg_t *dlg, const sip_t *sip)
{
	nta_outgoing_t *ack;

	ack = nta_outgoing_tcreate(dlg, NULL, NULL, NULL, SIP_METHOD_ACK,
				   (url_string_t *)(sip->sip_contact ?
						    sip->sip_contact->m_url : NULL),
				   SIPTAG_CSEQ(sip->sip_cseq), TAG_END());
	if (ack)
		nta_outgoing_destroy(ack);
}

/* ---- session timers (RFC 4028) ------------------------------------------------- */

static unsigned long secs(int64_t ms)
{
	return ms > 0 ? (unsigned long)((ms + 999) / 1000) : 0;
}

/*
 * The caller's INVITE: the interval it asks for (or ours when it supports
 * timers but names none) and who refreshes. Returns 0, or 422 when the
 * interval is below min_se.
 */
int b2b_se_request(struct call *c, const sip_t *sip)
{
	const struct conf *cf = c->conf;
	struct side *sd = &c->side[SIDE_IN];
	const sip_session_expires_t *x = sip->sip_session_expires;
	unsigned long min = secs(cf->sip.min_se_ms), want = secs(cf->sip.session_expires_ms);

	sd->timer_feature = sip_has_feature(sip->sip_supported, "timer") ||
			    sip_has_feature(sip->sip_require, "timer");
	sd->allow_update = sip->sip_allow &&
			   sip_is_allowed(sip->sip_allow, sip_method_update, NULL);
	if (x) {
		if (x->x_delta < min && x->x_delta > 0)
			return 422;
		sd->se_ms = (int64_t)x->x_delta * 1000;
		sd->we_refresh = x->x_refresher && !strcasecmp(x->x_refresher, "uas");
		return 0;
	}
	if (want && sd->timer_feature) {
		if (sip->sip_min_se && sip->sip_min_se->min_delta > want)
			want = sip->sip_min_se->min_delta;
		sd->se_ms = (int64_t)(want < min ? min : want) * 1000;
		sd->we_refresh = false;
	}
	return 0;
}

/* A 2xx from a side we sent an INVITE or a refresh to. */
void b2b_se_response(struct call *c, int side, const sip_t *sip)
{
	struct side *sd = &c->side[side];
	const sip_session_expires_t *x = sip->sip_session_expires;

	if (sip->sip_allow)
		sd->allow_update = sip_is_allowed(sip->sip_allow, sip_method_update, NULL);
	sd->timer_feature = sip_has_feature(sip->sip_supported, "timer") ||
			    sip_has_feature(sip->sip_require, "timer");
	if (!x || !x->x_delta) {
		/* RFC 4028 §7.2: no Session-Expires, no session timer */
		sd->se_ms = 0;
		return;
	}
	sd->se_ms = (int64_t)x->x_delta * 1000;
	/* we were the UAC: refresher=uac (or none named) is us */
	sd->we_refresh = !x->x_refresher || strcasecmp(x->x_refresher, "uas");
}

/* A refresh from the side itself: it may change the interval and refresher. */
static void se_refreshed(struct side *sd, const sip_t *sip)
{
	const sip_session_expires_t *x = sip->sip_session_expires;

	if (x && x->x_delta) {
		sd->se_ms = (int64_t)x->x_delta * 1000;
		sd->we_refresh = x->x_refresher && !strcasecmp(x->x_refresher, "uas");
	}
	se_arm(sd);
}

/* The Session-Expires value for our answers to side: "90;refresher=uac". */
int b2b_se_header(const struct call *c, int side, char *buf, size_t sz)
{
	const struct side *sd = &c->side[side];

	if (!sd->se_ms)
		return 0;
	snprintf(buf, sz, "%lu;refresher=%s", secs(sd->se_ms),
		 sd->we_refresh ? "uas" : "uac");
	return 1;
}

void b2b_se_start(struct call *c, int side)
{
	se_arm(&c->side[side]);
}

static void send_refresh(struct call *c, int side);

static void on_se(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct side *sd = (struct side *)arg;
	struct call *c = sd->call;

	(void)m;
	(void)t;
	if (c->ending)
		return;
	if (sd->we_refresh) {
		if (sd->orq || sd->irq || c->side[!sd->idx].irq) {
			/* an offer is under way; it refreshes too, look again soon */
			b2b_timer_arm(&sd->tmr_se, c->b2b, 1000, on_se, sd);
			return;
		}
		send_refresh(c, sd->idx);
		return;
	}
	log_warn("call %s: session timer expired on the %s side (%lu s without a "
		 "refresh), ending the call", c->id, side_names[sd->idx], secs(sd->se_ms));
	snprintf(c->end_reason, sizeof(c->end_reason), "session_timeout");
	b2b_send_bye(c, b2b_side_dlg(c, SIDE_IN));
	b2b_send_bye(c, b2b_side_dlg(c, SIDE_OUT));
	b2b_call_end(c, "answered");
}

static void se_arm(struct side *sd)
{
	struct call *c = sd->call;
	int64_t ms, guard;

	if (!sd->se_ms || c->ending) {
		b2b_timer_disarm(&sd->tmr_se);
		return;
	}
	/* RFC 4028 §10: refresh at half; give up at the interval minus
	   a third (at most 32 s) */
	guard = sd->se_ms / 3 < 32000 ? sd->se_ms / 3 : 32000;
	ms = sd->we_refresh ? sd->se_ms / 2 : sd->se_ms - guard;
	b2b_timer_arm(&sd->tmr_se, c->b2b, ms, on_se, sd);
}

/* ---- offers and answers across the call ---------------------------------------- */

static int side_response(nta_outgoing_magic_t *magic, nta_outgoing_t *orq,
			 const sip_t *sip);

/* Sends a re-INVITE (or UPDATE) carrying our current SDP to side. */
static int send_offer(struct call *c, int side, sip_method_t method, bool body)
{
	struct side *sd = &c->side[side];
	nta_leg_t *dlg = b2b_side_dlg(c, side);
	char cbuf[256], se[64];
	const char *contact = b2b_contact(c, cbuf, sizeof(cbuf));
	bool timer = sd->se_ms > 0;

	if (!dlg)
		return -1;
	/* whoever refreshes now keeps doing so: we are this request's UAC */
	if (timer)
		snprintf(se, sizeof(se), "%lu;refresher=%s", secs(sd->se_ms),
			 sd->we_refresh ? "uac" : "uas");
	sd->orq_method = method;
	sd->orq = nta_outgoing_tcreate(dlg, side_response, (nta_outgoing_magic_t *)sd,
				       NULL, method,
				       method == sip_method_invite ? "INVITE" : "UPDATE",
				       NULL,
				       TAG_IF(contact, SIPTAG_CONTACT_STR(contact)),
				       TAG_IF(timer, SIPTAG_SESSION_EXPIRES_STR(se)),
				       TAG_IF(timer, SIPTAG_SUPPORTED_STR("timer")),
				       TAG_IF(body, SIPTAG_CONTENT_TYPE_STR("application/sdp")),
				       TAG_IF(body, SIPTAG_PAYLOAD_STR(side_sdp(c, side))),
				       TAG_END());
	return sd->orq ? 0 : -1;
}

static void send_refresh(struct call *c, int side)
{
	struct side *sd = &c->side[side];
	bool update = sd->allow_update;

	log_debug("call %s: refreshing the %s side's session (%s)", c->id,
		  side_names[side], update ? "UPDATE" : "re-INVITE");
	/* the same SDP, version unchanged: nothing about the media changes */
	if (send_offer(c, side, update ? sip_method_update : sip_method_invite, !update)) {
		log_warn("call %s: cannot send a session refresh", c->id);
		b2b_timer_arm(&sd->tmr_se, c->b2b, 1000, on_se, sd);
	}
}

static void reply_offer(struct call *c, int side, nta_incoming_t *irq,
			int status, const char *phrase, bool body)
{
	char cbuf[256], se[64];
	const char *contact = b2b_contact(c, cbuf, sizeof(cbuf));
	bool timer = status < 300 && b2b_se_header(c, side, se, sizeof(se));

	sipd_reply(c->b2b->sipd, irq, status, phrase,
		   TAG_IF(status < 300 && contact, SIPTAG_CONTACT_STR(contact)),
		   TAG_IF(timer, SIPTAG_SESSION_EXPIRES_STR(se)),
		   TAG_IF(timer && c->side[side].timer_feature, SIPTAG_REQUIRE_STR("timer")),
		   TAG_IF(status == 500, SIPTAG_RETRY_AFTER_STR("1")),
		   TAG_IF(body, SIPTAG_CONTENT_TYPE_STR("application/sdp")),
		   TAG_IF(body, SIPTAG_PAYLOAD_STR(side_sdp(c, side))),
		   TAG_END());
}

/* The other side answered our relayed offer (or our refresh). */
static int side_response(nta_outgoing_magic_t *magic, nta_outgoing_t *orq,
			 const sip_t *sip)
{
	struct side *to = (struct side *)magic;
	struct call *c = to->call;
	struct side *from = &c->side[!to->idx];
	int status = sip && sip->sip_status ? sip->sip_status->st_status :
		     nta_outgoing_status(orq);
	bool relay = from->irq != NULL;
	struct msdp_info ans;

	memset(&ans, 0, sizeof(ans));

	if (status < 200)
		return 0;
	c->in_callback = true;
	if (status < 300 && to->orq_method == sip_method_invite)
		b2b_leg_ack(b2b_side_dlg(c, to->idx), sip);
	/* sip lives in orq: it is destroyed once sip is no longer read */
	to->orq = NULL;
	if (status < 300) {
		b2b_se_response(c, to->idx, sip);
		se_arm(to);
		if (has_sdp(sip) &&
		    !msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
				c->conf->media.codecs, &ans)) {
			if (!to->have_cur || ans.version != to->cur.version ||
			    ans.sess_id != to->cur.sess_id)
				b2b_apply_peer(c, to->idx, &ans);
		}
		else if (relay) {
			log_warn("call %s: the %s side accepted an offer without a usable "
				 "answer", c->id, side_names[to->idx]);
			status = 488;
		}
	}
	else if (!relay) {
		/* a refresh failed: 491 retries soon, 408/481 mean the
		   dialog is gone (RFC 4028 §10, RFC 5057) */
		log_info("call %s: the %s side answered %d to a session refresh", c->id,
			 side_names[to->idx], status);
		if (status == 408 || status == 481) {
			b2b_send_bye(c, b2b_side_dlg(c, from->idx));
			b2b_send_bye(c, b2b_side_dlg(c, to->idx));
			b2b_call_end(c, "answered");
		}
		else if (!c->ending) {
			b2b_timer_arm(&to->tmr_se, c->b2b, status == 491 ? 1500 : 2000,
				      on_se, to);
		}
	}
	if (relay) {
		if (status < 300) {
			if (b2b_build_answer(c, from->idx, &from->offer, ans.mode))
				status = 500;
			else
				b2b_apply_peer(c, from->idx, &from->offer);
		}
		if (from->irq_method == sip_method_invite && status < 300)
			from->ack_sdp = false;
		reply_offer(c, from->idx, from->irq, status,
			    status == 488 ? "Not Acceptable Here" : NULL, status < 300);
		nta_incoming_destroy(from->irq);
		from->irq = NULL;
		if (status < 300)
			log_info("call %s: %s offer relayed (%s)", c->id,
				 side_names[from->idx],
				 from->offer.hold ? "hold" : "active");
		if ((status == 408 || status == 481) && !c->ending) {
			b2b_send_bye(c, b2b_side_dlg(c, from->idx));
			b2b_send_bye(c, b2b_side_dlg(c, to->idx));
			b2b_call_end(c, "answered");
		}
	}
	nta_outgoing_destroy(orq);
	c->in_callback = false;
	b2b_call_maybe_free(c);
	return 0;
}

/* A re-INVITE or UPDATE from side, after the call was answered. */
static int on_offer(struct call *c, int side, nta_incoming_t *irq, const sip_t *sip)
{
	struct side *sd = &c->side[side], *other = &c->side[!side];
	sip_method_t m = sip->sip_request->rq_method;
	struct msdp_info info;
	int e;

	if (sd->irq) {
		/* RFC 3261 §14.2: an offer while its previous one is pending */
		reply_offer(c, side, irq, 500, NULL, false);
		return 500;
	}
	if (!has_sdp(sip) && !(m == sip_method_invite && sd->orq)) {
		/* a refresh (UPDATE without SDP is no offer, whatever the
		   other side does), or an offerless re-INVITE: our current
		   SDP is the offer and the ACK carries the answer */
		se_refreshed(sd, sip);
		sd->ack_sdp = m == sip_method_invite;
		reply_offer(c, side, irq, SIP_200_OK, m == sip_method_invite);
		return 200;
	}
	if (sd->orq || other->irq || other->orq) {
		/* glare: our own offer (or a relayed one) is under way */
		reply_offer(c, side, irq, SIP_491_REQUEST_PENDING, false);
		return 491;
	}
	se_refreshed(sd, sip);
	e = msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
		       c->conf->media.codecs, &info);
	if (e) {
		reply_offer(c, side, irq, e == ENOTSUP ? 488 : 400,
			    e == ENOTSUP ? "Not Acceptable Here" : "Bad SDP", false);
		return e == ENOTSUP ? 488 : 400;
	}
	if (b2b_srtp_check(c, sd->srtp_required, &info)) {
		b2b_log_sdp(c, "an offer without the SRTP this side needs", sip);
		reply_offer(c, side, irq, 488, "Not Acceptable Here", false);
		return 488;
	}
	if (sd->have_cur && info.sess_id == sd->cur.sess_id &&
	    info.version == sd->cur.version) {
		/* RFC 3264 §8: the same version changes nothing */
		reply_offer(c, side, irq, SIP_200_OK, true);
		return 200;
	}
	sd->offer = info;
	sd->irq = irq;
	sd->irq_method = m;
	if (b2b_build_sdp(c, !side, -1, side == SIDE_OUT ? c->in_sdp.te_pt : 101, info.mode) ||
	    send_offer(c, !side, sip_method_invite, true)) {
		sd->irq = NULL;
		reply_offer(c, side, irq, SIP_500_INTERNAL_SERVER_ERROR, false);
		return 500;
	}
	log_info("call %s: relaying a %s offer from the %s side", c->id,
		 info.hold ? "hold" : "media", side_names[side]);
	return 0;       /* answered when the other side answers */
}

/* Before the answer: an UPDATE from the caller changes only its own media. */
static int early_offer(struct call *c, struct leg *l, nta_incoming_t *irq,
		       const sip_t *sip)
{
	struct msdp_info info;
	int side = b2b_side_of(c, l);

	if (side == SIDE_IN && has_sdp(sip) &&
	    !msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
			c->conf->media.codecs, &info) &&
	    !b2b_srtp_check(c, c->side[SIDE_IN].srtp_required, &info) &&
	    !b2b_build_answer(c, SIDE_IN, &info, msdp_answer_mode(info.mode))) {
		b2b_apply_peer(c, SIDE_IN, &info);
	}
	sipd_reply(c->b2b->sipd, irq, SIP_200_OK,
		   SIPTAG_CONTENT_TYPE_STR("application/sdp"),
		   SIPTAG_PAYLOAD_STR(side_sdp(c, side)), TAG_END());
	return 200;
}

static void on_ack(struct call *c, int side, const sip_t *sip)
{
	struct side *sd = &c->side[side];
	struct msdp_info info;

	if (!sd->ack_sdp || !has_sdp(sip))
		return;
	sd->ack_sdp = false;
	if (!msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
			c->conf->media.codecs, &info))
		b2b_apply_peer(c, side, &info);
}

/* Requests inside the caller's dialog (l NULL) or a branch's. */
int b2b_in_dialog(struct call *c, struct leg *l, nta_incoming_t *irq,
		  const sip_t *sip)
{
	sip_method_t m = sip->sip_request->rq_method;
	bool answered = c->state == CALL_ANSWERED && c->winner &&
			(l == NULL || l == c->winner || l == c->in_leg);
	int side = b2b_side_of(c, l);

	sipd_count_request(sip);
	if (l ? !b2b_leg_from_peer(l, irq) :
	    c->have_in_src && !b2b_from_addr(&c->in_src, irq)) {
		log_debug("call %s: %s in the dialog of %s from another address "
			  "refused", c->id, sip->sip_request->rq_method_name,
			  l ? l->uri : "the caller");
		if (m == sip_method_ack) {
			nta_incoming_destroy(irq);
			return 0;
		}
		sipd_reply(c->b2b->sipd, irq, SIP_403_FORBIDDEN, TAG_END());
		return 403;
	}
	switch (m) {
	case sip_method_ack:
		/* nothing answers an ACK, so nothing else frees its
		   transaction: left alone it stays in nta's queues forever */
		if (answered)
			on_ack(c, side, sip);
		/* the caller's ACK ends its INVITE transaction: nta need not
		   keep the INVITE and our 200 (some 10 KB) for the whole call */
		if (answered && side == SIDE_IN && c->in_irq && !c->in_leg &&
		    nta_incoming_status(c->in_irq) >= 200) {
			nta_incoming_destroy(c->in_irq);
			c->in_irq = NULL;
		}
		nta_incoming_destroy(irq);
		return 0;
	case sip_method_cancel:
		/* a CANCEL that matched no INVITE transaction (RFC 3261 §9.2) */
		sipd_reply(c->b2b->sipd, irq, SIP_481_NO_TRANSACTION, TAG_END());
		return 481;
	case sip_method_bye:
		if (b2b_xfer_bye(c, l)) {
			/* the transferor left: the transfer goes on */
			sipd_reply(c->b2b->sipd, irq, SIP_200_OK, TAG_END());
			return 200;
		}
		if (side == SIDE_IN && c->winner)
			b2b_send_bye(c, c->winner->dlg);
		else if (l != NULL && l == c->winner && c->in_dlg)
			b2b_send_bye(c, c->in_dlg);
		else if (side == SIDE_OUT && l != c->winner) {
			/* a lost branch hanging up: not the call */
			sipd_reply(c->b2b->sipd, irq, SIP_200_OK, TAG_END());
			return 200;
		}
		b2b_call_end(c, c->state >= CALL_ANSWERED ? "answered" : "cancelled");
		/* the CDR row and call.ended are committed before the 200 tells
		   the caller the call is over: a crash after it loses neither */
		db_flush(c->b2b->db);
		sipd_reply(c->b2b->sipd, irq, SIP_200_OK, TAG_END());
		return 200;
	case sip_method_invite:
	case sip_method_update:
		if (c->ending) {
			sipd_reply(c->b2b->sipd, irq, SIP_481_NO_TRANSACTION, TAG_END());
			return 481;
		}
		if (answered)
			return on_offer(c, side, irq, sip);
		return early_offer(c, l, irq, sip);
	case sip_method_refer:
		return b2b_refer(c, l, irq, sip);
	case sip_method_info:
		if (answered)
			return b2b_info(c, side, irq, sip);
		/* fall through */
	case sip_method_options:
		sipd_reply(c->b2b->sipd, irq, SIP_200_OK, TAG_END());
		return 200;
	default:
		sipd_reply(c->b2b->sipd, irq, SIP_405_METHOD_NOT_ALLOWED, TAG_END());
		return 405;
	}
}

/* Which side a branch is (SIDE_IN for the caller's dialog, l NULL). */
int b2b_side_of(const struct call *c, const struct leg *l)
{
	return l && l != c->in_leg ? SIDE_OUT : SIDE_IN;
}

/* A side gets a new dialog (a transfer): forget the old one's state. */
void b2b_side_reset(struct call *c, int side)
{
	struct side *sd = &c->side[side];

	b2b_timer_disarm(&sd->tmr_se);
	if (sd->irq) {
		sipd_reply(c->b2b->sipd, sd->irq, SIP_487_REQUEST_TERMINATED, TAG_END());
		nta_incoming_destroy(sd->irq);
		sd->irq = NULL;
	}
	if (sd->orq) {
		nta_outgoing_destroy(sd->orq);
		sd->orq = NULL;
	}
	sd->have_cur = false;
	sd->ack_sdp = false;
	sd->se_ms = 0;
	sd->we_refresh = false;
	sd->timer_feature = false;
	sd->allow_update = false;
	sd->sent_mode = MSDP_SENDRECV;
	sd->savp = false;
	sd->srtp_required = false;
	sd->nsdes = 0;
	OPENSSL_cleanse(sd->sdes, sizeof(sd->sdes));
}

/* Offers our SDP to side again with mode (e.g. off hold after a transfer). */
int b2b_side_reoffer(struct call *c, int side, enum msdp_mode mode)
{
	struct side *sd = &c->side[side];

	if (sd->irq || sd->orq || !sd->have_cur)
		return -1;
	if (b2b_build_sdp(c, side, -1, sd->cur.te_pt >= 0 ? sd->cur.te_pt : 101, mode))
		return -1;
	return send_offer(c, side, sip_method_invite, true);
}

/* The call ends: pending offers are answered, timers stopped. */
void b2b_side_cleanup(struct call *c)
{
	for (int i = 0; i < 2; i++) {
		struct side *sd = &c->side[i];

		b2b_timer_disarm(&sd->tmr_se);
		if (sd->irq) {
			sipd_reply(c->b2b->sipd, sd->irq, SIP_487_REQUEST_TERMINATED,
				   TAG_END());
			nta_incoming_destroy(sd->irq);
			sd->irq = NULL;
		}
		if (sd->orq) {
			nta_outgoing_destroy(sd->orq);
			sd->orq = NULL;
		}
	}
}
