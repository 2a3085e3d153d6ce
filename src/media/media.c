/*
 * media.c: the RTP engine's life cycle and the signalling side of it.
 *
 * The signalling thread binds port pairs itself (so that it learns at once
 * whether one is free and which port to put in SDP) and then hands the
 * sockets over. Everything after that goes through a command queue: a
 * mutex-protected list and an eventfd that the engine's epoll watches.
 * Commands are rare (a handful per call), so a lock there costs nothing,
 * while the packet path in media_rtp.c takes no lock at all.
 *
 * An ep handle is generation << 16 | pair index, so a stale handle never
 * matches a reused pair. The pair table's shared half (struct media_slot)
 * holds atomics only: the live handle and copies of the counters.
 *
 * The other way, the engine (media timeouts) and the recorder's writer
 * (finished recordings) post events on a mutex-protected list with an
 * eventfd that the signalling loop watches. A 1 s housekeeping timer on
 * the engine checks timeouts and adds the engine's counters to the
 * Prometheus series, so the packet path never touches a shared cache line
 * for metrics.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define LOG_MODULE "media"
#include "log.h"
#include "g711.h"
#include "clk.h"
#include "metrics.h"
#include "media_int.h"

#define SLOT_FREE 0u
#define SLOT_BUSY 1u
#define DSCP_EF 0xB8                    /* expedited forwarding, for RTP */

#define DTMF_MS_MIN 40
#define DTMF_MS_MAX 5000

enum cmd_kind {
	CMD_ADD, CMD_PEER, CMD_PLAY, CMD_BRIDGE, CMD_UNBRIDGE, CMD_FREE,
	CMD_DTMF, CMD_RECORD, CMD_RECSTOP, CMD_TIMEOUT,
};

struct media_cmd {
	struct media_cmd *next;
	enum cmd_kind kind;
	media_ep_t a, b;
	int fd[2];
	struct media_peer peer;         /* SRTP keys: wiped after use */
	struct media_prompt *first, *loop;
	struct media_rec *rec;
	uint8_t ev;                     /* DTMF event code */
	uint16_t ms;
	bool discard;
	int64_t val;                    /* the media timeout */
};

struct media_evq {
	struct media_evq *next;
	struct media_event ev;
};

static uint32_t ep_index(media_ep_t h)
{
	return h & 0xFFFFu;
}

/* ---- the command queue --------------------------------------------------- */

static struct media_cmd *cmd_new(enum cmd_kind kind, media_ep_t a)
{
	struct media_cmd *c = calloc(1, sizeof(*c));

	if (c) {
		c->kind = kind;
		c->a = a;
		c->fd[0] = c->fd[1] = -1;
	}
	return c;
}

/* Releases what a command owns when the engine never ran it. */
static void cmd_discard(struct media_cmd *c)
{
	for (int i = 0; i < 2; i++)
		if (c->fd[i] >= 0)
			close(c->fd[i]);
	media_prompt_deref(c->first);
	media_prompt_deref(c->loop);
	media_rec_discard(c->rec);
	OPENSSL_cleanse(&c->peer.srtp, sizeof(c->peer.srtp));
	free(c);
}

static void cmd_push(struct media *m, struct media_cmd *c)
{
	uint64_t one = 1;
	bool wake;

	pthread_mutex_lock(&m->q_lock);
	/* a non-empty queue was signalled already and not yet taken (the
	   engine reads the eventfd before it takes the queue): one wakeup
	   per batch, not per command (seven per call) */
	wake = !m->q_head;
	if (m->q_tail)
		m->q_tail->next = c;
	else
		m->q_head = c;
	m->q_tail = c;
	pthread_mutex_unlock(&m->q_lock);
	/* can only fail when the counter would overflow: already readable */
	if (wake && write(m->evfd, &one, sizeof(one)) < 0)
		return;
}

static struct media_cmd *cmd_take_all(struct media *m)
{
	struct media_cmd *c;

	pthread_mutex_lock(&m->q_lock);
	c = m->q_head;
	m->q_head = m->q_tail = NULL;
	pthread_mutex_unlock(&m->q_lock);
	return c;
}

/* ---- engine: applying commands -------------------------------------------- */

