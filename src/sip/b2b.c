/*
 * b2b.c: calls. An inbound trunk call is answered at once with early media
 * (183 and the greeting) while the CRM is asked who owns the caller; then
 * the routing plan's forks ring in turn, the first 200 wins, and media is
 * relayed between the caller and the winner (CONTRACT §3).
 *
 * Ownership: a call owns its nta legs and transactions and destroys them
 * when it ends, so no nta callback can reach a freed call. BYEs sent at the
 * end keep the call alive (pending) until they complete.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sofia-sip/msg_addr.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/sip_tag.h>
#include <sofia-sip/su_tagarg.h>

#define LOG_MODULE "b2b"
#include "log.h"
#include "clk.h"
#include "rnd.h"
#include "conf.h"
#include "hmap.h"
#include "metrics.h"
#include "crm/crm.h"
#include "media/media.h"
#include "routing/route.h"
#include "sip/b2b.h"
#include "sip/b2b_int.h"
#include "sip/digest.h"
#include "sip/msdp.h"
#include "sip/registrar.h"
#include "sip/sipd.h"

static void call_end(struct call *c, const char *disposition);
static void fork_next(struct call *c);
static void call_maybe_free(struct call *c);
static int leg_send(struct call *c, struct leg *l, bool www, const char *auth);
static void leg_early(struct call *c, struct leg *l, const sip_t *sip);
static int leg_auth(struct call *c, struct leg *l, const sip_t *sip);

/* ---- helpers ---------------------------------------------------------------- */

/*
 * A call's id: 32 hex digits, the first 12 the start time in Unix
 * milliseconds and the other 20 random (the layout of a UUIDv7). Ids that
 * grow with time keep the CDR, leg and open-call indexes appending at
 * their right edge: random ones sent every call's rows to a different
 * B-tree page, and every such page through the WAL at every commit.
 */
void b2b_new_id(char id[40])
{
	uint8_t r[16];
	static const char hex[] = "0123456789abcdef";
	uint64_t ms = (uint64_t)clk_wall_ms();

	if (rnd_bytes(r + 6, sizeof(r) - 6))
		for (size_t i = 6; i < sizeof(r); i++)
			r[i] = (uint8_t)random();
	for (size_t i = 0; i < 6; i++)
		r[i] = (uint8_t)(ms >> (40 - 8 * i));
	for (size_t i = 0; i < 16; i++) {
		id[i * 2] = hex[r[i] >> 4];
		id[i * 2 + 1] = hex[r[i] & 15];
	}
	id[32] = '\0';
}

/* Our Contact, in <> so that URI parameters (;transport=) stay in the URI. */
const char *b2b_contact(const struct call *c, char *buf, size_t sz)
{
	return b2b_contact_of(c->b2b, buf, sz);
}

const char *b2b_contact_of(const struct b2b *b, char *buf, size_t sz)
{
	const sip_contact_t *m = nta_agent_contact(sipd_agent(b->sipd));
	issize_t n = m && sz > 3 ? url_e(buf + 1, sz - 2, m->m_url) : -1;

	if (n <= 0 || (size_t)n + 3 > sz)
		return NULL;
	buf[0] = '<';
	buf[n + 1] = '>';
	buf[n + 2] = '\0';
	return buf;
}

void b2b_timer_arm(su_timer_t **t, struct b2b *b, int64_t ms, su_timer_f f,
		   void *arg)
{
	if (!*t)
		*t = su_timer_create(su_root_task(b->root), 0);
	if (!*t || su_timer_set_interval(*t, f, arg, (su_duration_t)(ms > 0 ? ms : 0)))
		log_err("cannot arm a call timer");
}

void b2b_timer_disarm(su_timer_t **t)
{
	su_timer_destroy(*t);
	*t = NULL;
}

/* ---- outbound branches -------------------------------------------------------- */

