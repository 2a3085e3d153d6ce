/*
 * fuzz_sip.c: raw bytes as a SIP message, through sofia-sip's parser as
 * nta runs it for sipcrm, then through every piece of sipcrm's own
 * handling of that message that needs no socket, transaction or call:
 *
 *  - what nta checks before sipd's on_message sees a request (413 over
 *    NTATAG_MAXSIZE, the bad-header mask, sip_sanity_check, SIP/2.0);
 *  - sipd: request counting (metrics), the Request-URI scheme check and
 *    sipd_unsupported (420);
 *  - the registrar: Digest credentials of Authorization and
 *    Proxy-Authorization verified by digest_verify against the agents of
 *    a fixed config (unknown users included), and what REGISTER stores of
 *    each Contact (url_e, +sip.instance, reg-id, Path, q);
 *  - an INVITE from a trunk source (the top Via's received/host decides,
 *    through conf_trunk_match): caller and DID taken as b2b's call_new
 *    takes them, normalised by crm_normalize, route_settings for the DID
 *    and route_plan for every lookup outcome;
 *  - an INVITE from an agent: internal or outbound by conf_agent_find on
 *    the Request-URI user, then route_plan;
 *  - any SDP body: msdp_parse, and our answer from msdp_build;
 *  - responses, as the B2BUA sees a branch's answer: To tag, Contact,
 *    SDP.
 *
 * FUZZ_SKIP_KNOWN=1 steps around sofia-sip's sdp_parse loop (see
 * fuzz_known.h).
 *
 * Plans are checked against route.h's contract (bounded counts, NUL-
 * terminated texts), so a wrong plan aborts as a crash would.
 *
 * The registrar's own Digest parameter reader (parse_digest in
 * registrar.c) is static; until it is exported the harness fills struct
 * digest_resp with its own reader, fuzz_auth.h.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <sofia-sip/msg.h>
#include <sofia-sip/msg_header.h>
#include <sofia-sip/sip.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_util.h>
#include <sofia-sip/url.h>

#include "fuzz.h"
#include "fuzz_auth.h"
#include "fuzz_known.h"
#include "log.h"
#include "conf.h"
#include "sip/digest.h"
#include "sip/sipd.h"
#include "sip/msdp.h"
#include "routing/route.h"
#include "crm/normalize.h"

#define NTA_MAXSIZE 65536       /* sipd_alloc: NTATAG_MAXSIZE(65536) */

static const char conf_text[] =
	"[core]\n"
	"db = fuzz.db\n"
	"log_level = error\n"
	"[sip]\n"
	"listen = udp:127.0.0.1:5060 tcp:127.0.0.1:5060\n"
	"domain = sipcrm.test\n"
	"[media]\n"
	"ip = 127.0.0.1\n"
	"greeting =\n"
	"[routing]\n"
	"fallback = sip:pbx@127.0.0.1:5070\n"
	"greeting_min = 2s\n"
	"[pbx]\n"
	"extension_uri = sip:{ext}@127.0.0.1:5070\n"
	"[trunk:provider]\n"
	"match = 127.0.0.3/32 10.0.0.0/8 ::1/128\n"
	"uri = sip:127.0.0.1:5080\n"
	"caller_id = +74950000000\n"
	"[did:+74951234567]\n"
	"fallback = sip:sales@127.0.0.1:5070\n"
	"responsible = parallel\n"
	"[did:74957654321]\n"
	"mode = redirect\n"
	"[agent:101]\n"
	"password = secret101\n"
	"name = Ivan Petrov\n"
	"crm_user = 42\n"
	"[agent:102]\n"
	"password = secret102\n"
	"[crm]\n"
	"country_code = 7\n";

static struct conf *cf;
static struct digest *dg;
static const int64_t now_ms = 1000000;
static bool verbose;    /* FUZZ_VERBOSE=1: what was reached, on stderr */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[256];
	const char *spec = getenv("FUZZ_LOG");

	(void)argc;
	(void)argv;
	log_force_level(spec ? spec : "error");
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	if (conf_parse_string(&cf, "/nonexistent/fuzz.conf", conf_text, err,
			      sizeof(err))) {
		fprintf(stderr, "fuzz_sip: config: %s\n", err);
		abort();
	}
	if (digest_alloc(&dg, 300000, 1024))
		abort();
	return 0;
}