static void ep_publish_zero(struct media_slot *s)
{
	atomic_store_explicit(&s->rx_packets, 0, memory_order_relaxed);
	atomic_store_explicit(&s->tx_packets, 0, memory_order_relaxed);
	atomic_store_explicit(&s->rx_bytes, 0, memory_order_relaxed);
	atomic_store_explicit(&s->tx_bytes, 0, memory_order_relaxed);
	atomic_store_explicit(&s->lost, 0, memory_order_relaxed);
	atomic_store_explicit(&s->late, 0, memory_order_relaxed);
	atomic_store_explicit(&s->dropped, 0, memory_order_relaxed);
	atomic_store_explicit(&s->srtp_auth, 0, memory_order_relaxed);
	atomic_store_explicit(&s->srtp_replay, 0, memory_order_relaxed);
	atomic_store_explicit(&s->last_rx_ms, 0, memory_order_relaxed);
}

static void ep_release(struct media *m, uint32_t idx)
{
	atomic_store_explicit(&m->slots[idx].live, SLOT_FREE, memory_order_release);
	atomic_fetch_add(&m->nfree, 1);
}

static void cmd_add(struct media *m, struct media_cmd *c)
{
	uint32_t idx = ep_index(c->a);
	struct media_ep *e = &m->eps[idx];
	struct epoll_event ev = { .events = EPOLLIN };

	memset(e, 0, sizeof(*e));
	e->fd[0] = c->fd[0];
	e->fd[1] = c->fd[1];
	c->fd[0] = c->fd[1] = -1;
	e->play_pos = UINT32_MAX;
	e->idle_from = m->now;
	e->out.ssrc = (uint32_t)media_rng_next(m);
	memset(e->fwd_pt, 0xFF, sizeof(e->fwd_pt));
	for (int i = 0; i < 2; i++) {
		ev.data.u64 = (uint64_t)c->a << 1 | (uint64_t)i;
		if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, e->fd[i], &ev)) {
			log_err("epoll_ctl: %s", strerror(errno));
			close(e->fd[0]);
			close(e->fd[1]);
			ep_release(m, idx);
			return;
		}
	}
	e->h = c->a;
}

static struct media_ep *ep_get(struct media *m, media_ep_t h)
{
	uint32_t idx = ep_index(h);

	if (idx >= m->npairs || !h || m->eps[idx].h != h)
		return NULL;
	return &m->eps[idx];
}

static socklen_t sa_len(const struct sockaddr_storage *a)
{
	return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
		sizeof(struct sockaddr_in);
}

/* A new SDP address unlocks the latch; the same one (a re-INVITE for
 * hold, say) keeps the address the packets really come from. */
static void peer_addr(struct media_ep *e, int k, const struct sockaddr_storage *a)
{
	const struct sockaddr_storage *old = k ? &e->peer.rtcp : &e->peer.rtp;

	if (e->has_peer && media_sa_same(old, a))
		return;
	e->dst[k] = *a;
	e->dstlen[k] = sa_len(a);
	e->latched[k] = false;
}

static void cmd_peer(struct media *m, struct media_ep *e, struct media_cmd *c)
{
	peer_addr(e, 0, &c->peer.rtp);
	peer_addr(e, 1, &c->peer.rtcp);
	media_srtp_apply(e, &c->peer.srtp);
	e->peer = c->peer;
	/* the keys live in e->srtp only */
	OPENSSL_cleanse(&e->peer.srtp, sizeof(e->peer.srtp));
	e->peer.srtp.suite = c->peer.srtp.suite;
	e->has_peer = true;
	e->idle_from = m->now;
	media_rtp_fwd(e);
	if (e->other)
		media_rtp_fwd(e->other);
}

static void cmd_play(struct media *m, struct media_ep *e, struct media_cmd *c)
{
	media_rtp_unbridge(e);
	media_rtp_play(m, e, c->first, c->loop);
	c->first = c->loop = NULL;      /* the ep owns the references now */
}

static void cmd_bridge(struct media *m, struct media_ep *a, struct media_cmd *c)
{
	struct media_ep *b = ep_get(m, c->b);

	if (!b || a == b)
		return;
	media_rtp_unbridge(a);
	media_rtp_unbridge(b);
	media_rtp_play(m, a, NULL, NULL);
	media_rtp_play(m, b, NULL, NULL);
	a->other = b;
	b->other = a;
	a->out.mapped = b->out.mapped = false;
	a->idle_from = b->idle_from = m->now;
	a->timed_out = b->timed_out = false;
	media_rtp_fwd(a);
	media_rtp_fwd(b);
}

