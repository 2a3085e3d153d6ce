/*
 * registrar.c: agents' registrations and digest authentication.
 *
 * Bindings live in memory (a map of agents to contact lists) and in
 * sqlite, written through the batched transaction; they are restored at
 * start. A one-second timer expires contacts without any request.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sofia-sip/msg_addr.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/sip_tag.h>

#define LOG_MODULE "reg"
#include "log.h"
#include "clk.h"
#include "conf.h"
#include "db.h"
#include "hmap.h"
#include "metrics.h"
#include "http/api.h"
#include "sip/ban.h"
#include "sip/digest.h"
#include "sip/registrar.h"
#include "sip/sipd.h"

#define MAX_CONTACTS 20         /* per agent, like a phone desk plus apps */
#define NC_RECORDS 65536

struct aor {
	struct reg_contact *contacts;
	unsigned n;
};

struct reg {
	su_root_t *root;
	struct sipd *sipd;
	struct db *db;
	struct conf *conf;
	struct digest *digest;
	struct ban *ban;
	struct hmap *aors;              /* ext -> struct aor */
	su_timer_t *tmr;
	reg_status_h *status_h;
	void *status_arg;
	reg_activity_h *activity_h;
	void *activity_arg;
	size_t ncontacts;
};

static struct {
	struct metric *ok, *challenge, *failed, *rejected, *unreg;
	struct metric *auth_fail, *bans, *banned_drop, *scanner_drop;
	struct metric *current, *banned_now;
} m;

static void metrics_init(void)
{
	const char *rn = "sipcrm_register_total";
	const char *rh = "REGISTER requests by result";

	m.ok = metrics_counter(rn, rh, "result=\"ok\"");
	m.challenge = metrics_counter(rn, rh, "result=\"challenged\"");
	m.failed = metrics_counter(rn, rh, "result=\"auth_failed\"");
	m.rejected = metrics_counter(rn, rh, "result=\"rejected\"");
	m.unreg = metrics_counter(rn, rh, "result=\"unregistered\"");
	m.auth_fail = metrics_counter("sipcrm_auth_failures_total",
				      "digest authentication failures", NULL);
	m.bans = metrics_counter("sipcrm_bans_total",
				 "source addresses banned for failed authentication", NULL);
	m.banned_drop = metrics_counter("sipcrm_dropped_requests_total",
					"requests dropped without an answer",
					"reason=\"banned\"");
	m.scanner_drop = metrics_counter("sipcrm_dropped_requests_total",
					 "requests dropped without an answer",
					 "reason=\"scanner\"");
	m.current = metrics_gauge("sipcrm_registrations",
				  "registered contacts now", NULL);
	m.banned_now = metrics_gauge("sipcrm_banned_addresses",
				     "source addresses banned now", NULL);
}

/* ---- contacts ------------------------------------------------------------ */

static void contact_free(struct reg_contact *c)
{
	free(c->uri);
	free(c->received);
	free(c->path);
	free(c->instance);
	free(c->user_agent);
	free(c->call_id);
	free(c);
}

static int persist_contact(struct reg *r, const char *ext,
			   const struct reg_contact *c)
{
	static const char sql[] =
		"INSERT OR REPLACE INTO registrations (ext, uri, received, path, "
		"instance, reg_id, user_agent, call_id, cseq, q1000, expires) "
		"VALUES (?,?,?,?,?,?,?,?,?,?,?)";
	sqlite3_stmt *st;

	db_tx(r->db);
	st = db_stmt(r->db, sql);
	if (!st)
		return EIO;
	sqlite3_bind_text(st, 1, ext, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, c->uri, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, c->received, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, c->path, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, c->instance, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 6, c->reg_id);
	sqlite3_bind_text(st, 7, c->user_agent, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, c->call_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, c->cseq);
	sqlite3_bind_int(st, 10, (int)c->q1000);
	sqlite3_bind_int64(st, 11, c->expires);
	return sqlite3_step(st) == SQLITE_DONE ? 0 : EIO;
}

