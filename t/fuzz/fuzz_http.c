/*
 * fuzz_http.c: the HTTP API's request handling, without a socket
 * (api_test.h): the router with its "*" segments, the Bearer token, the
 * Content-Length and body size limits (413), the body in pieces, query
 * arguments, JSON bodies, the one-answer rule; and behind it the
 * handlers that need no call core: GET /api/v1/health and /metrics
 * (api_core.c), the CRM webhooks POST /api/v1/crm/{generic,bitrix24,
 * amocrm} (crm.c and the adapters: JSON and form bodies, tokens in the
 * body or the query), and routes of the harness's own that check what a
 * handler is given.
 *
 * Input:
 *   byte 0: the method (GET, POST, PUT, DELETE, HEAD, PATCH, OPTIONS,
 *           "get", "" or a long one)
 *   byte 1: bit 0 the right token, bit 1 a wrong one (both: "bearer" and
 *           spaces), bit 2 Content-Length says 2 MiB, bit 3 no
 *           Content-Length (chunked), bit 4 the body is sent 17 times
 *           over 64 KiB (past the 1 MiB limit), bits 5-6 the [crm] type
 *           (none, generic, bitrix24, amocrm)
 *   byte 2: the body arrives in pieces of this many bytes (0: at once)
 *   then text: the path, a line feed, the query, a line feed, the body.
 *
 * Checked (abort): every request gets exactly one answer, a status from
 * 100 to 599; without the right token every /api/ path but the health
 * check and the CRMs' own webhooks is 401; a path no route matches is 404 or 405 (401 under
 * /api/ without the token); a body over 1 MiB or a Content-Length over
 * it on a route is 413 (after the token check); a handler's "*"
 * arguments are the request's non-empty segments; api_req_body gives the
 * body whole; api_req_json is an object or array only when the body is
 * JSON.
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <sofia-sip/su_wait.h>

#include "fuzz.h"
#include "log.h"
#include "conf.h"
#include "crm/crm.h"
#include "http/api.h"
#include "http/api_test.h"

#define TOKEN "fuzz-api-token"
#define MAX_BODY (1024 * 1024)          /* api.c's API_MAX_BODY, CONTRACT §5 */

static struct api *api;
static su_root_t *root;
static struct crm *crm;
static struct conf *confs[4];

static const char *const conf_texts[] = {
	"[crm]\ntype = none\n",
	"[crm]\ntype = generic\nlookup_url = http://crm.test/lookup\n"
	"events_url = http://crm.test/events\nsecret = s3\ncache = 0\n",
	"[crm]\ntype = bitrix24\nurl = http://crm.test/rest/1/tok/\n"
	"default_user = 1\nwebhook_token = app-tok\ncache = 0\n",
	"[crm]\ntype = amocrm\nurl = http://crm.test\ntoken = long-lived\n"
	"webhook_token = amo-tok\ncache = 0\n",
};

/* The harness's routes: what a handler gets. */
struct probe {
	const char *pattern;
	unsigned stars;
};

static const struct probe probes[] = {
	{ "/api/v1/calls/*", 1 },
	{ "/api/v1/calls/*/transfer", 1 },
	{ "/api/v1/agents/*/sessions/*", 2 },
	{ "/open/*/*/x", 2 },
	{ "/api/v1/echo", 0 },
};

static struct {
	const char *path;
	const char *body;
	size_t body_len, repeat;
	bool ran;
} cur;

static int on_probe(struct api_req *req, void *arg)
{
	const struct probe *p = arg;
	const char *path = api_req_path(req);
	size_t len;
	const char *body = api_req_body(req, &len);
	json_t *j, *again;

	cur.ran = true;
	if (strcmp(path, cur.path))
		abort();
	for (unsigned i = 0; i < p->stars; i++) {
		const char *a = api_req_patharg(req, i);

		if (!a || !*a || strchr(a, '/') || !strstr(path, a))
			abort();
	}
	if (api_req_patharg(req, p->stars))
		abort();
	if (strlen(body) > len || len != cur.body_len * (cur.repeat ? cur.repeat : 1) ||
	    (len && memcmp(body, cur.body, cur.body_len)))
		abort();
	j = api_req_json(req);
	again = j ? json_loadb(body, len, 0, NULL) : NULL;
	if (j && !again)
		abort();        /* JSON that jansson itself refuses */
	json_decref(again);
	if (j != api_req_json(req))
		abort();        /* parsed once, kept */
	if (json_is_object(j) && json_is_string(json_object_get(j, "error")))
		return api_reply_error(req, 400, "%s", json_string_value(
					       json_object_get(j, "error")));
	if (json_is_object(j) && json_is_true(json_object_get(j, "no_reply")))
		return 0;       /* the 500 of a handler that forgot */
	return api_reply_json(req, 200, j ? json_incref(j) : json_pack("{s:s?}", "q",
				      api_req_query(req, "q")));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *spec = getenv("FUZZ_LOG");
	char err[256];

	(void)argc;
	(void)argv;
	log_force_level(spec ? spec : "error");
	if (su_init() != 0 || !(root = su_root_create(NULL)))
		abort();
	for (size_t i = 0; i < 4; i++)
		if (conf_parse_string(&confs[i], "fuzz_http.conf", conf_texts[i], err,
				      sizeof(err))) {
			fprintf(stderr, "fuzz_http: %s\n", err);
			abort();
		}
	if (api_test_alloc(&api, TOKEN) || api_core_register(api, 1700000000, "fuzz") ||
	    crm_alloc(&crm, root, NULL, NULL, confs[0]) || crm_api_register(crm, api))
		abort();
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		bool open = !strncmp(probes[i].pattern, "/open", 5);

		if (api_route(api, "GET", probes[i].pattern, !open, on_probe,
			      (void *)&probes[i]) ||
		    api_route(api, "POST", probes[i].pattern, !open, on_probe,
			      (void *)&probes[i]))
			abort();
	}
	return 0;
}

