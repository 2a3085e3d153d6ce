/*
 * b2b_in.c: the caller's leg. Classifies an INVITE (trunk, agent, or
 * nobody), answers with early media, runs the CRM lookup and the greeting
 * clock, and carries the winner's answer back to the caller.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/sip_tag.h>

#define LOG_MODULE "b2b"
#include "log.h"
#include "clk.h"
#include "rnd.h"
#include "conf.h"
#include "hmap.h"
#include "metrics.h"
#include "crm/normalize.h"
#include "sip/b2b.h"
#include "sip/b2b_int.h"
#include "sip/registrar.h"
#include "sip/sipd.h"

/* ---- small helpers -------------------------------------------------------------- */

void b2b_expand_ext(const char *tmpl, const char *ext, char *out, size_t sz)
{
	const char *p = strstr(tmpl, "{ext}");

	if (!p) {
		snprintf(out, sz, "%s", tmpl);
		return;
	}
	snprintf(out, sz, "%.*s%s%s", (int)(p - tmpl), tmpl, ext, p + 5);
}

/* The host[:port][;params] part of a trunk's uri (sip:HOST or sip:user@HOST). */
const char *b2b_trunk_host(const char *uri)
{
	const char *at = strchr(uri, '@');

	if (at)
		return at + 1;
	return uri + (strncasecmp(uri, "sips:", 5) ? 4 : 5);
}

void b2b_trunk_uri(const struct call *c, const char *number, char *out, size_t sz)
{
	snprintf(out, sz, "sip:%s@%s", number,
		 b2b_trunk_host(c->conf->ntrunks ? c->conf->trunks[0].uri : "sip:"));
}

static void reply_in(struct call *c, int status, const char *phrase,
		     tag_type_t tag, tag_value_t value)
{
	if (c->in_irq && nta_incoming_status(c->in_irq) < 200)
		sipd_reply(c->b2b->sipd, c->in_irq, status, phrase, tag, value, TAG_END());
}

/* ---- the caller's leg ------------------------------------------------------------ */

static int on_prack(nta_reliable_magic_t *rmagic, nta_reliable_t *rel,
		    nta_incoming_t *prack, const sip_t *sip)
{
	(void)rmagic;
	(void)rel;
	(void)prack;
	if (sip)
		sipd_count_request(sip);
	return 200;
}

/*
 * 180 or 183 to the caller; reliably (RFC 3262) when its INVITE required
 * 100rel: nta adds RSeq, retransmits until the PRACK and holds a 200 back
 * until the PRACK for an SDP-carrying 183 arrived.
 */
static void provisional(struct call *c, int status, const char *phrase, bool sdp)
{
	char cbuf[256];
	const char *contact = b2b_contact(c, cbuf, sizeof(cbuf));

	if (!c->in_irq || nta_incoming_status(c->in_irq) >= 200)
		return;
	/* a 1xx with a To tag opens an early dialog: Contact is a must */
	if (c->caller_100rel &&
	    nta_reliable_treply(c->in_irq, on_prack, NULL, status, phrase,
				TAG_IF(contact, SIPTAG_CONTACT_STR(contact)),
				TAG_IF(c->b2b->server, SIPTAG_SERVER_STR(c->b2b->server)),
				TAG_IF(sdp, SIPTAG_CONTENT_TYPE_STR("application/sdp")),
				TAG_IF(sdp, SIPTAG_PAYLOAD_STR(c->in_answer)),
				TAG_END()))
		return;
	sipd_reply(c->b2b->sipd, c->in_irq, status, phrase,
		   TAG_IF(contact, SIPTAG_CONTACT_STR(contact)),
		   TAG_IF(sdp, SIPTAG_CONTENT_TYPE_STR("application/sdp")),
		   TAG_IF(sdp, SIPTAG_PAYLOAD_STR(c->in_answer)), TAG_END());
}

