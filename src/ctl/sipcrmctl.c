/*
 * sipcrmctl.c: the control CLI, a client of the HTTP API (CONTRACT §1, §5).
 *
 *   sipcrmctl [-u URL] [-t TOKEN] [--json] COMMAND [ARGS]
 *
 * A command is one blocking libcurl request and a printout. Adding one
 * means a function that calls ctl_call() and a line in the cmds[] table;
 * lists of objects print with print_table() and a column table.
 *
 * Exit status: 0 done, 1 the request failed (unreachable, HTTP error,
 * bad reply), 2 bad usage.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

#define CTL_DEFAULT_URL   "http://127.0.0.1:8080"
#define CTL_MAX_REPLY     (16 * 1024 * 1024)
#define CTL_CONNECT_MS    5000L
#define CTL_TIMEOUT_MS    30000L
#define CTL_CELL_MAX      64     /* characters shown per table cell */

enum {
	CTL_OK = 0,
	CTL_FAIL = 1,
	CTL_USAGE = 2,
};

struct ctl {
	const char *url;                /* base URL, no trailing '/' needed */
	const char *token;              /* NULL: no Authorization header */
	bool json;                      /* --json: print the reply as is */
};

struct ctl_reply {
	long status;
	char *body;                     /* NUL-terminated */
	size_t len;
	json_t *json;                   /* body parsed, or NULL */
};

/* Options after the command word. */
struct ctl_args {
	const char *pos[3];
	int npos;
	bool attended;
	const char *agent;
	const char *limit;
	const char *since;
};

enum {
	OPT_ATTENDED = 1 << 0,
	OPT_AGENT = 1 << 1,
	OPT_LIMIT = 1 << 2,
	OPT_SINCE = 1 << 3,
};

/* One column of a table: its title and the object key it shows. */
struct ctl_col {
	const char *title;
	const char *key;
};

static const char *prog = "sipcrmctl";

static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void errmsg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- text helpers ---- */

/* Copies s for a terminal: control characters (escapes) become '?'. */
static void term_safe(char *dst, size_t size, const char *s)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < size; i++) {
		unsigned char ch = (unsigned char)s[i];

		dst[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
	}
	dst[i] = '\0';
}

/* Display width: UTF-8 code points (continuation bytes do not count). */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* Shortens s to max code points (max >= 1), the last one being "~". */
static void text_cut(char *s, size_t max)
{
	char *last = NULL;              /* where code point number max starts */
	size_t w = 0;

	for (char *p = s; *p; p++) {
		if (((unsigned char)*p & 0xc0) == 0x80)
			continue;
		if (++w == max)
			last = p;
		else if (w > max) {
			strcpy(last, "~");
			return;
		}
	}
}

/* A JSON value as one table cell. */
static void cell_text(char *buf, size_t size, const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		term_safe(buf, size, json_string_value(v));
		if (!*buf)
			snprintf(buf, size, "-");
		break;
	case JSON_INTEGER:
		snprintf(buf, size, "%" JSON_INTEGER_FORMAT,
			 json_integer_value(v));
		break;
	case JSON_REAL:
		snprintf(buf, size, "%g", json_real_value(v));
		break;
	case JSON_TRUE:
		snprintf(buf, size, "yes");
		break;
	case JSON_FALSE:
		snprintf(buf, size, "no");
		break;
	case JSON_ARRAY:                /* e.g. contacts: how many */
		snprintf(buf, size, "%zu", json_array_size(v));
		break;
	default:                        /* null, object */
		snprintf(buf, size, "-");
		break;
	}
	text_cut(buf, CTL_CELL_MAX);
}

static void cell_of(char *buf, size_t size, json_t *row, const char *key)
{
	json_t *v = json_is_object(row) ? json_object_get(row, key) : NULL;

	if (v)
		cell_text(buf, size, v);
	else
		snprintf(buf, size, "-");
}