static const char *method_of(uint8_t b)
{
	static const char *const m[] = { "GET", "POST", "PUT", "DELETE", "HEAD",
		"PATCH", "OPTIONS", "get", "", NULL };
	static char longm[200];

	if (!longm[0])
		memset(longm, 'P', sizeof(longm) - 1);
	b %= 10;
	return m[b] ? m[b] : longm;
}

/* The routes under /api/ that need no token (api_core.c, crm.c). */
static bool open_route(const char *method, const char *path)
{
	if (!strcmp(path, "/api/v1/health"))
		return !strcmp(method, "GET") || !strcmp(method, "HEAD");
	return !strcmp(method, "POST") && (!strcmp(path, "/api/v1/crm/bitrix24") ||
					   !strcmp(path, "/api/v1/crm/amocrm"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct api_test_req t = { 0 };
	const char *hdrs[8];
	char *text, *f[3], *big = NULL, clen[32];
	size_t nh = 0, nf;
	unsigned status;
	uint8_t fl;
	bool api_path, authed;

	if (size < 3)
		return 0;
	fl = data[1];
	text = fuzz_strndup(data + 3, size - 3);
	if (!text)
		return 0;
	nf = fuzz_split(text, '\n', f, 3);
	crm_reload(crm, confs[(fl >> 5) & 3]);

	t.method = method_of(data[0]);
	t.path = f[0];
	t.query = nf > 1 ? f[1] : NULL;
	/* the body: the rest of the input after two line feeds, NULs too */
	if (nf > 2) {
		t.body = (const char *)data + 3 + (size_t)(f[2] - text);
		t.body_len = size - 3 - (size_t)(f[2] - text);
	}
	if ((fl & 16)) {
		/* 17 x 64 KiB: past the limit whatever the body */
		big = malloc(65536);
		if (!big)
			abort();
		memset(big, ' ', 65536);
		if (t.body_len)
			memcpy(big, t.body, t.body_len < 65536 ? t.body_len : 65536);
		t.body = big;
		t.body_len = 65536;
		t.repeat = 17;
	}
	t.chunk = data[2];
	authed = (fl & 3) == 1;
	if ((fl & 3) == 1) {
		hdrs[nh++] = "Authorization";
		hdrs[nh++] = "Bearer " TOKEN;
	}
	else if ((fl & 3) == 2) {
		hdrs[nh++] = "Authorization";
		hdrs[nh++] = "Bearer not-the-token";
	}
	else if ((fl & 3) == 3) {
		hdrs[nh++] = "authorization";
		hdrs[nh++] = "bearer    " TOKEN;
		authed = true;
	}
	snprintf(clen, sizeof(clen), "%zu", fl & 4 ? (size_t)2 * MAX_BODY :
		 t.body_len * (t.repeat ? t.repeat : 1));
	if (!(fl & 8)) {
		hdrs[nh++] = "Content-Length";
		hdrs[nh++] = clen;
	}
	hdrs[nh] = NULL;
	t.headers = hdrs;

	cur.path = t.path;
	cur.body = t.body;
	cur.body_len = t.body_len;
	cur.repeat = t.repeat;
	cur.ran = false;

	status = api_test_request(api, &t);

	api_path = !strncmp(t.path, "/api/", 5) || !strcmp(t.path, "/api");
	if (status < 100 || status > 599) {
		fprintf(stderr, "fuzz_http: %s %s: status %u\n", t.method, t.path, status);
		abort();
	}
	if (api_path && !authed && status != 401 && !open_route(t.method, t.path)) {
		fprintf(stderr, "fuzz_http: %s %s without the token: %u\n", t.method,
			t.path, status);
		abort();
	}
	if (cur.ran && (t.repeat || ((fl & 4) && !(fl & 8)))) {
		fprintf(stderr, "fuzz_http: a handler got a body over the limit\n");
		abort();
	}
	if ((t.repeat || ((fl & 4) && !(fl & 8))) && status == 200) {
		fprintf(stderr, "fuzz_http: %s %s: 200 for a body over the limit\n",
			t.method, t.path);
		abort();
	}
	free(big);
	free(text);
	return 0;
}