void b2b_call_ringing(struct call *c, struct leg *l)
{
	if (!l->ringing && *l->agent) {
		l->ringing = true;
		if (!*c->first_agent)
			snprintf(c->first_agent, sizeof(c->first_agent), "%s", l->agent);
		b2b_ev_ringing(c, l->agent);
	}
	if (c->sent_180 || c->state >= CALL_ANSWERED)
		return;
	/* no SDP: the caller's media stays on our relay (greeting, ringback) */
	c->sent_180 = true;
	provisional(c, SIP_180_RINGING, false);
}

/* An agent's own call: the far side's early media goes to the caller. */
void b2b_call_progress(struct call *c)
{
	if (c->state >= CALL_ANSWERED || c->ending || c->late_offer)
		return;
	provisional(c, SIP_183_SESSION_PROGRESS, true);
}

void b2b_call_answered(struct call *c, struct leg *l)
{
	char cbuf[256], se[64];
	const char *contact = b2b_contact(c, cbuf, sizeof(cbuf));
	bool timer = b2b_se_header(c, SIDE_IN, se, sizeof(se));
	const char *agent;

	c->state = CALL_ANSWERED;
	c->answered_ms = clk_wall_ms();
	/* an outbound call is the calling agent's */
	agent = *l->agent ? l->agent : c->dir == ROUTE_OUTBOUND ? c->caller_agent : "";
	if (*agent) {
		if (!*c->first_agent)
			snprintf(c->first_agent, sizeof(c->first_agent), "%s", agent);
		snprintf(c->last_agent, sizeof(c->last_agent), "%s", agent);
	}
	b2b_act_busy(c, false, true);
	b2b_act_leg(l, false);
	b2b_ev_answered(c, l);
	b2b_cancel_others(c);
	b2b_timer_disarm(&c->tmr_fork);
	/* no fork follows an answer */
	free(c->plan);
	c->plan = NULL;
	media_bridge(c->b2b->media, c->ep_in, c->ep_out);
	b2b_rec_segment(c);
	if (c->in_irq)  /* click-to-call: the agent has answered already */
		sipd_reply(c->b2b->sipd, c->in_irq, SIP_200_OK,
			   TAG_IF(contact, SIPTAG_CONTACT_STR(contact)),
			   TAG_IF(timer, SIPTAG_SESSION_EXPIRES_STR(se)),
			   TAG_IF(timer && c->side[SIDE_IN].timer_feature,
				  SIPTAG_REQUIRE_STR("timer")),
			   SIPTAG_ALLOW_STR("INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, "
					    "UPDATE, PRACK, REFER, NOTIFY"),
			   SIPTAG_CONTENT_TYPE_STR("application/sdp"),
			   SIPTAG_PAYLOAD_STR(c->in_answer), TAG_END());
	b2b_se_start(c, SIDE_IN);
	b2b_se_start(c, SIDE_OUT);
	log_info("call %s answered by %s", c->id, l->uri);
}

void b2b_call_failed(struct call *c, int status, const char *phrase)
{
	if (status < 300 || status > 699)
		status = 480;
	reply_in(c, status, phrase && *phrase ? phrase : NULL, TAG_NULL());
	if (c->in_leg)          /* click-to-call: the agent is connected */
		b2b_send_bye(c, c->in_dlg);
	b2b_call_end(c, status == 486 || status == 600 ? "busy" :
		     status == 487 ? "cancelled" :
		     c->first_agent[0] || status == 480 || status == 408 ? "missed" :
		     "failed");
}

