/*
 * media.h: the RTP engine. It runs on its own thread (epoll, recvmmsg /
 * sendmmsg, a 20 ms playout tick) and owns every media socket. The
 * signalling thread drives it through commands and reads counters; it never
 * touches the sockets or the engine's structs.
 *
 * An endpoint (ep) is one RTP/RTCP port pair facing one SIP leg. An ep can
 * play a prompt (the greeting, then ringback) to its peer, or be bridged to
 * another ep so that media is relayed between the two peers, transcoded
 * between PCMA and PCMU when the two sides chose different laws. Each ep
 * speaks RTP or SDES-keyed SRTP to its own peer, so a bridge converts
 * between the two. A bridged pair can be recorded to a stereo WAV file by a
 * writer thread, DTMF can be injected towards a peer, and a bridge that
 * carries no RTP for media_set_timeout() is reported through the event
 * queue (media_event_fd(), media_events()).
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

/* SDES crypto suites (RFC 4568); SRTCP always carries an 80-bit tag. */
enum media_srtp_suite {
	MEDIA_SRTP_OFF = 0,
	MEDIA_SRTP_AES_CM_128_HMAC_SHA1_80,
	MEDIA_SRTP_AES_CM_128_HMAC_SHA1_32,
};

#define MEDIA_SRTP_KEY_LEN 30   /* 128-bit master key then 112-bit salt */

/*
 * The keys of one SRTP leg: ours protects what we send (the key in our
 * a=crypto line), the peer's authenticates and decrypts what arrives (the
 * key in its line). Key material: never log it.
 */
struct media_srtp {
	enum media_srtp_suite suite;    /* OFF: plain RTP */
	uint8_t tx_key[MEDIA_SRTP_KEY_LEN];
	uint8_t rx_key[MEDIA_SRTP_KEY_LEN];
};

/* What a peer negotiated in SDP. */
struct media_peer {
	struct sockaddr_storage rtp;    /* where to send RTP */
	struct sockaddr_storage rtcp;   /* where to send RTCP */
	enum media_codec codec;         /* the law this peer sends and receives */
	int pt;                         /* its payload type number (0 or 8) */
	int te_pt;                      /* telephone-event payload type, -1: none */
	bool sendrecv;                  /* false: on hold (sendonly/inactive) */
	struct media_srtp srtp;         /* zeroes: plain RTP */
};

struct media_stats {
	uint64_t rx_packets, tx_packets;
	uint64_t rx_bytes, tx_bytes;
	uint64_t lost;                  /* sequence gaps seen */
	uint64_t late;                  /* arrived after a later one (or twice) */
	uint64_t dropped;               /* from unexpected sources, malformed,
					   DTMF towards a peer without it */
	uint64_t srtp_auth;             /* SRTP/SRTCP failing authentication */
	uint64_t srtp_replay;           /* SRTP/SRTCP replayed or too old */
	int64_t last_rx_ms;             /* monotonic ms of the last RTP in, 0: none */
};

/* What the engine reports to the signalling thread (media_events()). */
enum media_event_kind {
	MEDIA_EV_TIMEOUT,       /* a bridge carried no RTP for the timeout */
	MEDIA_EV_RECORDED,      /* a recording segment is finished */
};

struct media_event {
	enum media_event_kind kind;
	media_ep_t a, b;        /* the bridged (TIMEOUT) or recorded pair */
	uint64_t tag;           /* RECORDED: media_record_start()'s tag */
	int err;                /* RECORDED: 0, or why the file was lost */
	bool kept;              /* RECORDED: the file exists */
	int64_t ms;             /* TIMEOUT: idle for; RECORDED: length */
};

/*
 * Starts the engine thread. ip is bound for RTP; ports [lo, hi] are used in
 * even/odd pairs. Registers the engine's Prometheus series (sipcrm_rtp_*,
 * sipcrm_srtp_failures_total, sipcrm_media_timeouts_total,
 * sipcrm_dtmf_injected_total, sipcrm_recording*), updated once a second.
 * Signalling thread. Returns 0 or an errno value.
 */