static void print_row(const char *const *cells, const size_t *width,
		      size_t ncols)
{
	for (size_t i = 0; i < ncols; i++) {
		bool last = i + 1 == ncols;

		fputs(cells[i], stdout);
		for (size_t w = text_width(cells[i]); !last && w < width[i] + 2;
		     w++)
			putchar(' ');
	}
	putchar('\n');
}

/*
 * Prints a JSON array of objects as a table with the given columns:
 * missing or null fields show "-", arrays show their size.
 */
static int print_table(json_t *arr, const struct ctl_col *cols, size_t ncols)
{
	size_t nrows, width[16] = { 0 };
	char cell[4 * CTL_CELL_MAX + 8];
	const char *cells[16];
	char (*rows)[sizeof(cell)];

	if (!json_is_array(arr) || ncols > 16) {
		errmsg("unexpected reply: not a list");
		return CTL_FAIL;
	}
	nrows = json_array_size(arr);
	rows = calloc((nrows + 1) * ncols, sizeof(*rows));
	if (!rows) {
		errmsg("out of memory");
		return CTL_FAIL;
	}
	for (size_t c = 0; c < ncols; c++) {
		snprintf(rows[c], sizeof(cell), "%s", cols[c].title);
		width[c] = text_width(rows[c]);
	}
	for (size_t r = 0; r < nrows; r++) {
		for (size_t c = 0; c < ncols; c++) {
			char *dst = rows[(r + 1) * ncols + c];

			cell_of(dst, sizeof(cell), json_array_get(arr, r),
				cols[c].key);
			if (text_width(dst) > width[c])
				width[c] = text_width(dst);
		}
	}
	for (size_t r = 0; r <= nrows; r++) {
		for (size_t c = 0; c < ncols; c++)
			cells[c] = rows[r * ncols + c];
		print_row(cells, width, ncols);
	}
	free(rows);
	return CTL_OK;
}

/* ---- HTTP ---- */

static size_t on_write(char *data, size_t size, size_t n, void *arg)
{
	struct ctl_reply *rp = arg;
	size_t len = size * n;
	char *p;

	if (len > CTL_MAX_REPLY - rp->len)
		return 0;               /* too large: curl fails the transfer */
	p = realloc(rp->body, rp->len + len + 1);
	if (!p)
		return 0;
	memcpy(p + rp->len, data, len);
	rp->body = p;
	rp->len += len;
	rp->body[rp->len] = '\0';
	return len;
}

static void reply_clear(struct ctl_reply *rp)
{
	json_decref(rp->json);
	free(rp->body);
	memset(rp, 0, sizeof(*rp));
}

/* --cacert or $SIPCRM_CACERT: the CA (or self-signed certificate) that
   an https:// API presents; NULL: the system's CAs */
static const char *ctl_cacert;

static int set_common_opts(CURL *h)
{
	CURLcode rc = CURLE_OK;

	if (ctl_cacert && *ctl_cacert)
		rc |= curl_easy_setopt(h, CURLOPT_CAINFO, ctl_cacert);

#if CURL_AT_LEAST_VERSION(7, 85, 0)
	rc |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	rc |= curl_easy_setopt(h, CURLOPT_PROTOCOLS,
			       (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	rc |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	rc |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CTL_CONNECT_MS);
	rc |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, CTL_TIMEOUT_MS);
	rc |= curl_easy_setopt(h, CURLOPT_USERAGENT, "sipcrmctl/" PACKAGE_VERSION);
	return rc == CURLE_OK ? 0 : EINVAL;
}

static struct curl_slist *make_headers(const struct ctl *c, bool body)
{
	struct curl_slist *hdrs = NULL, *n;
	char auth[1024];

	n = curl_slist_append(hdrs, "Accept: application/json");
	if (n)
		hdrs = n;
	if (body && (n = curl_slist_append(hdrs,
				"Content-Type: application/json")))
		hdrs = n;
	if (c->token) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
			 c->token);
		if ((n = curl_slist_append(hdrs, auth)))
			hdrs = n;
	}
	return hdrs;
}