void b2b_call_redirect(struct call *c)
{
	char contacts[2048] = "", uri[ROUTE_URI_MAX + 64];
	size_t off = 0;

	for (size_t i = 0; c->plan && i < c->plan->forks[0].ntargets; i++) {
		const struct route_target *t = &c->plan->forks[0].targets[i];
		const struct reg_contact *rc = NULL;

		if (t->kind == ROUTE_TARGET_AGENT)
			rc = reg_contacts(c->b2b->reg, t->ext);
		for (; rc; rc = rc->next)
			off += (size_t)snprintf(contacts + off, sizeof(contacts) - off,
						"%s<%s>;q=%u.%03u", off ? ", " : "", rc->uri,
						t->q1000 / 1000, t->q1000 % 1000);
		if (t->kind == ROUTE_TARGET_AGENT && !reg_contacts(c->b2b->reg, t->ext))
			b2b_expand_ext(c->conf->pbx.extension_uri, t->ext, uri, sizeof(uri));
		else if (t->kind == ROUTE_TARGET_URI)
			snprintf(uri, sizeof(uri), "%s", t->uri);
		else
			continue;
		off += (size_t)snprintf(contacts + off, sizeof(contacts) - off,
					"%s<%s>;q=%u.%03u", off ? ", " : "", uri,
					t->q1000 / 1000, t->q1000 % 1000);
		if (off >= sizeof(contacts))
			break;
	}
	reply_in(c, SIP_302_MOVED_TEMPORARILY, SIPTAG_CONTACT_STR(contacts));
	b2b_call_end(c, "redirected");
}

static int in_cancel(nta_incoming_magic_t *magic, nta_incoming_t *irq,
		     const sip_t *sip)
{
	struct call *c = (struct call *)magic;

	if (!sip || sip->sip_request->rq_method != sip_method_cancel)
		return 0;
	if (c->state >= CALL_ANSWERED || c->ending)
		return 0;
	log_info("call %s: caller cancelled", c->id);
	reply_in(c, SIP_487_REQUEST_TERMINATED, TAG_NULL());
	b2b_call_end(c, *c->first_agent ? "missed" : "cancelled");
	return 0;
}

static int in_request(nta_leg_magic_t *magic, nta_leg_t *dlg, nta_incoming_t *irq,
		      const sip_t *sip)
{
	(void)dlg;
	return b2b_in_dialog((struct call *)magic, NULL, irq, sip);
}

/* ---- the greeting clock and the lookup ------------------------------------------ */

static void maybe_route(struct call *c)
{
	if (c->state == CALL_EARLY && c->lookup_done && c->greeting_min_done)
		b2b_route(c);
}

static void on_lookup(const struct crm_result *r, void *arg)
{
	struct call *c = arg;

	c->lookup = NULL;
	c->lres = *r;
	c->lookup_done = true;
	b2b_timer_disarm(&c->tmr_lookup);
	maybe_route(c);
}

static void on_lookup_deadline(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct call *c = (struct call *)arg;

	(void)m;
	(void)t;
	log_warn("call %s: CRM lookup over its deadline, routing as unknown", c->id);
	/* a late answer is still cached for the caller's next call */
	c->lookup = crm_lookup_detach(c->lookup);
	memset(&c->lres, 0, sizeof(c->lres));
	c->lres.status = CRM_FAILED;
	c->lres.cause = "deadline";
	c->lookup_done = true;
	maybe_route(c);
}

static void on_greeting_min(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct call *c = (struct call *)arg;

	(void)m;
	(void)t;
	c->greeting_min_done = true;
	maybe_route(c);
}

/* ---- a new INVITE ----------------------------------------------------------------- */

/* Rewrites num in E.164 when it is a phone number; leaves it otherwise. */
static void e164(char *num, size_t sz, const char *country_code)
{
	char out[CRM_E164_SIZE];

	if (crm_normalize(num, country_code, out, sizeof(out)) == 0)
		snprintf(num, sz, "%s", out);
}

/*
 * Diversion (RFC 5806) and History-Info (RFC 7044) tell the branches why
 * the call came: a B2BUA passes them on, one header line each. Lines that
 * do not fit whole are left out.
 */