struct leg *b2b_leg_new(struct call *c, const char *uri, const char *agent,
			   const char *route)
{
	struct leg *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->call = c;
	l->fork = c->fork;
	l->idx = c->nlegs++;
	snprintf(l->uri, sizeof(l->uri), "%s", uri);
	snprintf(l->agent, sizeof(l->agent), "%s", agent ? agent : "");
	snprintf(l->route, sizeof(l->route), "%s", route ? route : "");
	l->started_ms = clk_wall_ms();
	l->next = c->legs;
	c->legs = l;
	b2b_act_leg(l, true);
	return l;
}

static void leg_release(struct leg *l)
{
	if (l->orq) {
		nta_outgoing_destroy(l->orq);
		l->orq = NULL;
	}
	if (l->dlg) {
		nta_leg_destroy(l->dlg);
		l->dlg = NULL;
	}
}

static void leg_send_ack(struct leg *l, const sip_t *sip)
{
	nta_leg_rtag(l->dlg, sip->sip_to->a_tag);
	nta_leg_client_route(l->dlg, sip->sip_record_route, sip->sip_contact);
	b2b_leg_ack(l->dlg, sip);
}

static int bye_done(nta_outgoing_magic_t *magic, nta_outgoing_t *orq,
		    const sip_t *sip)
{
	struct call *c = (struct call *)magic;

	if (nta_outgoing_status(orq) < 200)
		return 0;
	nta_outgoing_destroy(orq);
	c->pending--;
	call_maybe_free(c);
	return 0;
}

static void send_bye(struct call *c, nta_leg_t *dlg)
{
	nta_outgoing_t *orq;

	if (!dlg)
		return;
	orq = nta_outgoing_tcreate(dlg, bye_done, (nta_outgoing_magic_t *)c, NULL,
				   SIP_METHOD_BYE, NULL, TAG_END());
	if (orq)
		c->pending++;
}

static bool fork_settled(const struct call *c)
{
	for (const struct leg *l = c->legs; l; l = l->next)
		if (l->role == LEG_BRANCH && l->fork == c->fork && l->status < 200)
			return false;
	return true;
}

static void note_failure(struct call *c, int status, const char *phrase)
{
	/* RFC 3261 §16.7: 6xx wins, else the lowest class, 408 and 503 last */
	int cls = status / 100, bcls = c->best_status / 100;
	bool better = !c->best_status ||
		      (cls == 6 && bcls != 6) ||
		      (bcls != 6 && (c->best_status == 408 || c->best_status == 503 ||
				     c->best_status == 487) && status != 487) ||
		      (bcls != 6 && cls < bcls && status != 408 && status != 503 &&
		       status != 487);

	if (!better)
		return;
	c->best_status = status;
	snprintf(c->best_phrase, sizeof(c->best_phrase), "%s", phrase ? phrase : "");
}

/* A branch answered with media we cannot use: it counts as a 488. */
static void leg_refused(struct call *c, struct leg *l, const char *why)
{
	b2b_act_leg(l, false);
	send_bye(c, l->dlg);
	l->status = 488;
	l->ended_ms = clk_wall_ms();
	note_failure(c, 488, why);
	if (c->state < CALL_ANSWERED && !c->ending && l->fork == c->fork &&
	    fork_settled(c))
		fork_next(c);
}

static void leg_answered(struct leg *l, const sip_t *sip)
{
	struct call *c = l->call;
	struct msdp_info info;
	char msg[400];

	leg_send_ack(l, sip);
	if (c->winner || c->state >= CALL_ANSWERED) {
		send_bye(c, l->dlg);    /* a late 200 from a branch that lost */
		return;
	}
	snprintf(msg, sizeof(msg), "answer from %s without usable SDP", l->uri);
	if (!sip->sip_payload ||
	    msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
		       c->conf->media.codecs, &info)) {
		b2b_log_sdp(c, msg, sip);
		leg_refused(c, l, "Not Acceptable Here");
		return;
	}
	b2b_side_take_leg(c, SIDE_OUT, l);
	if (b2b_srtp_check(c, c->side[SIDE_OUT].srtp_required, &info) ||
	    b2b_apply_peer(c, SIDE_OUT, &info)) {
		snprintf(msg, sizeof(msg), "%s answered without the SRTP it was offered "
			 "([media] srtp = require)", l->uri);
		b2b_log_sdp(c, msg, sip);
		leg_refused(c, l, "SRTP required");
		return;
	}
	b2b_side_secure(c, SIDE_OUT);
	b2b_se_response(c, SIDE_OUT, sip);
	c->winner = l;
	l->answered_ms = clk_wall_ms();
	b2b_call_answered(c, l);
}