/*
 * Sends one request; body (borrowed) is sent as JSON when not NULL.
 * Returns 0 once any HTTP status came back (in *rp, to be cleared by the
 * caller), or CTL_FAIL after saying why the daemon could not be asked.
 */
static int ctl_request(const struct ctl *c, const char *method,
		       const char *path, const json_t *body,
		       struct ctl_reply *rp)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL;
	char *url = NULL, *data = NULL;
	size_t blen = strlen(c->url);
	CURL *h = curl_easy_init();
	CURLcode rc;
	int ret = CTL_FAIL;

	memset(rp, 0, sizeof(*rp));
	while (blen && c->url[blen - 1] == '/')
		blen--;
	url = malloc(blen + strlen(path) + 1);
	data = body ? json_dumps(body, JSON_COMPACT) : NULL;
	hdrs = make_headers(c, body != NULL);
	if (!h || !url || (body && !data) || !hdrs || set_common_opts(h)) {
		errmsg("out of memory");
		goto out;
	}
	memcpy(url, c->url, blen);
	strcpy(url + blen, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "GET")) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, data ? data : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE,
				 (long)(data ? strlen(data) : 0));
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, rp);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);

	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		errmsg("cannot reach sipcrmd at %.*s: %s", (int)blen, c->url,
		       *errbuf ? errbuf : curl_easy_strerror(rc));
		reply_clear(rp);
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rp->status);
	if (rp->len)
		rp->json = json_loadb(rp->body, rp->len, 0, NULL);
	ret = CTL_OK;
out:
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	free(data);
	free(url);
	return ret;
}

/* Says what an error reply means; the daemon's text is on stderr. */
static void report_http_error(const struct ctl_reply *rp)
{
	const char *e = json_string_value(json_object_get(rp->json, "error"));
	char safe[512];

	if (rp->status == 401) {
		errmsg("unauthorized: check -t TOKEN or SIPCRM_TOKEN");
	} else if (e) {
		term_safe(safe, sizeof(safe), e);
		errmsg("%s (HTTP %ld)", safe, rp->status);
	} else {
		errmsg("HTTP %ld from sipcrmd", rp->status);
	}
}

/*
 * A request that must succeed: 0 with a 2xx reply in *rp, else CTL_FAIL
 * after printing the error (and *rp cleared). With --json, the caller
 * prints rp->body.
 */
static int ctl_call(const struct ctl *c, const char *method, const char *path,
		    const json_t *body, struct ctl_reply *rp)
{
	if (ctl_request(c, method, path, body, rp))
		return CTL_FAIL;
	if (rp->status < 200 || rp->status > 299) {
		report_http_error(rp);
		reply_clear(rp);
		return CTL_FAIL;
	}
	return CTL_OK;
}

/* --json: the reply exactly as the daemon sent it. */
static void print_raw(const struct ctl_reply *rp)
{
	fwrite(rp->body ? rp->body : "", 1, rp->len, stdout);
	if (!rp->len || rp->body[rp->len - 1] != '\n')
		putchar('\n');
}

/* "/api/v1/calls/" + escaped id + suffix, or NULL. Caller frees. */
static char *call_path(const char *id, const char *suffix)
{
	char *esc = curl_easy_escape(NULL, id, 0), *p = NULL;
	size_t len;

	if (!esc)
		return NULL;
	len = strlen("/api/v1/calls/") + strlen(esc) + strlen(suffix) + 1;
	p = malloc(len);
	if (p)
		snprintf(p, len, "/api/v1/calls/%s%s", esc, suffix);
	curl_free(esc);
	return p;
}

/* ---- commands ---- */