static void ep_close(struct media *m, struct media_ep *e)
{
	if (e->tap.rec)
		media_rec_end(m, e->tap.rec, false);
	media_rtp_unbridge(e);
	memset(&e->dtmf, 0, sizeof(e->dtmf));
	media_rtp_play(m, e, NULL, NULL);
	media_srtp_clear(e);
	/* closing removes the fds from the epoll set: nothing else holds them */
	close(e->fd[0]);
	close(e->fd[1]);
	ep_release(m, ep_index(e->h));
	e->h = 0;
}

/* a (left) and b (right) start a recording; what either was part of ends */
static void cmd_record(struct media *m, struct media_ep *a, struct media_cmd *c)
{
	struct media_ep *b = ep_get(m, c->b);

	if (!b || a == b) {
		media_rec_refuse(m, c->rec, c->a, c->b, ENOENT);
		c->rec = NULL;
		return;
	}
	if (a->tap.rec)
		media_rec_end(m, a->tap.rec, false);
	if (b->tap.rec)
		media_rec_end(m, b->tap.rec, false);
	media_rec_begin(m, c->rec, a, b);
	c->rec = NULL;
}

static void cmd_apply(struct media *m, struct media_cmd *c)
{
	struct media_ep *e;

	if (c->kind == CMD_ADD) {
		cmd_add(m, c);
		return;
	}
	if (c->kind == CMD_TIMEOUT) {
		m->timeout_ms = c->val;
		return;
	}
	if (!(e = ep_get(m, c->a))) {
		if (c->kind == CMD_RECORD) {
			media_rec_refuse(m, c->rec, c->a, c->b, ENOENT);
			c->rec = NULL;
		}
		return;
	}
	switch (c->kind) {
	case CMD_PEER:
		cmd_peer(m, e, c);
		break;
	case CMD_PLAY:
		cmd_play(m, e, c);
		break;
	case CMD_BRIDGE:
		cmd_bridge(m, e, c);
		break;
	case CMD_UNBRIDGE:
		media_rtp_unbridge(e);
		break;
	case CMD_FREE:
		ep_close(m, e);
		break;
	case CMD_DTMF:
		media_dtmf_queue(m, e, c->ev, c->ms);
		break;
	case CMD_RECORD:
		cmd_record(m, e, c);
		break;
	case CMD_RECSTOP:
		if (e->tap.rec)
			media_rec_end(m, e->tap.rec, c->discard);
		break;
	default:
		break;
	}
}

static void cmd_drain(struct media *m)
{
	struct media_cmd *c, *next;
	uint64_t cnt;

	/* read the counter first: a push after this read writes it again */
	if (read(m->evfd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		log_warn("eventfd read: %s", strerror(errno));
	for (c = cmd_take_all(m); c; c = next) {
		next = c->next;
		cmd_apply(m, c);
		cmd_discard(c);
	}
}

/* ---- engine: housekeeping ----------------------------------------------------- */

#define FLUSH(f) do { \
	if (m->tot.f != m->tot_flushed.f) { \
		metrics_add(m->mx.f, m->tot.f - m->tot_flushed.f); \
		m->tot_flushed.f = m->tot.f; \
	} \
} while (0)

static void totals_flush(struct media *m)
{
	FLUSH(rx_packets);
	FLUSH(tx_packets);
	FLUSH(rx_bytes);
	FLUSH(tx_bytes);
	FLUSH(lost);
	FLUSH(late);
	FLUSH(dropped);
	FLUSH(srtp_auth);
	FLUSH(srtp_replay);
	FLUSH(timeouts);
	FLUSH(dtmf_sent);
}

#undef FLUSH

static void house(struct media *m)
{
	uint64_t exp;

	if (read(m->hfd, &exp, sizeof(exp)) != sizeof(exp))
		return;
	media_rtp_timeouts(m);
	media_rec_house(m);
	totals_flush(m);
}

/* ---- engine: the loop ------------------------------------------------------ */

#define EV_CMD 0u
#define EV_TICK 1u
#define EV_HOUSE 2u
#define MAX_EVENTS 256

static void *engine_main(void *arg)
{
	struct media *m = arg;
	struct epoll_event ev[MAX_EVENTS];

	while (!atomic_load(&m->stop)) {
		int n = epoll_wait(m->epfd, ev, MAX_EVENTS, -1);
		bool cmd = false;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_err("epoll_wait: %s", strerror(errno));
			break;
		}
		m->now = clk_mono_ms();
		for (int i = 0; i < n; i++) {
			uint64_t d = ev[i].data.u64;

			if (d == EV_CMD)
				cmd = true;
			else if (d == EV_TICK)
				media_rtp_tick(m);
			else if (d == EV_HOUSE)
				house(m);
			else
				media_rtp_input(m, ep_get(m, (media_ep_t)(d >> 1)),
						(int)(d & 1));
		}
		/* after the batch, so that no event above refers to an ep that
		 * a command has just closed */
		if (cmd)
			cmd_drain(m);
	}
	return NULL;
}

