/*
 * media_int.h: what media.c and prompt.c share. Not for other modules.
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
#define MEDIA_RX_BUF 2048       /* larger datagrams are dropped (MSG_TRUNC) */

/*
 * The part of a table entry that any thread may read. live is 0 (free),
 * 1 (being bound or being closed) or the handle of the ep using the pair;
 * the counters are copies of the engine's, stored after every batch.
 */
struct media_slot {
	_Atomic uint32_t live;
	uint16_t gen;                   /* last generation; under alloc_lock */
	_Atomic uint64_t rx_packets, tx_packets, rx_bytes, tx_bytes;
	_Atomic uint64_t lost, dropped;
	_Atomic int64_t last_rx_ms;
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

	/* engine side */
	pthread_t thread;
	bool running;
	int epfd, tfd;
	bool tick_armed;
	struct media_ep *eps;
	uint32_t *playing;
	uint32_t nplaying;
	uint64_t rng;
	int64_t now;                    /* monotonic ms of this loop pass */
	struct media_rx *rx;
	struct media_tx tx;
	uint8_t pbuf[12 + MEDIA_FRAME];
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

/* ---- the packet path (media_rtp.c), engine thread only ------------------ */

/* Points the receive batch at its buffers; once, at start. */
void media_rtp_init(struct media *m);
/* One readable socket of e (NULL: stale event, ignored). */
void media_rtp_input(struct media *m, struct media_ep *e, int rtcp);
/* The 20 ms playout timer fired. */
void media_rtp_tick(struct media *m);
/* Recomputes how packets arriving on e are forwarded to its partner. */
void media_rtp_fwd(struct media_ep *e);
/* Ends e's bridge, if any; both sides go silent. */
void media_rtp_unbridge(struct media_ep *e);
/* Starts first then loop on e, taking over both references; NULL, NULL
 * stops playing. Drops the references of what played before. */
void media_rtp_play(struct media *m, struct media_ep *e,
		    struct media_prompt *first, struct media_prompt *loop);

#endif