static void unpersist_contact(struct reg *r, const char *ext, const char *uri)
{
	static const char sql[] =
		"DELETE FROM registrations WHERE ext = ? AND uri = ?";
	sqlite3_stmt *st;

	db_tx(r->db);
	st = db_stmt(r->db, sql);
	if (!st)
		return;
	sqlite3_bind_text(st, 1, ext, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, uri, -1, SQLITE_STATIC);
	sqlite3_step(st);
}

static struct aor *aor_get(struct reg *r, const char *ext, bool create)
{
	struct aor *a = hmap_get(r->aors, ext);

	if (a || !create)
		return a;
	a = calloc(1, sizeof(*a));
	if (a && hmap_set(r->aors, ext, a)) {
		free(a);
		a = NULL;
	}
	return a;
}

static void status_changed(struct reg *r, const char *ext, bool online)
{
	log_info("agent %s is %s", ext, online ? "online" : "offline");
	if (r->status_h)
		r->status_h(ext, online, r->status_arg);
}

/* Unlinks *cp, drops it from the store, and frees it. */
static void contact_remove(struct reg *r, const char *ext, struct aor *a,
			   struct reg_contact **cp)
{
	struct reg_contact *c = *cp;

	*cp = c->next;
	a->n--;
	r->ncontacts--;
	unpersist_contact(r, ext, c->uri);
	contact_free(c);
}

static void contact_add(struct reg *r, struct aor *a, struct reg_contact *c)
{
	c->next = a->contacts;
	a->contacts = c;
	a->n++;
	r->ncontacts++;
}

/* ---- authentication ------------------------------------------------------ */

/* Copies a parameter value, without quotes and escapes, into the arena. */
static const char *unquote(const char *v, char **arena, const char *end)
{
	char *out = *arena, *o = out;

	if (*v == '"') {
		for (v++; *v && *v != '"' && o < end - 1; v++) {
			if (*v == '\\' && v[1])
				v++;
			*o++ = *v;
		}
	}
	else {
		while (*v && o < end - 1)
			*o++ = *v++;
	}
	if (o >= end - 1)
		return NULL;
	*o++ = '\0';
	*arena = o;
	return out;
}

static bool param_is(const char *p, const char *name, const char **val)
{
	size_t n = strlen(name);

	if (strncasecmp(p, name, n) || p[n] != '=')
		return false;
	*val = p + n + 1;
	return true;
}

/* Fills dr from a Digest header; false when a value does not fit. */
static bool parse_digest(const msg_auth_t *au, struct digest_resp *dr,
			 char *arena, size_t size)
{
	static const char *const names[] = { "username", "realm", "nonce", "uri",
		"response", "algorithm", "cnonce", "qop", "nc", "opaque" };
	const char **fields[] = { &dr->username, &dr->realm, &dr->nonce, &dr->uri,
		&dr->response, &dr->algorithm, &dr->cnonce, &dr->qop, &dr->nc,
		&dr->opaque };
	const char *end = arena + size;

	memset(dr, 0, sizeof(*dr));
	for (size_t i = 0; au->au_params && au->au_params[i]; i++) {
		const char *v;

		for (size_t j = 0; j < sizeof(names) / sizeof(names[0]); j++) {
			if (!param_is(au->au_params[i], names[j], &v))
				continue;
			*fields[j] = unquote(v, &arena, end);
			if (!*fields[j])
				return false;
		}
	}
	return true;
}

static const msg_auth_t *find_credentials(const struct reg *r, const sip_t *sip,
					  bool proxy)
{
	const msg_auth_t *au = proxy ? sip->sip_proxy_authorization :
				       sip->sip_authorization;

	for (; au; au = au->au_next)
		if (au->au_scheme && !strcasecmp(au->au_scheme, "Digest"))
			return au;
	return NULL;
}

static void challenge(struct reg *r, nta_incoming_t *irq, bool proxy, bool stale)
{
	const struct conf *c = r->conf;
	char nonce[DIGEST_NONCE_MAX], ch[2][512];
	tag_type_t t = proxy ? siptag_proxy_authenticate_str :
			       siptag_www_authenticate_str;

	digest_nonce(r->digest, c->sip.domain, clk_mono_ms(), nonce);
	for (size_t i = 0; i < c->sip.ndigest_algs; i++)
		digest_challenge(ch[i], sizeof(ch[i]),
				 c->sip.digest_algs[i] == CONF_DIGEST_SHA256 ?
				 DIGEST_SHA256 : DIGEST_MD5, c->sip.domain, nonce, stale);
	sipd_reply(r->sipd, irq, proxy ? 407 : 401,
		   proxy ? "Proxy Authentication Required" : "Unauthorized",
		   t, (tag_value_t)ch[0],
		   TAG_IF(c->sip.ndigest_algs > 1, t), (tag_value_t)ch[1],
		   TAG_END());
}