static void carry_headers(struct call *c, const sip_t *sip)
{
	size_t off = 0;

	for (const sip_unknown_t *u = sip->sip_unknown; u; u = u->un_next) {
		int n;

		if (!u->un_name || !u->un_value ||
		    (strcasecmp(u->un_name, "Diversion") &&
		     strcasecmp(u->un_name, "History-Info")) ||
		    strpbrk(u->un_value, "\r\n"))
			continue;
		n = snprintf(c->carry + off, sizeof(c->carry) - off, "%s%s: %s",
			     off ? "\r\n" : "", u->un_name, u->un_value);
		if (n < 0 || (size_t)n >= sizeof(c->carry) - off) {
			c->carry[off] = '\0';
			break;
		}
		off += (size_t)n;
	}
}

static struct call *call_new(struct b2b *b, const sip_t *sip, enum route_direction dir)
{
	struct call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->b2b = b;
	c->dir = dir;
	c->conf = conf_ref(b->conf);
	c->started_ms = clk_wall_ms();
	c->ep_in = c->ep_out = MEDIA_EP_NONE;
	if (rnd_bytes(&c->sess_id, sizeof(c->sess_id)))
		c->sess_id = (uint64_t)c->started_ms;
	c->sess_id &= 0x7fffffffffffffffULL;
	b2b_side_init(c);
	snprintf(c->from, sizeof(c->from), "%s",
		 sip->sip_from->a_url->url_user ? sip->sip_from->a_url->url_user : "");
	snprintf(c->from_name, sizeof(c->from_name), "%s",
		 sip->sip_from->a_display ? sip->sip_from->a_display : "");
	/* display names arrive quoted; keep the text only */
	if (c->from_name[0] == '"') {
		size_t n = strlen(c->from_name);

		memmove(c->from_name, c->from_name + 1, n);
		if (n >= 2 && c->from_name[n - 2] == '"')
			c->from_name[n - 2] = '\0';
	}
	snprintf(c->to, sizeof(c->to), "%s",
		 sip->sip_request->rq_url->url_user ? sip->sip_request->rq_url->url_user :
		 sip->sip_to->a_url->url_user ? sip->sip_to->a_url->url_user : "");
	if (dir == ROUTE_INBOUND) {
		/* the CRM, the DID sections and the CDR speak E.164 */
		e164(c->from, sizeof(c->from), c->conf->crm.country_code);
		e164(c->to, sizeof(c->to), c->conf->crm.country_code);
		snprintf(c->did, sizeof(c->did), "%s", c->to);
	}
	carry_headers(c, sip);
	if (sip->sip_call_id && sip->sip_call_id->i_id)
		snprintf(c->in_callid, sizeof(c->in_callid), "%s", sip->sip_call_id->i_id);
	route_settings(c->conf, dir == ROUTE_INBOUND ? c->did : NULL, &c->set);
	return c;
}

static int setup_dialog(struct call *c, nta_incoming_t *irq, const sip_t *sip)
{
	c->in_dlg = nta_leg_tcreate(sipd_agent(c->b2b->sipd), in_request,
				    (nta_leg_magic_t *)c,
				    SIPTAG_CALL_ID(sip->sip_call_id),
				    SIPTAG_FROM(sip->sip_to),
				    SIPTAG_TO(sip->sip_from),
				    NTATAG_REMOTE_CSEQ(sip->sip_cseq->cs_seq),
				    TAG_END());
	if (!c->in_dlg || !nta_leg_tag(c->in_dlg, NULL))
		return ENOMEM;
	nta_leg_server_route(c->in_dlg, sip->sip_record_route, sip->sip_contact);
	nta_incoming_tag(irq, nta_leg_get_tag(c->in_dlg));
	nta_incoming_bind(irq, in_cancel, (nta_incoming_magic_t *)c);
	c->in_irq = irq;
	return 0;
}

/* Media for both sides and our answer to the caller's offer. 0 or a SIP status. */
/*
 * An INVITE without SDP (late offer, RFC 3261 §13.2.1): our offer goes in
 * the 200 and the caller's answer in its ACK; until then the caller's port
 * has no peer, so no greeting can play.
 */