/* ---- life cycle ------------------------------------------------------------ */

static int parse_ip(struct media *m, const char *ip)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)&m->addr;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&m->addr;

	if (ip && inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		m->addrlen = sizeof(*s4);
		return 0;
	}
	if (ip && inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		m->addrlen = sizeof(*s6);
		return 0;
	}
	return EINVAL;
}

static int watch(struct media *m, int fd, uint64_t data)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = data };

	return epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) ? errno : 0;
}

static int fds_open(struct media *m)
{
	struct itimerspec its = { { 1, 0 }, { 1, 0 } };

	m->epfd = epoll_create1(EPOLL_CLOEXEC);
	m->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	m->ev_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	m->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	m->hfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (m->epfd < 0 || m->evfd < 0 || m->ev_fd < 0 || m->tfd < 0 || m->hfd < 0)
		return errno;
	if (watch(m, m->evfd, EV_CMD) || watch(m, m->tfd, EV_TICK) ||
	    watch(m, m->hfd, EV_HOUSE))
		return errno;
	if (timerfd_settime(m->hfd, 0, &its, NULL))
		return errno;
	return 0;
}

static void metrics_register(struct media_metrics *x)
{
	x->rx_packets = metrics_counter("sipcrm_rtp_packets_total",
				"RTP packets received from and sent to peers",
				"direction=\"in\"");
	x->tx_packets = metrics_counter("sipcrm_rtp_packets_total",
				"RTP packets received from and sent to peers",
				"direction=\"out\"");
	x->rx_bytes = metrics_counter("sipcrm_rtp_bytes_total", "RTP bytes received and sent",
			      "direction=\"in\"");
	x->tx_bytes = metrics_counter("sipcrm_rtp_bytes_total", "RTP bytes received and sent",
			      "direction=\"out\"");
	x->lost = metrics_counter("sipcrm_rtp_lost_total",
			  "RTP packets missing (sequence gaps)", NULL);
	x->late = metrics_counter("sipcrm_rtp_late_total",
			  "RTP packets arriving after a later one, or twice", NULL);
	x->dropped = metrics_counter("sipcrm_rtp_dropped_total",
			     "RTP/RTCP packets dropped: unexpected source, malformed, "
			     "DTMF towards a peer without telephone-event", NULL);
	x->srtp_auth = metrics_counter("sipcrm_srtp_failures_total",
			       "SRTP/SRTCP packets dropped", "reason=\"auth\"");
	x->srtp_replay = metrics_counter("sipcrm_srtp_failures_total",
				 "SRTP/SRTCP packets dropped", "reason=\"replay\"");
	x->timeouts = metrics_counter("sipcrm_media_timeouts_total",
			      "bridges that carried no RTP for media_timeout", NULL);
	x->dtmf_sent = metrics_counter("sipcrm_dtmf_injected_total",
			       "DTMF digits sent as RFC 4733 events (SIP INFO)", NULL);
	x->rec_kept = metrics_counter("sipcrm_recordings_total", "recording segments ended",
			      "result=\"kept\"");
	x->rec_discarded = metrics_counter("sipcrm_recordings_total", "recording segments ended",
				   "result=\"discarded\"");
	x->rec_failed = metrics_counter("sipcrm_recordings_total", "recording segments ended",
				"result=\"failed\"");
	x->rec_errors = metrics_counter("sipcrm_recording_errors_total",
				"recordings that could not be written (disk full, "
				"folder not writable)", NULL);
	x->rec_dropped = metrics_counter("sipcrm_recording_dropped_total",
				 "audio chunks not recorded: writer behind or too late",
				 NULL);
}