/* Remembers where a branch's 2xx came from (see b2b_leg_from_peer). */
static void leg_note_peer(struct leg *l, nta_outgoing_t *orq)
{
	msg_t *msg = nta_outgoing_getresponse(orq);
	su_addrinfo_t *ai = msg ? msg_addrinfo(msg) : NULL;

	if (ai && ai->ai_addr && ai->ai_addrlen <= sizeof(l->peer)) {
		memset(&l->peer, 0, sizeof(l->peer));
		memcpy(&l->peer, ai->ai_addr, ai->ai_addrlen);
		l->have_peer = true;
	}
	msg_destroy(msg);
}

/*
 * Anyone who learns a dialog's Call-ID and tags could otherwise send a
 * REFER in it, as the agent, and have the trunk dial anywhere (toll
 * fraud), or a re-INVITE that takes the media. The address is compared
 * without the port: TCP connections come from any port.
 */
bool b2b_from_addr(const struct sockaddr_storage *peer, nta_incoming_t *irq)
{
	struct sockaddr_storage ss;
	socklen_t len;
	const struct sockaddr_in *a4 = (const void *)&ss, *p4 = (const void *)peer;
	const struct sockaddr_in6 *a6 = (const void *)&ss, *p6 = (const void *)peer;

	if (sipd_source(irq, &ss, &len) || ss.ss_family != peer->ss_family)
		return false;
	if (ss.ss_family == AF_INET)
		return a4->sin_addr.s_addr == p4->sin_addr.s_addr;
	return ss.ss_family == AF_INET6 &&
	       !memcmp(&a6->sin6_addr, &p6->sin6_addr, sizeof(a6->sin6_addr));
}

bool b2b_leg_from_peer(const struct leg *l, nta_incoming_t *irq)
{
	return !l->have_peer || b2b_from_addr(&l->peer, irq);
}

static int leg_response(nta_outgoing_magic_t *magic, nta_outgoing_t *orq,
			const sip_t *sip)
{
	struct leg *l = (struct leg *)magic;
	struct call *c = l->call;
	int status = sip && sip->sip_status ? sip->sip_status->st_status :
		     nta_outgoing_status(orq);

	if (status < 200) {
		if (status > 100 && !c->ending)
			leg_early(c, l, sip);
		return 0;
	}
	if ((status == 401 || status == 407) && !c->ending && !l->cancelled &&
	    leg_auth(c, l, sip) == 0) {
		nta_outgoing_destroy(orq);  /* leg_auth sent the INVITE again */
		return 0;
	}
	if ((status == 488 || status == 415 || status == 606) && l->savp &&
	    c->conf->media.srtp == CONF_SRTP_OFFER && !c->ending && !l->cancelled) {
		/* srtp = offer: a phone that refuses RTP/SAVP is offered plain RTP */
		log_info("call %s: %s refused SRTP (%d), offering plain RTP", c->id,
			 l->uri, status);
		l->savp = false;
		l->srtp_fellback = true;
		l->nsdes = 0;
		OPENSSL_cleanse(l->sdes, sizeof(l->sdes));
		if (leg_send(c, l, false, NULL) == 0) {
			nta_outgoing_destroy(orq);
			return 0;
		}
	}
	l->status = status;
	if (status < 300)
		leg_note_peer(l, orq);
	/* sip lives in orq (freed at once when it came over TCP or TLS):
	   orq is destroyed once sip is no longer read */
	l->orq = NULL;
	c->in_callback = true;
	if (status < 300) {
		if (l->role == LEG_BRANCH)
			leg_answered(l, sip);
		else
			b2b_ctl_leg_answered(c, l, sip);
	}
	else if (l->role != LEG_BRANCH) {
		l->ended_ms = clk_wall_ms();
		b2b_act_leg(l, false);
		log_info("call %s: branch %s answered %d", c->id, l->uri, status);
		if (!c->ending)
			b2b_ctl_leg_failed(c, l, status, sip && sip->sip_status ?
					   sip->sip_status->st_phrase : NULL);
	}
	else {
		l->ended_ms = clk_wall_ms();
		b2b_act_leg(l, false);
		log_info("call %s: branch %s answered %d", c->id, l->uri, status);
		if (!l->cancelled)
			note_failure(c, status, sip && sip->sip_status ?
				     sip->sip_status->st_phrase : NULL);
		if (c->state < CALL_ANSWERED && !c->ending && l->fork == c->fork &&
		    fork_settled(c))
			fork_next(c);
	}
	nta_outgoing_destroy(orq);
	c->in_callback = false;
	/* a call that ended while this branch rang was waiting for this answer */
	if (l->pending_final)
		b2b_leg_final_after_end(l);
	else
		call_maybe_free(c);
	return 0;
}

