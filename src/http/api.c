/*
 * api.c: the HTTP API server (libmicrohttpd on the su_root), CONTRACT §5.
 *
 * libmicrohttpd runs without threads of its own, in "external epoll" mode:
 * its epoll fd is one wait object on the signalling thread's su_root, and
 * an su_timer carries MHD_get_timeout(). Either one calls MHD_run(), which
 * runs the access handler below, which runs our handlers; so handlers are
 * on the signalling thread and may touch calls and registrations directly.
 *
 * A request goes through three calls of the access handler:
 *   1. headers received: route lookup, token check, Content-Length check.
 *      401, 404, 405 and 413 are answered here, before any body is read;
 *   2. body chunks: accumulated up to API_MAX_BODY (413 once the body has
 *      ended; a chunked body far beyond that closes the connection);
 *   3. end of body: the route's handler runs and must reply once.
 * Every request gets exactly one answer: a handler that returns without
 * replying gets a 500. struct api_req lives from call 1 until MHD reports
 * the request complete (on_completed), also when the client goes away.
 *
 * Streams (api_reply_stream, for Server-Sent Events): a reply built with
 * MHD_create_response_from_callback() that goes through send_response()
 * like any other. Bytes written to the stream wait in its buffer; when the
 * buffer is empty the content reader suspends the connection (returning 0
 * alone would make MHD spin) and the next write resumes it. A stream whose
 * buffer would pass its limit is closed: a slow client is dropped rather
 * than allowed to grow memory. Its connection has no idle timeout; the
 * owner writes now and then, which is also how a vanished client is found
 * (MHD does not watch a suspended connection).
 *
 * Room for later, not implemented yet: replying later. MHD_ALLOW_SUSPEND_
 * RESUME is set; a handler would mark the request deferred and suspend it;
 * the later api_reply_*() queues the answer and resumes.
 *
 * libmicrohttpd percent-decodes the path before we route it: "*" segments
 * arrive decoded, and an encoded '/' (%2F) splits segments like a real one.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>
#include <sofia-sip/su_wait.h>

#define LOG_MODULE "api"
#include "log.h"
#include "metrics.h"
#include "api.h"
#include "api_test.h"

#define API_MAX_BODY      (1024 * 1024)  /* bytes; larger bodies get 413 */
#define API_MAX_DISCARD   (8 * API_MAX_BODY) /* then the connection closes */
#define API_MAX_SEGS      16             /* path segments of a route */
#define API_MAX_WAIT_MS   1000           /* longest sleep between MHD_run */
#define API_CONN_LIMIT    256u
#define API_CONN_TIMEOUT  30u            /* s of inactivity per connection */

/* A path split at '/': "/api/v1/calls" is "api", "v1", "calls". */
struct api_path {
	char *buf;                      /* the segments, NUL-separated */
	char *segv[API_MAX_SEGS];
	unsigned segc;
	bool too_deep;                  /* more than API_MAX_SEGS segments */
};

struct api_route {
	struct api_route *next;
	char *method;
	char *pattern;
	struct api_path path;
	bool auth;
	api_handler_h *h;
	void *arg;
};

struct api {
	su_root_t *root;
	struct MHD_Daemon *mhd;
	su_wait_t wait;
	int widx;                       /* su_root registration, 0: none */
	su_timer_t *timer;
	char *token;                    /* "" refuses every request needing it */
	unsigned port;
	struct api_route *routes, **rtail;
	struct metric *m_resp[5];       /* responses by class: 1xx .. 5xx */
	struct api_stream *streams;     /* open streams */
	char *tls_cert, *tls_key;       /* PEM text for HTTPS, NULL: plain HTTP */
};

struct api_stream {
	struct api *api;
	struct MHD_Connection *conn;
	char *buf;
	size_t len, cap, max;
	bool suspended;
	bool closing;                   /* end the body once the buffer is sent */
	api_stream_close_h *close_h;
	void *arg;
	struct api_stream *next, **prevp;
};

