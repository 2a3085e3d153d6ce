/*
 * rtpload.c: the RTP side of bench/b3-media. It plays N callers and N
 * agents' phones with two sockets: every call's caller has the same
 * caller port and every agent the same agent port (the SDP of each call
 * says so), so that the generator batches its system calls across calls
 * (sendmmsg/recvmmsg of up to 256 datagrams) and stays well below the
 * relay's cost. The relay still has its own port pair per call leg, and
 * latches each to the one peer address it sees.
 *
 * From the caller socket it sends G.711 (PCMA, 172-byte packets) every
 * 20 ms to each call's relay port, spread over the 20 ms (call i goes at
 * i mod 20 ms, on a 1 ms timer); the agent socket echoes everything back
 * where it came from. The relay ports are given (--targets: one port per
 * line, a file that may appear after the start: the driver writes it once
 * the relay has allocated them) or learned: each new source that sends to
 * the caller socket is a call (sipcrmd plays its greeting there first).
 *
 * Each packet carries a magic, its call, its number and its send time, so
 * the echo that comes back through the relay twice (caller -> relay ->
 * agent -> relay -> caller) tells loss and round-trip time. The window
 * opens once every call has seen its echo (or at --setup-timeout), lasts
 * --duration seconds; packets sent in it count, and their echoes may come
 * back until --tail seconds after. Lines on stdout: "ready",
 * "window-start", "window-end", "done", so that the driver measures the
 * relay's CPU over exactly the window. What the relay received in the
 * window is what the callers sent plus what reached the agents (and was
 * echoed). The result is a JSON object (--json, default stdout).
 *
 *   cc -O2 -o rtpload rtpload.c
 *   rtpload --calls N --ports-out FILE [--targets FILE] [--duration S]
 *           [--setup-timeout S] [--tail S] [--json FILE]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 160
#define PKT (12 + PAYLOAD)
#define MAGIC 0x42334c44u       /* "B3LD" */
#define BATCH 256
#define HIST_US 10              /* RTT histogram bucket */
#define HIST_N 100000           /* up to 1 s */
#define PTIME 20
#define SOCKBUF (16 << 20)

struct call {
	struct sockaddr_in target;
	bool have_target, bridged;
	uint16_t seq;
	uint32_t ts, ssrc;
	uint64_t sent_w, recv_w, dup_w;
	int64_t min_rtt;
	uint32_t n;                     /* packets sent so far */
	uint32_t w0, w1;                /* numbers sent in the window: [w0, w1) */
	uint8_t *got;                   /* echoes seen, bitmap over [w0, w0 + cap) */
	uint32_t cap;
};

static struct call *calls;
static int ncalls, ntargets;
static int32_t by_port[65536];          /* relay port -> call + 1 */
static int64_t win_start = -1, win_end = -1;    /* ns, monotonic */
static uint64_t hist_rtt[HIST_N + 1], hist_jit[HIST_N + 1];
static uint64_t echoed, foreign, bridged, late_echo, send_fail;
static uint64_t agent_w;                /* reached the agent in the window */
static double duration = 60;

static struct {
	struct mmsghdr msg[BATCH];
	struct iovec iov[BATCH];
	struct sockaddr_in addr[BATCH];
	uint8_t buf[BATCH][2048];
} io;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "rtpload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int udp_bind(uint16_t *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), sz = SOCKBUF;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(fd, (struct sockaddr *)&a, &len))
		die("socket");
	/* FORCE goes past rmem_max as root; the plain one is the fallback */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)))
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)))
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	*port = ntohs(a.sin_port);
	return fd;
}

static void call_target(int i, const struct sockaddr_in *a)
{
	struct call *c = &calls[i];

	c->target = *a;
	c->have_target = true;
	by_port[ntohs(a->sin_port)] = i + 1;
}

static void read_targets(const char *path)
{
	FILE *f = fopen(path, "r");
	struct sockaddr_in a = { .sin_family = AF_INET };
	unsigned port;

	if (!f)
		die(path);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	while (ntargets < ncalls && fscanf(f, "%u", &port) == 1) {
		a.sin_port = htons((uint16_t)port);
		call_target(ntargets++, &a);
	}
	fclose(f);
}

static bool in_window(int64_t t)
{
	return win_start >= 0 && t >= win_start && (win_end < 0 || t < win_end);
}

