/*
 * httpc_loop.c: the asynchronous HTTP client on a real su_root loop,
 * against a tiny HTTP/1.1 server forked by the test (127.0.0.1, port 0).
 *
 * The server forks one process per connection, so slow answers do not
 * block each other. It lives in its own process group, which is killed at
 * exit; every process also dies with its parent and on an alarm.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <sofia-sip/su.h>
#include <sofia-sip/su_alloc.h>
#include <sofia-sip/su_wait.h>

#include "log.h"
#include "httpc.h"
#include "tap.h"

#define BIG_LEN (2 * 1024 * 1024)

/* ==== the server (child processes) ==================================== */

static int srv_write(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int srv_reply(int fd, int status, const char *hdrs, const char *body,
		     size_t len)
{
	char head[512];
	int n;

	if (status == 204 || status == 304)
		len = 0;        /* these answers never carry a body */
	n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\n"
		     "Content-Length: %zu\r\n%s\r\n", status, len, hdrs);

	if (srv_write(fd, head, (size_t)n) < 0)
		return -1;
	return srv_write(fd, body, len);
}

/* 2 MiB of 'x', announced by Content-Length or ended by closing. */
static int srv_big(int fd, bool with_len)
{
	static char chunk[65536];
	char head[128];
	int i;

	memset(chunk, 'x', sizeof(chunk));
	if (with_len)
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\n"
			 "Content-Length: %d\r\n\r\n", BIG_LEN);
	else
		snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\n"
			 "Connection: close\r\n\r\n");
	if (srv_write(fd, head, strlen(head)) < 0)
		return -1;
	for (i = 0; i < BIG_LEN / (int)sizeof(chunk); i++) {
		if (srv_write(fd, chunk, sizeof(chunk)) < 0)
			return -1;
	}
	return with_len ? 0 : -1;
}

/* The value of header name in the header block hdr, or "-". */
static void srv_header(const char *hdr, const char *name, char *out,
		       size_t outsz)
{
	size_t nl = strlen(name);
	const char *p = strstr(hdr, "\r\n");

	snprintf(out, outsz, "-");
	for (; p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
		const char *v = p + 2 + nl;

		if (strncasecmp(p + 2, name, nl) || *v != ':')
			continue;
		v += strspn(v + 1, " ") + 1;
		snprintf(out, outsz, "%.*s", (int)strcspn(v, "\r"), v);
		return;
	}
}

static int srv_echo(int fd, const char *hdr, const char *body, size_t len)
{
	static char out[65536];
	char auth[256];
	int n;

	srv_header(hdr, "Authorization", auth, sizeof(auth));
	n = snprintf(out, sizeof(out), "%.*s %s|", (int)strcspn(hdr, " "),
		     hdr, auth);
	if (len > sizeof(out) - (size_t)n)
		len = sizeof(out) - (size_t)n;
	memcpy(out + n, body, len);
	return srv_reply(fd, 200, "", out, (size_t)n + len);
}

static int srv_route(int fd, const char *hdr, const char *body, size_t len)
{
	const char *path = strchr(hdr, ' ');
	char text[64];
	int v;

	path = path ? path + 1 : "";
	if (sscanf(path, "/delay/%d", &v) == 1) {
		usleep((useconds_t)v * 1000);
		snprintf(text, sizeof(text), "delayed %d", v);
		return srv_reply(fd, 200, "", text, strlen(text));
	}
	if (sscanf(path, "/status/%d", &v) == 1) {
		snprintf(text, sizeof(text), "status %d", v);
		return srv_reply(fd, v, "", text, strlen(text));
	}
	if (!strncmp(path, "/big ", 5) || !strncmp(path, "/bigstream ", 11))
		return srv_big(fd, path[4] == ' ');
	if (!strncmp(path, "/redirect ", 10))
		return srv_reply(fd, 302, "Location: /redirect\r\n", "", 0);
	if (!strncmp(path, "/redirect/ok ", 13))
		return srv_reply(fd, 302, "Location: /status/201\r\n", "", 0);
	if (!strncmp(path, "/hang ", 6)) {
		pause();
		return -1;
	}
	if (!strncmp(path, "/echo ", 6))
		return srv_echo(fd, hdr, body, len);
	if (!strncmp(path, "/conn ", 6)) {
		snprintf(text, sizeof(text), "%d", (int)getpid());
		return srv_reply(fd, 200, "", text, strlen(text));
	}
	return srv_reply(fd, 404, "", "no", 2);
}