static int late_offer(struct call *c)
{
	if (media_ep_alloc(c->b2b->media, &c->ep_in, &c->port_in) ||
	    media_ep_alloc(c->b2b->media, &c->ep_out, &c->port_out))
		return 503;
	struct side *sd = &c->side[SIDE_IN];

	c->in_sdp.te_pt = 101;
	c->late_offer = true;
	sd->ack_sdp = true;
	/* an agent's phone: our offer in the 200 is SDES-SRTP too */
	if (c->dir != ROUTE_INBOUND && c->conf->media.srtp != CONF_SRTP_OFF) {
		int k = msdp_crypto_offer(sd->sdes, 2);

		sd->nsdes = k > 0 ? (size_t)k : 0;
		sd->savp = k > 0;
		sd->srtp_required = c->conf->media.srtp == CONF_SRTP_REQUIRE;
	}
	return b2b_build_sdp(c, SIDE_IN, -1, 101, MSDP_SENDRECV) ? 500 : 0;
}

static int setup_media(struct call *c, const sip_t *sip)
{
	int e;

	if (!sip->sip_payload || !sip->sip_payload->pl_len)
		return late_offer(c);
	switch (msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
			   c->conf->media.codecs, &c->in_sdp)) {
	case 0: break;
	case ENOTSUP:
		b2b_log_sdp(c, "no codec or profile in common", sip);
		return 488;
	default:
		b2b_log_sdp(c, "an SDP that cannot be used", sip);
		return 400;
	}
	/* an agent's own call: [media] srtp = require refuses plain RTP; the
	   trunk's side is whatever the trunk offers */
	c->side[SIDE_IN].srtp_required = c->dir != ROUTE_INBOUND &&
					 c->conf->media.srtp == CONF_SRTP_REQUIRE;
	if (b2b_srtp_check(c, c->side[SIDE_IN].srtp_required, &c->in_sdp)) {
		b2b_log_sdp(c, "an offer without the SRTP it needs", sip);
		return 488;
	}
	if ((e = media_ep_alloc(c->b2b->media, &c->ep_in, &c->port_in)) ||
	    (e = media_ep_alloc(c->b2b->media, &c->ep_out, &c->port_out))) {
		log_warn("call %s: no media ports: %s", c->id, strerror(e));
		return 503;
	}
	if (b2b_build_answer(c, SIDE_IN, &c->in_sdp, msdp_answer_mode(c->in_sdp.mode)))
		return 500;
	b2b_apply_peer(c, SIDE_IN, &c->in_sdp);
	return 0;
}

static void start_early(struct call *c)
{
	struct media_prompt *greet = NULL;

	if (*c->set.greeting && !c->late_offer)
		greet = c->b2b->greeting;
	/* an offer may not go in an unreliable 1xx: a late-offer caller
	   waits in silence until the 200 */
	if (!c->late_offer)
		provisional(c, SIP_183_SESSION_PROGRESS, true);
	media_ep_play(c->b2b->media, c->ep_in, greet,
		      strcmp(c->set.ringback, "none") ? c->b2b->ringback : NULL);
	c->state = CALL_EARLY;
	c->greeting_min_done = c->set.greeting_min_ms <= 0;
	if (!c->greeting_min_done)
		b2b_timer_arm(&c->tmr_greeting, c->b2b, c->set.greeting_min_ms,
			      on_greeting_min, c);
	b2b_timer_arm(&c->tmr_lookup, c->b2b, c->set.lookup_timeout_ms,
		      on_lookup_deadline, c);
	if (crm_lookup(&c->lookup, c->b2b->crm, c->from, c->did, c->id, on_lookup, c)) {
		c->lres.status = CRM_FAILED;
		c->lookup_done = true;
	}
}

/*
 * What every call does with its INVITE: checks the extensions it requires
 * and its session interval, sends 100, creates the caller's dialog and the
 * media. Returns the call, or NULL when the INVITE has been answered.
 */