/*
 * A provisional answer from a branch. The caller of an inbound trunk call
 * keeps hearing our relay (CONTRACT §3.5); an agent's own call hears the
 * far side's early media (the provider's ringback and announcements).
 */
static void leg_early(struct call *c, struct leg *l, const sip_t *sip)
{
	struct msdp_info info;

	if (c->dir != ROUTE_INBOUND && !c->early_relay && sip->sip_payload &&
	    sip->sip_status->st_status != 199 && c->state < CALL_ANSWERED &&
	    !msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
			c->conf->media.codecs, &info)) {
		b2b_side_take_leg(c, SIDE_OUT, l);
		b2b_apply_peer(c, SIDE_OUT, &info);
		media_bridge(c->b2b->media, c->ep_in, c->ep_out);
		c->early_relay = true;
		l->early_media = true;
		b2b_call_progress(c);
	}
	if (sip->sip_status->st_status == 180 || sip->sip_status->st_status == 183)
		b2b_call_ringing(c, l);
}

/* A digest parameter of a challenge, unquoted into buf; NULL if absent. */
static const char *auth_param(const msg_auth_t *au, const char *name,
			      char *buf, size_t sz)
{
	const char *v = au ? msg_params_find(au->au_params, name) : NULL;
	size_t n;

	if (!v)
		return NULL;
	n = strlen(v);
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
		v++;
		n -= 2;
	}
	if (n >= sz)
		return NULL;
	memcpy(buf, v, n);
	buf[n] = '\0';
	return buf;
}

/*
 * The trunk challenged a branch: answer with the trunk's credentials once
 * (RFC 3261 §22.2). Returns 0 when the INVITE went out again.
 */