static int tables_alloc(struct media *m)
{
	m->slots = calloc(m->npairs, sizeof(*m->slots));
	m->eps = calloc(m->npairs, sizeof(*m->eps));
	m->playing = calloc(m->npairs, sizeof(*m->playing));
	m->rx = calloc(1, sizeof(*m->rx));
	if (!m->slots || !m->eps || !m->playing || !m->rx)
		return ENOMEM;
	atomic_init(&m->nfree, m->npairs);
	media_rtp_init(m);
	return 0;
}

/* The engine thread takes no signals: they belong to the main loop. */
static int thread_start(struct media *m)
{
	sigset_t all, old;
	int e;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = pthread_create(&m->thread, NULL, engine_main, m);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e)
		return e;
	pthread_setname_np(m->thread, "media");
	m->running = true;
	return 0;
}

static int range_set(struct media *m, uint16_t lo, uint16_t hi)
{
	uint32_t p0 = lo + (lo & 1u);

	if (!lo || p0 + 1 > hi)
		return EINVAL;
	m->port0 = (uint16_t)p0;
	m->npairs = (hi - p0 + 1) / 2;
	return 0;
}

int media_alloc(struct media **mp, const char *ip, uint16_t lo, uint16_t hi)
{
	struct media *m = calloc(1, sizeof(*m));
	int e;

	if (!m)
		return ENOMEM;
	m->epfd = m->evfd = m->ev_fd = m->tfd = m->hfd = -1;
	pthread_mutex_init(&m->alloc_lock, NULL);
	pthread_mutex_init(&m->q_lock, NULL);
	pthread_mutex_init(&m->ev_lock, NULL);
	atomic_init(&m->stop, false);
	if (getrandom(&m->rng, sizeof(m->rng), 0) != sizeof(m->rng))
		m->rng = (uint64_t)clk_mono_ms() ^ (uint64_t)getpid() << 32;
	m->rng |= 1;                    /* xorshift must not start at 0 */
	media_g711_init();
	metrics_register(&m->mx);
	m->now = clk_mono_ms();
	if ((e = media_srtp_init()) ||
	    (e = parse_ip(m, ip)) || (e = range_set(m, lo, hi)) ||
	    (e = tables_alloc(m)) || (e = fds_open(m)) ||
	    (e = thread_start(m)))
		goto out;
	log_info("RTP on %s ports %u-%u (%u pairs)", ip, m->port0,
		 m->port0 + 2 * m->npairs - 1, m->npairs);
	*mp = m;
out:
	if (e)
		media_free(m);
	return e;
}

static void close_fd(int fd)
{
	if (fd >= 0)
		close(fd);
}

static void events_free(struct media *m)
{
	struct media_evq *q, *next;

	for (q = m->ev_head; q; q = next) {
		next = q->next;
		free(q);
	}
	m->ev_head = m->ev_tail = NULL;
}

struct media *media_free(struct media *m)
{
	uint64_t one = 1;
	struct media_cmd *c, *next;

	if (!m)
		return NULL;
	if (m->running) {
		atomic_store(&m->stop, true);
		if (write(m->evfd, &one, sizeof(one)) < 0)
			log_err("eventfd write: %s", strerror(errno));
		pthread_join(m->thread, NULL);
	}
	for (c = cmd_take_all(m); c; c = next) {
		next = c->next;
		cmd_discard(c);
	}
	/* the engine is gone: this thread stands in for it */
	m->now = clk_mono_ms();
	if (m->rec)
		m->rec_eng = m->rec;
	for (uint32_t i = 0; m->eps && i < m->npairs; i++)
		if (m->eps[i].h)
			ep_close(m, &m->eps[i]);
	totals_flush(m);
	media_rec_shutdown(m);
	events_free(m);
	close_fd(m->epfd);
	close_fd(m->evfd);
	close_fd(m->ev_fd);
	close_fd(m->tfd);
	close_fd(m->hfd);
	pthread_mutex_destroy(&m->alloc_lock);
	pthread_mutex_destroy(&m->q_lock);
	pthread_mutex_destroy(&m->ev_lock);
	free(m->slots);
	free(m->eps);
	free(m->playing);
	free(m->rx);
	free(m);
	return NULL;
}