static struct call *call_start(struct b2b *b, nta_incoming_t *irq, const sip_t *sip,
			       enum route_direction dir)
{
	struct call *c;
	const char *bad = sipd_unsupported(sip);
	int status;
	socklen_t srclen;

	if (bad) {
		sipd_reply(b->sipd, irq, SIP_420_BAD_EXTENSION,
			   SIPTAG_UNSUPPORTED_STR(bad), TAG_END());
		return NULL;
	}
	c = call_new(b, sip, dir);
	if (!c) {
		sipd_reply(b->sipd, irq, SIP_503_SERVICE_UNAVAILABLE, TAG_END());
		return NULL;
	}
	if (b2b_se_request(c, sip) == 422) {
		char min[24];

		snprintf(min, sizeof(min), "%lld",
			 (long long)((c->conf->sip.min_se_ms + 999) / 1000));
		sipd_reply(b->sipd, irq, SIP_422_SESSION_TIMER_TOO_SMALL,
			   SIPTAG_MIN_SE_STR(min), TAG_END());
		conf_deref(c->conf);
		free(c);
		return NULL;
	}
	c->caller_100rel = sip_has_feature(sip->sip_require, "100rel");
	/* only this address may send requests in the caller's dialog */
	c->have_in_src = sipd_source(irq, &c->in_src, &srclen) == 0;
	do
		b2b_new_id(c->id);
	while (hmap_get(b->calls, c->id));
	sipd_reply(b->sipd, irq, SIP_100_TRYING, TAG_END());
	if (setup_dialog(c, irq, sip) || hmap_set(b->calls, c->id, c)) {
		status = 500;
	}
	else {
		metrics_gauge_add(b->m_active, 1);
		status = setup_media(c, sip);
	}
	if (status) {
		sipd_reply(b->sipd, irq, status, status == 503 ?
			   "No media ports" : NULL, TAG_END());
		c->in_irq = irq;
		b2b_call_end(c, "failed");
		return NULL;
	}
	return c;
}

static int inbound(struct b2b *b, nta_incoming_t *irq, const sip_t *sip)
{
	struct call *c = call_start(b, irq, sip, ROUTE_INBOUND);

	if (!c)
		return 0;
	log_info("call %s: inbound from %s to %s", c->id, c->from, c->did);
	if (c->set.mode == CONF_MODE_REDIRECT) {
		c->state = CALL_EARLY;
		c->greeting_min_done = true;
		if (crm_lookup(&c->lookup, b->crm, c->from, c->did, c->id, on_lookup, c))
			c->lookup_done = true;
		maybe_route(c);
		return 0;
	}
	start_early(c);
	maybe_route(c);
	return 0;
}

/*
 * An authenticated agent's call: to another extension (internal), or to
 * any other number through the trunk (outbound) with the trunk's caller id.
 * No greeting: the branches ring at once.
 */