struct api_req {
	struct api *api;
	struct MHD_Connection *conn;
	char *method;
	char *path;
	struct api_path segs;
	const char *args[API_MAX_SEGS]; /* what the "*" segments matched */
	unsigned nargs;
	const struct api_route *route;
	char *body;                     /* NUL-terminated, NULL when empty */
	size_t len, size;
	json_t *json;
	bool json_done;
	bool replied;
	/*
	 * libmicrohttpd 0.9.75 refuses a reply while the body is being
	 * received, so a chunked body that turns out too large (or memory
	 * running out) is remembered here, the rest of the body is dropped,
	 * and the error goes out once the body has ended.
	 */
	unsigned fail;                  /* 413 or 500, 0: none */
	size_t dropped;
	/* api_test_request(): no connection; conn is NULL */
	const struct api_test_req *test;
	char **test_args;               /* decoded name, value, ..., NULL */
	unsigned test_status;           /* the answer queued, 0: none */
};

/* ---- small helpers ---- */

/* A copy of s for a log line: control bytes become '?', long ones end "...". */
static const char *log_safe(const char *s, char *buf, size_t size)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < size; i++) {
		unsigned char c = (unsigned char)s[i];

		buf[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	buf[i] = '\0';
	if (s[i] && size > 4)
		memcpy(buf + size - 4, "...", 4);
	return buf;
}

/* Length of the valid UTF-8 sequence at s, or 0. */
static size_t utf8_seq(const unsigned char *s)
{
	size_t n;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/*
 * Makes s valid UTF-8 in place (bad bytes become '?'), so that jansson
 * accepts an error text that quotes request data.
 */
static void utf8_fix(char *s)
{
	unsigned char *p = (unsigned char *)s;

	while (*p) {
		size_t n = utf8_seq(p);

		if (n) {
			p += n;
		} else {
			*p++ = '?';
		}
	}
}

/*
 * Compares a presented token with the configured one. The time taken
 * depends only on the length of the presented token, never on where
 * the two differ or on the secret's length. want must not be empty.
 */
static bool token_equal(const char *given, const char *want)
{
	size_t glen = strlen(given), wlen = strlen(want);
	volatile unsigned char diff = glen != wlen;

	for (size_t i = 0; i < glen; i++)
		diff |= (unsigned char)(given[i] ^ want[i % wlen]);
	return diff == 0;
}

/* Splits path into segments; returns ENOMEM or 0. */
static int path_split(struct api_path *p, const char *path)
{
	char *s;

	memset(p, 0, sizeof(*p));
	while (*path == '/')
		path++;
	p->buf = strdup(path);
	if (!p->buf)
		return ENOMEM;
	s = p->buf;
	for (;;) {
		char *slash = strchr(s, '/');

		if (p->segc == API_MAX_SEGS) {
			p->too_deep = true;
			break;
		}
		p->segv[p->segc++] = s;
		if (!slash)
			break;
		*slash = '\0';
		s = slash + 1;
	}
	return 0;
}

/* Matches a request path against a route pattern, collecting "*" args. */
static bool path_match(const struct api_path *pat, const struct api_path *p,
		       const char **args, unsigned *nargs)
{
	unsigned n = 0;

	if (p->too_deep || pat->segc != p->segc)
		return false;
	for (unsigned i = 0; i < p->segc; i++) {
		if (!strcmp(pat->segv[i], "*") && *p->segv[i]) {
			if (args)
				args[n] = p->segv[i];
			n++;
		} else if (strcmp(pat->segv[i], p->segv[i])) {
			return false;
		}
	}
	if (nargs)
		*nargs = n;
	return true;
}

/* HEAD is answered by GET routes; MHD drops the body itself. */
static bool method_match(const char *route, const char *req)
{
	return !strcmp(route, req) ||
	       (!strcmp(req, "HEAD") && !strcmp(route, "GET"));
}

/* ---- sending ---- */

/*
 * Adds the common headers and queues resp, which it always destroys.
 * Every answer goes through here: reply-once check, accounting, logging.
 */
static int send_response(struct api_req *r, unsigned status,
			 struct MHD_Response *resp, const char *ctype)
{
	char pbuf[128];
	int err = 0;

	if (!resp)
		return ENOMEM;
	if (r->replied) {
		log_warn("%s %s: second reply (%u) dropped", r->method,
			 log_safe(r->path, pbuf, sizeof(pbuf)), status);
		err = EALREADY;
		goto out;
	}
	if (status < 100 || status > 599) {
		err = EINVAL;
		goto out;
	}
	if ((ctype && MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
					      ctype) != MHD_YES) ||
	    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
				    "no-store") != MHD_YES ||
	    MHD_add_response_header(resp, "X-Content-Type-Options",
				    "nosniff") != MHD_YES ||
	    (status == 401 &&
	     MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
				     "Bearer") != MHD_YES)) {
		err = EINVAL;           /* bad ctype (CR/LF) or out of memory */
		goto out;
	}
	if (r->test)
		r->test_status = status;
	else if (MHD_queue_response(r->conn, status, resp) != MHD_YES) {
		log_warn("%s %s: cannot queue %u", r->method,
			 log_safe(r->path, pbuf, sizeof(pbuf)), status);
		err = EIO;
		goto out;
	}
	r->replied = true;
	metrics_inc(r->api->m_resp[status / 100 - 1]);
	log_debug("%s %s -> %u", r->method,
		  log_safe(r->path, pbuf, sizeof(pbuf)), status);