static int cmd_status(const struct ctl *c, const struct ctl_args *a)
{
	struct ctl_reply rp;
	const char *st;
	char safe[128];
	int ret;

	if (ctl_call(c, "GET", "/api/v1/health", NULL, &rp))
		return CTL_FAIL;
	if (c->json) {
		print_raw(&rp);
		ret = CTL_OK;
		goto out;
	}
	st = json_string_value(json_object_get(rp.json, "status"));
	if (!st) {
		errmsg("unexpected reply from sipcrmd");
		ret = CTL_FAIL;
		goto out;
	}
	term_safe(safe, sizeof(safe), st);
	printf("status: %s\n", safe);
	ret = strcmp(st, "ok") ? CTL_FAIL : CTL_OK;
	st = json_string_value(json_object_get(rp.json, "version"));
	term_safe(safe, sizeof(safe), st ? st : "?");
	printf("version: %s\n", safe);
	printf("uptime: %" JSON_INTEGER_FORMAT "s\n",
	       json_integer_value(json_object_get(rp.json, "uptime")));
out:
	reply_clear(&rp);
	return ret;
}

/* GET path and print the list with cols (or raw with --json). */
static int list_cmd(const struct ctl *c, const char *path,
		    const struct ctl_col *cols, size_t ncols)
{
	struct ctl_reply rp;
	int ret;

	if (ctl_call(c, "GET", path, NULL, &rp))
		return CTL_FAIL;
	if (c->json) {
		print_raw(&rp);
		ret = CTL_OK;
	} else {
		ret = print_table(rp.json, cols, ncols);
	}
	reply_clear(&rp);
	return ret;
}

static int cmd_agents(const struct ctl *c, const struct ctl_args *a)
{
	static const struct ctl_col cols[] = {
		{ "EXT", "extension" }, { "NAME", "name" },
		{ "CRM_USER", "crm_user" }, { "STATUS", "status" },
		{ "CONTACTS", "contacts" },
	};

	return list_cmd(c, "/api/v1/agents", cols,
			sizeof(cols) / sizeof(cols[0]));
}

static int cmd_calls(const struct ctl *c, const struct ctl_args *a)
{
	static const struct ctl_col cols[] = {
		{ "CALL_ID", "call_id" }, { "DIR", "direction" },
		{ "FROM", "from" }, { "TO", "to" }, { "DID", "did" },
		{ "STATE", "state" }, { "AGENT", "agent" },
		{ "STARTED", "started" }, { "ANSWERED", "answered" },
	};

	return list_cmd(c, "/api/v1/calls", cols,
			sizeof(cols) / sizeof(cols[0]));
}

static int cmd_cdr(const struct ctl *c, const struct ctl_args *a)
{
	static const struct ctl_col cols[] = {
		{ "CALL_ID", "call_id" }, { "DIR", "direction" },
		{ "FROM", "from" }, { "TO", "to" },
		{ "DISPOSITION", "disposition" }, { "STARTED", "started" },
		{ "DURATION", "duration" }, { "BILLSEC", "billsec" },
		{ "AGENT", "last_agent" },
	};
	char path[512], *since = NULL;
	char *end;
	long limit = strtol(a->limit ? a->limit : "20", &end, 10);

	if (*end || limit <= 0 || limit > 100000) {
		errmsg("--limit wants a positive number");
		return CTL_USAGE;
	}
	if (a->since && !(since = curl_easy_escape(NULL, a->since, 0))) {
		errmsg("out of memory");
		return CTL_FAIL;
	}
	snprintf(path, sizeof(path), "/api/v1/cdr?limit=%ld%s%s", limit,
		 since ? "&since=" : "", since ? since : "");
	curl_free(since);
	return list_cmd(c, path, cols, sizeof(cols) / sizeof(cols[0]));
}

/* POST a JSON body (NULL: none) and print done (or the reply with --json). */
static int post_cmd(const struct ctl *c, const char *path, json_t *body,
		    const char *done)
{
	struct ctl_reply rp;

	if (!path) {
		json_decref(body);
		errmsg("out of memory");
		return CTL_FAIL;
	}
	if (ctl_call(c, "POST", path, body, &rp)) {
		json_decref(body);
		return CTL_FAIL;
	}
	json_decref(body);
	if (c->json)
		print_raw(&rp);
	else if (done)
		puts(done);
	reply_clear(&rp);
	return CTL_OK;
}