/* ---- what nta does before the application sees a request ----------------- */

/* As nta_agent_create sets sa_bad_req_mask by default. */
static bool nta_accepts(msg_t *msg, const sip_t *sip)
{
	unsigned mask = (unsigned)~(sip_mask_response | sip_mask_proxy |
				    sip_mask_registrar | sip_mask_pref |
				    sip_mask_privacy);

	if (sip->sip_flags & (MSG_FLG_TOOLARGE | MSG_FLG_ERROR))
		return false;
	if (msg_extract_errors(msg) & mask)
		return false;
	if (sip_sanity_check(sip) < 0)
		return false;
	return !strcasecmp(sip->sip_request->rq_version, "SIP/2.0");
}

/* ---- the contract of route_plan ---------------------------------------- */

static void check_plan(int e, const struct route_plan *p)
{
	if (e != 0 && e != EINVAL)
		abort();
	if (!memchr(p->why, '\0', sizeof(p->why)))
		abort();
	if (p->action == ROUTE_REJECT) {
		if (p->reject_status < 300 || p->reject_status > 699)
			abort();
		return;
	}
	if (p->nforks == 0 || p->nforks > ROUTE_MAX_FORKS)
		abort();
	for (size_t i = 0; i < p->nforks; i++) {
		const struct route_fork *f = &p->forks[i];

		if (f->ntargets == 0 || f->ntargets > ROUTE_MAX_TARGETS ||
		    f->timeout_ms < 0)
			abort();
		for (size_t j = 0; j < f->ntargets; j++)
			if (!memchr(f->targets[j].ext, '\0', sizeof(f->targets[j].ext)) ||
			    !memchr(f->targets[j].uri, '\0', sizeof(f->targets[j].uri)))
				abort();
	}
}

static void plan(enum route_direction dir, const char *caller, const char *did,
		 const char *dest, const struct route_settings *set,
		 enum route_lookup lookup, const char *agent, unsigned salt)
{
	struct route_input in = {
		.dir = dir, .caller = caller, .did = did, .dest = dest,
		.lookup = lookup, .set = set,
		.agent = { .ext = agent, .registered = salt & 1, .busy = salt & 2 },
	};
	struct route_plan p;

	check_plan(route_plan(&in, &p), &p);
	if (verbose)
		fprintf(stderr, "fuzz_sip: plan %d: %s\n", p.action, p.why);
}

/* ---- pieces of the registrar --------------------------------------------- */

/* As reg_authenticate: the first Digest credentials, checked. */
static const char *authenticate(const sip_t *sip, bool proxy)
{
	const msg_auth_t *au = proxy ? sip->sip_proxy_authorization :
				       sip->sip_authorization;
	static char bufs[10][FUZZ_AUTH_VALUE_MAX];
	struct digest_resp dr;
	const struct conf_agent *a;
	struct digest_secret sec;
	enum digest_result r;

	for (; au; au = au->au_next)
		if (au->au_scheme && !strcasecmp(au->au_scheme, "Digest"))
			break;
	if (!au)
		return NULL;
	fuzz_auth_params(au->au_params, &dr, bufs);
	a = dr.username ? conf_agent_find(cf, dr.username) : NULL;
	sec.password = a ? a->password : NULL;
	sec.ha1_md5 = a ? a->ha1 : NULL;
	r = digest_verify(dg, &dr, sip->sip_request->rq_method_name,
			  cf->sip.domain, a ? &sec : NULL, now_ms);
	if (verbose)
		fprintf(stderr, "fuzz_sip: digest %s\n", digest_result_str(r));
	return r == DIGEST_OK && a ? a->ext : NULL;
}

static char *header_text(const sip_header_t *h, char *buf, size_t size)
{
	issize_t n;

	if (!h)
		return NULL;
	n = sip_header_field_e(buf, (isize_t)size, h, 0);
	if (n <= 0 || (size_t)n >= size)
		return NULL;
	buf[n] = '\0';
	return buf;
}

