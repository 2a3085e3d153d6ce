/*
 * fuzz_crm.c: what the CRM adapters make of their CRM's HTTP answers.
 *
 * A real struct crm (crm_alloc, no sqlite, no outbox) runs lookups and
 * deliveries through the adapter of the conf the input picks; the HTTP
 * client under it is the harness's (below), so each request the adapter
 * makes is answered with the next response of the input, in order, from
 * the loop as httpc promises (never inside httpc_request). So the whole
 * path is driven: the generic adapter's crm_generic_parse, Bitrix24's
 * on_resp / take_entities (telephony.externalCall.searchCrmEntities) and
 * amoCRM's on_resp / take_match (contacts, then companies), and for
 * deliveries of call.started and call.ended the answers to register,
 * finish, contacts, leads, unsorted, calls and tasks.
 *
 * Input:
 *   byte 0: bits 0-1 the adapter (generic, bitrix24, amocrm, generic)
 *           bit 2    Bitrix24 with [crm] timeman
 *           bit 3    a delivery (call.started, then call.ended) instead
 *                    of a lookup
 *   then responses separated by 0xFF bytes, each a status byte (the
 *   index into statuses[] below; the last entries are transport errors)
 *   and the body.
 *
 * Checked (abort): a lookup's callback runs at most once; its result has
 * a known status, every string NUL-terminated within its array, and a
 * cause when it failed; a 200 whose body is not JSON fails the lookup
 * (an error for garbage); crm_generic_parse on every body agrees with
 * jansson on what is an object and leaves bounded strings; every request
 * goes to the configured host; a delivery ends at most once.
 *
 * FUZZ_VERBOSE=1 prints each lookup's result on stderr.
 *
 * The harness's httpc replaces src/core/httpc.c at link time: it defines
 * every function of httpc.h, so the linker never takes httpc.o out of
 * libsipcrm.a (a function added to httpc.h must be added here too, or
 * the link fails with duplicate symbols).
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sofia-sip/su_wait.h>

#include "fuzz.h"
#include "log.h"
#include "conf.h"
#include "httpc.h"
#include "crm/crm.h"
#include "crm/crm_int.h"

#define MAX_RESP 8

/* ---- the HTTP client the adapters get ---------------------------------------- */

struct httpc {
	struct httpc_req *pending;      /* one request at a time is all they make */
	unsigned started;
};

struct httpc_req {
	struct httpc *h;
	httpc_resp_h *cb;
	void *arg;
	char url[2048];
};

int httpc_alloc(struct httpc **hp, su_root_t *root)
{
	(void)root;
	*hp = calloc(1, sizeof(**hp));
	return *hp ? 0 : ENOMEM;
}

struct httpc *httpc_free(struct httpc *h)
{
	if (h)
		free(h->pending);
	free(h);
	return NULL;
}

int httpc_request(struct httpc_req **rp, struct httpc *h,
		  const struct httpc_opts *o, httpc_resp_h *cb, void *arg)
{
	struct httpc_req *r;

	if (h->pending)
		abort();        /* the adapters make one request at a time */
	if (!o->url || strncmp(o->url, "http://crm.test/", 16) || (o->body &&
	    strlen(o->body) != o->body_len)) {
		fprintf(stderr, "fuzz_crm: request to %s\n", o->url ? o->url : "(null)");
		abort();
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return ENOMEM;
	r->h = h;
	r->cb = cb;
	r->arg = arg;
	snprintf(r->url, sizeof(r->url), "%s", o->url);
	h->pending = r;
	h->started++;
	if (rp)
		*rp = r;
	return 0;
}

struct httpc_req *httpc_cancel(struct httpc_req *r)
{
	if (r) {
		r->h->pending = NULL;
		free(r);
	}
	return NULL;
}

size_t httpc_pending(const struct httpc *h)
{
	return h->pending ? 1 : 0;
}

/* ---- the harness ---------------------------------------------------------------- */

static const long statuses[] = { 200, 200, 200, 200, 404, 401, 429, 500, 400,
				 204, 201, 302, 403, 503, -ETIMEDOUT, -EPROTO };
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))

