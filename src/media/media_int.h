/*
 * media_int.h: what the media engine's files share (media.c, media_rtp.c,
 * media_play.c, media_srtp.c, media_rec.c, prompt.c). Not for other
 * modules, the tests aside.
 */
#ifndef SIPCRM_MEDIA_INT_H
#define SIPCRM_MEDIA_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "media.h"

#define MEDIA_FRAME 160         /* samples (= bytes of G.711) per 20 ms */

/*
 * A prompt never changes after it is built, so the engine thread and the
 * signalling thread can share it; only the reference count moves.
 */
struct media_prompt {
	atomic_uint refs;
	uint32_t nframes;
	uint8_t *pcma;          /* nframes * MEDIA_FRAME bytes */
	uint8_t *pcmu;
	uint8_t data[];         /* both arrays, in the same allocation */
};

static inline const uint8_t *media_prompt_frame(const struct media_prompt *p,
						enum media_codec c, uint32_t i)
{
	return (c == MEDIA_PCMA ? p->pcma : p->pcmu) + (size_t)i * MEDIA_FRAME;
}

/* ---- the engine (media.c) ---------------------------------------------- */

#define MEDIA_BATCH 32          /* datagrams per recvmmsg/sendmmsg */
#define MEDIA_RX_BUF 2048       /* one receive buffer */
/* Room kept behind every packet for what srtp_protect() appends (its
 * SRTP_MAX_TRAILER_LEN, plus the SRTCP index); larger datagrams are
 * dropped (MSG_TRUNC). */
#define MEDIA_TRAILER 148
#define MEDIA_RX_MAX (MEDIA_RX_BUF - MEDIA_TRAILER)
#define MEDIA_RTP_HDR 12
#define MEDIA_DTMF_Q 16         /* injected digits waiting, per ep */

/*
 * The part of a table entry that any thread may read. live is 0 (free),
 * 1 (being bound or being closed) or the handle of the ep using the pair;
 * the counters are copies of the engine's, stored after every batch.
 */
struct media_slot {
	_Atomic uint32_t live;
	uint16_t gen;                   /* last generation; under alloc_lock */
	_Atomic uint64_t rx_packets, tx_packets, rx_bytes, tx_bytes;
	_Atomic uint64_t lost, late, dropped, srtp_auth, srtp_replay;
	_Atomic int64_t last_rx_ms;
};

/* Every ep's counters added up by the engine; flushed to the metrics once
 * a second. */
struct media_totals {
	uint64_t rx_packets, tx_packets, rx_bytes, tx_bytes;
	uint64_t lost, late, dropped, srtp_auth, srtp_replay;
	uint64_t timeouts, dtmf_sent;
};

struct metric;

/* The Prometheus series of the engine (registered by media_alloc). */
struct media_metrics {
	struct metric *rx_packets, *tx_packets, *rx_bytes, *tx_bytes;
	struct metric *lost, *late, *dropped, *srtp_auth, *srtp_replay;
	struct metric *timeouts, *dtmf_sent;
	struct metric *rec_kept, *rec_discarded, *rec_failed, *rec_errors;
	struct metric *rec_dropped;
};

/* The stream we send to one peer: prompts and relayed packets alike. */
struct media_stream {
	uint32_t ssrc;
	uint16_t seq;                   /* last sent */
	uint32_t ts;                    /* last sent */
	int64_t ms;                     /* when */
	bool started;                   /* anything sent yet */
	bool mapped;                    /* relay offsets valid for in_ssrc */
	uint32_t in_ssrc;
	uint16_t seq_off;
	uint32_t ts_off;
};

/* RFC 4733 events being injected towards one peer (media_play.c). */
enum media_dtmf_state { DTMF_IDLE, DTMF_SEND, DTMF_GAP };

struct media_dtmf {
	uint8_t q_ev[MEDIA_DTMF_Q];     /* waiting digits (event codes) */
	uint16_t q_ms[MEDIA_DTMF_Q];
	uint8_t q_head, q_len;
	uint8_t state;                  /* enum media_dtmf_state */
	uint8_t ev;                     /* the event being sent */
	uint8_t ends;                   /* end packets sent so far (of 3) */
	uint8_t gap;                    /* ticks of silence before the next */
	uint32_t ts;                    /* the event's timestamp */
	uint32_t dur, total;            /* duration so far / wanted, 8 kHz */
};

struct media_rec;

/* What a recording takes from the packets arriving on one ep. Positions
 * are 8 kHz sample indexes from the recording's start. */
struct media_tap {
	struct media_rec *rec;          /* NULL: not recorded */
	uint8_t ch;                     /* 0 left, 1 right */
	bool anchored;
	uint32_t ssrc, ts0;             /* the RTP timestamp at pos0 */
	int64_t pos0;
	int64_t end;                    /* one past the last sample queued */
};

struct srtp_ctx_t_;

