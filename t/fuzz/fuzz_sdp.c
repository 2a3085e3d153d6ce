/*
 * fuzz_sdp.c: msdp_parse on any body, then the B2BUA's rewrite: our
 * answer (or re-offer) built by msdp_build from what was parsed must fit,
 * must parse back with msdp_parse, and must say what we meant (payload
 * type, telephone-event, direction, our address and port). A peer's SDP
 * that makes us send an SDP we cannot read ourselves is a bug, so that
 * aborts.
 *
 * FUZZ_SKIP_KNOWN=1 steps around sofia-sip's sdp_parse loop (see
 * fuzz_known.h).
 *
 * The first byte chooses the codecs allowed (enum conf_codec bits, as
 * [media] codecs would) and whether our side is IPv6; the rest is the
 * body.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "fuzz_known.h"
#include "log.h"
#include "conf.h"
#include "sip/msdp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *spec = getenv("FUZZ_LOG");

	(void)argc;
	(void)argv;
	log_force_level(spec ? spec : "error");
	return 0;
}

static void check_port(const struct sockaddr_storage *ss, uint16_t port)
{
	uint16_t got = ss->ss_family == AF_INET6 ?
		       ((const struct sockaddr_in6 *)ss)->sin6_port :
		       ((const struct sockaddr_in *)ss)->sin_port;

	if (ntohs(got) != port)
		abort();
}

/* Our SDP for what the peer offered, read back. */
static void rebuild(const struct msdp_info *peer, unsigned codecs, bool v6)
{
	const char *ip = v6 ? "::1" : "127.0.0.1";
	enum msdp_mode mode = msdp_answer_mode(peer->mode);
	struct msdp_info back;
	char buf[1024];
	int pts[2] = { peer->pt, peer->pt == 8 ? 0 : 8 };
	int n, e;

	n = msdp_build(buf, sizeof(buf), ip, 20000, pts, 2, peer->te_pt, mode,
		       peer->sess_id, peer->version + 1);
	if (n < 0 || (size_t)n >= sizeof(buf) || strlen(buf) != (size_t)n)
		abort();
	e = msdp_parse(buf, (size_t)n, codecs, &back);
	if (e) {
		fprintf(stderr, "fuzz_sdp: our own SDP does not parse (%d):\n%s\n",
			e, buf);
		abort();
	}
	if (back.pt != peer->pt || back.mode != mode ||
	    back.rtp.ss_family != (v6 ? AF_INET6 : AF_INET)) {
		fprintf(stderr, "fuzz_sdp: our SDP reads back as pt %d mode %d, "
			"meant pt %d mode %d:\n%s\n", back.pt, back.mode, peer->pt,
			mode, buf);
		abort();
	}
	check_port(&back.rtp, 20000);
	/* a refresh is recognised by the version: it must survive the trip */
	if (back.sess_id != peer->sess_id || back.version != peer->version + 1)
		abort();
	if (peer->te_pt >= 0 && back.te_pt != peer->te_pt) {
		fprintf(stderr, "fuzz_sdp: telephone-event %d reads back as %d:\n%s\n",
			peer->te_pt, back.te_pt, buf);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned codecs;
	bool v6;
	struct msdp_info info;
	char *body;

	if (size < 1)
		return 0;
	codecs = data[0] & (CONF_CODEC_PCMA | CONF_CODEC_PCMU);
	if (!codecs)
		codecs = CONF_CODEC_PCMA | CONF_CODEC_PCMU;
	v6 = data[0] & 0x80;
	/* sofia's SDP parser reads the body as it sits in the message: not
	   NUL-terminated, so give it exactly size - 1 bytes on the heap */
	body = malloc(size - 1 ? size - 1 : 1);
	if (!body)
		return 0;
	memcpy(body, data + 1, size - 1);
	if (fuzz_skip_known() && fuzz_sdp_would_loop(body, size - 1)) {
		free(body);
		return 0;
	}
	if (msdp_parse(body, size - 1, codecs, &info) == 0) {
		if ((info.pt != 0 && info.pt != 8) || info.te_pt > 127 ||
		    (info.pt == 0 && !(codecs & CONF_CODEC_PCMU)) ||
		    (info.pt == 8 && !(codecs & CONF_CODEC_PCMA)))
			abort();
		rebuild(&info, codecs, v6);
	}
	free(body);
	return 0;
}