static const char *const conf_texts[] = {
	"[crm]\ntype = generic\nlookup_url = http://crm.test/lookup\n"
	"events_url = http://crm.test/events\nsecret = s3\ncache = 0\n",
	"[crm]\ntype = bitrix24\nurl = http://crm.test/rest/1/tok/\n"
	"default_user = 1\nwebhook_token = app-tok\ncache = 0\n",
	"[crm]\ntype = amocrm\nurl = http://crm.test\ntoken = long-lived\n"
	"webhook_token = amo-tok\ncache = 0\n",
	"[crm]\ntype = bitrix24\nurl = http://crm.test/rest/1/tok/\n"
	"default_user = 1\ntimeman = yes\ncache = 0\n",
};
static const char agents[] =
	"[agent:101]\npassword = secret101\ncrm_user = 42\n"
	"[agent:102]\npassword = secret102\ncrm_user = 43\n"
	"[rule:missed_unknown]\ncontact = New <PhoneNumber>\ndeal = Missed <PhoneNumber>\n"
	"task = Call back\nresponsible = client default first_rung\n"
	"[rule:incoming_unknown_answered]\ncontact = C <PhoneNumber>\n"
	"task = T\nresponsible = last_answered default\n";

static su_root_t *root;
static struct httpc *http;
static struct crm *crms[4];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *spec = getenv("FUZZ_LOG");

	(void)argc;
	(void)argv;
	log_force_level(spec ? spec : "crit");
	if (su_init() != 0)
		abort();
	root = su_root_create(NULL);
	if (!root || httpc_alloc(&http, root))
		abort();
	for (size_t i = 0; i < 4; i++) {
		char text[2048], err[256];
		struct conf *cf;

		snprintf(text, sizeof(text), "%s%s", agents, conf_texts[i]);
		if (conf_parse_string(&cf, "fuzz_crm.conf", text, err, sizeof(err))) {
			fprintf(stderr, "fuzz_crm: %s\n", err);
			abort();
		}
		if (crm_alloc(&crms[i], root, http, NULL, cf))
			abort();
		conf_deref(cf);
	}
	return 0;
}

struct resp {
	long status;
	const uint8_t *body;
	size_t len;
};

static size_t split_resps(const uint8_t *d, size_t n, struct resp *rs)
{
	size_t k = 0;

	while (n && k < MAX_RESP) {
		const uint8_t *end = memchr(d, 0xFF, n);
		size_t len = end ? (size_t)(end - d) : n;

		rs[k].status = len ? statuses[d[0] % NSTATUS] : 200;
		rs[k].body = len ? d + 1 : d;
		rs[k].len = len ? len - 1 : 0;
		k++;
		if (!end)
			break;
		n -= len + 1;
		d = end + 1;
	}
	return k;
}

static void check_str(const char *s, size_t size)
{
	if (!memchr(s, '\0', size))
		abort();
}

static void check_result(const struct crm_result *r)
{
	if (r->status != CRM_UNKNOWN && r->status != CRM_KNOWN && r->status != CRM_FAILED)
		abort();
	check_str(r->contact_id, sizeof(r->contact_id));
	check_str(r->contact_name, sizeof(r->contact_name));
	check_str(r->contact_url, sizeof(r->contact_url));
	check_str(r->responsible_id, sizeof(r->responsible_id));
	check_str(r->responsible_name, sizeof(r->responsible_name));
	check_str(r->responsible_ext, sizeof(r->responsible_ext));
	check_str(r->given_ext, sizeof(r->given_ext));
	if (r->status == CRM_FAILED && (!r->cause || !*r->cause))
		abort();
}

/* crm_generic_parse alone, on an exact-size heap copy. */
static void generic_parse(const struct resp *rs)
{
	struct crm_result r;
	char *copy = malloc(rs->len ? rs->len : 1);
	json_t *j;
	int e;

	if (!copy)
		abort();
	if (rs->len)
		memcpy(copy, rs->body, rs->len);
	memset(&r, 'Z', sizeof(r));
	r.cause = NULL;
	r.responsible_ext[0] = '\0';   /* crm_lookup_done's, from given_ext */
	e = crm_generic_parse(copy, rs->len, &r);
	j = json_loadb(copy, rs->len, 0, NULL);
	if (e != 0 && e != EINVAL)
		abort();
	if ((e == 0) != json_is_object(j))
		abort();        /* garbage taken, or an object refused */
	if (e == EINVAL && (r.status != CRM_FAILED || !r.cause))
		abort();
	if (e == 0)
		check_result(&r);
	json_decref(j);
	free(copy);
}

static struct {
	unsigned calls;
	struct crm_result res;
} got;