static void packet(struct call *c, int i, int64_t t, uint8_t *b)
{
	memset(b, 0xD5, PKT);
	b[0] = 0x80;
	b[1] = 8;
	c->seq++;
	c->ts += 160;
	b[2] = (uint8_t)(c->seq >> 8);
	b[3] = (uint8_t)c->seq;
	wr32(b + 4, c->ts);
	wr32(b + 8, c->ssrc);
	wr32(b + 12, MAGIC);
	wr32(b + 16, (uint32_t)i);
	wr32(b + 20, (uint32_t)((uint64_t)t >> 32));
	wr32(b + 24, (uint32_t)t);
	wr32(b + 28, c->n);
}

/* Sends io's first n datagrams on fd; returns how many went. */
static int flush(int fd, int n)
{
	int done = 0;

	while (done < n) {
		int r = sendmmsg(fd, io.msg + done, (unsigned)(n - done), MSG_DONTWAIT);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		done += r;
	}
	send_fail += (uint64_t)(n - done);
	return done;
}

static void io_prepare(int n)
{
	for (int j = 0; j < n; j++) {
		io.iov[j].iov_base = io.buf[j];
		io.iov[j].iov_len = sizeof(io.buf[j]);
		memset(&io.msg[j].msg_hdr, 0, sizeof(io.msg[j].msg_hdr));
		io.msg[j].msg_hdr.msg_iov = &io.iov[j];
		io.msg[j].msg_hdr.msg_iovlen = 1;
		io.msg[j].msg_hdr.msg_name = &io.addr[j];
		io.msg[j].msg_hdr.msg_namelen = sizeof(io.addr[j]);
	}
}

/* One 1 ms slot: the calls i with i mod 20 == slot. */
static void send_slot(int fd, int slot, int64_t t)
{
	int n = 0;

	for (int i = slot; i < ncalls; i += PTIME) {
		struct call *c = &calls[i];

		if (!c->have_target)
			continue;
		if (n == BATCH) {
			flush(fd, n);
			n = 0;
		}
		packet(c, i, t, io.buf[n]);
		io.iov[n].iov_base = io.buf[n];
		io.iov[n].iov_len = PKT;
		memset(&io.msg[n].msg_hdr, 0, sizeof(io.msg[n].msg_hdr));
		io.msg[n].msg_hdr.msg_iov = &io.iov[n];
		io.msg[n].msg_hdr.msg_iovlen = 1;
		io.msg[n].msg_hdr.msg_name = &c->target;
		io.msg[n].msg_hdr.msg_namelen = sizeof(c->target);
		if (in_window(t)) {
			if (!c->sent_w)
				c->w0 = c->n;
			c->w1 = c->n + 1;
			c->sent_w++;
		}
		c->n++;
		n++;
	}
	if (n)
		flush(fd, n);
}

static void tick(int fd, int64_t *next_ms)
{
	int64_t t = now_ns(), ms = t / 1000000;
	int slots = 0;

	for (; *next_ms <= ms && slots < PTIME; (*next_ms)++, slots++)
		send_slot(fd, (int)(*next_ms % PTIME), t);
	*next_ms = ms + 1;
}

static void hist_add(uint64_t *h, int64_t ns)
{
	int64_t b = ns / 1000 / HIST_US;

	h[b < 0 ? 0 : b > HIST_N ? HIST_N : b]++;
}

/* A datagram on the caller socket: an echo, or the relay's own (learn). */
static void caller_rx(const uint8_t *b, int len, const struct sockaddr_in *src, int64_t t)
{
	uint32_t i = len >= 32 ? rd32(b + 16) : 0;
	struct call *c;
	int64_t sent, rtt;

	if (len != PKT || rd32(b + 12) != MAGIC || i >= (uint32_t)ncalls) {
		foreign++;
		if (!by_port[ntohs(src->sin_port)] && ntargets < ncalls)
			call_target(ntargets++, src);
		return;
	}
	c = &calls[i];
	sent = (int64_t)((uint64_t)rd32(b + 20) << 32 | rd32(b + 24));
	rtt = t - sent;
	echoed++;
	if (!c->bridged) {
		c->bridged = true;
		bridged++;
	}
	if (rtt < c->min_rtt)
		c->min_rtt = rtt;
	if (in_window(sent)) {
		uint32_t k = rd32(b + 28) - c->w0;

		if (k < c->cap && (c->got[k / 8] >> (k % 8) & 1)) {
			c->dup_w++;
			return;
		}
		if (k < c->cap)
			c->got[k / 8] |= (uint8_t)(1u << (k % 8));
		if (rtt > 1000000000)
			late_echo++;
		c->recv_w++;
		hist_add(hist_rtt, rtt);
		hist_add(hist_jit, rtt - c->min_rtt);
	}
}