/* An answer with an algorithm the config does not offer is refused. */
static bool alg_allowed(const struct conf *c, const char *alg)
{
	uint8_t want = !alg || !strcasecmp(alg, "MD5") ? CONF_DIGEST_MD5 :
		       !strcasecmp(alg, "SHA-256") ? CONF_DIGEST_SHA256 : 0;

	for (size_t i = 0; i < c->sip.ndigest_algs; i++)
		if (c->sip.digest_algs[i] == want)
			return true;
	return false;
}

static void auth_failed(struct reg *r, nta_incoming_t *irq, const char *user,
			enum digest_result res)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char ip[64], safe[64];
	size_t i;

	/* the user name comes from the network: keep the log line clean */
	for (i = 0; user && user[i] && i < sizeof(safe) - 1; i++)
		safe[i] = isprint((unsigned char)user[i]) && user[i] != '"' ?
			  user[i] : '?';
	safe[i] = '\0';
	if (sipd_source(irq, &ss, &len))
		memset(&ss, 0, sizeof(ss));
	sipd_addr_str(&ss, ip, sizeof(ip));
	log_warn("auth failed for \"%s\" from %s", safe, ip);
	log_debug("auth failure cause: %s", digest_result_str(res));
	metrics_inc(m.auth_fail);
	if (ss.ss_family && ban_failure(r->ban, (struct sockaddr *)&ss, clk_mono_ms())) {
		log_warn("banned %s for %lld s after repeated authentication "
			 "failures", ip, (long long)(r->conf->sip.ban_time_ms / 1000));
		metrics_inc(m.bans);
	}
}

const char *reg_authenticate(struct reg *r, nta_incoming_t *irq,
			     const sip_t *sip, bool proxy)
{
	const msg_auth_t *au = find_credentials(r, sip, proxy);
	const struct conf_agent *agent;
	struct digest_secret secret;
	struct digest_resp dr;
	enum digest_result res;
	char arena[2048];

	if (!au) {
		challenge(r, irq, proxy, false);
		metrics_inc(m.challenge);
		return NULL;
	}
	if (!parse_digest(au, &dr, arena, sizeof(arena)) || !dr.username) {
		res = DIGEST_BAD_FORMAT;
		agent = NULL;
	}
	else if (!alg_allowed(r->conf, dr.algorithm)) {
		res = DIGEST_UNSUPPORTED;
		agent = NULL;
	}
	else {
		agent = conf_agent_find(r->conf, dr.username);
		secret.password = agent ? agent->password : NULL;
		secret.ha1_md5 = agent ? agent->ha1 : NULL;
		res = digest_verify(r->digest, &dr, sip->sip_request->rq_method_name,
				    r->conf->sip.domain, agent ? &secret : NULL,
				    clk_mono_ms());
	}
	if (res == DIGEST_OK && agent)
		return agent->ext;
	if (res == DIGEST_STALE || res == DIGEST_BAD_NONCE) {
		/* right or not, the client must retry with a fresh nonce */
		challenge(r, irq, proxy, true);
		metrics_inc(m.challenge);
		return NULL;
	}
	auth_failed(r, irq, dr.username, res);
	challenge(r, irq, proxy, false);
	metrics_inc(m.failed);
	return NULL;
}

/* ---- REGISTER ------------------------------------------------------------ */