out:
	MHD_destroy_response(resp);
	return err;
}

static struct MHD_Response *resp_copy(const void *data, size_t len)
{
	return MHD_create_response_from_buffer(len, (void *)(uintptr_t)data,
					       MHD_RESPMEM_MUST_COPY);
}

/* {"error": msg}, with one optional extra header (Allow for 405). */
static int reply_error_hdr(struct api_req *r, unsigned status,
			   const char *hname, const char *hval, const char *msg)
{
	json_t *j = json_pack("{s:s}", "error", msg);
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	struct MHD_Response *resp = s ? resp_copy(s, strlen(s)) : NULL;

	json_decref(j);
	free(s);                        /* jansson's default allocator */
	if (resp && hname && MHD_add_response_header(resp, hname, hval) !=
	    MHD_YES) {
		MHD_destroy_response(resp);
		resp = NULL;
	}
	return send_response(r, status, resp, "application/json");
}

int api_reply_json(struct api_req *r, unsigned status, json_t *json)
{
	char *s;
	struct MHD_Response *resp;

	if (!json) {
		/* typically a failed json_pack() in the handler */
		reply_error_hdr(r, 500, NULL, NULL, "internal error");
		return ENOMEM;
	}
	s = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(json);
	if (!s) {
		reply_error_hdr(r, 500, NULL, NULL, "internal error");
		return ENOMEM;
	}
	resp = resp_copy(s, strlen(s));
	free(s);
	return send_response(r, status, resp, "application/json");
}

int api_reply_error(struct api_req *r, unsigned status, const char *fmt, ...)
{
	char msg[512], pbuf[128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* the text may quote request data: jansson escapes it, if UTF-8 */
	utf8_fix(msg);
	if (status >= 500)
		log_warn("%s %s: %u %s", r->method,
			 log_safe(r->path, pbuf, sizeof(pbuf)), status, msg);
	return reply_error_hdr(r, status, NULL, NULL, msg);
}

int api_reply_text(struct api_req *r, unsigned status, const char *ctype,
		   const char *body, size_t len)
{
	return send_response(r, status, resp_copy(body ? body : "",
						  body ? len : 0), ctype);
}

int api_reply_fd(struct api_req *r, unsigned status, const char *ctype, int fd,
		 size_t size)
{
	struct MHD_Response *resp;

	if (r->replied) {
		close(fd);
		return EALREADY;
	}
	resp = MHD_create_response_from_fd(size, fd);
	if (!resp) {
		close(fd);
		return ENOMEM;
	}
	return send_response(r, status, resp, ctype);
}

/* ---- streams ---- */

static void api_wake(struct api *a);

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct api_stream *s = cls;
	size_t n = s->len < max ? s->len : max;

	(void)pos;
	if (n) {
		memcpy(buf, s->buf, n);
		memmove(s->buf, s->buf + n, s->len - n);
		s->len -= n;
		return (ssize_t)n;
	}
	if (s->closing)
		return MHD_CONTENT_READER_END_OF_STREAM;
	/* nothing to send: off MHD's loop until the next write */
	MHD_suspend_connection(s->conn);
	s->suspended = true;
	return 0;
}

/* MHD is done with the response: the client went away, or the end. */
static void stream_free(void *cls)
{
	struct api_stream *s = cls;

	if (s->prevp) {
		*s->prevp = s->next;
		if (s->next)
			s->next->prevp = s->prevp;
	}
	if (s->close_h)
		s->close_h(s, s->arg);
	free(s->buf);
	free(s);
}

static void stream_wake(struct api_stream *s)
{
	if (!s->suspended)
		return;
	s->suspended = false;
	MHD_resume_connection(s->conn);
	api_wake(s->api);
}