static char *srv_find(char *buf, size_t n, const char *s)
{
	size_t sl = strlen(s), i;

	for (i = 0; i + sl <= n; i++) {
		if (!memcmp(buf + i, s, sl))
			return buf + i;
	}
	return NULL;
}

/* Serves requests on one keep-alive connection until it closes. */
static void srv_conn(int fd)
{
	static char buf[1 << 20];
	size_t have = 0, need;
	char *end, cl[32];
	ssize_t n;

	for (;;) {
		end = srv_find(buf, have, "\r\n\r\n");
		if (end) {
			*end = '\0';
			srv_header(buf, "Content-Length", cl, sizeof(cl));
			need = (size_t)(end - buf) + 4 + strtoul(cl, NULL, 10);
			if (need <= have) {
				if (srv_route(fd, buf, end + 4, need - (size_t)(end - buf) - 4) < 0)
					return;
				memmove(buf, buf + need, have - need);
				have -= need;
				continue;
			}
			*end = '\r';
		}
		n = read(fd, buf + have, sizeof(buf) - have - 1);
		if (n <= 0)
			return;
		have += (size_t)n;
	}
}

static void srv_die_with_parent(pid_t parent, unsigned secs)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
	alarm(secs);
}

static void srv_main(int wfd, pid_t parent)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int ls, fd, port;

	srv_die_with_parent(parent, 120);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_IGN);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sl) < 0 ||
	    listen(ls, 128) < 0 ||
	    getsockname(ls, (struct sockaddr *)&sa, &sl) < 0)
		_exit(2);
	port = ntohs(sa.sin_port);
	if (write(wfd, &port, sizeof(port)) != sizeof(port))
		_exit(2);
	close(wfd);
	for (;;) {
		fd = accept(ls, NULL, NULL);
		if (fd < 0)
			continue;
		if (fork() == 0) {
			close(ls);
			srv_die_with_parent(getppid(), 60);
			srv_conn(fd);
			_exit(0);
		}
		close(fd);
	}
}

static pid_t srv_pid;
static int srv_port;

static void srv_stop(void)
{
	if (srv_pid > 0) {
		kill(-srv_pid, SIGKILL);
		kill(srv_pid, SIGKILL);
		waitpid(srv_pid, NULL, 0);
		srv_pid = 0;
	}
}

static int srv_start(void)
{
	struct pollfd pfd = { .events = POLLIN };
	pid_t parent = getpid();
	int p[2];

	if (pipe(p) < 0)
		return -1;
	srv_pid = fork();
	if (srv_pid < 0)
		return -1;
	if (srv_pid == 0) {
		setpgid(0, 0);
		close(p[0]);
		srv_main(p[1], parent);
	}
	setpgid(srv_pid, srv_pid);
	atexit(srv_stop);
	close(p[1]);
	pfd.fd = p[0];
	if (poll(&pfd, 1, 10000) != 1 ||
	    read(p[0], &srv_port, sizeof(srv_port)) != sizeof(srv_port))
		srv_port = 0;
	close(p[0]);
	return srv_port ? 0 : -1;
}

/* ==== the client side ================================================ */

static su_root_t *root;
static int in_request;          /* set while httpc_request() runs */
static int cb_in_request;       /* callbacks that ran inside it */

struct res {
	int done;
	int err;
	long status;
	char body[256];
	size_t len;
	char cause[32];
	bool nul;
	int ticks;
	double total_s;
};

static int ticks;
static double tick_last, tick_gap;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static const char *url(const char *path)
{
	static char buf[128];

	snprintf(buf, sizeof(buf), "http://127.0.0.1:%d%s", srv_port, path);
	return buf;
}

static void on_resp(const struct httpc_resp *rsp, void *arg)
{
	struct res *r = arg;
	size_t n = rsp->body_len < sizeof(r->body) - 1 ?
		   rsp->body_len : sizeof(r->body) - 1;

	cb_in_request += in_request;
	r->done++;
	r->err = rsp->err;
	r->status = rsp->status;
	memcpy(r->body, rsp->body, n);
	r->body[n] = '\0';
	r->len = rsp->body_len;
	r->nul = rsp->body[rsp->body_len] == '\0';
	snprintf(r->cause, sizeof(r->cause), "%s", rsp->cause ? rsp->cause : "");
	r->ticks = ticks;
	r->total_s = rsp->total_s;
}