static bool is_myself(const struct reg *r, const url_t *uri)
{
	const char *host = uri->url_host;
	char h[64];
	size_t n;

	if (!host)
		return false;
	if (!strcasecmp(host, r->conf->sip.domain))
		return true;
	/* "[::1]" in a URI is "::1" in the config */
	n = strlen(host);
	if (host[0] == '[' && n > 2 && n - 2 < sizeof(h)) {
		memcpy(h, host + 1, n - 2);
		h[n - 2] = '\0';
		host = h;
	}
	for (size_t i = 0; i < r->conf->sip.nlisten; i++) {
		const char *lh = r->conf->sip.listen[i].host;

		if (!strcmp(lh, host) || !strcmp(lh, "0.0.0.0") || !strcmp(lh, "::"))
			return true;
	}
	return false;
}

static char *received_uri(nta_incoming_t *irq, const sip_t *sip)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char ip[64], *out = NULL;
	const char *proto = sip->sip_via ? sip->sip_via->v_protocol : NULL;
	const char *tp = proto ? strrchr(proto, '/') : NULL;
	char tpl[8] = "udp";
	uint16_t port;

	if (sipd_source(irq, &ss, &len))
		return NULL;
	sipd_addr_str(&ss, ip, sizeof(ip));
	port = ntohs(ss.ss_family == AF_INET6 ?
		     ((struct sockaddr_in6 *)&ss)->sin6_port :
		     ((struct sockaddr_in *)&ss)->sin_port);
	if (tp) {
		size_t i;

		for (i = 0; tp[i + 1] && i < sizeof(tpl) - 1; i++)
			tpl[i] = (char)tolower((unsigned char)tp[i + 1]);
		tpl[i] = '\0';
	}
	if (asprintf(&out, strchr(ip, ':') ? "sip:[%s]:%u;transport=%s" :
		     "sip:%s:%u;transport=%s", ip, port, tpl) < 0)
		return NULL;
	return out;
}

/* Expiry asked for one contact, in seconds: -1 when none was given. */
static long contact_expires(const sip_t *sip, const sip_contact_t *mc,
			    const struct conf *c)
{
	if (mc->m_expires)
		return strtol(mc->m_expires, NULL, 10);
	if (sip->sip_expires)
		return (long)sip->sip_expires->ex_delta;
	return c->sip.default_expires_ms / 1000;
}

static char *header_text(const sip_header_t *h)
{
	char buf[1024];
	issize_t n;

	if (!h)
		return NULL;
	n = sip_header_field_e(buf, sizeof(buf), h, 0);
	if (n <= 0 || (size_t)n >= sizeof(buf))
		return NULL;
	buf[n] = '\0';
	return strdup(buf);
}

static struct reg_contact *find_binding(struct aor *a, const char *uri,
					const char *instance, int reg_id,
					struct reg_contact ***pp)
{
	struct reg_contact **cp;

	for (cp = &a->contacts; *cp; cp = &(*cp)->next) {
		struct reg_contact *c = *cp;
		bool same = instance && c->instance ?
			    !strcmp(c->instance, instance) && c->reg_id == reg_id :
			    !strcmp(c->uri, uri);

		if (same) {
			if (pp)
				*pp = cp;
			return c;
		}
	}
	return NULL;
}

struct reg_req {
	struct reg *r;
	nta_incoming_t *irq;
	const sip_t *sip;
	const char *ext;
	struct aor *a;
	char *received;
	int64_t now;
};

static int reply_ok(struct reg_req *q)
{
	char buf[8192];
	size_t off = 0;

	buf[0] = '\0';
	for (struct reg_contact *c = q->a ? q->a->contacts : NULL; c; c = c->next) {
		int n = snprintf(buf + off, sizeof(buf) - off, "%s<%s>;expires=%lld",
				 off ? ", " : "", c->uri,
				 (long long)(c->expires - q->now));

		if (n < 0 || (size_t)n >= sizeof(buf) - off)
			break;
		off += (size_t)n;
	}
	sipd_reply(q->r->sipd, q->irq, SIP_200_OK,
		   TAG_IF(off, SIPTAG_CONTACT_STR(buf)), TAG_END());
	return 200;
}

static int remove_all(struct reg_req *q)
{
	if (!q->sip->sip_expires || q->sip->sip_expires->ex_delta != 0 ||
	    q->sip->sip_contact->m_next) {
		sipd_reply(q->r->sipd, q->irq, 400, "Wildcard needs Expires: 0 alone",
			   TAG_END());
		return 400;
	}
	while (q->a && q->a->contacts)
		contact_remove(q->r, q->ext, q->a, &q->a->contacts);
	metrics_inc(m.unreg);
	return 0;
}