/* Engine-only state of one ep. Index = port pair. */
struct media_ep {
	media_ep_t h;                   /* 0: not in use */
	int fd[2];                      /* RTP, RTCP */
	bool has_peer;
	struct media_peer peer;
	struct sockaddr_storage dst[2]; /* the SDP address, or the latched one */
	socklen_t dstlen[2];
	bool latched[2];
	struct media_stream out;
	bool rx_started;                /* loss accounting of what arrives */
	uint32_t rx_ssrc;
	uint16_t rx_seq;                /* highest seen */
	struct media_ep *other;         /* bridge partner */
	uint8_t fwd_pt[128];            /* arriving pt -> sent pt; 0xFF: drop */
	const uint8_t *xlat_u, *xlat_a; /* for arriving PCMU / PCMA, or NULL */
	struct media_prompt *first, *loop, *cur;
	uint32_t frame;
	bool looping;                   /* cur is loop (first is done) */
	bool play_new;                  /* next frame starts a talkspurt */
	uint32_t play_pos;              /* index in playing[], or UINT32_MAX */
	struct media_dtmf dtmf;
	struct media_srtp srtp;         /* the keys in use (suite OFF: RTP) */
	struct srtp_ctx_t_ *srtp_in;    /* unprotects what the peer sends */
	struct srtp_ctx_t_ *srtp_out;   /* protects what we send */
	struct media_tap tap;
	int64_t idle_from;              /* media timeout counted from here */
	bool timed_out;                 /* reported, until media flows again */
	struct media_stats st;
};

struct media_rx {
	struct mmsghdr msg[MEDIA_BATCH];
	struct iovec iov[MEDIA_BATCH];
	struct sockaddr_storage src[MEDIA_BATCH];
	uint8_t buf[MEDIA_BATCH][MEDIA_RX_BUF];
};

struct media_tx {
	struct mmsghdr msg[MEDIA_BATCH];
	struct iovec iov[MEDIA_BATCH];
};

struct media_cmd;
struct media_evq;
struct media_recorder;

struct media {
	/* fixed at alloc */
	struct sockaddr_storage addr;   /* bind address, port 0 */
	socklen_t addrlen;
	uint16_t port0;                 /* RTP port of pair 0 */
	uint32_t npairs;
	struct media_slot *slots;
	atomic_size_t nfree;

	/* signalling side */
	pthread_mutex_t alloc_lock;
	uint32_t cursor;

	/* command queue */
	pthread_mutex_t q_lock;
	struct media_cmd *q_head, *q_tail;
	int evfd;
	atomic_bool stop;

	/* events to the signalling thread */
	pthread_mutex_t ev_lock;
	struct media_evq *ev_head, *ev_tail;
	int ev_fd;

	/* the recorder: created by the signalling thread on first use */
	struct media_recorder *rec;

	/* engine side */
	pthread_t thread;
	bool running;
	int epfd, tfd, hfd;             /* hfd: the 1 s housekeeping timer */
	bool tick_armed;
	struct media_ep *eps;
	uint32_t *playing;
	uint32_t nplaying;
	uint64_t rng;
	int64_t now;                    /* monotonic ms of this loop pass */
	struct media_rx *rx;
	struct media_tx tx;
	uint8_t pbuf[MEDIA_RTP_HDR + MEDIA_FRAME + MEDIA_TRAILER];
	int64_t timeout_ms;             /* media timeout, 0: off */
	struct media_recorder *rec_eng; /* the engine's copy of rec */
	struct media_totals tot, tot_flushed;
	struct media_metrics mx;
};

static inline uint64_t media_rng_next(struct media *m)
{
	/* xorshift64*: SSRCs and initial sequence numbers need to differ
	 * per call and be hard to guess, not to be cryptographic */
	m->rng ^= m->rng >> 12;
	m->rng ^= m->rng << 25;
	m->rng ^= m->rng >> 27;
	return m->rng * 0x2545F4914F6CDD1Dull;
}

static inline uint16_t media_rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t media_rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
		(uint32_t)p[2] << 8 | p[3];
}

static inline void media_wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void media_wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Timestamp advance after a pause: the wall time that passed, so that the
 * receiver's jitter buffer sees the real gap (at least one frame). */
static inline uint32_t media_ts_gap(const struct media_stream *o, int64_t now)
{
	int64_t ms = now - o->ms;

	if (ms < 20)
		ms = 20;
	if (ms > 3600 * 1000)
		ms = 3600 * 1000;
	return (uint32_t)ms * 8;
}

/* The ep's peer is known and not holding the call: it may be sent to. */
static inline bool media_can_send(const struct media_ep *e)
{
	return e && e->has_peer && e->peer.sendrecv;
}