static int start(struct httpc *h, struct httpc_req **rp,
		 const struct httpc_opts *o, httpc_resp_h *cb, void *arg)
{
	int err;

	in_request = 1;
	err = httpc_request(rp, h, o, cb ? cb : on_resp, arg);
	in_request = 0;
	return err;
}

static bool run_until(const int *count, int want, double ms)
{
	double end = now_ms() + ms;

	while (*count < want && now_ms() < end)
		su_root_step(root, 10);
	return *count >= want;
}

static void run_for(double ms)
{
	double end = now_ms() + ms;

	while (now_ms() < end)
		su_root_step(root, 10);
}

/* Requests url with a timeout and body limit; waits for the answer. */
static double get(struct httpc *h, const char *path, uint32_t tmo,
		  size_t max_body, long redirs, struct res *r)
{
	struct httpc_opts o = { .url = url(path), .timeout_ms = tmo,
				.max_body = max_body, .max_redirects = redirs };
	double t0 = now_ms();
	int err = start(h, NULL, &o, NULL, r);

	if (err) {
		r->err = err;
		return 0;
	}
	run_until(&r->done, 1, 10000);
	return now_ms() - t0;
}

/* ==== the checks ====================================================== */

static void tick(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	double now = now_ms();

	if (ticks > 0 && now - tick_last > tick_gap)
		tick_gap = now - tick_last;
	tick_last = now;
	ticks++;
}

static void t_not_blocked(struct httpc *h)
{
	su_timer_t *t = su_timer_create(su_root_task(root), 10);
	struct res r = { 0 };
	double ms;

	su_timer_set_for_ever(t, tick, NULL);
	ms = get(h, "/delay/300", 5000, 0, 0, &r);
	su_timer_destroy(t);
	is_int(r.done, 1, "/delay/300: callback ran once");
	is_int(r.err, 0, "/delay/300: no error");
	is_int(r.status, 200, "/delay/300: status");
	is_str(r.body, "delayed 300", "/delay/300: body");
	is_str(r.cause, "ok", "/delay/300: cause");
	ok(r.nul, "/delay/300: body is NUL-terminated");
	ok(ms >= 280, "/delay/300: answer took >= 280 ms, got %.0f ms", ms);
	ok(r.total_s >= 0.28 && r.total_s <= ms / 1000 + 0.01, "/delay/300: "
	   "total_s in 0.28-%.3f s, got %.3f s", ms / 1000 + 0.01, r.total_s);
	ok(r.ticks >= 15, "loop not blocked: want >= 15 ticks of 10 ms "
	   "during the request, got %d", r.ticks);
	ok(tick_gap <= 100, "loop not blocked: want no tick gap > 100 ms, "
	   "got %.1f ms", tick_gap);
}

static int conc_done, conc_ok;

static void on_conc(const struct httpc_resp *rsp, void *arg)
{
	cb_in_request += in_request;
	conc_done++;
	conc_ok += !rsp->err && rsp->status == 200 &&
		   !strcmp(rsp->body, "delayed 200");
}

static void t_concurrent(struct httpc *h)
{
	struct httpc_opts o = { .url = url("/delay/200"), .timeout_ms = 8000 };
	double t0 = now_ms(), ms;
	int i, fails = 0;

	for (i = 0; i < 20; i++)
		fails += start(h, NULL, &o, on_conc, NULL) != 0;
	is_int(fails, 0, "20 concurrent: all started");
	is_int(httpc_pending(h), 20, "20 concurrent: pending");
	run_until(&conc_done, 20, 10000);
	ms = now_ms() - t0;
	is_int(conc_done, 20, "20 concurrent: all callbacks ran");
	is_int(conc_ok, 20, "20 concurrent: all 200 with the right body");
	ok(ms < 2000, "20 concurrent: in parallel, want < 2000 ms "
	   "(serial: 4000), got %.0f ms", ms);
	is_int(httpc_pending(h), 0, "20 concurrent: none pending after");
}