/* Checks every contact before changing anything. 0 or the status sent. */
static int validate(struct reg_req *q)
{
	const struct conf *c = q->r->conf;
	unsigned adding = 0;

	for (const sip_contact_t *mc = q->sip->sip_contact; mc; mc = mc->m_next) {
		long exp = contact_expires(q->sip, mc, c);
		char min[24];

		if (!mc->m_url->url_host) {
			sipd_reply(q->r->sipd, q->irq, 400, "Bad Contact", TAG_END());
			return 400;
		}
		if (exp != 0 && exp < c->sip.min_expires_ms / 1000) {
			snprintf(min, sizeof(min), "%lld",
				 (long long)(c->sip.min_expires_ms / 1000));
			sipd_reply(q->r->sipd, q->irq, SIP_423_INTERVAL_TOO_BRIEF,
				   SIPTAG_MIN_EXPIRES_STR(min), TAG_END());
			return 423;
		}
		if (exp != 0)
			adding++;
	}
	if (adding > MAX_CONTACTS) {
		sipd_reply(q->r->sipd, q->irq, 403, "Too many contacts", TAG_END());
		return 403;
	}
	return 0;
}

unsigned reg_q1000(const char *q)
{
	char *end;
	double v;

	if (!q)
		return 1000;
	v = strtod(q, &end);
	while (end != q && (*end == ' ' || *end == '\t'))
		end++;
	/* converting an out-of-range double to unsigned is undefined */
	if (end == q || *end || v != v)
		return 1000;
	if (v <= 0)
		return 0;
	if (v >= 1)
		return 1000;
	return (unsigned)(v * 1000 + 0.5);
}

static int apply_one(struct reg_req *q, const sip_contact_t *mc)
{
	const struct conf *c = q->r->conf;
	long exp = contact_expires(q->sip, mc, c);
	const char *inst = msg_params_find(mc->m_params, "+sip.instance=");
	const char *rid = msg_params_find(mc->m_params, "reg-id=");
	char uri[1024];
	struct reg_contact *b, **bp = NULL;
	issize_t n = url_e(uri, sizeof(uri), mc->m_url);

	if (n <= 0 || (size_t)n >= sizeof(uri))
		return 400;
	uri[n] = '\0';
	if (exp > c->sip.max_expires_ms / 1000)
		exp = (long)(c->sip.max_expires_ms / 1000);
	b = find_binding(q->a, uri, inst, rid ? atoi(rid) : 0, &bp);
	if (b && !strcmp(b->call_id, q->sip->sip_call_id->i_id) &&
	    q->sip->sip_cseq->cs_seq <= b->cseq)
		return 400;     /* out of order (RFC 3261 §10.3 step 7) */
	if (b && exp == 0) {
		contact_remove(q->r, q->ext, q->a, bp);
		return 0;
	}
	if (exp == 0)
		return 0;
	if (!b) {
		if (q->a->n >= MAX_CONTACTS)
			return 403;
		b = calloc(1, sizeof(*b));
		if (!b || !(b->uri = strdup(uri)))
			return b ? (free(b), 500) : 500;
		contact_add(q->r, q->a, b);
	}
	else if (strcmp(b->uri, uri)) {
		/* same instance, new URI: replace the stored row */
		unpersist_contact(q->r, q->ext, b->uri);
		free(b->uri);
		b->uri = strdup(uri);
	}
	free(b->received);
	b->received = q->received ? strdup(q->received) : NULL;
	free(b->path);
	b->path = header_text((const sip_header_t *)q->sip->sip_path);
	free(b->instance);
	b->instance = inst ? strdup(inst) : NULL;
	b->reg_id = rid ? atoi(rid) : 0;
	free(b->user_agent);
	b->user_agent = q->sip->sip_user_agent ?
			strdup(q->sip->sip_user_agent->g_string) : NULL;
	free(b->call_id);
	b->call_id = strdup(q->sip->sip_call_id->i_id);
	b->cseq = q->sip->sip_cseq->cs_seq;
	b->q1000 = reg_q1000(mc->m_q);
	b->expires = q->now + exp;
	if (!b->uri || !b->call_id)
		return 500;
	persist_contact(q->r, q->ext, b);
	return 0;
}

