/*
 * api_test.h: requests without a connection, for t/fuzz/fuzz_http. Not for
 * the daemon's modules.
 *
 * A request given here goes through what libmicrohttpd's access handler
 * runs for one from a socket (api.c, on_access): the route lookup, the
 * token check, the Content-Length and body size limits, the body in
 * pieces, the handler and the one-answer rule. Only what MHD itself does
 * is stood in for: the path arrives as given (MHD has percent-decoded it
 * already), query arguments are split at '&' and '=' and decoded with
 * MHD_http_unescape(), headers are looked up by name (case-insensitive,
 * the first one given), and the answer is not sent: its status is kept.
 */
#ifndef SIPCRM_API_TEST_H
#define SIPCRM_API_TEST_H

#include <stddef.h>

#include "http/api.h"

struct api_test_req {
	const char *method;
	const char *path;               /* decoded, without the query */
	const char *query;              /* "a=1&b=%20" as sent, or NULL */
	const char *const *headers;     /* name, value, ..., NULL */
	const char *body;               /* body_len bytes, any content */
	size_t body_len;
	size_t repeat;                  /* the body is sent this many times (0: 1) */
	size_t chunk;                   /* received in pieces of this size (0: whole) */
};

/* A server with no socket and no loop: routes and requests only. */
int api_test_alloc(struct api **ap, const char *token);

/*
 * Runs one request. Returns the status of its answer, or 0 when there
 * was none (the connection was closed: out of memory, or a body too large
 * to drop). Only one answer is ever queued (send_response checks).
 */
unsigned api_test_request(struct api *a, const struct api_test_req *t);

#endif