/* ---- signalling side: eps ---------------------------------------------------- */

static int bind_one(const struct media *m, uint16_t port, int *fdp)
{
	struct sockaddr_storage a = m->addr;
	int fd, tos = DSCP_EF, e;

	fd = socket(a.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	if (a.ss_family == AF_INET) {
		((struct sockaddr_in *)&a)->sin_port = htons(port);
		(void)setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
	} else {
		((struct sockaddr_in6 *)&a)->sin6_port = htons(port);
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof(tos));
	}
	if (bind(fd, (struct sockaddr *)&a, m->addrlen)) {
		e = errno;
		close(fd);
		return e;
	}
	*fdp = fd;
	return 0;
}

static int bind_pair(const struct media *m, uint32_t idx, int fd[2])
{
	uint16_t port = (uint16_t)(m->port0 + 2 * idx);
	int e;

	if ((e = bind_one(m, port, &fd[0])))
		return e;
	if ((e = bind_one(m, (uint16_t)(port + 1), &fd[1]))) {
		close(fd[0]);
		return e;
	}
	return 0;
}

/* Only resource exhaustion ends the search; any other failure is taken
 * to mean that this pair is used by someone else. */
static bool fatal_bind(int e)
{
	return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

/* Claims and binds the next bindable pair after the cursor; the moving
 * cursor keeps a just-freed pair out of use as long as possible, so late
 * packets of an old call do not reach a new one. */
static int pair_claim(struct media *m, uint32_t *idxp, int fd[2])
{
	int e = EADDRINUSE;

	for (uint32_t n = 0; n < m->npairs; n++) {
		uint32_t idx = m->cursor, expect = SLOT_FREE;
		struct media_slot *s = &m->slots[idx];

		m->cursor = (idx + 1) % m->npairs;
		if (!atomic_compare_exchange_strong(&s->live, &expect, SLOT_BUSY))
			continue;
		if (!(e = bind_pair(m, idx, fd))) {
			*idxp = idx;
			return 0;
		}
		atomic_store(&s->live, SLOT_FREE);
		if (fatal_bind(e))
			return e;
		e = EADDRINUSE;
	}
	return e;
}

int media_ep_alloc(struct media *m, media_ep_t *ep, uint16_t *port)
{
	struct media_cmd *c = NULL;
	struct media_slot *s;
	uint32_t idx = 0;
	int fd[2] = { -1, -1 }, e;

	if (!m || !ep)
		return EINVAL;
	pthread_mutex_lock(&m->alloc_lock);
	if ((e = pair_claim(m, &idx, fd)))
		goto out;
	s = &m->slots[idx];
	if (!(c = cmd_new(CMD_ADD, 0))) {
		close(fd[0]);
		close(fd[1]);
		atomic_store(&s->live, SLOT_FREE);
		e = ENOMEM;
		goto out;
	}
	if (!++s->gen)
		s->gen = 1;
	c->a = (media_ep_t)s->gen << 16 | idx;
	c->fd[0] = fd[0];
	c->fd[1] = fd[1];
	ep_publish_zero(s);
	atomic_fetch_sub(&m->nfree, 1);
	atomic_store_explicit(&s->live, c->a, memory_order_release);
	*ep = c->a;
	if (port)
		*port = (uint16_t)(m->port0 + 2 * idx);
	cmd_push(m, c);
out:
	pthread_mutex_unlock(&m->alloc_lock);
	return e;
}

/* The signalling side's view: is this handle live? */
static bool ep_valid(const struct media *m, media_ep_t ep)
{
	uint32_t idx = ep_index(ep);

	return m && ep > SLOT_BUSY && idx < m->npairs &&
		atomic_load_explicit(&m->slots[idx].live, memory_order_acquire) == ep;
}

static bool peer_valid(const struct media *m, const struct media_peer *p)
{
	return p && (p->codec == MEDIA_PCMA || p->codec == MEDIA_PCMU) &&
		media_srtp_suite_ok(p->srtp.suite) &&
		p->pt >= 0 && p->pt < 128 && p->te_pt >= -1 && p->te_pt < 128 &&
		p->rtp.ss_family == m->addr.ss_family &&
		(p->rtcp.ss_family == AF_UNSPEC ||
		 p->rtcp.ss_family == m->addr.ss_family);
}

int media_ep_set_peer(struct media *m, media_ep_t ep, const struct media_peer *p)
{
	struct media_cmd *c;

	if (!ep_valid(m, ep))
		return ENOENT;
	if (!peer_valid(m, p))
		return EINVAL;
	if (!(c = cmd_new(CMD_PEER, ep)))
		return ENOMEM;
	c->peer = *p;
	if (p->rtcp.ss_family == AF_UNSPEC) {
		/* no a=rtcp: RFC 3550's default, the next port up */
		c->peer.rtcp = p->rtp;
		if (p->rtp.ss_family == AF_INET)
			((struct sockaddr_in *)&c->peer.rtcp)->sin_port =
				htons(ntohs(((const struct sockaddr_in *)&p->rtp)->sin_port) + 1);
		else
			((struct sockaddr_in6 *)&c->peer.rtcp)->sin6_port =
				htons(ntohs(((const struct sockaddr_in6 *)&p->rtp)->sin6_port) + 1);
	}
	cmd_push(m, c);
	return 0;
}

int media_ep_play(struct media *m, media_ep_t ep, struct media_prompt *first,
		  struct media_prompt *loop)
{
	struct media_cmd *c;

	if (!ep_valid(m, ep))
		return ENOENT;
	if (!(c = cmd_new(CMD_PLAY, ep)))
		return ENOMEM;
	c->first = media_prompt_ref(first);
	c->loop = media_prompt_ref(loop);
	cmd_push(m, c);
	return 0;
}

static int cmd_simple(struct media *m, enum cmd_kind kind, media_ep_t a,
		      media_ep_t b)
{
	struct media_cmd *c;

	if (!ep_valid(m, a) || (kind == CMD_BRIDGE && !ep_valid(m, b)))
		return ENOENT;
	if (kind == CMD_BRIDGE && a == b)
		return EINVAL;
	if (!(c = cmd_new(kind, a)))
		return ENOMEM;
	c->b = b;
	cmd_push(m, c);
	return 0;
}

int media_bridge(struct media *m, media_ep_t a, media_ep_t b)
{
	return cmd_simple(m, CMD_BRIDGE, a, b);
}

int media_unbridge(struct media *m, media_ep_t a)
{
	return cmd_simple(m, CMD_UNBRIDGE, a, MEDIA_EP_NONE);
}

/*
 * The pair returns to the pool when the engine has closed it, normally
 * within a millisecond; media_ports_free() counts it from then on. If the
 * queue cannot take the command the handle stays valid, and a retry works.
 */
void media_ep_free(struct media *m, media_ep_t ep)
{
	struct media_cmd *c;
	uint32_t expect = ep;

	if (!ep_valid(m, ep) || !(c = cmd_new(CMD_FREE, ep)))
		return;
	if (!atomic_compare_exchange_strong(&m->slots[ep_index(ep)].live,
					    &expect, SLOT_BUSY)) {
		free(c);
		return;
	}
	cmd_push(m, c);
}

void media_ep_stats(const struct media *m, media_ep_t ep, struct media_stats *st)
{
	const struct media_slot *s;

	memset(st, 0, sizeof(*st));
	if (!ep_valid(m, ep))
		return;
	s = &m->slots[ep_index(ep)];
	st->rx_packets = atomic_load_explicit(&s->rx_packets, memory_order_relaxed);
	st->tx_packets = atomic_load_explicit(&s->tx_packets, memory_order_relaxed);
	st->rx_bytes = atomic_load_explicit(&s->rx_bytes, memory_order_relaxed);
	st->tx_bytes = atomic_load_explicit(&s->tx_bytes, memory_order_relaxed);
	st->lost = atomic_load_explicit(&s->lost, memory_order_relaxed);
	st->late = atomic_load_explicit(&s->late, memory_order_relaxed);
	st->dropped = atomic_load_explicit(&s->dropped, memory_order_relaxed);
	st->srtp_auth = atomic_load_explicit(&s->srtp_auth, memory_order_relaxed);
	st->srtp_replay = atomic_load_explicit(&s->srtp_replay, memory_order_relaxed);
	st->last_rx_ms = atomic_load_explicit(&s->last_rx_ms, memory_order_relaxed);
	/* freed (and maybe reused) while we read: the numbers are not its */
	if (!ep_valid(m, ep))
		memset(st, 0, sizeof(*st));
}

size_t media_ports_free(const struct media *m)
{
	return m ? atomic_load(&m->nfree) : 0;
}

/* ---- signalling side: DTMF, recording, timeouts ------------------------------ */

/* RFC 4733 §3.2 event codes; -1: not a digit. */
static int dtmf_code(char d)
{
	static const char keys[] = "0123456789*#ABCD";
	const char *k;

	if (d >= 'a' && d <= 'd')
		d = (char)(d - 'a' + 'A');
	k = d ? strchr(keys, d) : NULL;
	return k ? (int)(k - keys) : -1;
}

int media_ep_dtmf(struct media *m, media_ep_t ep, char digit, unsigned ms)
{
	struct media_cmd *c;
	int code = dtmf_code(digit);

	if (code < 0)
		return EINVAL;
	if (!ep_valid(m, ep))
		return ENOENT;
	if (!(c = cmd_new(CMD_DTMF, ep)))
		return ENOMEM;
	c->ev = (uint8_t)code;
	c->ms = (uint16_t)(ms < DTMF_MS_MIN ? DTMF_MS_MIN :
			   ms > DTMF_MS_MAX ? DTMF_MS_MAX : ms);
	cmd_push(m, c);
	return 0;
}

int media_record_start(struct media *m, media_ep_t a, media_ep_t b,
		       const char *path, int64_t min_ms, uint64_t tag)
{
	struct media_rec *r = NULL;
	struct media_cmd *c;
	int e;

	if (!ep_valid(m, a) || !ep_valid(m, b))
		return ENOENT;
	if (a == b || !path || !*path)
		return EINVAL;
	if ((e = media_rec_new(m, &r, path, min_ms, tag)))
		return e;
	if (!(c = cmd_new(CMD_RECORD, a))) {
		media_rec_discard(r);
		return ENOMEM;
	}
	c->b = b;
	c->rec = r;
	cmd_push(m, c);
	return 0;
}

int media_record_stop(struct media *m, media_ep_t ep, bool discard)
{
	struct media_cmd *c;

	if (!ep_valid(m, ep))
		return ENOENT;
	if (!(c = cmd_new(CMD_RECSTOP, ep)))
		return ENOMEM;
	c->discard = discard;
	cmd_push(m, c);
	return 0;
}

int media_set_timeout(struct media *m, int64_t ms)
{
	struct media_cmd *c;

	if (!m || ms < 0)
		return EINVAL;
	if (!(c = cmd_new(CMD_TIMEOUT, MEDIA_EP_NONE)))
		return ENOMEM;
	c->val = ms;
	cmd_push(m, c);
	return 0;
}

/* ---- events ------------------------------------------------------------------ */

void media_event_post(struct media *m, const struct media_event *ev)
{
	struct media_evq *q = malloc(sizeof(*q));
	uint64_t one = 1;

	if (!q) {
		log_err("out of memory: a media event is lost");
		return;
	}
	q->next = NULL;
	q->ev = *ev;
	pthread_mutex_lock(&m->ev_lock);
	if (m->ev_tail)
		m->ev_tail->next = q;
	else
		m->ev_head = q;
	m->ev_tail = q;
	pthread_mutex_unlock(&m->ev_lock);
	if (write(m->ev_fd, &one, sizeof(one)) < 0)
		return;         /* the counter is full: readable anyway */
}

int media_event_fd(const struct media *m)
{
	return m ? m->ev_fd : -1;
}

size_t media_events(struct media *m, struct media_event *ev, size_t max)
{
	uint64_t cnt, one = 1;
	size_t n = 0;

	if (!m)
		return 0;
	/* reset first: a post after this read makes the fd readable again */
	if (read(m->ev_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		log_warn("eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&m->ev_lock);
	while (n < max && m->ev_head) {
		struct media_evq *q = m->ev_head;

		m->ev_head = q->next;
		ev[n++] = q->ev;
		free(q);
	}
	if (!m->ev_head)
		m->ev_tail = NULL;
	else if (write(m->ev_fd, &one, sizeof(one)) < 0)
		log_warn("eventfd write: %s", strerror(errno));
	pthread_mutex_unlock(&m->ev_lock);
	return n;
}