/* What REGISTER reads of each Contact before storing it. */
static void contacts(const sip_t *sip)
{
	char uri[1024], path[1024];
	volatile unsigned sink = 0;

	header_text((const sip_header_t *)sip->sip_path, path, sizeof(path));
	for (const sip_contact_t *mc = sip->sip_contact; mc; mc = mc->m_next) {
		const char *inst = msg_params_find(mc->m_params, "+sip.instance=");
		const char *rid = msg_params_find(mc->m_params, "reg-id=");
		issize_t n = url_e(uri, sizeof(uri), mc->m_url);

		if (n > 0 && (size_t)n < sizeof(uri))
			uri[n] = '\0';
		if (mc->m_expires)
			sink += (unsigned)strtol(mc->m_expires, NULL, 10);
		if (inst)
			sink += (unsigned)strlen(inst);
		if (rid)
			sink += (unsigned)strtol(rid, NULL, 10);
		if (mc->m_q)
			sink += (unsigned)strlen(mc->m_q);
	}
	(void)sink;
}

/* ---- pieces of the B2BUA ---------------------------------------------------- */

/* The top Via's received= or host, as the source address nta would see. */
static bool via_source(const sip_t *sip, struct sockaddr_storage *ss)
{
	const sip_via_t *v = sip->sip_via;
	const char *h = v ? (v->v_received ? v->v_received : v->v_host) : NULL;
	char host[64];
	size_t n;

	memset(ss, 0, sizeof(*ss));
	if (!h)
		return false;
	n = strlen(h);
	if (h[0] == '[' && n > 2 && n - 2 < sizeof(host)) {
		memcpy(host, h + 1, n - 2);
		host[n - 2] = '\0';
		h = host;
	}
	if (inet_pton(AF_INET, h, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		ss->ss_family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, h, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		ss->ss_family = AF_INET6;
		return true;
	}
	return false;
}

static void e164(char *num, size_t sz)
{
	char out[CRM_E164_SIZE];

	if (crm_normalize(num, cf->crm.country_code, out, sizeof(out)) == 0)
		snprintf(num, sz, "%s", out);
}

static void sdp(const sip_t *sip)
{
	struct msdp_info in;
	char buf[1024];
	int pts[1];

	if (!sip->sip_payload || !sip->sip_payload->pl_len)
		return;
	if (fuzz_skip_known() &&
	    fuzz_sdp_would_loop(sip->sip_payload->pl_data, sip->sip_payload->pl_len))
		return;
	if (msdp_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
		       cf->media.codecs, &in)) {
		if (verbose)
			fprintf(stderr, "fuzz_sip: SDP refused\n");
		return;
	}
	if (verbose)
		fprintf(stderr, "fuzz_sip: SDP pt %d te %d\n", in.pt, in.te_pt);
	pts[0] = in.pt;
	if (msdp_build(buf, sizeof(buf), cf->media.ip, 20000, pts, 1, in.te_pt,
		       msdp_answer_mode(in.mode), 1, in.version + 1) < 0)
		abort();        /* our answer always fits 1 KiB */
}

/* As call_new for a trunk INVITE, then b2b_route for each lookup outcome. */
static void inbound(const sip_t *sip, unsigned salt)
{
	char from[64], to[64], did[64];
	struct route_settings set;
	const url_t *ru = sip->sip_request->rq_url;

	snprintf(from, sizeof(from), "%s",
		 sip->sip_from->a_url->url_user ? sip->sip_from->a_url->url_user : "");
	snprintf(to, sizeof(to), "%s", ru->url_user ? ru->url_user :
		 sip->sip_to->a_url->url_user ? sip->sip_to->a_url->url_user : "");
	e164(from, sizeof(from));
	e164(to, sizeof(to));
	snprintf(did, sizeof(did), "%s", to);
	route_settings(cf, did, &set);
	plan(ROUTE_INBOUND, from, did, to, &set, ROUTE_LOOKUP_UNKNOWN, NULL, salt);
	plan(ROUTE_INBOUND, from, did, to, &set, ROUTE_LOOKUP_FAILED, NULL, salt);
	plan(ROUTE_INBOUND, from, did, to, &set, ROUTE_LOOKUP_KNOWN, "101", salt);
	/* a CRM may name anything as the responsible extension */
	plan(ROUTE_INBOUND, from, did, to, &set, ROUTE_LOOKUP_KNOWN, from, salt);
}

