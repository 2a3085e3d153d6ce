/*
 * media_test.h: what the media engine's TAP tests share: loopback UDP
 * sockets standing in for the phones, RTP packets built and parsed by
 * hand, waiting for the engine's counters and events. Include tap.h first.
 */
#ifndef SIPCRM_MEDIA_TEST_H
#define SIPCRM_MEDIA_TEST_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clk.h"
#include "media/media.h"

#define MT_WAIT_MS 1000         /* longest wait for any one packet */
#define MT_UNUSED __attribute__((unused))

/* One SIP leg: its two sockets (the phone) and its ep on the engine. */
struct mt_side {
	int rtp, rtcp;
	struct sockaddr_storage a_rtp, a_rtcp;  /* the sockets' addresses */
	media_ep_t ep;
	uint16_t port;
	struct sockaddr_storage ep_rtp, ep_rtcp;        /* the ep's ports */
};

struct mt_pkt {
	int len;
	uint8_t b[2048];
	int pt, marker;
	uint16_t seq;
	uint32_t ts, ssrc;
	int64_t at;
};

static MT_UNUSED struct sockaddr_storage mt_lo(uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return ss;
}

static MT_UNUSED int mt_udp(struct sockaddr_storage *a)
{
	socklen_t len = sizeof(*a);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	*a = mt_lo(0);
	if (fd < 0 || bind(fd, (struct sockaddr *)a, sizeof(struct sockaddr_in)) ||
	    getsockname(fd, (struct sockaddr *)a, &len)) {
		perror("udp socket");
		exit(1);
	}
	return fd;
}

static MT_UNUSED void mt_msleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/*
 * An engine on 127.0.0.1 with at least npairs pairs somewhere in
 * 22000-29999. The machine may be shared: a range is given 100 pairs or
 * more, since the engine skips the ports someone else holds.
 */
static MT_UNUSED struct media *mt_engine(unsigned npairs)
{
	struct media *m = NULL;

	if (npairs < 100)
		npairs = 100;
	for (int t = 0; t < 20 && !m; t++) {
		uint16_t base = (uint16_t)(22000 + 2 * (rand() % (4000 - npairs)));

		if (media_alloc(&m, "127.0.0.1", base, (uint16_t)(base + 2 * npairs - 1)))
			m = NULL;
	}
	return m;
}

/* Says so (a failing test) when no ep can be had. */
static MT_UNUSED int mt_side_open(struct media *m, struct mt_side *s)
{
	int e;

	s->rtp = mt_udp(&s->a_rtp);
	s->rtcp = mt_udp(&s->a_rtcp);
	if ((e = media_ep_alloc(m, &s->ep, &s->port))) {
		ok(0, "an ep is allocated (%s)", strerror(e));
		return -1;
	}
	s->ep_rtp = mt_lo(s->port);
	s->ep_rtcp = mt_lo((uint16_t)(s->port + 1));
	return 0;
}

static MT_UNUSED void mt_side_close(struct mt_side *s)
{
	close(s->rtp);
	close(s->rtcp);
}

/* The peer as a phone at s's sockets, RTP (srtp NULL) or SRTP. */
static MT_UNUSED int mt_set_peer(struct media *m, const struct mt_side *s,
				 enum media_codec codec, int te_pt, bool sendrecv,
				 const struct media_srtp *srtp)
{
	struct media_peer p = { .codec = codec, .pt = codec, .te_pt = te_pt,
				.sendrecv = sendrecv };

	p.rtp = s->a_rtp;
	p.rtcp = s->a_rtcp;
	if (srtp)
		p.srtp = *srtp;
	return media_ep_set_peer(m, s->ep, &p);
}

/* Writes an RTP header and payload into b; returns the length. */
static MT_UNUSED size_t mt_rtp(uint8_t *b, int pt, bool mark, uint16_t seq,
			       uint32_t ts, uint32_t ssrc, const uint8_t *pl, size_t n)
{
	b[0] = 0x80;
	b[1] = (uint8_t)((mark ? 0x80 : 0) | pt);
	b[2] = (uint8_t)(seq >> 8);
	b[3] = (uint8_t)seq;
	for (int i = 0; i < 4; i++) {
		b[4 + i] = (uint8_t)(ts >> (24 - 8 * i));
		b[8 + i] = (uint8_t)(ssrc >> (24 - 8 * i));
	}
	memcpy(b + 12, pl, n);
	return 12 + n;
}

static MT_UNUSED void mt_sendto(int fd, const struct sockaddr_storage *to,
				const void *b, size_t n)
{
	if (sendto(fd, b, n, 0, (const struct sockaddr *)to,
		   sizeof(struct sockaddr_in)) < 0)
		perror("sendto");
}

static MT_UNUSED void mt_rtp_send(int fd, const struct sockaddr_storage *to, int pt,
				  uint16_t seq, uint32_t ts, uint32_t ssrc,
				  const uint8_t *pl, size_t n)
{
	uint8_t b[12 + 1500];

	mt_sendto(fd, to, b, mt_rtp(b, pt, false, seq, ts, ssrc, pl, n));
}

static MT_UNUSED void mt_parse(struct mt_pkt *p)
{
	const uint8_t *b = p->b;

	if (p->len >= 12) {
		p->pt = b[1] & 0x7F;
		p->marker = b[1] >> 7;
		p->seq = (uint16_t)(b[2] << 8 | b[3]);
		p->ts = (uint32_t)b[4] << 24 | (uint32_t)b[5] << 16 |
			(uint32_t)b[6] << 8 | b[7];
		p->ssrc = (uint32_t)b[8] << 24 | (uint32_t)b[9] << 16 |
			(uint32_t)b[10] << 8 | b[11];
	}
}

/* Waits up to ms for one datagram and parses its RTP header. */
static MT_UNUSED int mt_recv(int fd, struct mt_pkt *p, int ms)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };

	memset(p, 0, sizeof(*p));
	p->len = -1;
	if (poll(&pf, 1, ms) <= 0)
		return -1;
	p->len = (int)recv(fd, p->b, sizeof(p->b), 0);
	p->at = clk_mono_ms();
	mt_parse(p);
	return p->len;
}

/* Reads what is queued; returns the count. */
static MT_UNUSED int mt_drain(int fd, int quiet_ms)
{
	struct mt_pkt p;
	int n = 0;

	while (n < 1000 && mt_recv(fd, &p, quiet_ms) >= 0)
		n++;
	return n;
}

/* Stats are published after each batch; give the engine a moment. */
static MT_UNUSED uint64_t mt_stat_wait(struct media *m, media_ep_t ep, size_t off,
				       uint64_t want)
{
	struct media_stats st;
	uint64_t v = 0;

	for (int i = 0; i < 600; i++) {
		media_ep_stats(m, ep, &st);
		memcpy(&v, (const char *)&st + off, sizeof(v));
		if (v == want)
			break;
		mt_msleep(5);
	}
	return v;
}

#define MT_STAT(m, ep, field, want) \
	mt_stat_wait((m), (ep), offsetof(struct media_stats, field), (want))

/* Waits up to ms for one engine event. */
static MT_UNUSED bool mt_event(struct media *m, struct media_event *ev, int ms)
{
	struct pollfd pf = { .fd = media_event_fd(m), .events = POLLIN };
	int64_t end = clk_mono_ms() + ms;

	for (;;) {
		int64_t left = end - clk_mono_ms();

		if (media_events(m, ev, 1) == 1)
			return true;
		if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
			return media_events(m, ev, 1) == 1;
	}
}

#endif
