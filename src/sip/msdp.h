/*
 * msdp.h: the SDP the B2BUA needs: parse a peer's audio description (via
 * sofia's parser) and build our own offers and answers pointing at the
 * relay. Only G.711 and telephone-event are spoken.
 */
#ifndef SIPCRM_MSDP_H
#define SIPCRM_MSDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum msdp_mode { MSDP_SENDRECV, MSDP_SENDONLY, MSDP_RECVONLY, MSDP_INACTIVE };

struct msdp_info {
	struct sockaddr_storage rtp;    /* the peer's RTP address */
	struct sockaddr_storage rtcp;   /* its RTCP address (a=rtcp or port+1) */
	int pt;                         /* the G.711 payload type chosen: 0 or 8 */
	int te_pt;                      /* telephone-event payload type, -1: none */
	enum msdp_mode mode;
	bool hold;                      /* c=0.0.0.0 or sendonly/inactive */
	uint64_t sess_id, version;      /* o= line: a repeated version is a
					   refresh with nothing changed */
};

/*
 * Parses body and picks the first G.711 codec of the peer's list that
 * codecs (enum conf_codec bits) allows. Returns 0, EINVAL (no usable SDP
 * or no audio) or ENOTSUP (no codec in common: answer 488).
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

/* The mode to answer an offer with (sendonly -> recvonly, ...). */
enum msdp_mode msdp_answer_mode(enum msdp_mode offered);

#endif