static int apply_contacts(struct reg_req *q)
{
	int status = validate(q);

	if (status)
		return status;
	q->a = aor_get(q->r, q->ext, true);
	if (!q->a) {
		sipd_reply(q->r->sipd, q->irq, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
		return 500;
	}
	for (const sip_contact_t *mc = q->sip->sip_contact; mc; mc = mc->m_next) {
		status = apply_one(q, mc);
		if (status) {
			sipd_reply(q->r->sipd, q->irq, status,
				   status == 400 ? "Invalid CSeq or Contact" :
				   status == 403 ? "Too many contacts" : NULL,
				   TAG_END());
			return status;
		}
	}
	return 0;
}

static int on_register(void *arg, nta_incoming_t *irq, const sip_t *sip)
{
	struct reg *r = arg;
	struct reg_req q = { .r = r, .irq = irq, .sip = sip };
	unsigned before;
	int status = 0;

	if (!is_myself(r, sip->sip_request->rq_url)) {
		sipd_reply(r->sipd, irq, SIP_403_FORBIDDEN, TAG_END());
		metrics_inc(m.rejected);
		return 403;
	}
	q.ext = reg_authenticate(r, irq, sip, false);
	if (!q.ext)
		return 401;
	if (!sip->sip_to->a_url->url_user ||
	    strcmp(sip->sip_to->a_url->url_user, q.ext)) {
		sipd_reply(r->sipd, irq, 403, "To does not match the credentials",
			   TAG_END());
		metrics_inc(m.rejected);
		return 403;
	}
	q.now = clk_wall_ms() / 1000;
	q.a = aor_get(r, q.ext, false);
	before = q.a ? q.a->n : 0;
	if (sip->sip_contact && sip->sip_contact->m_url->url_type == url_any) {
		status = remove_all(&q);
	}
	else if (sip->sip_contact) {
		q.received = received_uri(irq, sip);
		status = apply_contacts(&q);
		free(q.received);
	}
	if (status) {
		metrics_inc(m.rejected);
		return status;
	}
	metrics_set(m.current, (int64_t)r->ncontacts);
	if (!before != !(q.a ? q.a->n : 0))
		status_changed(r, q.ext, q.a && q.a->n);
	metrics_inc(m.ok);
	return reply_ok(&q);
}

/* ---- expiry, filter, load ---------------------------------------------- */

struct expire_ctx {
	struct reg *r;
	int64_t now;
};

static int expire_aor(const char *ext, void *val, void *arg)
{
	struct expire_ctx *x = arg;
	struct aor *a = val;
	struct reg_contact **cp = &a->contacts;
	bool had = a->n > 0;

	while (*cp) {
		if ((*cp)->expires <= x->now) {
			log_info("contact %s of agent %s expired", (*cp)->uri, ext);
			contact_remove(x->r, ext, a, cp);
		}
		else {
			cp = &(*cp)->next;
		}
	}
	if (had && !a->n)
		status_changed(x->r, ext, false);
	return 0;
}

void reg_expire(struct reg *r)
{
	struct expire_ctx x = { r, clk_wall_ms() / 1000 };

	hmap_apply(r->aors, expire_aor, &x);
	ban_expire(r->ban, clk_mono_ms());
	metrics_set(m.current, (int64_t)r->ncontacts);
	metrics_set(m.banned_now, (int64_t)ban_count(r->ban, clk_mono_ms()));
}

static void on_tick(su_root_magic_t *magic, su_timer_t *t, su_timer_arg_t *arg)
{
	(void)magic;
	(void)t;
	reg_expire((struct reg *)arg);
}

static bool is_scanner(const sip_t *sip)
{
	static const char *const scanners[] = { "friendly-scanner", "sipcli",
		"sipvicious", "sip-scan", "sipscan", "vaxsipuseragent", "iwar",
		"sivus", "smap", NULL };
	const char *ua = sip->sip_user_agent ? sip->sip_user_agent->g_string : NULL;

	if (!ua)
		return false;
	for (int i = 0; scanners[i]; i++)
		if (strcasestr(ua, scanners[i]))
			return true;
	return false;
}

static bool filter(void *arg, msg_t *msg, const sip_t *sip)
{
	struct reg *r = arg;
	su_addrinfo_t *ai = msg_addrinfo(msg);

	if (ai && ai->ai_addr && ban_is_banned(r->ban, ai->ai_addr, clk_mono_ms())) {
		metrics_inc(m.banned_drop);
		return true;
	}
	if (is_scanner(sip)) {
		metrics_inc(m.scanner_drop);
		return true;
	}
	return false;
}

static void load_row(struct reg *r, sqlite3_stmt *st)
{
	const char *ext = (const char *)sqlite3_column_text(st, 0);
	struct reg_contact *c = calloc(1, sizeof(*c));
	struct aor *a = aor_get(r, ext, true);

#define COL_STR(i) (sqlite3_column_type(st, i) == SQLITE_NULL ? NULL : \
		    strdup((const char *)sqlite3_column_text(st, i)))
	if (!c || !a) {
		free(c);
		return;
	}
	c->uri = COL_STR(1);
	c->received = COL_STR(2);
	c->path = COL_STR(3);
	c->instance = COL_STR(4);
	c->reg_id = sqlite3_column_int(st, 5);
	c->user_agent = COL_STR(6);
	c->call_id = COL_STR(7);
	c->cseq = (uint32_t)sqlite3_column_int64(st, 8);
	c->q1000 = (unsigned)sqlite3_column_int(st, 9);
	c->expires = sqlite3_column_int64(st, 10);
#undef COL_STR
	if (!c->uri || !c->call_id) {
		contact_free(c);
		return;
	}
	contact_add(r, a, c);
}