static int leg_auth(struct call *c, struct leg *l, const sip_t *sip)
{
	const msg_auth_t *au = sip->sip_status->st_status == 401 ?
			       (const msg_auth_t *)sip->sip_www_authenticate :
			       (const msg_auth_t *)sip->sip_proxy_authenticate;
	char realm[128], nonce[256], alg[32], qop[64], opaque[256], resp[DIGEST_HEX_MAX];
	char cnonce[17], hdr[1400];
	enum digest_alg a = DIGEST_MD5;
	const char *q, *op;
	uint8_t rnd[8];

	if (!l->trunk || !*l->trunk->username || l->auth_tries++ > 0)
		return -1;
	for (; au; au = au->au_next) {
		if (!au->au_scheme || strcasecmp(au->au_scheme, "Digest"))
			continue;
		if (!auth_param(au, "algorithm=", alg, sizeof(alg)) ||
		    !strcasecmp(alg, "MD5")) {
			a = DIGEST_MD5;
			break;
		}
		if (!strcasecmp(alg, "SHA-256")) {
			a = DIGEST_SHA256;
			break;
		}
	}
	if (!au || !auth_param(au, "realm=", realm, sizeof(realm)) ||
	    !auth_param(au, "nonce=", nonce, sizeof(nonce)))
		return -1;
	q = auth_param(au, "qop=", qop, sizeof(qop));
	if (q && !strstr(q, "auth"))
		return -1;              /* auth-int only: not offered */
	op = auth_param(au, "opaque=", opaque, sizeof(opaque));
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -1;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(cnonce + i * 2, 3, "%02x", rnd[i]);
	if (digest_compute(resp, a, l->trunk->username, realm, l->trunk->password,
			   "INVITE", l->uri, nonce, "00000001", cnonce,
			   q ? "auth" : NULL))
		return -1;
	snprintf(hdr, sizeof(hdr), "Digest username=\"%s\", realm=\"%s\", "
		 "nonce=\"%s\", uri=\"%s\", response=\"%s\", algorithm=%s%s%s%s%s%s%s",
		 l->trunk->username, realm, nonce, l->uri, resp,
		 a == DIGEST_SHA256 ? "SHA-256" : "MD5",
		 q ? ", qop=auth, nc=00000001, cnonce=\"" : "", q ? cnonce : "",
		 q ? "\"" : "", op ? ", opaque=\"" : "", op ? op : "", op ? "\"" : "");
	log_info("call %s: the trunk asked for credentials (%d), answering as %s",
		 c->id, sip->sip_status->st_status, l->trunk->username);
	return leg_send(c, l, sip->sip_status->st_status == 401, hdr);
}

static int leg_request(nta_leg_magic_t *magic, nta_leg_t *dlg,
		       nta_incoming_t *irq, const sip_t *sip)
{
	struct leg *l = (struct leg *)magic;

	return b2b_in_dialog(l->call, l, irq, sip);
}

/*
 * Sends (or, after a challenge, sends again) the INVITE of one branch with
 * the session timer we want and, when auth is set, the digest answer.
 */
static int leg_send(struct call *c, struct leg *l, bool www, const char *auth)
{
	char cbuf[256], xid[64], se[32], minse[32], sec[sizeof(c->out_offer)];
	const char *contact = b2b_contact(c, cbuf, sizeof(cbuf));
	const char *sdp = l->offer ? l->offer : c->out_offer;
	url_string_t *route = *l->route ? URL_STRING_MAKE(l->route) : NULL;
	int64_t want = c->conf->sip.session_expires_ms;
	bool timer = want > 0;

	snprintf(xid, sizeof(xid), "X-Sipcrm-Call-ID: %s", c->id);
	if (timer) {
		int64_t min = c->conf->sip.min_se_ms > 0 ? c->conf->sip.min_se_ms : 1000;

		snprintf(se, sizeof(se), "%lld", (long long)((want < min ? min : want) / 1000));
		snprintf(minse, sizeof(minse), "%lld", (long long)(min / 1000));
	}
	if (l->savp) {
		if (msdp_secure(sec, sizeof(sec), sdp, l->sdes, l->nsdes) < 0)
			return EIO;
		sdp = sec;
	}
	l->orq = nta_outgoing_tcreate(l->dlg, leg_response, (nta_outgoing_magic_t *)l,
				      route, SIP_METHOD_INVITE, URL_STRING_MAKE(l->uri),
				      TAG_IF(contact, SIPTAG_CONTACT_STR(contact)),
				      TAG_IF(timer, SIPTAG_SUPPORTED_STR("timer")),
				      TAG_IF(timer, SIPTAG_SESSION_EXPIRES_STR(se)),
				      TAG_IF(timer, SIPTAG_MIN_SE_STR(minse)),
				      SIPTAG_ALLOW_STR("INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY"),
				      TAG_IF(auth && www, SIPTAG_AUTHORIZATION_STR(auth)),
				      TAG_IF(auth && !www, SIPTAG_PROXY_AUTHORIZATION_STR(auth)),
				      SIPTAG_CONTENT_TYPE_STR("application/sdp"),
				      SIPTAG_PAYLOAD_STR(sdp),
				      SIPTAG_HEADER_STR(xid),
				      TAG_IF(*c->carry, SIPTAG_HEADER_STR(c->carry)),
				      TAG_IF(c->b2b->server, SIPTAG_USER_AGENT_STR(c->b2b->server)),
				      TAG_END());
	OPENSSL_cleanse(sec, sizeof(sec));
	return l->orq ? 0 : EIO;
}

