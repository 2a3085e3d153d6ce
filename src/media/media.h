/*
 * media.h: the RTP engine. It runs on its own thread (epoll, recvmmsg /
 * sendmmsg, a 20 ms playout tick) and owns every media socket. The
 * signalling thread drives it through commands and reads counters; it never
 * touches the sockets or the engine's structs.
 *
 * An endpoint (ep) is one RTP/RTCP port pair facing one SIP leg. An ep can
 * play a prompt (the greeting, then ringback) to its peer, or be bridged to
 * another ep so that media is relayed between the two peers, transcoded
 * between PCMA and PCMU when the two sides chose different laws.
 */
#ifndef SIPCRM_MEDIA_H
#define SIPCRM_MEDIA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct media;
struct media_prompt;

/* An endpoint handle: an index and a generation, safe to keep after free. */
typedef uint32_t media_ep_t;
#define MEDIA_EP_NONE 0u

enum media_codec { MEDIA_PCMU = 0, MEDIA_PCMA = 8 };  /* RTP payload types */

/* What a peer negotiated in SDP. */
struct media_peer {
	struct sockaddr_storage rtp;    /* where to send RTP */
	struct sockaddr_storage rtcp;   /* where to send RTCP */
	enum media_codec codec;         /* the law this peer sends and receives */
	int pt;                         /* its payload type number (0 or 8) */
	int te_pt;                      /* telephone-event payload type, -1: none */
	bool sendrecv;                  /* false: on hold (sendonly/inactive) */
};

struct media_stats {
	uint64_t rx_packets, tx_packets;
	uint64_t rx_bytes, tx_bytes;
	uint64_t lost;                  /* sequence gaps seen */
	uint64_t dropped;               /* from unexpected sources, malformed */
	int64_t last_rx_ms;             /* monotonic ms of the last RTP in, 0: none */
};

/*
 * Starts the engine thread. ip is bound for RTP; ports [lo, hi] are used in
 * even/odd pairs. Returns 0 or an errno value.
 */
int media_alloc(struct media **mp, const char *ip, uint16_t lo, uint16_t hi);
/* Stops the thread and closes every socket; NULL safe. */
struct media *media_free(struct media *m);

/*
 * Loads a WAV file (PCM 8/16/24/32-bit or float, any rate, any channel
 * count), mixes it to mono, resamples to 8 kHz and stores ready 20 ms PCMA
 * and PCMU frames. Immutable and reference counted: eps keep the prompt they
 * play even when a reload replaces it. Returns 0, ENOENT, EINVAL (not a
 * usable WAV, with a reason in err) or ENOMEM.
 */
int media_prompt_load(struct media_prompt **pp, const char *path,
		      char *err, size_t errsz);
/* A 425 Hz ringback tone, 1 s on, 4 s off (one 5 s cycle). */
int media_prompt_tone(struct media_prompt **pp);
struct media_prompt *media_prompt_ref(struct media_prompt *p);
struct media_prompt *media_prompt_deref(struct media_prompt *p);
/* Length in ms. */
uint32_t media_prompt_ms(const struct media_prompt *p);

/*
 * Binds a free RTP/RTCP port pair and hands it to the engine. Returns 0,
 * EADDRINUSE when the range is exhausted (answer 503), or an errno value.
 * Called on the signalling thread; *port is the RTP port for the SDP.
 */
int media_ep_alloc(struct media *m, media_ep_t *ep, uint16_t *port);

/* Sets or changes the remote peer (an SDP answer or offer arrived). */
int media_ep_set_peer(struct media *m, media_ep_t ep, const struct media_peer *p);

/*
 * Plays first (once) then loop (repeated) to the ep's peer, until the ep
 * is bridged or stopped. Either may be NULL. Packets are 20 ms, with one
 * SSRC, consecutive sequence numbers and timestamps, the marker bit on the
 * first. The engine takes references on the prompts.
 */
int media_ep_play(struct media *m, media_ep_t ep, struct media_prompt *first,
		  struct media_prompt *loop);

/*
 * Relays between a and b from now on: RTP and RTCP in both directions,
 * transcoding PCMA<->PCMU when their codecs differ, mapping telephone-event
 * payload types (dropping DTMF towards a peer without one). Stops any
 * prompt on a and b; a's outgoing stream keeps its SSRC and continues its
 * sequence numbers and timestamps (so the caller hears no jump).
 */
int media_bridge(struct media *m, media_ep_t a, media_ep_t b);
/* Undoes a bridge (both eps go silent). */
int media_unbridge(struct media *m, media_ep_t a);

/* Closes the ports; the handle becomes invalid. NULL safe (MEDIA_EP_NONE). */
void media_ep_free(struct media *m, media_ep_t ep);

/* Counters for one ep (zeroes for a stale handle). Any thread. */
void media_ep_stats(const struct media *m, media_ep_t ep, struct media_stats *st);

/* Free port pairs left, for metrics and 503 decisions. */
size_t media_ports_free(const struct media *m);

#endif
