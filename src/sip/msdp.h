/*
 * msdp.h: the SDP the B2BUA needs: parse a peer's audio description (via
 * sofia's parser) and build our own offers and answers pointing at the
 * relay. Only G.711 and telephone-event are spoken, over RTP/AVP or
 * RTP/SAVP with SDES keys (RFC 4568 a=crypto, AES_CM_128_HMAC_SHA1_80 and
 * _32, inline keys without MKI).
 */
#ifndef SIPCRM_MSDP_H
#define SIPCRM_MSDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "media/media.h"        /* the SRTP suites and key length */

enum msdp_mode { MSDP_SENDRECV, MSDP_SENDONLY, MSDP_RECVONLY, MSDP_INACTIVE };

#define MSDP_MAX_CRYPTO 4

/* One a=crypto line. key is secret: never log it (see msdp_redact()). */
struct msdp_crypto {
	unsigned tag;                   /* 1..999999999 */
	enum media_srtp_suite suite;
	uint8_t key[MEDIA_SRTP_KEY_LEN];
};

struct msdp_info {
	struct sockaddr_storage rtp;    /* the peer's RTP address */
	struct sockaddr_storage rtcp;   /* its RTCP address (a=rtcp or port+1) */
	int pt;                         /* the G.711 payload type chosen: 0 or 8 */
	int te_pt;                      /* telephone-event payload type, -1: none */
	enum msdp_mode mode;
	bool hold;                      /* c=0.0.0.0 or sendonly/inactive */
	uint64_t sess_id, version;      /* o= line: a repeated version is a
					   refresh with nothing changed */
	bool savp;                      /* m= profile RTP/SAVP (else RTP/AVP) */
	size_t ncrypto;                 /* usable a=crypto lines, in order;
					   lines with a suite, MKI, key length
					   or session parameter we do not
					   support are left out */
	struct msdp_crypto crypto[MSDP_MAX_CRYPTO];
};

/*
 * Parses body and picks the first G.711 codec of the peer's list that
 * codecs (enum conf_codec bits) allows, in the first audio stream over
 * RTP/AVP or RTP/SAVP. Returns 0, EINVAL (no usable SDP or no audio) or
 * ENOTSUP (no codec or profile in common: answer 488).
 */
int msdp_parse(const char *body, size_t len, unsigned codecs,
	       struct msdp_info *out);

/*
 * Writes an SDP with one audio stream at ip:port, payload types pts (G.711)
 * and te_pt (telephone-event, -1 for none). Returns the length or -1.
 */
int msdp_build(char *buf, size_t size, const char *ip, uint16_t port,
	       const int *pts, size_t npts, int te_pt, enum msdp_mode mode,
	       uint64_t sess_id, uint64_t version);

/* Everything msdp_write() puts in our SDP. */
struct msdp_out {
	const char *ip;
	uint16_t port;
	const int *pts;                 /* G.711 payload types, at most 4 */
	size_t npts;
	int te_pt;                      /* telephone-event, -1: none */
	enum msdp_mode mode;
	uint64_t sess_id, version;
	bool savp;                      /* RTP/SAVP instead of RTP/AVP */
	const struct msdp_crypto *crypto;       /* a=crypto lines, in order */
	size_t ncrypto;
};

/* msdp_build() with SRTP: returns the length or -1 if it does not fit. */
int msdp_write(char *buf, size_t size, const struct msdp_out *o);

/*
 * plain, an SDP of ours (msdp_write, RTP/AVP), as RTP/SAVP with the a=crypto
 * lines c: returns the length or -1.
 */
int msdp_secure(char *dst, size_t size, const char *plain,
		const struct msdp_crypto *c, size_t n);

/* The mode to answer an offer with (sendonly -> recvonly, ...). */
enum msdp_mode msdp_answer_mode(enum msdp_mode offered);

/* "AES_CM_128_HMAC_SHA1_80", ...; NULL for MEDIA_SRTP_OFF. */
const char *msdp_suite_name(enum media_srtp_suite s);

/*
 * Our offer's crypto lines, each with a fresh key (RAND_bytes): tag 1
 * AES_CM_128_HMAC_SHA1_80, tag 2 AES_CM_128_HMAC_SHA1_32. Returns how many
 * (at most max), or -1 if no random bytes could be had.
 */
int msdp_crypto_offer(struct msdp_crypto *c, size_t max);

/*
 * Our answer to crypto line theirs: its tag and suite with a fresh key.
 * Returns 0 or EIO.
 */
int msdp_crypto_answer(const struct msdp_crypto *theirs, struct msdp_crypto *ours);

/* The line of list with this tag, or NULL. */
const struct msdp_crypto *msdp_crypto_find(const struct msdp_crypto *list,
					   size_t n, unsigned tag);

/*
 * The engine's keys for one leg, from our line and the peer's (same tag in
 * an offer/answer pair). Returns 0, or EINVAL when the suites differ.
 */
int msdp_srtp_keys(const struct msdp_crypto *ours, const struct msdp_crypto *theirs,
		   struct media_srtp *out);

/*
 * Copies text (an SDP or a whole SIP message) to dst with every inline
 * key replaced by "[redacted]", for logging. Always NUL-terminates when
 * size > 0; returns the length written.
 */
size_t msdp_redact(char *dst, size_t size, const char *text, size_t len);

#endif