/* Creates the dialog of one branch and sends its INVITE. 0 or an errno value. */
int b2b_leg_invite(struct call *c, struct leg *l)
{
	char from[320], to[400];
	const char *fuser = l->from_user ? l->from_user : c->from;
	const char *fname = l->from_name ? l->from_name : c->from_name;

	/* every branch is offered the same relay port: build the SDP once */
	if (!l->offer && !*c->out_offer &&
	    b2b_build_sdp(c, SIDE_OUT, -1, 101, MSDP_SENDRECV))
		return EINVAL;
	snprintf(from, sizeof(from), "%s%s%s<sip:%s@%s>", *fname ? "\"" : "",
		 fname, *fname ? "\" " : "", *fuser ? fuser : "anonymous",
		 *c->from_host && l->role != LEG_C2C_AGENT ? c->from_host :
		 c->conf->sip.domain);
	snprintf(to, sizeof(to), "<%s>", l->uri);
	l->dlg = nta_leg_tcreate(sipd_agent(c->b2b->sipd), leg_request,
				 (nta_leg_magic_t *)l, SIPTAG_FROM_STR(from),
				 SIPTAG_TO_STR(to), TAG_END());
	if (!l->dlg || !nta_leg_tag(l->dlg, NULL))
		return ENOMEM;
	return leg_send(c, l, false, NULL);
}

void b2b_leg_answer_ack(struct leg *l, const sip_t *sip)
{
	leg_send_ack(l, sip);
}

/* Cancels the ringing branches of one role, but keep. */
void b2b_cancel_role(struct call *c, enum leg_role role, const struct leg *keep)
{
	for (struct leg *l = c->legs; l; l = l->next) {
		if (l->role != role || l == keep || l->status >= 200)
			continue;
		if (l->orq && !l->cancelled) {
			nta_outgoing_cancel(l->orq);
			l->cancelled = true;
		}
		b2b_act_leg(l, false);
	}
}

static void cancel_fork_legs(struct call *c, size_t fork, bool all)
{
	for (struct leg *l = c->legs; l; l = l->next) {
		if ((!all && l->fork != fork) || l == c->winner || l->status >= 200)
			continue;
		if (l->orq && !l->cancelled) {
			nta_outgoing_cancel(l->orq);
			l->cancelled = true;
		}
		b2b_act_leg(l, false);
	}
}

/* ---- forks ---------------------------------------------------------------------- */

static void on_fork_timeout(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct call *c = (struct call *)arg;

	(void)m;
	(void)t;
	log_info("call %s: fork %zu rang out", c->id, c->fork);
	cancel_fork_legs(c, c->fork, false);
	fork_next(c);
}

static size_t start_target(struct call *c, const struct route_target *t)
{
	const struct conf *cf = c->conf;
	char uri[ROUTE_URI_MAX + 64];

	if (t->kind == ROUTE_TARGET_URI) {
		struct leg *l = b2b_leg_new(c, t->uri, NULL, NULL);

		return l && !b2b_leg_invite(c, l) ? 1 : 0;
	}
	if (t->kind == ROUTE_TARGET_TRUNK) {
		b2b_trunk_uri(c, t->uri, uri, sizeof(uri));
		struct leg *l = b2b_leg_new(c, uri, NULL, NULL);

		if (l)
			l->trunk = cf->ntrunks ? &cf->trunks[0] : NULL;
		return l && !b2b_leg_invite(c, l) ? 1 : 0;
	}
	return b2b_ring_agent(c, t->ext, LEG_BRANCH, NULL, NULL);
}

/*
 * Rings every registered phone of an agent, or its extension_uri when it
 * has none, as branches of role with SDP offer (NULL: the call's).
 * Returns how many branches went out.
 */