static int agent_call(struct b2b *b, nta_incoming_t *irq, const sip_t *sip,
		      const char *ext)
{
	const struct conf *cf = b->conf;
	const char *dest = sip->sip_request->rq_url->url_user;
	const struct conf_agent *me = conf_agent_find(cf, ext);
	enum route_direction dir;
	struct call *c;

	if (!dest || !*dest) {
		sipd_reply(b->sipd, irq, SIP_484_ADDRESS_INCOMPLETE, TAG_END());
		return 484;
	}
	dir = conf_agent_find(cf, dest) ? ROUTE_INTERNAL : ROUTE_OUTBOUND;
	if (dir == ROUTE_OUTBOUND && !cf->ntrunks) {
		log_info("agent %s called %s: not an extension and no trunk", ext, dest);
		sipd_reply(b->sipd, irq, 404, "No Route", TAG_END());
		return 404;
	}
	/* toll fraud with an agent's stolen password: a dial plan and a cap */
	if (dir == ROUTE_OUTBOUND && !b2b_dial_allowed(cf, me, dest)) {
		log_warn("agent %s may not call %s through the trunk ([routing] agent_dial)",
			 ext, dest);
		sipd_reply(b->sipd, irq, 403, "Number Not Allowed", TAG_END());
		return 403;
	}
	if (cf->routing.agent_max_calls > 0 &&
	    b2b_agent_calls(b, ext) >= cf->routing.agent_max_calls) {
		log_warn("agent %s is in %u calls already ([routing] agent_max_calls): "
			 "call to %s refused", ext, b2b_agent_calls(b, ext), dest);
		sipd_reply(b->sipd, irq, 403, "Too Many Calls", TAG_END());
		return 403;
	}
	c = call_start(b, irq, sip, dir);
	if (!c)
		return 0;
	snprintf(c->caller_agent, sizeof(c->caller_agent), "%s", ext);
	b2b_act_busy(c, true, true);
	if (dir == ROUTE_INTERNAL) {
		snprintf(c->from, sizeof(c->from), "%s", ext);
		if (me && me->name && *me->name)
			snprintf(c->from_name, sizeof(c->from_name), "%s", me->name);
	}
	else {
		const struct conf_trunk *t = &cf->trunks[0];
		const char *host = b2b_trunk_host(t->uri);

		snprintf(c->from, sizeof(c->from), "%s",
			 t->caller_id && *t->caller_id ? t->caller_id : ext);
		c->from_name[0] = '\0';
		snprintf(c->from_host, sizeof(c->from_host), "%.*s",
			 (int)strcspn(host, ";?>"), host);
	}
	log_info("call %s: %s from agent %s to %s", c->id,
		 dir == ROUTE_INTERNAL ? "internal" : "outbound", ext, c->to);
	c->state = CALL_EARLY;
	b2b_route(c);
	return 0;
}

static int on_invite(void *arg, nta_incoming_t *irq, const sip_t *sip)
{
	struct b2b *b = arg;
	struct sockaddr_storage ss;
	socklen_t len;
	const char *ext;

	if (sipd_source(irq, &ss, &len) == 0 &&
	    conf_trunk_match(b->conf, (struct sockaddr *)&ss))
		return inbound(b, irq, sip);
	/* nobody but a trunk or an authenticated agent places a call: the
	   challenge tells phones to authenticate, the rest get nothing */
	ext = reg_authenticate(b->reg, irq, sip, true);
	if (!ext)
		return 407;     /* challenged: sipd frees the transaction */
	return agent_call(b, irq, sip, ext);
}

/*
 * The agent's dial plan ([agent] dial, else [routing] agent_dial): words
 * any, none, domestic (the country of [crm] country_code, and short
 * numbers that are no E.164 number at all), and +PREFIX.
 */
bool b2b_dial_allowed(const struct conf *cf, const struct conf_agent *a,
		      const char *number)
{
	const char *plan = a && a->dial ? a->dial : cf->routing.agent_dial;
	char e164[CRM_E164_SIZE], buf[512], *save = NULL;
	bool e164_ok = !crm_normalize(number, cf->crm.country_code, e164, sizeof(e164)) &&
		       e164[0] == '+';
	size_t cc = strlen(cf->crm.country_code);
	bool domestic = !e164_ok || (cc && !strncmp(e164 + 1, cf->crm.country_code, cc));

	snprintf(buf, sizeof(buf), "%s", plan ? plan : "");
	for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
		if (!strcmp(w, "any") || (!strcmp(w, "domestic") && domestic))
			return true;
		if (w[0] == '+' && e164_ok && !strncmp(e164, w, strlen(w)))
			return true;
	}
	return false;
}

bool b2b_agent_busy(struct b2b *b, const char *ext, const struct call *self)
{
	const char *st = b2b_agent_activity(b, ext, self);

	return st && !strcmp(st, "busy");
}

static const char *agent_activity(const char *ext, void *arg)
{
	return b2b_agent_activity(arg, ext, NULL);
}

