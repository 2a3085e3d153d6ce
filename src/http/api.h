/*
 * api.h: the HTTP API server (libmicrohttpd), CONTRACT §5.
 *
 * The server runs on the signalling thread: libmicrohttpd's epoll fd is
 * registered on the su_root, so handlers may touch calls and registrations
 * directly. Modules add their endpoints with api_route().
 */
#ifndef SIPCRM_API_H
#define SIPCRM_API_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <jansson.h>
#include <sofia-sip/su_wait.h>

struct api;
struct api_req;

/*
 * A handler answers the request with one of the api_reply_* calls
 * (exactly once) and returns 0; a non-zero return sends a 500.
 */
typedef int (api_handler_h)(struct api_req *req, void *arg);

/* PEM files for HTTPS; either empty or NULL: plain HTTP. */
struct api_tls {
	const char *cert;
	const char *key;
};

/* Starts listening on host:port (port 0 picks one, see api_port), over
   HTTPS when tls names a certificate and key. EINVAL, an errno from
   reading the PEM files, or EADDRINUSE-like errors from listening. */
int api_alloc(struct api **ap, su_root_t *root, const char *host,
	      unsigned port, const char *token, const struct api_tls *tls);
struct api *api_free(struct api *a);
/* Replaces the Bearer token (SIGHUP). */
int api_set_token(struct api *a, const char *token);
unsigned api_port(const struct api *a);

/*
 * Registers method + path. A path segment "*" matches one segment, which
 * api_req_patharg() returns by position. auth false means no token needed.
 */
int api_route(struct api *a, const char *method, const char *path, bool auth,
	      api_handler_h *h, void *arg);

const char *api_req_method(const struct api_req *r);
const char *api_req_path(const struct api_req *r);
const char *api_req_patharg(const struct api_req *r, unsigned idx);
const char *api_req_query(const struct api_req *r, const char *name);
const char *api_req_header(const struct api_req *r, const char *name);
/* The raw body (NUL-terminated) and its length. */
const char *api_req_body(const struct api_req *r, size_t *lenp);
/* The body parsed as JSON, or NULL (borrowed; freed with the request). */
json_t *api_req_json(struct api_req *r);

/* Replies; they take ownership of json. */
int api_reply_json(struct api_req *r, unsigned status, json_t *json);
int api_reply_error(struct api_req *r, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int api_reply_text(struct api_req *r, unsigned status, const char *ctype,
		   const char *body, size_t len);
/* Serves a file; fd is owned by the response afterwards. */
int api_reply_fd(struct api_req *r, unsigned status, const char *ctype, int fd,
		 size_t size);

/*
 * A streaming reply (Server-Sent Events): 200 with ctype and a body that
 * goes on until either side closes it. Bytes written wait in a buffer of
 * at most max bytes; a write that would pass it closes the stream (a slow
 * client is dropped). h runs once when the stream ends for any reason but
 * api_stream_close(s, false), and when the server stops it does not. The
 * stream is invalid after h. NULL on error (the request got a 500 or has
 * already been answered).
 */
struct api_stream;
typedef void (api_stream_close_h)(struct api_stream *s, void *arg);
struct api_stream *api_reply_stream(struct api_req *r, const char *ctype,
				    size_t max, api_stream_close_h *h, void *arg);
/* 0, EPIPE (closing), ENOBUFS (over its limit: now closing) or ENOMEM. */
int api_stream_write(struct api_stream *s, const void *data, size_t len);
/* Ends the body once what is buffered has gone; notify: h still runs. */
void api_stream_close(struct api_stream *s, bool notify);

/*
 * Registers the built-in endpoints (api_core.c): GET /api/v1/health and
 * GET /metrics, both without a token, and the process metrics. started is
 * the daemon's start time; version is copied. Returns 0 or an errno value.
 */
int api_core_register(struct api *a, time_t started, const char *version);

#endif
