/*
 * httpc.c: asynchronous HTTP client, libcurl's multi interface joined to
 * the su_root loop (curl's docs/examples/ephiperfifo.c mapped onto su_root).
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one
 * su_wait_t registered on the root per socket) and when to call it back
 * (CURLMOPT_TIMERFUNCTION: one su_timer). Events go back to curl through
 * curl_multi_socket_action(); finished transfers are collected with
 * curl_multi_info_read() and their callbacks run from the loop, never from
 * inside curl and never from inside httpc_request().
 *
 * Connections and the DNS cache live in the multi handle, so keep-alive
 * connections to the CRM are reused across requests.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <sofia-sip/su_wait.h>

#define LOG_MODULE "httpc"
#include "log.h"
#include "httpc.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0"
#endif

enum {
	HTTPC_TIMEOUT_MS = 30000,
	HTTPC_MAX_BODY = 1024 * 1024,
	/*
	 * libcurl (7.88) counts the connections in use against this too: once
	 * more are open, each one a transfer finishes with is closed instead
	 * of kept, and the next request connects anew. A CRM that hangs ties
	 * up hundreds (lookups run on past their deadline, event POSTs), so
	 * the bound is well above what a hang can hold.
	 */
	HTTPC_MAXCONNECTS = 1024,
};

/* One socket curl asked us to watch. */
struct httpc_sock {
	struct httpc *h;
	struct httpc_sock *next, **pprev;
	curl_socket_t fd;
	int index;              /* su_root registration */
	int events;             /* SU_WAIT_* mask */
	su_wait_t wait;
};

struct httpc_req {
	struct httpc *h;
	struct httpc_req *next, **pprev;
	CURL *easy;
	struct curl_slist *hdrs;
	httpc_resp_h *cb;
	void *arg;
	char *buf;
	size_t len, cap, max;
	bool too_large;
	bool nomem;
	bool in_cb;             /* callback running: cancel is a no-op */
	struct timespec start;
	char errbuf[CURL_ERROR_SIZE];
};

struct httpc {
	su_root_t *root;
	CURLM *multi;
	su_timer_t *timer;
	struct httpc_req *reqs;
	struct httpc_sock *socks;
	size_t npending;
	unsigned depth;         /* loop callbacks on the stack */
	bool dead;              /* httpc_free() ran inside a callback */
};

/* ---- lists ------------------------------------------------------------ */

static void req_link(struct httpc *h, struct httpc_req *r)
{
	r->next = h->reqs;
	if (r->next)
		r->next->pprev = &r->next;
	h->reqs = r;
	r->pprev = &h->reqs;
	h->npending++;
}

static void req_unlink(struct httpc_req *r)
{
	if (!r->pprev)
		return;
	*r->pprev = r->next;
	if (r->next)
		r->next->pprev = r->pprev;
	r->pprev = NULL;
	r->h->npending--;
}

static void sock_link(struct httpc *h, struct httpc_sock *s)
{
	s->next = h->socks;
	if (s->next)
		s->next->pprev = &s->next;
	h->socks = s;
	s->pprev = &h->socks;
}

static void sock_free(struct httpc_sock *s)
{
	if (!s)
		return;
	*s->pprev = s->next;
	if (s->next)
		s->next->pprev = s->pprev;
	su_root_deregister(s->h->root, s->index);
	free(s);
}

/* ---- curl -> errno ------------------------------------------------------ */