/* Reads a batch on fd: the agent's echoes it all back, the caller's
 * looks at it. Returns how many were read. */
static int input(int fd, bool agent)
{
	int n;

	io_prepare(BATCH);
	n = recvmmsg(fd, io.msg, BATCH, MSG_DONTWAIT, NULL);
	if (n <= 0)
		return 0;
	if (agent) {
		if (in_window(now_ns()))
			agent_w += (uint64_t)n;
		for (int j = 0; j < n; j++)
			io.iov[j].iov_len = io.msg[j].msg_len;
		flush(fd, n);
		return n;
	}
	{
		int64_t t = now_ns();

		for (int j = 0; j < n; j++)
			caller_rx(io.buf[j], (int)io.msg[j].msg_len, &io.addr[j], t);
	}
	return n;
}

/* Where the packets without an echo were: the window's first or last
 * 10 packets of their call, or the middle. */
static void missing(uint64_t *first, uint64_t *last, uint64_t *middle)
{
	for (int i = 0; i < ncalls; i++) {
		struct call *c = &calls[i];

		for (uint32_t k = 0; c->sent_w && k < c->w1 - c->w0 && k < c->cap; k++) {
			if (c->got[k / 8] >> (k % 8) & 1)
				continue;
			if (k < 10)
				(*first)++;
			else if (k + 10 >= c->w1 - c->w0)
				(*last)++;
			else
				(*middle)++;
		}
	}
}

static double pct(const uint64_t *h, double q)
{
	uint64_t tot = 0, acc = 0;

	for (int i = 0; i <= HIST_N; i++)
		tot += h[i];
	if (!tot)
		return -1;
	for (int i = 0; i <= HIST_N; i++) {
		acc += h[i];
		if ((double)acc >= q * (double)tot)
			return (double)(i + 1) * HIST_US;
	}
	return (double)HIST_N * HIST_US;
}

static void say(const char *what)
{
	printf("%s\n", what);
	fflush(stdout);
}