static void t_errors(struct httpc *h)
{
	struct res r = { 0 };
	double ms = get(h, "/hang", 200, 0, 0, &r);

	is_int(r.err, ETIMEDOUT, "/hang, timeout 200 ms: ETIMEDOUT");
	is_str(r.cause, "timeout", "/hang: cause");
	is_int(r.status, 0, "/hang: no status");
	ok(ms >= 180 && ms <= 700, "/hang: timed out in 180-700 ms, "
	   "got %.0f ms", ms);

	memset(&r, 0, sizeof(r));
	get(h, "/status/500", 5000, 0, 0, &r);
	is_int(r.err, 0, "/status/500: an HTTP status is not an error");
	is_int(r.status, 500, "/status/500: status");
	is_str(r.body, "status 500", "/status/500: body");
}

static int closed_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sl) &&
	    !getsockname(fd, (struct sockaddr *)&sa, &sl))
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void t_refused(struct httpc *h)
{
	struct res r = { 0 };
	char u[64];
	struct httpc_opts o = { .url = u, .timeout_ms = 3000 };
	int err;

	snprintf(u, sizeof(u), "http://127.0.0.1:%d/", closed_port());
	err = start(h, NULL, &o, NULL, &r);
	is_int(err, 0, "refused: request started");
	is_int(r.done, 0, "refused: no callback inside httpc_request");
	run_until(&r.done, 1, 5000);
	is_int(r.err, ECONNREFUSED, "closed port: ECONNREFUSED");
	is_str(r.cause, "refused", "closed port: cause");
}

static void t_too_large(struct httpc *h)
{
	struct res r = { 0 };

	get(h, "/big", 5000, 1024 * 1024, 0, &r);
	is_int(r.err, EMSGSIZE, "/big (2 MiB), max_body 1 MiB: EMSGSIZE");
	is_str(r.cause, "too_large", "/big: cause");
	memset(&r, 0, sizeof(r));
	get(h, "/bigstream", 5000, 1024 * 1024, 0, &r);
	is_int(r.err, EMSGSIZE, "/bigstream (no Content-Length): EMSGSIZE");
	memset(&r, 0, sizeof(r));
	get(h, "/big", 5000, 0, 0, &r);
	is_int(r.err, EMSGSIZE, "/big, max_body 0 (1 MiB default): EMSGSIZE");
	memset(&r, 0, sizeof(r));
	get(h, "/big", 5000, 4 * 1024 * 1024, 0, &r);
	is_int(r.err, 0, "/big, max_body 4 MiB: accepted");
	is_int(r.len, BIG_LEN, "/big, max_body 4 MiB: body length");
	ok(r.nul, "/big: body is NUL-terminated");
}

static void t_redirect(struct httpc *h)
{
	struct res r = { 0 };

	get(h, "/redirect", 5000, 0, 3, &r);
	is_int(r.err, ELOOP, "/redirect loop, max_redirects 3: ELOOP");
	is_str(r.cause, "redirect_loop", "/redirect loop: cause");
	memset(&r, 0, sizeof(r));
	get(h, "/redirect", 5000, 0, 0, &r);
	is_int(r.err, 0, "/redirect, max_redirects 0: not followed");
	is_int(r.status, 302, "/redirect, max_redirects 0: status");
	memset(&r, 0, sizeof(r));
	get(h, "/redirect/ok", 5000, 0, 3, &r);
	is_int(r.status, 201, "/redirect/ok, max_redirects 3: followed");
}

static struct httpc_req *victim, *self_req;
static struct res res_victim, res_late;
static int reenter_runs;

/* Cancels another request and itself, starts a new one: all allowed. */
static void on_reenter(const struct httpc_resp *rsp, void *arg)
{
	struct httpc *h = *(struct httpc **)arg;
	struct httpc_opts o = { .url = url("/status/204"), .timeout_ms = 5000 };

	cb_in_request += in_request;
	victim = httpc_cancel(victim);
	self_req = httpc_cancel(self_req);
	if (start(h, NULL, &o, NULL, &res_late) != 0)
		res_late.err = -1;
	reenter_runs++;
}