static const struct code_map {
	CURLcode code;
	int err;
	const char *cause;
} code_map[] = {
	{ CURLE_OK,                        0,            "ok" },
	{ CURLE_OPERATION_TIMEDOUT,        ETIMEDOUT,    "timeout" },
	{ CURLE_COULDNT_CONNECT,           ECONNREFUSED, "refused" },
	{ CURLE_COULDNT_RESOLVE_HOST,      EHOSTUNREACH, "dns" },
	{ CURLE_COULDNT_RESOLVE_PROXY,     EHOSTUNREACH, "dns" },
	{ CURLE_TOO_MANY_REDIRECTS,        ELOOP,        "redirect_loop" },
	{ CURLE_FILESIZE_EXCEEDED,         EMSGSIZE,     "too_large" },
	{ CURLE_OUT_OF_MEMORY,             ENOMEM,       "nomem" },
	{ CURLE_SSL_CONNECT_ERROR,         EPROTO,       "tls" },
	{ CURLE_PEER_FAILED_VERIFICATION,  EPROTO,       "tls" },
	{ CURLE_SSL_CERTPROBLEM,           EPROTO,       "tls" },
	{ CURLE_SSL_CIPHER,                EPROTO,       "tls" },
	{ CURLE_SSL_CACERT_BADFILE,        EPROTO,       "tls" },
	{ CURLE_SSL_ENGINE_NOTFOUND,       EPROTO,       "tls" },
	{ CURLE_SSL_ENGINE_SETFAILED,      EPROTO,       "tls" },
	{ CURLE_SSL_ENGINE_INITFAILED,     EPROTO,       "tls" },
	{ CURLE_SSL_SHUTDOWN_FAILED,       EPROTO,       "tls" },
	{ CURLE_SSL_CRL_BADFILE,           EPROTO,       "tls" },
	{ CURLE_SSL_ISSUER_ERROR,          EPROTO,       "tls" },
	{ CURLE_SSL_PINNEDPUBKEYNOTMATCH,  EPROTO,       "tls" },
	{ CURLE_SSL_INVALIDCERTSTATUS,     EPROTO,       "tls" },
	{ CURLE_USE_SSL_FAILED,            EPROTO,       "tls" },
	{ CURLE_WEIRD_SERVER_REPLY,        EPROTO,       "protocol" },
	{ CURLE_GOT_NOTHING,               EPROTO,       "protocol" },
	{ CURLE_RECV_ERROR,                EPROTO,       "protocol" },
	{ CURLE_SEND_ERROR,                EPROTO,       "protocol" },
	{ CURLE_PARTIAL_FILE,              EPROTO,       "protocol" },
	{ CURLE_HTTP2,                     EPROTO,       "protocol" },
	{ CURLE_HTTP2_STREAM,              EPROTO,       "protocol" },
	{ CURLE_BAD_CONTENT_ENCODING,      EPROTO,       "protocol" },
	{ CURLE_UNSUPPORTED_PROTOCOL,      EPROTO,       "protocol" },
	{ CURLE_URL_MALFORMAT,             EPROTO,       "protocol" },
};

/* Maps a finished transfer's code to errno and a stable metrics label. */
static int code_errno(const struct httpc_req *r, CURLcode c,
		      const char **cause)
{
	size_t i;

	if (r->too_large || r->nomem) {
		*cause = r->too_large ? "too_large" : "nomem";
		return r->too_large ? EMSGSIZE : ENOMEM;
	}
	for (i = 0; i < sizeof(code_map) / sizeof(code_map[0]); i++) {
		if (code_map[i].code == c) {
			*cause = code_map[i].cause;
			return code_map[i].err;
		}
	}
	*cause = "io";
	return EIO;
}

/* ---- requests ----------------------------------------------------------- */

static void req_destroy(struct httpc_req *r)
{
	if (!r)
		return;
	req_unlink(r);
	if (r->easy) {
		curl_multi_remove_handle(r->h->multi, r->easy);
		curl_easy_cleanup(r->easy);
	}
	curl_slist_free_all(r->hdrs);
	free(r->buf);
	free(r);
}

static size_t req_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct httpc_req *r = arg;
	size_t n = size * nmemb;
	char *p;

	if (n > r->max - r->len) {
		r->too_large = true;
		return 0;
	}
	if (r->len + n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 4096;

		while (cap < r->len + n + 1)
			cap *= 2;
		if (cap > r->max + 1)
			cap = r->max + 1;
		p = realloc(r->buf, cap);
		if (!p) {
			r->nomem = true;
			return 0;
		}
		r->buf = p;
		r->cap = cap;
	}
	memcpy(r->buf + r->len, ptr, n);
	r->len += n;
	r->buf[r->len] = '\0';
	return n;
}