struct api_stream *api_reply_stream(struct api_req *r, const char *ctype, size_t max,
				    api_stream_close_h *h, void *arg)
{
	struct api_stream *s = calloc(1, sizeof(*s));
	struct MHD_Response *resp;

	if (!s)
		return NULL;
	s->api = r->api;
	s->conn = r->conn;
	s->max = max;
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read,
						 s, stream_free);
	if (!resp) {
		free(s);
		return NULL;
	}
	if (send_response(r, 200, resp, ctype))
		return NULL;            /* destroying resp freed s */
	MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
	s->close_h = h;
	s->arg = arg;
	s->next = r->api->streams;
	if (s->next)
		s->next->prevp = &s->next;
	s->prevp = &r->api->streams;
	r->api->streams = s;
	return s;
}

int api_stream_write(struct api_stream *s, const void *data, size_t len)
{
	if (s->closing)
		return EPIPE;
	if (s->len + len > s->max) {
		log_info("stream client too slow (%zu bytes waiting): dropped", s->len);
		api_stream_close(s, true);
		return ENOBUFS;
	}
	if (s->len + len > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		char *b;

		while (cap < s->len + len)
			cap *= 2;
		b = realloc(s->buf, cap);
		if (!b)
			return ENOMEM;
		s->buf = b;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, len);
	s->len += len;
	stream_wake(s);
	return 0;
}

void api_stream_close(struct api_stream *s, bool notify)
{
	if (s->closing)
		return;
	s->closing = true;
	if (!notify)
		s->close_h = NULL;
	stream_wake(s);
}

/* ---- request accessors ---- */

const char *api_req_method(const struct api_req *r)
{
	return r->method;
}

const char *api_req_path(const struct api_req *r)
{
	return r->path;
}

const char *api_req_patharg(const struct api_req *r, unsigned idx)
{
	return idx < r->nargs ? r->args[idx] : NULL;
}

static const char *test_value(const char *const *kv, const char *name)
{
	for (; kv && kv[0] && kv[1]; kv += 2)
		if (!strcasecmp(kv[0], name))
			return kv[1];
	return NULL;
}

const char *api_req_query(const struct api_req *r, const char *name)
{
	if (r->test)
		return test_value((const char *const *)r->test_args, name);
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *api_req_header(const struct api_req *r, const char *name)
{
	if (r->test)
		return test_value(r->test->headers, name);
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *api_req_body(const struct api_req *r, size_t *lenp)
{
	if (lenp)
		*lenp = r->len;
	return r->body ? r->body : "";
}

json_t *api_req_json(struct api_req *r)
{
	json_error_t jerr;

	if (!r->json_done && r->len) {
		r->json = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES,
				     &jerr);
		if (!r->json)
			log_debug("%s: bad JSON body: %s", r->method,
				  jerr.text);
	}
	r->json_done = true;
	return r->json;
}

/* ---- request life cycle ---- */

static struct api_req *req_free(struct api_req *r)
{
	if (!r)
		return NULL;
	json_decref(r->json);
	for (size_t i = 0; r->test_args && r->test_args[i]; i++)
		free(r->test_args[i]);
	free(r->test_args);
	free(r->body);
	free(r->segs.buf);
	free(r->path);
	free(r->method);
	free(r);
	return NULL;
}

static int req_alloc(struct api_req **rp, struct api *a,
		     struct MHD_Connection *c, const char *method,
		     const char *url)
{
	struct api_req *r = calloc(1, sizeof(*r));
	int err = ENOMEM;

	if (!r)
		return ENOMEM;
	r->api = a;
	r->conn = c;
	r->method = strdup(method);
	r->path = strdup(url);
	if (!r->method || !r->path)
		goto out;
	err = path_split(&r->segs, url);
	if (err)
		goto out;
	*rp = r;
	return 0;
out:
	req_free(r);
	return err;
}

/*
 * Unknown paths under /api/ need the token too, so that a client without
 * one learns nothing about which endpoints exist.
 */
static bool is_api_path(const char *path)
{
	return !strncmp(path, "/api/", 5) || !strcmp(path, "/api");
}

/*
 * Bearer token check. An empty configured token refuses every request
 * that needs one: an unconfigured API is closed, never open. Only routes
 * registered with auth=false (health, metrics) stay reachable then.
 */
static bool req_authorized(const struct api_req *r)
{
	const char *h = api_req_header(r, MHD_HTTP_HEADER_AUTHORIZATION);

	if (!*r->api->token || !h || strncasecmp(h, "Bearer ", 7))
		return false;
	for (h += 7; *h == ' '; h++)
		;
	return token_equal(h, r->api->token);
}

/* Methods allowed on the request's path, for the Allow header of a 405. */
static void allowed_methods(const struct api_req *r, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	for (const struct api_route *rt = r->api->routes; rt; rt = rt->next) {
		if (!path_match(&rt->path, &r->segs, NULL, NULL) ||
		    strstr(buf, rt->method))
			continue;
		len += (size_t)snprintf(buf + len, size - len, "%s%s",
					len ? ", " : "", rt->method);
		if (len >= size) {
			buf[size - 1] = '\0';
			break;
		}
	}
}

/* Call 1: headers are in. Answers now whatever needs no body. */
static void req_begin(struct api_req *r)
{
	const struct api_route *rt, *path_hit = NULL;
	bool need_auth;
	const char *cl;
	char allow[128];

	for (rt = r->api->routes; rt; rt = rt->next) {
		if (!path_match(&rt->path, &r->segs, NULL, NULL))
			continue;
		if (!path_hit || rt->auth)
			path_hit = rt;
		if (method_match(rt->method, r->method)) {
			path_match(&rt->path, &r->segs, r->args, &r->nargs);
			r->route = rt;
			break;
		}
	}
	if (r->route)
		need_auth = r->route->auth;
	else
		need_auth = is_api_path(r->path) || (path_hit && path_hit->auth);

	if (need_auth && !req_authorized(r)) {
		reply_error_hdr(r, 401, NULL, NULL, "unauthorized");
	} else if (!r->route && path_hit) {
		allowed_methods(r, allow, sizeof(allow));
		reply_error_hdr(r, 405, MHD_HTTP_HEADER_ALLOW, allow,
				"method not allowed");
	} else if (!r->route) {
		reply_error_hdr(r, 404, NULL, NULL, "not found");
	} else if ((cl = api_req_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH)) &&
		   strtoull(cl, NULL, 10) > API_MAX_BODY) {
		reply_error_hdr(r, 413, NULL, NULL, "request too large");
	}
}