/* Same address and port; the rest of the structures is not compared. */
static inline bool media_sa_same(const struct sockaddr_storage *a,
				 const struct sockaddr_storage *b)
{
	const struct sockaddr_in *a4 = (const void *)a, *b4 = (const void *)b;
	const struct sockaddr_in6 *a6 = (const void *)a, *b6 = (const void *)b;

	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET)
		return a4->sin_port == b4->sin_port &&
			a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	return a6->sin6_port == b6->sin6_port &&
		!memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr));
}

/* ---- media.c ------------------------------------------------------------- */

/* Queues an event for the signalling thread; engine or writer thread. */
void media_event_post(struct media *m, const struct media_event *ev);

/* ---- the packet path (media_rtp.c), engine thread only ------------------ */

/* Points the receive batch at its buffers; once, at start. */
void media_rtp_init(struct media *m);
/* One readable socket of e (NULL: stale event, ignored). */
void media_rtp_input(struct media *m, struct media_ep *e, int rtcp);
/*
 * The n datagrams (n <= 0: none) already in m->rx, as media_rtp_input
 * reads them from e's RTP or RTCP socket: msg[i].msg_len, msg_flags,
 * src[i] and msg_namelen tell each one's length, truncation and source.
 * t/fuzz/fuzz_rtp fills the batch itself, without a socket.
 */
void media_rtp_batch(struct media *m, struct media_ep *e, int rtcp, int n);
/* Recomputes how packets arriving on e are forwarded to its partner. */
void media_rtp_fwd(struct media_ep *e);
/* Ends e's bridge, if any; both sides go silent. */
void media_rtp_unbridge(struct media_ep *e);
/* Copies e's counters where other threads read them, adding what changed
 * to the engine's totals. */
void media_rtp_publish(struct media *m, const struct media_ep *e);
/* Reports bridges idle for m->timeout_ms; once a second. */
void media_rtp_timeouts(struct media *m);

/* ---- what we send on our own (media_play.c), engine thread only --------- */

/* The 20 ms playout timer fired. */
void media_rtp_tick(struct media *m);
/* Starts first then loop on e, taking over both references; NULL, NULL
 * stops playing. Drops the references of what played before. */
void media_rtp_play(struct media *m, struct media_ep *e,
		    struct media_prompt *first, struct media_prompt *loop);
/* Queues RFC 4733 event ev for ms towards e's peer. */
void media_dtmf_queue(struct media *m, struct media_ep *e, uint8_t ev,
		      uint16_t ms);
/* Injected events are being sent to e's peer (or wait to be). */
static inline bool media_dtmf_busy(const struct media_ep *e)
{
	return e->dtmf.state != DTMF_IDLE || e->dtmf.q_len;
}

/* ---- SRTP (media_srtp.c) -------------------------------------------------- */

/* libsrtp's global init, once per process: 0 or EIO. */
int media_srtp_init(void);
bool media_srtp_suite_ok(enum media_srtp_suite s);
/* Engine thread: puts keys s in force on e. Sessions whose keys did not
 * change are kept. A session that cannot be created leaves e failing
 * closed: everything to and from the peer is dropped. */
void media_srtp_apply(struct media_ep *e, const struct media_srtp *s);
/* Frees e's sessions and wipes its keys. */
void media_srtp_clear(struct media_ep *e);
/* In place; *len changes. false: drop the packet (counted in e->st). */
bool media_srtp_unprotect(struct media_ep *e, uint8_t *p, size_t *len,
			  bool rtcp);
bool media_srtp_protect(struct media_ep *e, uint8_t *p, size_t *len,
			bool rtcp);

/* ---- the recorder (media_rec.c) -------------------------------------------- */

/* Signalling thread: a recording not yet started; starts the writer
 * thread on first use. */
int media_rec_new(struct media *m, struct media_rec **rp, const char *path,
		  int64_t min_ms, uint64_t tag);
/* Frees a recording that the engine never started. */
void media_rec_discard(struct media_rec *r);
/* Engine thread: a recording that cannot start (an ep is gone): its
 * MEDIA_EV_RECORDED event says err, then it is freed. */
void media_rec_refuse(struct media *m, struct media_rec *r, media_ep_t a,
		      media_ep_t b, int err);
/* Engine thread: a starts feeding the left channel, b the right. */
void media_rec_begin(struct media *m, struct media_rec *r, struct media_ep *a,
		     struct media_ep *b);
/* Engine thread: detaches r's eps and hands r to the writer to finish. */
void media_rec_end(struct media *m, struct media_rec *r, bool discard);
/* Engine thread: an accepted, decrypted RTP packet arrived on e. */
void media_rec_tap(struct media *m, struct media_ep *e, const uint8_t *p,
		   size_t hlen, size_t plen);
/* Engine thread, once a second: retries what the full ring refused. */
void media_rec_house(struct media *m);
/* After the engine has stopped: lets the writer finish, then frees it. */
void media_rec_shutdown(struct media *m);

#endif