static double elapsed_s(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) +
	       (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Runs the callback of a finished transfer, then frees the request. */
static void req_done(struct httpc *h, CURL *easy, CURLcode code)
{
	struct httpc_resp resp = { .body = "" };
	struct httpc_req *r;
	void *p = NULL;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p);
	r = p;
	if (!r)
		return;
	req_unlink(r);
	resp.err = code_errno(r, code, &resp.cause);
	resp.total_s = elapsed_s(&r->start);
	if (resp.err) {
		log_debug("request failed after %.3f s: %s (%s)", resp.total_s,
			  resp.cause,
			  r->errbuf[0] ? r->errbuf : curl_easy_strerror(code));
	} else {
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &resp.status);
		resp.body = r->buf ? r->buf : "";
		resp.body_len = r->len;
	}
	r->in_cb = true;
	r->cb(&resp, r->arg);
	req_destroy(r);
}

static void check_done(struct httpc *h)
{
	CURLMsg *msg;
	int left;

	while (!h->dead && (msg = curl_multi_info_read(h->multi, &left))) {
		if (msg->msg == CURLMSG_DONE)
			req_done(h, msg->easy_handle, msg->data.result);
	}
}

/* ---- loop glue ---------------------------------------------------------- */

static void multi_destroy(struct httpc *h);

/* Frees h if httpc_free() was called from a callback below us. */
static void loop_leave(struct httpc *h)
{
	if (--h->depth == 0 && h->dead)
		multi_destroy(h);
}

static void socket_action(struct httpc *h, curl_socket_t fd, int flags)
{
	int running;
	CURLMcode mc;

	h->depth++;
	mc = curl_multi_socket_action(h->multi, fd, flags, &running);
	if (mc != CURLM_OK)
		log_warn("curl_multi_socket_action: %s", curl_multi_strerror(mc));
	check_done(h);
	loop_leave(h);
}

static int sock_event(su_root_magic_t *magic, su_wait_t *w,
		      su_wakeup_arg_t *arg)
{
	struct httpc_sock *s = arg;
	int ev = su_wait_events(w, s->fd);
	int flags = 0;

	if (ev & (SU_WAIT_IN | SU_WAIT_HUP))
		flags |= CURL_CSELECT_IN;
	if (ev & SU_WAIT_OUT)
		flags |= CURL_CSELECT_OUT;
	if (ev & SU_WAIT_ERR)
		flags |= CURL_CSELECT_ERR;
	/* s may be freed by curl's CURL_POLL_REMOVE inside the action */
	socket_action(s->h, s->fd, flags);
	return 0;
}

static void timer_expired(su_root_magic_t *magic, su_timer_t *t,
			  su_timer_arg_t *arg)
{
	socket_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

static int on_timer(CURLM *multi, long timeout_ms, void *arg)
{
	struct httpc *h = arg;

	su_timer_reset(h->timer);
	if (timeout_ms < 0)
		return 0;
	/* 0 means "now": a 0 ms su_timer runs from the loop, not from here */
	if (su_timer_set_interval(h->timer, timer_expired, h, timeout_ms) < 0) {
		log_warn("cannot set the curl timer");
		return -1;
	}
	return 0;
}

static int sock_add(struct httpc *h, curl_socket_t fd, int events)
{
	struct httpc_sock *s = calloc(1, sizeof(*s));

	if (!s)
		return ENOMEM;
	s->h = h;
	s->fd = fd;
	s->events = events;
	if (su_wait_create(&s->wait, fd, events) < 0)
		goto fail;
	s->index = su_root_register(h->root, &s->wait, sock_event, s, 0);
	if (s->index < 0)
		goto fail;
	sock_link(h, s);
	curl_multi_assign(h->multi, fd, s);
	return 0;
fail:
	free(s);
	return errno ? errno : EIO;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *arg,
		     void *sockp)
{
	struct httpc_sock *s = sockp;
	int events = 0, err = 0;

	if (what == CURL_POLL_REMOVE) {
		sock_free(s);
		return 0;
	}
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		events |= SU_WAIT_IN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		events |= SU_WAIT_OUT;
	if (!s)
		err = sock_add(arg, fd, events);
	else if (s->events != events &&
		 su_root_eventmask(s->h->root, s->index, fd, events) == 0)
		s->events = events;
	if (err)
		log_warn("cannot watch socket %d: %s", (int)fd, strerror(err));
	return 0;
}

/* ---- request setup ------------------------------------------------------ */

#define SETOPT(e, opt, val) do { \
	CURLcode _c = curl_easy_setopt((e), (opt), (val)); \
	if (_c != CURLE_OK) \
		return _c == CURLE_OUT_OF_MEMORY ? ENOMEM : EINVAL; \
} while (0)