/* Call 2: a piece of the body. */
static void req_append(struct api_req *r, const char *data, size_t n)
{
	if (n > API_MAX_BODY - r->len) {
		/* chunked uploads have no Content-Length to check up front */
		r->fail = 413;
		return;
	}
	if (r->len + n + 1 > r->size) {
		size_t size = r->size ? r->size : 4096;
		char *p;

		while (size < r->len + n + 1)
			size *= 2;
		if (size > API_MAX_BODY + 1)
			size = API_MAX_BODY + 1;
		p = realloc(r->body, size);
		if (!p) {
			r->fail = 500;
			return;
		}
		r->body = p;
		r->size = size;
	}
	memcpy(r->body + r->len, data, n);
	r->len += n;
	r->body[r->len] = '\0';
}

/* Call 3: the whole request is in; the handler must answer. */
static void req_dispatch(struct api_req *r)
{
	char pbuf[128];
	int err = r->route->h(r, r->route->arg);

	if (r->replied) {
		if (err)
			log_warn("%s %s: handler replied but returned %s",
				 r->method, log_safe(r->path, pbuf,
						     sizeof(pbuf)),
				 strerror(err));
		return;
	}
	log_warn("%s %s: handler %s without a reply", r->method,
		 log_safe(r->path, pbuf, sizeof(pbuf)),
		 err ? "failed" : "returned");
	reply_error_hdr(r, 500, NULL, NULL, "internal error");
}

/* Gives up on a body far too large: MHD closes the connection. */
static enum MHD_Result req_abort(const struct api_req *r)
{
	char pbuf[128];

	log_warn("%s %s: body over %u MiB, connection closed", r->method,
		 log_safe(r->path, pbuf, sizeof(pbuf)),
		 (unsigned)(API_MAX_DISCARD >> 20));
	return MHD_NO;
}

/* Call 2 as MHD makes it: MHD_NO closes the connection. */
static enum MHD_Result req_upload(struct api_req *r, const char *data, size_t n)
{
	if (r->replied)
		return MHD_YES;
	if (!r->fail)
		req_append(r, data, n);
	else if ((r->dropped += n) > API_MAX_DISCARD)
		return req_abort(r);
	return MHD_YES;
}

