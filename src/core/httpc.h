/*
 * httpc.h: asynchronous HTTP client on libcurl's multi interface,
 * driven by the su_root loop (no thread, never blocks).
 */
#ifndef SIPCRM_HTTPC_H
#define SIPCRM_HTTPC_H

#include <stddef.h>
#include <stdint.h>
#include <sofia-sip/su_wait.h>

struct httpc;
struct httpc_req;

struct httpc_opts {
	const char *method;             /* NULL: GET, or POST when body is set */
	const char *url;
	const char *const *headers;     /* NULL-terminated "Name: value" list */
	const char *body;
	size_t body_len;
	uint32_t timeout_ms;            /* whole request; 0: 30 s */
	size_t max_body;                /* larger answers fail EMSGSIZE; 0: 1 MiB */
	long max_redirects;             /* 0: none followed */
};

/*
 * The answer. err is 0 when an HTTP status was received (any status), or:
 * ETIMEDOUT, ECONNREFUSED, EHOSTUNREACH, EMSGSIZE (body over max_body),
 * ELOOP (too many redirects), EPROTO (bad HTTP, TLS failure), ENOMEM, EIO.
 * body is NUL-terminated and valid during the callback only. The request
 * is freed after the callback returns.
 */
struct httpc_resp {
	int err;
	long status;
	const char *body;
	size_t body_len;
	const char *cause;              /* short text for logs and metrics */
	double total_s;                 /* wall time of the request */
};
typedef void (httpc_resp_h)(const struct httpc_resp *resp, void *arg);

/* Creates the multi handle and joins it to root. */
int httpc_alloc(struct httpc **hp, su_root_t *root);
/* Cancels every pending request without callbacks; NULL safe. */
struct httpc *httpc_free(struct httpc *h);

/*
 * Starts a request. On success returns 0 and, when rp is not NULL, sets *rp
 * so the caller can cancel; the caller must forget *rp once the callback
 * has run. The callback never runs inside httpc_request itself.
 */
int httpc_request(struct httpc_req **rp, struct httpc *h,
		  const struct httpc_opts *o, httpc_resp_h *cb, void *arg);

/* Cancels a pending request: its callback will not run. NULL safe. */
struct httpc_req *httpc_cancel(struct httpc_req *r);

/* Requests in flight. */
size_t httpc_pending(const struct httpc *h);

#endif