static void report(FILE *f, double window_s, double setup_s)
{
	uint64_t sent = 0, recv = 0, dup = 0, m_first = 0, m_last = 0, m_mid = 0;
	struct rusage ru;
	double cpu;

	for (int i = 0; i < ncalls; i++) {
		sent += calls[i].sent_w;
		recv += calls[i].recv_w;
		dup += calls[i].dup_w;
	}
	missing(&m_first, &m_last, &m_mid);
	getrusage(RUSAGE_SELF, &ru);
	cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		(double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	fprintf(f, "{\"calls\": %d, \"targets\": %d, \"bridged\": %llu, \"setup_s\": %.2f, "
		"\"window_s\": %.2f, \"sent\": %llu, \"received\": %llu, "
		"\"loss_pct\": %.4f, \"caller_pps\": %.1f, \"agent_pps\": %.1f, "
		"\"relay_pps_in\": %.1f, "
		"\"rtt_p50_us\": %.0f, \"rtt_p99_us\": %.0f, \"rtt_max_us\": %.0f, "
		"\"jitter_p50_us\": %.0f, \"jitter_p99_us\": %.0f, \"foreign\": %llu, "
		"\"duplicates\": %llu, \"echo_over_1s\": %llu, \"missing_first10\": %llu, "
		"\"missing_last10\": %llu, \"missing_middle\": %llu, \"send_fail\": %llu, "
		"\"generator_cpu_s\": %.2f}\n",
		ncalls, ntargets, (unsigned long long)bridged, setup_s, window_s,
		(unsigned long long)sent, (unsigned long long)recv,
		sent ? 100.0 * (double)(sent - (recv < sent ? recv : sent)) / (double)sent : 100.0,
		(double)sent / window_s, (double)agent_w / window_s,
		(double)(sent + agent_w) / window_s,
		pct(hist_rtt, 0.5), pct(hist_rtt, 0.99), pct(hist_rtt, 1.0),
		pct(hist_jit, 0.5), pct(hist_jit, 0.99), (unsigned long long)foreign,
		(unsigned long long)dup, (unsigned long long)late_echo,
		(unsigned long long)m_first, (unsigned long long)m_last,
		(unsigned long long)m_mid, (unsigned long long)send_fail, cpu);
}

static void usage(void)
{
	puts("usage: rtpload --calls N --ports-out FILE [--targets FILE] [--duration S]\n"
	     "               [--setup-timeout S] [--tail S] [--json FILE]");
}

static void watch(int ep, int fd, uint64_t data)
{
	struct epoll_event e = { .events = EPOLLIN, .data.u64 = data };

	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e))
		die("epoll_ctl");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "calls", 1, 0, 'n' }, { "ports-out", 1, 0, 'p' }, { "targets", 1, 0, 't' },
		{ "duration", 1, 0, 'd' }, { "setup-timeout", 1, 0, 's' }, { "tail", 1, 0, 'T' },
		{ "json", 1, 0, 'j' }, { "help", 0, 0, 'h' }, { 0, 0, 0, 0 },
	};
	const char *ports_out = NULL, *targets = NULL, *json = NULL;
	double setup_to = 60, tail = 2, setup_s = 0;
	struct itimerspec its = { { 0, 1000000 }, { 0, 1000000 } };
	struct epoll_event ev[8];
	int64_t t0, next_ms, phase_end;
	int ep, tfd, fd_c, fd_a, o, phase = 0;  /* 0 setup, 1 window, 2 tail */
	bool settling = false, targets_read = false;
	uint16_t port_c, port_a;
	FILE *out = stdout, *pf;

	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'n': ncalls = atoi(optarg); break;
		case 'p': ports_out = optarg; break;
		case 't': targets = optarg; break;
		case 'd': duration = atof(optarg); break;
		case 's': setup_to = atof(optarg); break;
		case 'T': tail = atof(optarg); break;
		case 'j': json = optarg; break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (ncalls <= 0 || !ports_out || duration <= 0) {
		usage();
		return 2;
	}
	calls = calloc((size_t)ncalls, sizeof(*calls));
	ep = epoll_create1(EPOLL_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (!calls || ep < 0 || tfd < 0)
		die("setup");
	for (int i = 0; i < ncalls; i++) {
		struct call *c = &calls[i];

		c->ssrc = 0x10000000u + (uint32_t)i;
		c->seq = (uint16_t)(i * 7);
		c->ts = (uint32_t)i * 1000;
		c->min_rtt = INT64_MAX;
		c->cap = (uint32_t)(duration * 1000 / PTIME) + 200;
		if (!(c->got = calloc(c->cap / 8 + 1, 1)))
			die("calloc");
	}
	fd_c = udp_bind(&port_c);
	fd_a = udp_bind(&port_a);
	watch(ep, fd_c, 0);
	watch(ep, fd_a, 1);
	watch(ep, tfd, 2);
	if (timerfd_settime(tfd, 0, &its, NULL))
		die("timer");
	if (!(pf = fopen(ports_out, "w")) || fprintf(pf, "%u %u\n", port_c, port_a) < 0 ||
	    fclose(pf))
		die(ports_out);
	say("ready");
	t0 = now_ns();
	next_ms = t0 / 1000000;
	phase_end = t0 + (int64_t)(setup_to * 1e9);
	while (phase < 3) {
		int n = epoll_wait(ep, ev, 8, 100);
		int64_t t = now_ns();

		for (int j = 0; j < n; j++) {
			uint64_t d = ev[j].data.u64, x;

			if (d == 2) {
				if (read(tfd, &x, sizeof(x)) > 0 && phase < 2)
					tick(fd_c, &next_ms);
				continue;
			}
			/* drain, a batch at a time, up to a few batches */
			for (int k = 0; k < 8 && input(d ? fd_a : fd_c, d == 1) == BATCH; k++)
				;
		}
		if (phase == 0 && targets && !targets_read && !access(targets, R_OK)) {
			read_targets(targets);
			targets_read = true;
		}
		if (phase == 0) {
			/* a second to settle once the last call is up */
			if (!settling && (int)bridged == ncalls) {
				settling = true;
				if (t + 1000000000 < phase_end)
					phase_end = t + 1000000000;
			}
			if (t >= phase_end) {
				setup_s = (double)(t - t0) / 1e9;
				win_start = t;
				phase_end = t + (int64_t)(duration * 1e9);
				phase = 1;
				say("window-start");
			}
		} else if (phase == 1 && t >= phase_end) {
			win_end = t;
			phase_end = t + (int64_t)(tail * 1e9);
			phase = 2;
			say("window-end");
		} else if (phase == 2 && t >= phase_end) {
			phase = 3;
		}
	}
	if (json && !(out = fopen(json, "w")))
		die(json);
	report(out, (double)(win_end - win_start) / 1e9, setup_s);
	if (out != stdout)
		fclose(out);
	say("done");
	return 0;
}