/* Call 3 as MHD makes it. */
static void req_end(struct api_req *r)
{
	if (r->replied)
		return;
	if (r->fail == 413)
		reply_error_hdr(r, 413, NULL, NULL, "request too large");
	else if (r->fail)
		reply_error_hdr(r, 500, NULL, NULL, "out of memory");
	else
		req_dispatch(r);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c,
				 const char *url, const char *method,
				 const char *version, const char *upload_data,
				 size_t *upload_size, void **con_cls)
{
	struct api *a = cls;
	struct api_req *r = *con_cls;

	if (!r) {
		if (req_alloc(&r, a, c, method, url)) {
			log_warn("out of memory for a request");
			return MHD_NO;  /* MHD closes the connection */
		}
		*con_cls = r;
		req_begin(r);
		return MHD_YES;
	}
	if (*upload_size) {
		size_t n = *upload_size;

		*upload_size = 0;       /* consumed, or dropped */
		return req_upload(r, upload_data, n);
	}
	req_end(r);
	return MHD_YES;
}

/* Frees the request, however it ended (answered, client gone, shutdown). */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct api_req *r = *con_cls;
	char pbuf[128];

	if (!r)
		return;
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
		log_debug("%s %s: ended early (%d)", r->method,
			  log_safe(r->path, pbuf, sizeof(pbuf)), (int)toe);
	*con_cls = NULL;
	req_free(r);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];
	size_t len;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	len = strlen(msg);
	while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
		msg[--len] = '\0';
	log_warn("libmicrohttpd: %s", msg);
}

/* ---- the loop ---- */

static void on_timer(su_root_magic_t *magic, su_timer_t *t,
		     su_timer_arg_t *arg);

/* Lets MHD work, then re-arms the timer with MHD's next deadline. */
static void api_run(struct api *a)
{
	MHD_UNSIGNED_LONG_LONG to = API_MAX_WAIT_MS;
	su_duration_t ms = API_MAX_WAIT_MS;

	if (MHD_run(a->mhd) != MHD_YES)
		log_warn("MHD_run failed");
	if (MHD_get_timeout(a->mhd, &to) == MHD_YES && to < API_MAX_WAIT_MS)
		ms = (su_duration_t)to;
	if (su_timer_set_interval(a->timer, on_timer, a, ms) < 0)
		log_warn("cannot arm the HTTP timer");
}

static void on_timer(su_root_magic_t *magic, su_timer_t *t,
		     su_timer_arg_t *arg)
{
	api_run(arg);
}

/* Runs MHD on the next loop turn (a stream was resumed). */
static void api_wake(struct api *a)
{
	if (su_timer_set_interval(a->timer, on_timer, a, 0) < 0)
		log_warn("cannot arm the HTTP timer");
}

static int on_ready(su_root_magic_t *magic, su_wait_t *w,
		    su_wakeup_arg_t *arg)
{
	api_run(arg);
	return 0;
}

/* Builds the listen address from an IPv4 or IPv6 literal ("[::1]" too). */
static int listen_addr(struct sockaddr_storage *ss, const char *host,
		       unsigned port, bool *v6)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char buf[INET6_ADDRSTRLEN];
	size_t len;

	memset(ss, 0, sizeof(*ss));
	if (!host || !*host || !strcmp(host, "*"))
		host = "0.0.0.0";
	len = strlen(host);
	if (host[0] == '[' && len >= 2 && host[len - 1] == ']' &&
	    len - 2 < sizeof(buf)) {
		memcpy(buf, host + 1, len - 2);
		buf[len - 2] = '\0';
		host = buf;
	}
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*v6 = false;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*v6 = true;
		return 0;
	}
	return EINVAL;
}

static void register_metrics(struct api *a)
{
	static const char *const classes[] = {
		"code=\"1xx\"", "code=\"2xx\"", "code=\"3xx\"", "code=\"4xx\"",
		"code=\"5xx\"",
	};

	for (size_t i = 0; i < 5; i++)
		a->m_resp[i] = metrics_counter("sipcrm_http_requests_total",
				"HTTP API responses by status class",
				classes[i]);
}