static int cmd_hangup(const struct ctl *c, const struct ctl_args *a)
{
	char *path = call_path(a->pos[0], "/hangup");
	int ret = post_cmd(c, path, NULL, "hangup requested");

	free(path);
	return ret;
}

static int cmd_transfer(const struct ctl *c, const struct ctl_args *a)
{
	char *path = call_path(a->pos[0], "/transfer");
	json_t *body = json_pack("{s:s, s:s}", "to", a->pos[1], "mode",
				 a->attended ? "attended" : "blind");
	int ret;

	if (!body) {
		free(path);
		errmsg("the target must be UTF-8 text");
		return CTL_USAGE;
	}
	ret = post_cmd(c, path, body, a->attended ?
		       "attended transfer requested" :
		       "blind transfer requested");
	free(path);
	return ret;
}

/* Click-to-call: 202 {"call_id": ...}. */
static int cmd_call(const struct ctl *c, const struct ctl_args *a)
{
	json_t *body = json_pack("{s:s, s:s}", "agent", a->agent, "to",
				 a->pos[0]);
	struct ctl_reply rp;
	const char *id;
	char safe[256];

	if (!body) {
		errmsg("DEST and EXT must be UTF-8 text");
		return CTL_USAGE;
	}
	if (ctl_call(c, "POST", "/api/v1/calls", body, &rp)) {
		json_decref(body);
		return CTL_FAIL;
	}
	json_decref(body);
	id = json_string_value(json_object_get(rp.json, "call_id"));
	if (c->json) {
		print_raw(&rp);
	} else if (id) {
		term_safe(safe, sizeof(safe), id);
		printf("call_id: %s\n", safe);
	} else {
		puts("call requested");
	}
	reply_clear(&rp);
	return CTL_OK;
}

static int cmd_reload(const struct ctl *c, const struct ctl_args *a)
{
	return post_cmd(c, "/api/v1/reload", NULL, "reload requested");
}

struct ctl_cmd {
	const char *name;
	const char *usage;
	int npos;                       /* positional arguments required */
	unsigned opts;                  /* OPT_* accepted */
	int (*fn)(const struct ctl *c, const struct ctl_args *a);
	const char *help;
};

static const struct ctl_cmd cmds[] = {
	{ "status", "status", 0, 0, cmd_status,
	  "daemon health, version and uptime" },
	{ "agents", "agents", 0, 0, cmd_agents,
	  "agents, their status and registered contacts" },
	{ "calls", "calls", 0, 0, cmd_calls, "active calls" },
	{ "cdr", "cdr [--limit N] [--since RFC3339]", 0,
	  OPT_LIMIT | OPT_SINCE, cmd_cdr, "ended calls, newest first" },
	{ "call", "call DEST --agent EXT", 1, OPT_AGENT, cmd_call,
	  "click-to-call: ring agent EXT, then dial DEST" },
	{ "transfer", "transfer CALL TARGET [--attended]", 2, OPT_ATTENDED,
	  cmd_transfer, "transfer a call (blind unless --attended)" },
	{ "hangup", "hangup CALL", 1, 0, cmd_hangup, "end a call" },
	{ "reload", "reload", 0, 0, cmd_reload,
	  "reload agents, DIDs, routing and CRM settings" },
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s [-u URL] [-t TOKEN] [--json] COMMAND [ARGS]\n"
		"\n"
		"  -u, --url URL      sipcrmd's HTTP API (default: $SIPCRM_URL, "
		"else %s)\n"
		"  -t, --token TOKEN  Bearer token (default: $SIPCRM_TOKEN; "
		"prefer the\n"
		"                     variable, a command line is visible to "
		"other users)\n"
		"  -j, --json         print the daemon's JSON reply as is\n"
		"      --cacert FILE  CA or certificate an https:// API is checked "
		"against\n"
		"                     (default: $SIPCRM_CACERT, else the system's)\n"
		"  -h, --help         this help\n"
		"  -V, --version      print the version\n"
		"\ncommands:\n", prog, CTL_DEFAULT_URL);
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(f, "  %-36s %s\n", cmds[i].usage, cmds[i].help);
}