/* As agent_call and b2b_route for an agent's INVITE. */
static void agent_call(const sip_t *sip, const char *ext, unsigned salt)
{
	const char *dest = sip->sip_request->rq_url->url_user;
	char to[64];
	struct route_settings set;
	enum route_direction dir;

	if (!dest || !*dest)
		return;         /* 484 */
	dir = conf_agent_find(cf, dest) ? ROUTE_INTERNAL : ROUTE_OUTBOUND;
	snprintf(to, sizeof(to), "%s", dest);
	route_settings(cf, NULL, &set);
	plan(dir, ext, "", to, &set, ROUTE_LOOKUP_UNKNOWN,
	     dir == ROUTE_INTERNAL ? to : NULL, salt);
}

static unsigned salt_of(const sip_t *sip)
{
	const char *id = sip->sip_call_id ? sip->sip_call_id->i_id : NULL;
	unsigned h = 0;

	for (; id && *id; id++)
		h = h * 31 + (unsigned char)*id;
	return h;
}

static void request(msg_t *msg, const sip_t *sip)
{
	const url_t *ru = sip->sip_request->rq_url;
	sip_method_t m = sip->sip_request->rq_method;
	struct sockaddr_storage ss;
	const char *ext;
	char buf[2048];

	if (!nta_accepts(msg, sip)) {
		if (verbose)
			fprintf(stderr, "fuzz_sip: nta refuses it\n");
		return;         /* nta answers 400/505 or drops it */
	}
	if (m == sip_method_ack)
		return;         /* on_message drops stray ACKs */
	sipd_count_request(sip);
	/* what nta copies into every reply */
	header_text((const sip_header_t *)sip->sip_via, buf, sizeof(buf));
	header_text((const sip_header_t *)sip->sip_from, buf, sizeof(buf));
	header_text((const sip_header_t *)sip->sip_to, buf, sizeof(buf));
	if (ru->url_type != url_sip && ru->url_type != url_sips &&
	    ru->url_type != url_tel)
		return;         /* 416 */
	if (m != sip_method_cancel && sipd_unsupported(sip))
		return;         /* 420 */
	sdp(sip);
	switch (m) {
	case sip_method_register:
		authenticate(sip, false);
		contacts(sip);
		break;
	case sip_method_invite:
		if (via_source(sip, &ss) &&
		    conf_trunk_match(cf, (struct sockaddr *)&ss)) {
			inbound(sip, salt_of(sip));
			break;
		}
		ext = authenticate(sip, true);
		/* the nonce cannot be forged: go on as agent 101 anyway */
		agent_call(sip, ext ? ext : "101", salt_of(sip));
		break;
	default:
		authenticate(sip, true);
		break;
	}
}

/* A branch's answer, as the B2BUA reads it. */
static void response(const sip_t *sip)
{
	char buf[2048];

	if (sip->sip_status->st_status < 100 || sip->sip_status->st_status > 699)
		return;
	if (sip->sip_to && sip->sip_to->a_tag)
		(void)strlen(sip->sip_to->a_tag);
	header_text((const sip_header_t *)sip->sip_contact, buf, sizeof(buf));
	sdp(sip);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	msg_t *msg;
	sip_t *sip;

	if (size == 0 || size > NTA_MAXSIZE)
		return 0;       /* nta: 413 */
	msg = msg_make(sip_default_mclass(), MSG_DO_CANONIC, data, (ssize_t)size);
	if (!msg)
		return 0;
	sip = sip_object(msg);
	if (sip && sip->sip_request)
		request(msg, sip);
	else if (sip && sip->sip_status)
		response(sip);
	msg_destroy(msg);
	return 0;
}