/* A whole PEM file as a string, or NULL with errno set. */
static char *read_pem(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f)
		return NULL;
	do {
		if (len + 4097 > cap) {
			char *nb = cap > (1 << 20) ? NULL : realloc(buf, cap + 8192);

			if (!nb) {
				free(buf);
				fclose(f);
				errno = EFBIG;
				return NULL;
			}
			buf = nb;
			cap += 8192;
		}
		n = fread(buf + len, 1, 4096, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	return buf;
}

/* HTTPS from PEM files: both paths set, or neither (plain HTTP). */
static int load_tls(struct api *a, const struct api_tls *tls)
{
	const char *paths[2] = { tls ? tls->cert : NULL, tls ? tls->key : NULL };
	char **dst[2] = { &a->tls_cert, &a->tls_key };

	if (!paths[0] || !*paths[0] || !paths[1] || !*paths[1])
		return 0;
	if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
		log_err("libmicrohttpd was built without TLS: no HTTPS");
		return ENOTSUP;
	}
	for (int i = 0; i < 2; i++) {
		*dst[i] = read_pem(paths[i]);
		if (!*dst[i]) {
			int err = errno ? errno : EIO;

			log_err("cannot read %s: %s", paths[i], strerror(err));
			return err;
		}
	}
	return 0;
}

static int start_daemon(struct api *a, const char *host, unsigned port)
{
	struct sockaddr_storage ss;
	const union MHD_DaemonInfo *info;
	unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
			 MHD_ALLOW_SUSPEND_RESUME;
	struct MHD_OptionItem tls[] = {
		{ MHD_OPTION_HTTPS_MEM_CERT, 0, a->tls_cert },
		{ MHD_OPTION_HTTPS_MEM_KEY, 0, a->tls_key },
		{ MHD_OPTION_END, 0, NULL },
	};
	bool v6;
	int err;

	if (port > 65535 || listen_addr(&ss, host, port, &v6)) {
		log_err("listen %s:%u: not an IP address and port",
			host ? host : "", port);
		return EINVAL;
	}
	if (v6)
		flags |= MHD_USE_IPv6;
	if (a->tls_cert)
		flags |= MHD_USE_TLS;
	else
		tls[0].option = MHD_OPTION_END;
	errno = 0;
	/* the logger first, or MHD logs earlier options' errors to stderr */
	a->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL,
				  on_access, a,
				  MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a,
				  MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
				  MHD_OPTION_CONNECTION_LIMIT, API_CONN_LIMIT,
				  MHD_OPTION_CONNECTION_TIMEOUT,
				  API_CONN_TIMEOUT,
				  MHD_OPTION_ARRAY, tls,
				  MHD_OPTION_END);
	if (!a->mhd) {
		err = errno ? errno : EADDRINUSE;
		log_err("cannot listen on %s:%u: %s", host ? host : "*", port,
			strerror(err));
		return err;
	}
	info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_BIND_PORT);
	a->port = info ? info->port : port;
	info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info || info->epoll_fd < 0) {
		log_err("libmicrohttpd has no epoll fd");
		return EIO;
	}
	if (su_wait_create(&a->wait, info->epoll_fd, SU_WAIT_IN) < 0)
		return EIO;
	a->widx = su_root_register(a->root, &a->wait, on_ready, a, 0);
	if (a->widx <= 0) {
		a->widx = 0;
		su_wait_destroy(&a->wait);
		return errno ? errno : EIO;
	}
	return 0;
}

int api_alloc(struct api **ap, su_root_t *root, const char *host,
	      unsigned port, const char *token, const struct api_tls *tls)
{
	struct api *a;
	int err;

	if (!ap || !root)
		return EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return ENOMEM;
	a->root = root;
	a->rtail = &a->routes;
	a->token = strdup(token ? token : "");
	a->timer = su_timer_create(su_root_task(root), 0);
	if (!a->token || !a->timer) {
		err = ENOMEM;
		goto out;
	}
	err = load_tls(a, tls);
	if (!err)
		err = start_daemon(a, host, port);
	if (err)
		goto out;
	register_metrics(a);
	if (!*a->token)
		log_warn("no [api] token: every /api/ request will get 401");
	log_info("HTTP%s API on %s:%u", a->tls_cert ? "S" : "",
		 host && *host ? host : "*", a->port);
	api_run(a);                     /* arms the timer */
	*ap = a;
	return 0;
out:
	api_free(a);
	return err;
}

/*
 * Stops listening, closes every connection (their requests are freed
 * through on_completed) and frees the routes.
 */