static void load(struct reg *r)
{
	static const char sel[] =
		"SELECT ext, uri, received, path, instance, reg_id, user_agent, "
		"call_id, cseq, q1000, expires FROM registrations";
	sqlite3_stmt *st = db_stmt(r->db, sel);
	size_t n = 0;

	while (st && sqlite3_step(st) == SQLITE_ROW) {
		if (!conf_agent_find(r->conf, (const char *)sqlite3_column_text(st, 0)))
			continue;
		load_row(r, st);
		n++;
	}
	if (st)
		sqlite3_reset(st);
	log_info("restored %zu registered contacts", n);
	/* drop what expired while we were down, and rows of removed agents */
	reg_expire(r);
	db_tx(r->db);
	db_exec(r->db, "DELETE FROM registrations WHERE expires <= strftime('%s','now')");
}

/* ---- life cycle ----------------------------------------------------------- */

int reg_alloc(struct reg **rp, su_root_t *root, struct sipd *sipd,
	      struct db *db, const struct conf *conf)
{
	struct reg *r = calloc(1, sizeof(*r));
	int e;

	if (!r)
		return ENOMEM;
	metrics_init();
	r->root = root;
	r->sipd = sipd;
	r->db = db;
	r->conf = conf_ref((struct conf *)conf);
	e = hmap_alloc(&r->aors, 256);
	if (!e)
		e = digest_alloc(&r->digest, conf->sip.nonce_ttl_ms, NC_RECORDS);
	if (!e)
		e = ban_alloc(&r->ban, (unsigned)conf->sip.ban_failures,
			      conf->sip.ban_window_ms, conf->sip.ban_time_ms, 65536);
	if (!e && !(r->tmr = su_timer_create(su_root_task(root), 1000)))
		e = ENOMEM;
	if (e) {
		reg_free(r);
		return e;
	}
	load(r);
	su_timer_set_for_ever(r->tmr, on_tick, r);
	sipd_handle(sipd, sip_method_register, on_register, r);
	sipd_set_filter(sipd, filter, r);
	*rp = r;
	return 0;
}

static int free_aor(const char *ext, void *val, void *arg)
{
	struct aor *a = val;

	(void)ext;
	(void)arg;
	while (a->contacts) {
		struct reg_contact *c = a->contacts;

		a->contacts = c->next;
		contact_free(c);
	}
	free(a);
	return 0;
}