size_t b2b_ring_agent(struct call *c, const char *ext, enum leg_role role,
		      const char *offer, const char *from_user)
{
	const struct conf *cf = c->conf;
	char uri[ROUTE_URI_MAX + 64];
	size_t n = 0;
	struct leg *l;

	for (const struct reg_contact *rc = reg_contacts(c->b2b->reg, ext); rc;
	     rc = rc->next) {
		l = b2b_leg_new(c, rc->uri, ext, rc->received);
		if (l) {
			l->role = role;
			l->offer = offer;
			l->from_user = l->from_name = from_user;
			/* [media] srtp: a phone of ours is offered SDES-SRTP */
			if (cf->media.srtp != CONF_SRTP_OFF) {
				int k = msdp_crypto_offer(l->sdes, 2);

				if (k > 0) {
					l->nsdes = (size_t)k;
					l->savp = true;
				}
				else {
					log_err("call %s: no random bytes for SRTP keys; "
						"offering %s plain RTP", c->id, rc->uri);
				}
			}
		}
		n += l && !b2b_leg_invite(c, l) ? 1 : 0;
	}
	if (n == 0 && *cf->pbx.extension_uri) {
		b2b_expand_ext(cf->pbx.extension_uri, ext, uri, sizeof(uri));
		l = b2b_leg_new(c, uri, ext, NULL);
		if (l) {
			l->role = role;
			l->offer = offer;
			l->from_user = l->from_name = from_user;
		}
		n += l && !b2b_leg_invite(c, l) ? 1 : 0;
	}
	return n;
}

struct find_ctx {
	const char *callid;
	struct call *found;
};

static int find_cb(const char *key, void *val, void *arg)
{
	struct find_ctx *x = arg;
	struct call *c = val;

	(void)key;
	if (!c->ending && !strcmp(c->in_callid, x->callid)) {
		x->found = c;
		return 1;
	}
	return 0;
}

struct call *b2b_call_find(struct b2b *b, const char *in_callid)
{
	struct find_ctx x = { in_callid, NULL };

	hmap_apply(b->calls, find_cb, &x);
	return x.found;
}

static void fork_start(struct call *c)
{
	const struct route_fork *f = &c->plan->forks[c->fork];
	size_t started = 0;

	for (size_t i = 0; i < f->ntargets; i++)
		started += start_target(c, &f->targets[i]);
	log_info("call %s: fork %zu rings %zu branch(es)", c->id, c->fork, started);
	if (!started) {
		note_failure(c, 480, "Temporarily Unavailable");
		fork_next(c);
		return;
	}
	if (f->timeout_ms > 0)
		b2b_timer_arm(&c->tmr_fork, c->b2b, f->timeout_ms, on_fork_timeout, c);
}

static void fork_next(struct call *c)
{
	b2b_timer_disarm(&c->tmr_fork);
	if (c->state >= CALL_ANSWERED || c->ending)
		return;
	if (c->fork_started)
		c->fork++;
	c->fork_started = true;
	if (!c->plan || c->fork >= c->plan->nforks) {
		if (!c->best_status)
			note_failure(c, 480, "Temporarily Unavailable");
		b2b_call_failed(c, c->best_status, c->best_phrase);
		return;
	}
	fork_start(c);
}

void b2b_route(struct call *c)
{
	struct route_input in = {
		.dir = c->dir, .caller = c->from, .did = c->did, .dest = c->to,
		.set = &c->set,
	};
	const struct reg_contact *rc;

	b2b_ev_started(c);
	if (c->dir == ROUTE_INBOUND) {
		in.lookup = c->lres.status == CRM_KNOWN ? ROUTE_LOOKUP_KNOWN :
			    c->lres.status == CRM_FAILED ? ROUTE_LOOKUP_FAILED :
			    ROUTE_LOOKUP_UNKNOWN;
		in.agent.ext = *c->lres.responsible_ext ? c->lres.responsible_ext : NULL;
	}
	else if (c->dir == ROUTE_INTERNAL) {
		in.agent.ext = conf_agent_find(c->conf, c->to) ? c->to : NULL;
	}
	if (in.agent.ext) {
		rc = reg_contacts(c->b2b->reg, in.agent.ext);
		in.agent.registered = rc != NULL;
		in.agent.busy = b2b_agent_busy(c->b2b, in.agent.ext, c);
	}
	if (!c->plan)
		c->plan = calloc(1, sizeof(*c->plan));
	if (!c->plan) {
		b2b_call_failed(c, 503, "Out of Memory");
		return;
	}
	route_plan(&in, c->plan);
	log_info("call %s: %s", c->id, c->plan->why);
	switch (c->plan->action) {
	case ROUTE_REJECT:
		b2b_call_failed(c, c->plan->reject_status, c->plan->reject_reason);
		break;
	case ROUTE_REDIRECT:
		b2b_call_redirect(c);
		break;
	case ROUTE_BRIDGE:
		c->state = CALL_ROUTING;
		fork_next(c);
		break;
	}
}