static int bad_usage(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\ntry '%s -h'\n", prog);
	return CTL_USAGE;
}

/* "--opt VALUE" or "--opt=VALUE"; advances *i past VALUE. */
static const char *opt_value(int argc, char **argv, int *i, const char *opt)
{
	size_t len = strlen(opt);

	if (!strncmp(argv[*i], opt, len) && argv[*i][len] == '=')
		return argv[*i] + len + 1;
	if (!strcmp(argv[*i], opt) && *i + 1 < argc)
		return argv[++*i];
	return NULL;
}

/* Parses what follows the command word. Returns 0 or CTL_USAGE. */
static int parse_args(struct ctl *c, const struct ctl_cmd *cmd, int argc,
		      char **argv, struct ctl_args *a)
{
	memset(a, 0, sizeof(*a));
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i];

		if (!strcmp(s, "--json") || !strcmp(s, "-j"))
			c->json = true;
		else if ((cmd->opts & OPT_ATTENDED) && !strcmp(s, "--attended"))
			a->attended = true;
		else if ((cmd->opts & OPT_AGENT) &&
			 (a->agent = opt_value(argc, argv, &i, "--agent")))
			;
		else if ((cmd->opts & OPT_LIMIT) &&
			 ((a->limit = opt_value(argc, argv, &i, "--limit")) ||
			  (a->limit = opt_value(argc, argv, &i, "-n"))))
			;
		else if ((cmd->opts & OPT_SINCE) &&
			 (a->since = opt_value(argc, argv, &i, "--since")))
			;
		else if (s[0] == '-' && s[1])
			return bad_usage("unknown option '%s'", s);
		else if (a->npos < cmd->npos)
			a->pos[a->npos++] = s;
		else
			return bad_usage("unexpected argument '%s'", s);
	}
	if (a->npos < cmd->npos)
		return bad_usage("usage: %s", cmd->usage);
	if ((cmd->opts & OPT_AGENT) && !a->agent)
		return bad_usage("usage: %s", cmd->usage);
	return 0;
}

static bool has_ctl_chars(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "token", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "cacert", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl c = { .url = getenv("SIPCRM_URL"),
			 .token = getenv("SIPCRM_TOKEN") };
	const struct ctl_cmd *cmd = NULL;
	struct ctl_args a;
	int opt, ret;

	ctl_cacert = getenv("SIPCRM_CACERT");
	while ((opt = getopt_long(argc, argv, "+u:t:jhV", lopts, NULL)) != -1) {
		switch (opt) {
		case 'u':
			c.url = optarg;
			break;
		case 't':
			c.token = optarg;
			break;
		case 'j':
			c.json = true;
			break;
		case 'C':
			ctl_cacert = optarg;
			break;
		case 'h':
			usage(stdout);
			return CTL_OK;
		case 'V':
			printf("sipcrmctl %s\n", PACKAGE_VERSION);
			return CTL_OK;
		default:
			fprintf(stderr, "try '%s -h'\n", prog);
			return CTL_USAGE;
		}
	}
	if (!c.url || !*c.url)
		c.url = CTL_DEFAULT_URL;
	if (c.token && !*c.token)
		c.token = NULL;
	if (optind >= argc)
		return bad_usage("%s", "a command is needed");
	for (size_t i = 0; i < NCMDS; i++)
		if (!strcmp(argv[optind], cmds[i].name))
			cmd = &cmds[i];
	if (!cmd)
		return bad_usage("unknown command '%s'", argv[optind]);
	if (c.token && has_ctl_chars(c.token))
		return bad_usage("%s", "the token contains control characters");
	ret = parse_args(&c, cmd, argc - optind, argv + optind, &a);
	if (ret)
		return ret;

	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		errmsg("cannot initialise libcurl");
		return CTL_FAIL;
	}
	ret = cmd->fn(&c, &a);
	curl_global_cleanup();
	return ret;
}