static void t_cancel(struct httpc *h)
{
	struct httpc_opts o = { .url = url("/delay/200"), .timeout_ms = 5000 };
	struct httpc_req *a = NULL, *b = NULL;
	struct res ra = { 0 }, rb = { 0 };

	is_int(start(h, &a, &o, NULL, &ra), 0, "cancel: A started");
	a = httpc_cancel(a);
	is_int(start(h, &b, &o, NULL, &rb), 0, "cancel: B started");
	run_for(50);
	b = httpc_cancel(b);
	is_int(httpc_pending(h), 0, "cancel: nothing pending after cancels");
	run_for(400);
	is_int(ra.done, 0, "cancel before the loop ran: no callback");
	is_int(rb.done, 0, "cancel while in flight: no callback");

	o.url = url("/delay/400");
	start(h, &victim, &o, NULL, &res_victim);
	o.url = url("/delay/50");
	start(h, &self_req, &o, on_reenter, &h);
	run_until(&res_late.done, 1, 5000);
	run_for(500);
	is_int(reenter_runs, 1, "re-entrant callback ran once");
	is_int(res_victim.done, 0, "request cancelled from a callback: "
	       "no callback");
	is_int(res_late.status, 204, "request started from a callback: done");
	is_int(httpc_pending(h), 0, "re-entrancy: nothing pending");
}

static void t_echo(struct httpc *h)
{
	static const char body[] = "{\"a\":1}\0tail";
	static const char want[] = "POST Bearer t0k3n|{\"a\":1}\0tail";
	const char *hdrs[] = { "Authorization: Bearer t0k3n",
			       "Content-Type: application/json", NULL };
	struct httpc_opts o = { .url = url("/echo"), .headers = hdrs,
				.body = body, .body_len = sizeof(body) - 1,
				.timeout_ms = 5000 };
	struct res r = { 0 };

	start(h, NULL, &o, NULL, &r);
	run_until(&r.done, 1, 5000);
	is_str(r.cause, "ok", "POST /echo: cause");
	is_int(r.status, 200, "POST /echo: status");
	is_int(r.len, sizeof(want) - 1, "POST /echo: body length (binary)");
	ok(!memcmp(r.body, want, sizeof(want) - 1), "POST /echo: want '%s', "
	   "got '%s' (up to the first NUL)", want, r.body);

	memset(&r, 0, sizeof(r));
	o.method = "PUT";
	o.body = "x=1";
	o.body_len = 0;         /* 0: strlen(body) */
	start(h, NULL, &o, NULL, &r);
	run_until(&r.done, 1, 5000);
	is_str(r.body, "PUT Bearer t0k3n|x=1", "PUT /echo with a C string");

	memset(&r, 0, sizeof(r));
	o.method = "DELETE";
	o.body = NULL;
	o.headers = NULL;
	start(h, NULL, &o, NULL, &r);
	run_until(&r.done, 1, 5000);
	is_str(r.body, "DELETE -|", "DELETE /echo without body or headers");
}

static void t_keepalive(struct httpc *h)
{
	struct res r1 = { 0 }, r2 = { 0 };

	get(h, "/conn", 5000, 0, 0, &r1);
	get(h, "/conn", 5000, 0, 0, &r2);
	is_int(r1.status, 200, "/conn: status");
	is_str(r2.body, r1.body, "keep-alive: both requests on one "
	       "connection (same server pid)");
}

/*
 * A CRM that hangs ties up connections; those still answering must keep
 * theirs. (libcurl counts busy connections against CURLMOPT_MAXCONNECTS:
 * with 64, each answered request closed its connection.)
 */
static void t_keepalive_busy(struct httpc *h)
{
	enum { HUNG = 100 };
	struct httpc_req *hung[HUNG];
	struct httpc_opts o = { .url = url("/hang"), .timeout_ms = 20000 };
	struct res r[3] = { { 0 } };
	int n = 0;

	for (int i = 0; i < HUNG; i++)
		if (!start(h, &hung[i], &o, on_conc, NULL))
			n++;
	run_for(500);
	for (int i = 0; i < 3; i++)
		get(h, "/conn", 5000, 0, 0, &r[i]);
	is_int(n, HUNG, "100 requests hang");
	is_int(r[2].status, 200, "meanwhile /conn answers");
	ok(!strcmp(r[0].body, r[1].body) && !strcmp(r[1].body, r[2].body),
	   "with 100 connections hung, three requests reuse one connection "
	   "(%s, %s, %s)", r[0].body, r[1].body, r[2].body);
	for (int i = 0; i < HUNG; i++)
		httpc_cancel(hung[i]);
	is_int((int)httpc_pending(h), 0, "the hung requests are cancelled");
}