struct reg *reg_free(struct reg *r)
{
	if (!r)
		return NULL;
	if (r->sipd) {
		sipd_handle(r->sipd, sip_method_register, NULL, NULL);
		sipd_set_filter(r->sipd, NULL, NULL);
	}
	su_timer_destroy(r->tmr);
	if (r->aors) {
		hmap_apply(r->aors, free_aor, NULL);
		hmap_free(r->aors);
	}
	digest_free(r->digest);
	ban_free(r->ban);
	conf_deref(r->conf);
	free(r);
	return NULL;
}

static int drop_removed(const char *ext, void *val, void *arg)
{
	struct reg *r = arg;
	struct aor *a = val;

	if (conf_agent_find(r->conf, ext))
		return 0;
	log_info("agent %s removed from the config: dropping its registrations", ext);
	while (a->contacts)
		contact_remove(r, ext, a, &a->contacts);
	hmap_del(r->aors, ext);
	free(a);
	return 0;
}

void reg_reload(struct reg *r, const struct conf *conf)
{
	conf_deref(r->conf);
	r->conf = conf_ref((struct conf *)conf);
	digest_set_ttl(r->digest, conf->sip.nonce_ttl_ms);
	ban_configure(r->ban, (unsigned)conf->sip.ban_failures,
		      conf->sip.ban_window_ms, conf->sip.ban_time_ms);
	hmap_apply(r->aors, drop_removed, r);
	metrics_set(m.current, (int64_t)r->ncontacts);
}

const struct reg_contact *reg_contacts(const struct reg *r, const char *ext)
{
	const struct aor *a = hmap_get(r->aors, ext);

	return a ? a->contacts : NULL;
}

void reg_on_status(struct reg *r, reg_status_h *h, void *arg)
{
	r->status_h = h;
	r->status_arg = arg;
}

void reg_on_activity(struct reg *r, reg_activity_h *h, void *arg)
{
	r->activity_h = h;
	r->activity_arg = arg;
}

const char *reg_agent_status(const struct reg *r, const char *ext)
{
	const char *busy = r->activity_h ? r->activity_h(ext, r->activity_arg) : NULL;

	if (busy)
		return busy;
	return reg_contacts(r, ext) ? "idle" : "offline";
}

static json_t *contact_json(const struct reg_contact *c, int64_t now)
{
	return json_pack("{s:s, s:I, s:s?, s:s?}", "uri", c->uri,
			 "expires", (json_int_t)(c->expires > now ? c->expires - now : 0),
			 "user_agent", c->user_agent, "received", c->received);
}

static json_t *agent_json(const struct reg *r, const struct conf_agent *a,
			  int64_t now)
{
	json_t *contacts = json_array();

	for (const struct reg_contact *c = reg_contacts(r, a->ext); c; c = c->next)
		json_array_append_new(contacts, contact_json(c, now));
	return json_pack("{s:s, s:s?, s:s?, s:s, s:o}", "extension", a->ext,
			 "name", a->name, "crm_user", a->crm_user,
			 "status", reg_agent_status(r, a->ext), "contacts", contacts);
}

static int cmp_ext(const void *a, const void *b)
{
	const struct conf_agent *const *x = a, *const *y = b;

	return strcmp((*x)->ext, (*y)->ext);
}

static int api_agents(struct api_req *req, void *arg)
{
	struct reg *r = arg;
	const struct conf *c = r->conf;
	const struct conf_agent **sorted = calloc(c->nagents + 1, sizeof(*sorted));
	int64_t now = clk_wall_ms() / 1000;
	json_t *out = json_array();

	if (!sorted || !out) {
		free(sorted);
		json_decref(out);
		return api_reply_error(req, 500, "out of memory");
	}
	for (size_t i = 0; i < c->nagents; i++)
		sorted[i] = &c->agents[i];
	qsort(sorted, c->nagents, sizeof(*sorted), cmp_ext);
	for (size_t i = 0; i < c->nagents; i++)
		json_array_append_new(out, agent_json(r, sorted[i], now));
	free(sorted);
	return api_reply_json(req, 200, out);
}

int reg_api_register(struct reg *r, struct api *api)
{
	return api_route(api, "GET", "/api/v1/agents", true, api_agents, r);
}