/* ---- life cycle --------------------------------------------------------------------- */

static int load_prompts(struct b2b *b, const struct conf *c)
{
	char err[256];
	struct media_prompt *g = NULL, *r = NULL;

	if (*c->media.greeting && media_prompt_load(&g, c->media.greeting, err,
						    sizeof(err)))
		log_warn("greeting %s: %s (no greeting will play)", c->media.greeting, err);
	if (!strcmp(c->media.ringback, "tone"))
		media_prompt_tone(&r);
	else if (strcmp(c->media.ringback, "none") &&
		 media_prompt_load(&r, c->media.ringback, err, sizeof(err)))
		log_warn("ringback %s: %s (silence instead)", c->media.ringback, err);
	media_prompt_deref(b->greeting);
	media_prompt_deref(b->ringback);
	b->greeting = g;
	b->ringback = r;
	return 0;
}

int b2b_alloc(struct b2b **bp, const struct b2b_deps *deps, const struct conf *conf)
{
	struct b2b *b = calloc(1, sizeof(*b));

	if (!b)
		return ENOMEM;
	b->root = deps->root;
	b->sipd = deps->sipd;
	b->reg = deps->reg;
	b->media = deps->media;
	b->crm = deps->crm;
	b->db = deps->db;
	b->conf = conf_ref((struct conf *)conf);
	b->server = *conf->sip.server ? strdup(conf->sip.server) : NULL;
	if (hmap_alloc(&b->calls, 1024)) {
		b2b_free(b);
		return ENOMEM;
	}
	b->m_active = metrics_gauge("sipcrm_calls_active", "calls in progress", NULL);
	if (b2b_act_init(b)) {
		b2b_free(b);
		return ENOMEM;
	}
	load_prompts(b, conf);
	if (b2b_media_init(b)) {
		b2b_free(b);
		return ENOMEM;
	}
	sipd_handle(b->sipd, sip_method_invite, on_invite, b);
	b2b_blf_init(b);
	reg_on_activity(b->reg, agent_activity, b);
	b2b_cdr_recover(b);
	*bp = b;
	return 0;
}

static int end_cb(const char *key, void *val, void *arg)
{
	struct call *c = val;

	(void)key;
	(void)arg;
	if (c->state >= CALL_ANSWERED) {
		if (c->winner)
			b2b_send_bye(c, c->winner->dlg);
		b2b_send_bye(c, c->in_dlg);
	}
	else {
		reply_in(c, SIP_503_SERVICE_UNAVAILABLE, TAG_NULL());
	}
	c->in_callback = true;  /* keep it while we still touch it */
	b2b_call_end(c, c->state >= CALL_ANSWERED ? "answered" : "failed");
	/* shutting down: nothing waits for the answers to BYE and CANCEL */
	b2b_call_free_now(c);
	return 0;
}

struct b2b *b2b_free(struct b2b *b)
{
	if (!b)
		return NULL;
	if (b->sipd)
		sipd_handle(b->sipd, sip_method_invite, NULL, NULL);
	if (b->reg)
		reg_on_activity(b->reg, NULL, NULL);
	if (b->calls) {
		hmap_apply(b->calls, end_cb, NULL);
		hmap_free(b->calls);
	}
	b2b_blf_fini(b);
	b2b_act_fini(b);
	b2b_media_fini(b);
	media_prompt_deref(b->greeting);
	media_prompt_deref(b->ringback);
	conf_deref(b->conf);
	free(b->server);
	free(b);
	return NULL;
}

void b2b_reload(struct b2b *b, const struct conf *conf)
{
	conf_deref(b->conf);
	b->conf = conf_ref((struct conf *)conf);
	free(b->server);
	b->server = *conf->sip.server ? strdup(conf->sip.server) : NULL;
	load_prompts(b, conf);
	b2b_media_reload(b);
}

size_t b2b_active(const struct b2b *b)
{
	return hmap_count(b->calls);
}