/* A name, not an address: goes through curl's asynchronous resolver. */
static void t_hostname(struct httpc *h)
{
	struct res r = { 0 };
	char u[64];
	struct httpc_opts o = { .url = u, .timeout_ms = 5000 };

	snprintf(u, sizeof(u), "http://localhost:%d/status/200", srv_port);
	start(h, NULL, &o, NULL, &r);
	run_until(&r.done, 1, 6000);
	is_int(r.status, 200, "http://localhost:port/: resolved and answered");
}

static void t_bad_args(struct httpc *h)
{
	struct httpc_opts o = { .url = "no scheme here" };
	struct httpc_req *r = NULL;
	struct res res = { 0 };

	is_int(start(h, &r, &o, NULL, &res), EINVAL, "malformed URL: EINVAL");
	o.url = NULL;
	is_int(start(h, &r, &o, NULL, &res), EINVAL, "no URL: EINVAL");
	ok(r == NULL, "failed request: *rp untouched");
	run_for(50);
	is_int(res.done, 0, "failed request: no callback");
	ok(httpc_free(NULL) == NULL, "httpc_free(NULL)");
	ok(httpc_cancel(NULL) == NULL, "httpc_cancel(NULL)");
}

static void t_free_pending(void)
{
	struct httpc *h = NULL;
	struct res r[4];
	struct httpc_opts o = { .timeout_ms = 5000 };
	const char *paths[] = { "/hang", "/delay/300", "/delay/400", "/delay/500" };
	int i, done = 0;

	memset(r, 0, sizeof(r));
	is_int(httpc_alloc(&h, root), 0, "free pending: httpc_alloc");
	for (i = 0; i < 4; i++) {
		o.url = url(paths[i]);
		start(h, NULL, &o, NULL, &r[i]);
	}
	run_for(60);    /* connected and sent, answers not read yet */
	is_int(httpc_pending(h), 4, "free pending: 4 in flight");
	h = httpc_free(h);
	run_for(400);
	for (i = 0; i < 4; i++)
		done += r[i].done;
	is_int(done, 0, "free pending: no callback ran after httpc_free");
}

static struct httpc *doomed;

static void on_free_me(const struct httpc_resp *rsp, void *arg)
{
	struct res *r = arg;

	r->done++;
	doomed = httpc_free(doomed);
}

static void t_free_in_callback(void)
{
	struct httpc_opts o = { .timeout_ms = 5000 };
	struct res r1 = { 0 }, r2 = { 0 }, r3 = { 0 };

	is_int(httpc_alloc(&doomed, root), 0, "free in callback: httpc_alloc");
	o.url = url("/hang");
	start(doomed, NULL, &o, NULL, &r2);
	o.url = url("/status/200");
	start(doomed, NULL, &o, on_free_me, &r1);
	o.url = url("/delay/200");
	start(doomed, NULL, &o, NULL, &r3);
	run_until(&r1.done, 1, 5000);
	run_for(300);
	is_int(r1.done, 1, "free in callback: the freeing callback ran");
	is_int(r2.done + r3.done, 0, "free in callback: others never ran");
	ok(doomed == NULL, "free in callback: handle cleared");
}

int main(void)
{
	su_home_t home[1];
	struct httpc *h = NULL;
	char err[64];

	alarm(120);
	signal(SIGPIPE, SIG_IGN);
	if (srv_start() < 0) {
		printf("Bail out! cannot start the test HTTP server\n");
		return 1;
	}
	log_apply_spec(getenv("HTTPC_LOG") ? getenv("HTTPC_LOG") : "warn",
		       err, sizeof(err));
	su_init();
	su_home_init(home);
	root = su_root_create(NULL);
	ok(root != NULL, "su_root_create");
	is_int(httpc_alloc(&h, root), 0, "httpc_alloc");
	if (!root || !h)
		return tap_done();

	t_not_blocked(h);
	t_concurrent(h);
	t_errors(h);
	t_refused(h);
	t_too_large(h);
	t_redirect(h);
	t_cancel(h);
	t_echo(h);
	t_keepalive(h);
	t_keepalive_busy(h);
	t_hostname(h);
	t_bad_args(h);
	t_free_pending();
	t_free_in_callback();
	is_int(cb_in_request, 0, "no callback ran inside httpc_request");

	h = httpc_free(h);
	ok(h == NULL, "httpc_free returns NULL");
	su_root_destroy(root);
	su_home_deinit(home);
	su_deinit();
	srv_stop();
	return tap_done();
}