/* ---- end and free ------------------------------------------------------------- */

static void call_free(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	struct call *c = (struct call *)arg;

	(void)m;
	(void)t;
	hmap_del(c->b2b->calls, c->id);
	while (c->legs) {
		struct leg *l = c->legs;

		c->legs = l->next;
		leg_release(l);
		OPENSSL_cleanse(l->sdes, sizeof(l->sdes));
		free(l);
	}
	if (c->in_dlg && !c->in_leg)
		nta_leg_destroy(c->in_dlg);
	if (c->in_irq)
		nta_incoming_destroy(c->in_irq);
	b2b_timer_disarm(&c->tmr_free);
	free(c->plan);
	conf_deref(c->conf);
	free(c);
}

/*
 * Frees on the next loop turn, never inside an nta callback: a callback
 * may belong to one of the legs or transactions that the free destroys.
 */
static void call_maybe_free(struct call *c)
{
	if (!c->ending || c->pending > 0 || c->in_callback || c->tmr_free)
		return;
	b2b_timer_arm(&c->tmr_free, c->b2b, 0, call_free, c);
}

/* At shutdown there is no next turn: free now. */
void b2b_call_free_now(struct call *c)
{
	b2b_timer_disarm(&c->tmr_free);
	call_free(NULL, NULL, (su_timer_arg_t *)c);
}

static void call_end(struct call *c, const char *disposition)
{
	if (c->ending)
		return;
	c->ending = true;
	c->state = CALL_ENDED;
	c->ended_ms = clk_wall_ms();
	snprintf(c->disposition, sizeof(c->disposition), "%s", disposition);
	b2b_timer_disarm(&c->tmr_fork);
	b2b_timer_disarm(&c->tmr_greeting);
	b2b_timer_disarm(&c->tmr_lookup);
	c->lookup = crm_lookup_cancel(c->lookup);
	b2b_xfer_free(c);
	b2b_side_cleanup(c);
	cancel_fork_legs(c, 0, true);
	b2b_rec_end(c);
	media_ep_free(c->b2b->media, c->ep_in);
	media_ep_free(c->b2b->media, c->ep_out);
	c->ep_in = c->ep_out = MEDIA_EP_NONE;
	b2b_act_call_end(c);
	b2b_cdr_write(c);
	b2b_ev_ended(c);
	log_info("call %s ended: %s", c->id, disposition);
	metrics_gauge_add(c->b2b->m_active, -1);
	/* branches still ringing keep the call until their final answers */
	for (struct leg *l = c->legs; l; l = l->next)
		if (l->orq && l->status < 200)
			c->pending++, l->pending_final = true;
	call_maybe_free(c);
}

void b2b_call_end(struct call *c, const char *disposition)
{
	call_end(c, disposition);
}

void b2b_leg_final_after_end(struct leg *l)
{
	if (l->pending_final) {
		l->pending_final = false;
		l->call->pending--;
		call_maybe_free(l->call);
	}
}

void b2b_send_bye(struct call *c, nta_leg_t *dlg)
{
	send_bye(c, dlg);
}

void b2b_cancel_others(struct call *c)
{
	cancel_fork_legs(c, 0, true);
}

void b2b_call_maybe_free(struct call *c)
{
	call_maybe_free(c);
}