static void on_lookup(const struct crm_result *r, void *arg)
{
	(void)arg;
	if (got.calls++)
		abort();        /* once per lookup */
	check_result(r);
	got.res = *r;
	if (getenv("FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz_crm: status %d cause %s contact %s \"%s\" %s "
			"responsible %s ext %s\n", (int)r->status, r->cause ? r->cause : "-",
			r->contact_id, r->contact_name, r->contact_url, r->responsible_id,
			r->responsible_ext);
}

/* Answers the request in flight with rs; false when there was none. */
static bool answer(const struct resp *rs)
{
	struct httpc_req *r = http->pending;
	struct httpc_resp hr = { 0 };
	char *body;

	if (!r)
		return false;
	body = fuzz_strndup(rs->body, rs->len);       /* NUL-terminated, as httpc's */
	if (!body)
		abort();
	if (rs->status < 0) {
		hr.err = (int)-rs->status;
		hr.cause = rs->status == -ETIMEDOUT ? "timeout" : "http_error";
	}
	else {
		hr.status = rs->status;
		hr.body = body;
		hr.body_len = rs->len;
		hr.cause = "";
	}
	/* the request is freed after its callback, which may start another */
	http->pending = NULL;
	r->cb(&hr, r->arg);
	free(r);
	free(body);
	return true;
}

static bool is_json(const struct resp *rs)
{
	json_t *j = json_loadb((const char *)rs->body, rs->len, 0, NULL);
	bool ok = j != NULL;

	json_decref(j);
	return ok;
}

static void run_lookup(struct crm *c, const struct resp *rs, size_t n)
{
	struct crm_lookup *l = NULL;
	bool garbage = n && rs[0].status == 200 && !is_json(&rs[0]);

	memset(&got, 0, sizeof(got));
	if (crm_lookup(&l, c, "+74951234567", "+74950000000", "fuzz-call-1", on_lookup,
		       NULL))
		return;
	for (size_t i = 0; i < n && !got.calls; i++) {
		if (!answer(&rs[i]))
			break;
		if (i == 0 && garbage && (!got.calls || got.res.status != CRM_FAILED)) {
			fprintf(stderr, "fuzz_crm: a 200 that is not JSON did not fail the "
				"lookup\n");
			abort();
		}
	}
	if (!got.calls)
		crm_lookup_cancel(l);
}

static struct {
	unsigned ends;
} dv;

static void on_delivered(struct crm_delivery *d, int err, const char *cause)
{
	(void)d;
	if (dv.ends++)
		abort();
	if (err && (!cause || !*cause))
		abort();
}

static const char *const events[] = {
	"{\"id\":\"e1\",\"type\":\"call.started\",\"call_id\":\"fuzz-call-1\","
	"\"direction\":\"inbound\",\"from\":\"+74951234567\",\"to\":\"+74950000000\","
	"\"did\":\"+74950000000\"}",
	"{\"id\":\"e2\",\"type\":\"call.ended\",\"call_id\":\"fuzz-call-1\","
	"\"direction\":\"inbound\",\"from\":\"+74951234567\",\"to\":\"+74950000000\","
	"\"did\":\"+74950000000\",\"disposition\":\"answered\",\"duration\":30,"
	"\"billsec\":25,\"first_agent\":\"101\",\"last_agent\":\"101\","
	"\"recording_url\":\"http://rec.test/r/fuzz-call-1.wav\"}",
};

/* One event through the adapter; rs answers its requests in turn. */
static void run_delivery(struct crm *c, const char *text, const struct resp *rs,
			 size_t n, size_t *used)
{
	struct crm_delivery *d = calloc(1, sizeof(*d));

	if (!d || !(d->body = strdup(text)))
		abort();
	d->crm = c;
	d->len = strlen(text);
	d->ev = json_loads(text, 0, NULL);
	d->created = 1;
	d->done = on_delivered;
	memset(&dv, 0, sizeof(dv));
	if (crm_deliver(c, d) == 0) {
		for (size_t turn = 0; turn < 2 * MAX_RESP && !dv.ends; turn++) {
			if (*used < n && answer(&rs[*used]))
				(*used)++;
			else
				su_root_step(root, 0);  /* crm_job_end's timer */
		}
	}
	crm_delivery_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct resp rs[MAX_RESP];
	size_t n, used = 0;
	struct crm *c;

	if (size < 1)
		return 0;
	n = split_resps(data + 1, size - 1, rs);
	for (size_t i = 0; i < n; i++)
		generic_parse(&rs[i]);
	c = crms[(data[0] & 4) && (data[0] & 3) == 1 ? 3 : (data[0] & 3) % 3];
	if (data[0] & 8) {
		for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++)
			run_delivery(c, events[i], rs, n, &used);
	}
	else {
		run_lookup(c, rs, n);
	}
	if (http->pending)
		abort();        /* cancelled with its lookup or delivery */
	return 0;
}