/*
 * No method: GET, or POST when there is a body. body_len 0 with a body
 * means strlen(body), so a C string needs no length.
 */
static int req_set_method(struct httpc_req *r, const struct httpc_opts *o)
{
	const char *m = o->method;
	const char *body = o->body ? o->body : "";
	size_t len = o->body_len ? o->body_len : strlen(body);

	if (o->body || (m && !strcmp(m, "POST"))) {
		SETOPT(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
		SETOPT(r->easy, CURLOPT_COPYPOSTFIELDS, body);
	}
	if (!m || !strcmp(m, "POST") || (!strcmp(m, "GET") && !o->body))
		return 0;
	if (!strcmp(m, "HEAD"))
		SETOPT(r->easy, CURLOPT_NOBODY, 1L);
	else
		SETOPT(r->easy, CURLOPT_CUSTOMREQUEST, m);
	return 0;
}

static int req_set_headers(struct httpc_req *r, const struct httpc_opts *o)
{
	const char *const *hp;
	struct curl_slist *l;

	/* no "Expect: 100-continue" round trip before POST bodies */
	r->hdrs = curl_slist_append(NULL, "Expect:");
	for (hp = o->headers; r->hdrs && hp && *hp; hp++) {
		l = curl_slist_append(r->hdrs, *hp);
		if (!l)
			return ENOMEM;
		r->hdrs = l;
	}
	if (!r->hdrs)
		return ENOMEM;
	SETOPT(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
	return 0;
}

static int req_set_limits(struct httpc_req *r, const struct httpc_opts *o)
{
	CURL *e = r->easy;

	SETOPT(e, CURLOPT_TIMEOUT_MS,
	       (long)(o->timeout_ms ? o->timeout_ms : HTTPC_TIMEOUT_MS));
	SETOPT(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max);
	if (o->max_redirects > 0) {
		SETOPT(e, CURLOPT_FOLLOWLOCATION, 1L);
		SETOPT(e, CURLOPT_MAXREDIRS, o->max_redirects);
	}
#if LIBCURL_VERSION_NUM >= 0x075500
	SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	SETOPT(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	SETOPT(e, CURLOPT_REDIR_PROTOCOLS,
	       (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	return 0;
}

static int req_setup(struct httpc_req *r, const struct httpc_opts *o)
{
	CURL *e = r->easy;
	int err;

	SETOPT(e, CURLOPT_URL, o->url);
	SETOPT(e, CURLOPT_PRIVATE, (void *)r);
	SETOPT(e, CURLOPT_NOSIGNAL, 1L);
	SETOPT(e, CURLOPT_TCP_NODELAY, 1L);
	SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(e, CURLOPT_ERRORBUFFER, r->errbuf);
	SETOPT(e, CURLOPT_WRITEFUNCTION, req_write);
	SETOPT(e, CURLOPT_WRITEDATA, (void *)r);
	SETOPT(e, CURLOPT_USERAGENT, "sipcrm/" PACKAGE_VERSION);
	/* optional: fails only when curl lacks zlib */
	(void)curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	err = req_set_limits(r, o);
	if (!err)
		err = req_set_headers(r, o);
	if (!err)
		err = req_set_method(r, o);
	return err;
}

/* Rejects what curl would refuse anyway, so the caller learns it now. */
static int url_check(const char *url)
{
	CURLU *u;
	CURLUcode uc;

	if (!url || !*url)
		return EINVAL;
	u = curl_url();
	if (!u)
		return ENOMEM;
	uc = curl_url_set(u, CURLUPART_URL, url, 0);
	curl_url_cleanup(u);
	if (uc == CURLUE_OUT_OF_MEMORY)
		return ENOMEM;
	return uc == CURLUE_OK ? 0 : EINVAL;
}

/*
 * Starts a request; see httpc.h. Errors here never reach the callback:
 * EINVAL (no callback, no URL or a malformed one, h being freed), ENOMEM.
 */
int httpc_request(struct httpc_req **rp, struct httpc *h,
		  const struct httpc_opts *o, httpc_resp_h *cb, void *arg)
{
	struct httpc_req *r;
	int err;

	if (!h || h->dead || !o || !cb)
		return EINVAL;
	err = url_check(o->url);
	if (err)
		return err;
	r = calloc(1, sizeof(*r));
	if (!r)
		return ENOMEM;
	r->h = h;
	r->cb = cb;
	r->arg = arg;
	r->max = o->max_body ? o->max_body : HTTPC_MAX_BODY;
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	r->easy = curl_easy_init();
	err = r->easy ? req_setup(r, o) : ENOMEM;
	if (err)
		goto out;
	if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
		err = ENOMEM;
		goto out;
	}
	req_link(h, r);
	if (rp)
		*rp = r;
out:
	if (err)
		req_destroy(r);
	return err;
}

struct httpc_req *httpc_cancel(struct httpc_req *r)
{
	/* inside its own callback the request is freed when it returns */
	if (r && !r->in_cb)
		req_destroy(r);
	return NULL;
}

size_t httpc_pending(const struct httpc *h)
{
	return h ? h->npending : 0;
}

/* ---- the client --------------------------------------------------------- */

static void multi_destroy(struct httpc *h)
{
	while (h->reqs)
		req_destroy(h->reqs);
	/* sockets of idle connections: stop watching before curl closes them */
	while (h->socks) {
		curl_multi_assign(h->multi, h->socks->fd, NULL);
		sock_free(h->socks);
	}
	if (h->multi)
		curl_multi_cleanup(h->multi);
	su_timer_destroy(h->timer);
	free(h);
	curl_global_cleanup();
}

static int multi_setup(struct httpc *h)
{
	CURLM *m = h->multi;

	if (curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket) ||
	    curl_multi_setopt(m, CURLMOPT_SOCKETDATA, (void *)h) ||
	    curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer) ||
	    curl_multi_setopt(m, CURLMOPT_TIMERDATA, (void *)h) ||
	    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)HTTPC_MAXCONNECTS))
		return EINVAL;
	return 0;
}

int httpc_alloc(struct httpc **hp, su_root_t *root)
{
	struct httpc *h;
	int err;

	if (!hp || !root)
		return EINVAL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return ENOMEM;
	h = calloc(1, sizeof(*h));
	if (!h) {
		curl_global_cleanup();
		return ENOMEM;
	}
	h->root = root;
	h->timer = su_timer_create(su_root_task(root), 0);
	h->multi = curl_multi_init();
	err = h->timer && h->multi ? multi_setup(h) : ENOMEM;
	if (err)
		multi_destroy(h);
	else
		*hp = h;
	return err;
}

/*
 * Cancels everything without callbacks. From inside a callback the memory
 * is released when the loop unwinds; h must not be used after this call.
 */
struct httpc *httpc_free(struct httpc *h)
{
	if (!h || h->dead)
		return NULL;
	while (h->reqs)
		req_destroy(h->reqs);
	if (h->depth)
		h->dead = true;
	else
		multi_destroy(h);
	return NULL;
}