int media_alloc(struct media **mp, const char *ip, uint16_t lo, uint16_t hi);
/*
 * Stops the thread and closes every socket; recordings in progress are
 * finished and written (their events are dropped). NULL safe.
 */
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

/*
 * Sets or changes the remote peer (an SDP answer or offer arrived),
 * SRTP keys included: packets arriving after this command are checked
 * against the new keys, so set the peer and its keys together. Keys that
 * did not change keep their SRTP sessions (rollover counters and replay
 * windows survive a re-INVITE). Returns 0, ENOENT (stale handle), EINVAL
 * (bad codec, address family or suite) or ENOMEM.
 */
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

/*
 * Sends RFC 4733 event digit (0-9 * # A-D) lasting ms (clamped to
 * 40..5000) to ep's peer with its telephone-event payload type, in ep's
 * outgoing stream (same SSRC, sequence and timestamps going on); media
 * relayed towards that peer pauses meanwhile. Digits queue (up to 16).
 * A peer without telephone-event or on hold gets nothing (counted as
 * dropped). Returns 0, EINVAL (not a digit), ENOENT or ENOMEM.
 */
int media_ep_dtmf(struct media *m, media_ep_t ep, char digit, unsigned ms);

/*
 * Records what the peers of a (left channel) and b (right) send, as a
 * stereo 8 kHz 16-bit PCM WAV at path (folders are created), aligned in
 * time. The file is written by a writer thread; nothing blocks the engine.
 * If a or b is already recorded, that recording ends here and this one
 * starts, with no audio lost in between: this is how a transfer starts a
 * new segment. When the recording ends (media_record_stop(), or either ep
 * freed) a MEDIA_EV_RECORDED event carries tag; a recording shorter than
 * min_ms, or one that could not be written (err: ENOSPC, EACCES...; logged
 * once and counted in the metrics), leaves no file; one whose ep was freed
 * before it could start ends at once with err ENOENT. Returns 0, ENOENT,
 * EINVAL or ENOMEM.
 */
int media_record_start(struct media *m, media_ep_t a, media_ep_t b,
		       const char *path, int64_t min_ms, uint64_t tag);
/* Ends the recording that ep is part of; discard: delete the file. */
int media_record_stop(struct media *m, media_ep_t ep, bool discard);
/*
 * The recording path convention: dir/YYYY-MM-DD/CALLID.wav (seg 0 or 1),
 * dir/YYYY-MM-DD/CALLID-SEG.wav after, with the UTC date of wall_ms.
 * Characters of call_id outside [A-Za-z0-9._-] become '_'. Returns the
 * length or -1 if it does not fit.
 */
int media_record_path(char *buf, size_t size, const char *dir,
		      const char *call_id, unsigned seg, int64_t wall_ms);

/*
 * Bridged pairs whose peers both sent no RTP for ms (counted from the last
 * packet, the bridge, or the end of a hold, whichever is latest) are
 * reported once as MEDIA_EV_TIMEOUT, checked every second. A pair where
 * either peer is on hold (sendrecv false) is exempt. 0 turns it off (the
 * default). Returns 0, EINVAL (negative) or ENOMEM.
 */
int media_set_timeout(struct media *m, int64_t ms);

/*
 * An eventfd that is readable while events are queued: register it on the
 * signalling loop and call media_events() when it fires.
 */
int media_event_fd(const struct media *m);
/* Takes up to max queued events (oldest first); returns how many. */
size_t media_events(struct media *m, struct media_event *ev, size_t max);

/* 30 bytes of fresh key material from OpenSSL's RAND_bytes: 0 or EIO. */
int media_srtp_keygen(uint8_t key[MEDIA_SRTP_KEY_LEN]);

/* Closes the ports; the handle becomes invalid. NULL safe (MEDIA_EP_NONE). */
void media_ep_free(struct media *m, media_ep_t ep);

/* Counters for one ep (zeroes for a stale handle). Any thread. */
void media_ep_stats(const struct media *m, media_ep_t ep, struct media_stats *st);

/* Free port pairs left, for metrics and 503 decisions. */
size_t media_ports_free(const struct media *m);

#endif