struct api *api_free(struct api *a)
{
	if (!a)
		return NULL;
	if (a->widx > 0)
		su_root_deregister(a->root, a->widx);
	su_timer_destroy(a->timer);
	/* MHD must not stop with suspended connections */
	for (struct api_stream *s = a->streams; s; s = s->next) {
		s->close_h = NULL;
		s->closing = true;
		if (s->suspended) {
			s->suspended = false;
			MHD_resume_connection(s->conn);
		}
	}
	if (a->mhd)
		MHD_stop_daemon(a->mhd);
	while (a->routes) {
		struct api_route *rt = a->routes;

		a->routes = rt->next;
		free(rt->path.buf);
		free(rt->pattern);
		free(rt->method);
		free(rt);
	}
	free(a->token);
	if (a->tls_key)
		memset(a->tls_key, 0, strlen(a->tls_key));
	free(a->tls_key);
	free(a->tls_cert);
	free(a);
	return NULL;
}

int api_set_token(struct api *a, const char *token)
{
	char *t = strdup(token ? token : "");

	if (!t)
		return ENOMEM;
	free(a->token);
	a->token = t;
	if (!*t)
		log_warn("no [api] token: every /api/ request will get 401");
	return 0;
}

unsigned api_port(const struct api *a)
{
	return a ? a->port : 0;
}

int api_route(struct api *a, const char *method, const char *path, bool auth,
	      api_handler_h *h, void *arg)
{
	struct api_route *rt;
	int err;

	if (!a || !method || !*method || !path || path[0] != '/' || !h)
		return EINVAL;
	for (rt = a->routes; rt; rt = rt->next)
		if (!strcmp(rt->method, method) && !strcmp(rt->pattern, path))
			return EEXIST;
	rt = calloc(1, sizeof(*rt));
	if (!rt)
		return ENOMEM;
	rt->method = strdup(method);
	rt->pattern = strdup(path);
	if (!rt->method || !rt->pattern) {
		err = ENOMEM;
		goto out;
	}
	err = path_split(&rt->path, path);
	if (err)
		goto out;
	if (rt->path.too_deep) {
		err = EINVAL;
		goto out;
	}
	rt->auth = auth;
	rt->h = h;
	rt->arg = arg;
	*a->rtail = rt;
	a->rtail = &rt->next;
	return 0;
out:
	free(rt->path.buf);
	free(rt->pattern);
	free(rt->method);
	free(rt);
	return err;
}

/* ---- requests without a connection (api_test.h) ---- */

int api_test_alloc(struct api **ap, const char *token)
{
	struct api *a = calloc(1, sizeof(*a));

	if (!a)
		return ENOMEM;
	a->rtail = &a->routes;
	a->token = strdup(token ? token : "");
	if (!a->token) {
		api_free(a);
		return ENOMEM;
	}
	register_metrics(a);
	*ap = a;
	return 0;
}

/* "a=1&b=%20" into decoded name, value pairs, as MHD splits a query. */
static char **test_args(const char *query)
{
	size_t n = 1;
	char **kv, *q, *save = NULL;

	for (const char *p = query; *p; p++)
		n += *p == '&';
	kv = calloc(2 * n + 1, sizeof(*kv));
	q = strdup(query);
	if (!kv || !q) {
		free(kv);
		free(q);
		return NULL;
	}
	n = 0;
	for (char *f = strtok_r(q, "&", &save); f; f = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(f, '=');

		if (eq)
			*eq = '\0';
		kv[n] = strdup(f);
		kv[n + 1] = strdup(eq ? eq + 1 : "");
		if (!kv[n] || !kv[n + 1]) {
			free(kv[n]);
			free(kv[n + 1]);
			kv[n] = NULL;
			break;
		}
		MHD_http_unescape(kv[n]);
		MHD_http_unescape(kv[n + 1]);
		n += 2;
	}
	free(q);
	return kv;
}

unsigned api_test_request(struct api *a, const struct api_test_req *t)
{
	struct api_req *r;
	unsigned status;
	bool closed = false;

	if (req_alloc(&r, a, NULL, t->method, t->path))
		return 0;
	r->test = t;
	if (t->query && !(r->test_args = test_args(t->query))) {
		req_free(r);
		return 0;
	}
	req_begin(r);
	for (size_t k = 0; k < (t->repeat ? t->repeat : 1) && !closed; k++) {
		for (size_t off = 0; off < t->body_len && !closed;) {
			size_t n = t->chunk && t->chunk < t->body_len - off ? t->chunk :
				   t->body_len - off;

			closed = req_upload(r, t->body + off, n) != MHD_YES;
			off += n;
		}
	}
	if (!closed)
		req_end(r);
	status = r->test_status;
	req_free(r);
	return status;
}
