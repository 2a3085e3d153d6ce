/*
 * sipd.c: the nta agent and the default leg.
 *
 * Out-of-dialog requests arrive on the default leg and are dispatched by
 * method. OPTIONS to the server itself is answered here; methods nobody
 * handles get 405 (known methods) or 501 (unknown ones).
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/tcp.h>          /* struct tcp_info with tcpi_bytes_received */

#include <sofia-sip/msg_addr.h>
#include <sofia-sip/nta_tport.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/sip_tag.h>
#include <sofia-sip/su_tagarg.h>
#include <sofia-sip/nta_stateless.h>
#include <sofia-sip/tport.h>
#include <sofia-sip/tport_tag.h>

#define LOG_MODULE "sip"
#include "log.h"
#include "conf.h"
#include "metrics.h"
#include "sipd.h"

/*
 * How long a finished transaction is kept (RFC 3261 64*T1: timers B, F,
 * H and J over UDP). sofia's 32 s keeps every REGISTER's and every call's
 * messages for half a minute after the answer: about 20 KiB each, 2 GB of
 * heap at 3,500 registrations/s. 8 s still absorbs the retransmissions of
 * a request whose answer was lost three times (0.5 + 1 + 2 + 4 s), as
 * Kamailio's tm keeps its transactions 5 s (wait_timer); a request that no
 * one answers at all fails with 408 after 8 s.
 */
#define SIPD_T1X64_MS 8000

#define NMETHODS 32

struct sipd {
	nta_agent_t *agent;
	char *server;
	su_timer_t *tmr_silent;         /* sweeps silent TCP/TLS connections */
	int64_t idle_ms;                /* [sip] tcp_idle, 0: never */
	uint16_t stream_ports[8];       /* our TCP and TLS listening ports */
	size_t nstream_ports;
	sipd_filter_h *filter;
	void *filter_arg;
	struct {
		sipd_request_h *h;
		void *arg;
	} handlers[NMETHODS];
};

static struct metric *m_req[NMETHODS];
static struct metric *m_resp[7];

static struct metric *method_counter(const sip_t *sip)
{
	unsigned m = sip->sip_request ? (unsigned)sip->sip_request->rq_method : 0;
	char labels[48];

	if (m >= NMETHODS)
		m = 0;
	if (!m_req[m]) {
		snprintf(labels, sizeof(labels), "method=\"%s\"",
			 m == sip_method_unknown ? "other" :
			 sip->sip_request->rq_method_name);
		m_req[m] = metrics_counter("sipcrm_sip_requests_total",
					   "SIP requests received, by method", labels);
	}
	return m_req[m];
}

void sipd_count_request(const sip_t *sip)
{
	if (sip && sip->sip_request)
		metrics_inc(method_counter(sip));
}

static void count_response(int status)
{
	unsigned cls = (unsigned)status / 100;
	char labels[24];

	if (cls < 1 || cls > 6)
		return;
	if (!m_resp[cls]) {
		snprintf(labels, sizeof(labels), "class=\"%uxx\"", cls);
		m_resp[cls] = metrics_counter("sipcrm_sip_responses_total",
					      "SIP responses sent, by class", labels);
	}
	metrics_inc(m_resp[cls]);
}

int sipd_reply(struct sipd *s, nta_incoming_t *irq, int status,
	       const char *phrase, tag_type_t tag, tag_value_t value, ...)
{
	ta_list ta;
	int err;

	ta_start(ta, tag, value);
	err = nta_incoming_treply(irq, status, phrase,
				  TAG_IF(s->server, SIPTAG_SERVER_STR(s->server)),
				  TAG_IF(status == 405, SIPTAG_ALLOW_STR(SIPD_ALLOW)),
				  ta_tags(ta));
	(void)ta_end(ta);
	if (!err)
		count_response(status);
	return err;
}

int sipd_source(nta_incoming_t *irq, struct sockaddr_storage *ss,
		socklen_t *lenp)
{
	msg_t *msg = nta_incoming_getrequest(irq);
	su_addrinfo_t *ai = msg ? msg_addrinfo(msg) : NULL;
	int err = EINVAL;

	if (ai && ai->ai_addr && ai->ai_addrlen <= sizeof(*ss)) {
		memset(ss, 0, sizeof(*ss));
		memcpy(ss, ai->ai_addr, ai->ai_addrlen);
		*lenp = (socklen_t)ai->ai_addrlen;
		err = 0;
	}
	msg_destroy(msg);
	return err;
}

const char *sipd_addr_str(const struct sockaddr_storage *ss, char *buf, size_t sz)
{
	const void *a;

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;

		a = &in6->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return inet_ntop(AF_INET, in6->sin6_addr.s6_addr + 12, buf,
					 (socklen_t)sz) ? buf : "?";
	}
	else {
		a = &((const struct sockaddr_in *)(const void *)ss)->sin_addr;
	}
	return inet_ntop(ss->ss_family, a, buf, (socklen_t)sz) ? buf : "?";
}

const char *sipd_source_str(nta_incoming_t *irq, char *buf, size_t sz)
{
	struct sockaddr_storage ss;
	socklen_t len;

	return sipd_source(irq, &ss, &len) ? "?" : sipd_addr_str(&ss, buf, sz);
}

static int answer_options(struct sipd *s, nta_incoming_t *irq)
{
	sipd_reply(s, irq, SIP_200_OK,
		   SIPTAG_ALLOW_STR(SIPD_ALLOW),
		   SIPTAG_ACCEPT_STR("application/sdp"),
		   SIPTAG_ACCEPT_LANGUAGE_STR("en"),
		   SIPTAG_SUPPORTED_STR("replaces, timer"),
		   TAG_END());
	return 200;
}

const char *sipd_unsupported(const sip_t *sip)
{
	static const char *const known[] = { "100rel", "timer", "replaces" };

	for (const char *const *k = sip->sip_require ? sip->sip_require->k_items : NULL;
	     k && *k; k++) {
		size_t i;

		for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (!strcasecmp(*k, known[i]))
				break;
		if (i == sizeof(known) / sizeof(known[0]))
			return *k;
	}
	return NULL;
}

static int dispatch(struct sipd *s, nta_incoming_t *irq, const sip_t *sip)
{
	sip_method_t m = sip->sip_request->rq_method;
	const url_t *ru = sip->sip_request->rq_url;
	const char *bad;

	/* RFC 3261 §8.2.2.1 and §8.2.2.3, before any method looks at it */
	if (ru->url_type != url_sip && ru->url_type != url_sips &&
	    ru->url_type != url_tel) {
		sipd_reply(s, irq, SIP_416_UNSUPPORTED_URI, TAG_END());
		return 416;
	}
	bad = m != sip_method_cancel ? sipd_unsupported(sip) : NULL;
	if (bad) {
		sipd_reply(s, irq, SIP_420_BAD_EXTENSION, SIPTAG_UNSUPPORTED_STR(bad),
			   TAG_END());
		return 420;
	}

	if ((unsigned)m < NMETHODS && s->handlers[m].h)
		return s->handlers[m].h(s->handlers[m].arg, irq, sip);
	switch (m) {
	case sip_method_options:
		return answer_options(s, irq);
	case sip_method_unknown:
		sipd_reply(s, irq, SIP_501_NOT_IMPLEMENTED, TAG_END());
		return 501;
	case sip_method_cancel:
	case sip_method_bye:
	case sip_method_prack:
	case sip_method_notify:
	case sip_method_info:
	case sip_method_update:
		/* in-dialog methods with no dialog */
		sipd_reply(s, irq, SIP_481_NO_TRANSACTION, TAG_END());
		return 481;
	default:
		sipd_reply(s, irq, SIP_405_METHOD_NOT_ALLOWED, TAG_END());
		return 405;
	}
}

/*
 * Every out-of-dialog request lands here, after nta has matched
 * retransmissions, ACK, CANCEL and existing dialogs. Taking the message
 * before a server transaction exists lets the filter drop banned sources
 * and scanners without any answer; otherwise the transaction is created
 * on the transport the request came in on.
 */
static int on_message(nta_agent_magic_t *magic, nta_agent_t *agent,
		      msg_t *msg, sip_t *sip)
{
	struct sipd *s = (struct sipd *)magic;
	nta_incoming_t *irq;
	tport_t *tp;
	int status;

	if (!sip || !sip->sip_request || sip->sip_request->rq_method == sip_method_ack) {
		msg_destroy(msg);       /* stray response or ACK */
		return 0;
	}
	sipd_count_request(sip);
	if (s->filter && s->filter(s->filter_arg, msg, sip)) {
		msg_destroy(msg);
		return 0;
	}
	tp = tport_delivered_by(nta_agent_tports(agent), msg);
	irq = nta_incoming_create(agent, NULL, msg, sip, NTATAG_TPORT(tp), TAG_END());
	if (!irq) {
		nta_msg_treply(agent, msg, SIP_500_INTERNAL_SERVER_ERROR,
			       NTATAG_TPORT(tp), TAG_END());
		return 0;
	}
	status = dispatch(s, irq, sip);
	if (status >= 200 && nta_incoming_status(irq) < 200)
		sipd_reply(s, irq, status, NULL, TAG_END());
	if (status >= 200)
		nta_incoming_destroy(irq);
	return 0;
}

/*
 * sofia's TLS transport reads "agent.pem" (key and certificate) from a
 * folder; build one beside the database from tls_key and tls_cert.
 */
static int tls_folder(const struct conf *c, char *dir, size_t dirsz,
		      char *err, size_t errsz)
{
	const char *srcs[] = { c->sip.tls_key, c->sip.tls_cert };
	char path[4200];
	int out, e = 0;

	snprintf(dir, dirsz, "%s.tls", c->core.db);
	if (mkdir(dir, 0700) && errno != EEXIST) {
		snprintf(err, errsz, "cannot create %s: %s", dir, strerror(errno));
		return errno;
	}
	snprintf(path, sizeof(path), "%s/agent.pem", dir);
	out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (out < 0) {
		snprintf(err, errsz, "cannot write %s: %s", path, strerror(errno));
		return errno;
	}
	for (size_t i = 0; i < 2 && !e; i++) {
		FILE *f = fopen(srcs[i], "r");
		char buf[4096];
		size_t n;

		if (!f) {
			snprintf(err, errsz, "cannot read %s: %s", srcs[i], strerror(errno));
			e = errno;
			break;
		}
		while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
			if (write(out, buf, n) != (ssize_t)n)
				e = EIO;
		fclose(f);
	}
	close(out);
	if (e && !*err)
		snprintf(err, errsz, "cannot write %s", path);
	return e;
}

static void listen_url(const struct conf_listen *l, char *buf, size_t sz)
{
	static const char *const tpn[] = { "udp", "tcp", "tls" };
	bool v6 = strchr(l->host, ':') != NULL;

	snprintf(buf, sz, "%s:%s%s%s:%u;transport=%s",
		 l->tp == CONF_TP_TLS ? "sips" : "sip", v6 ? "[" : "", l->host,
		 v6 ? "]" : "", l->port, tpn[l->tp]);
}

/*
 * sofia keeps a TCP or TLS connection open for ever by default, even one
 * that never sent anything or stopped in the middle of a message: a few
 * thousand such connections exhaust the process's descriptors.
 */
static unsigned tport_ms(int64_t ms)
{
	return ms <= 0 || ms >= UINT_MAX ? UINT_MAX : (unsigned)ms;
}

static int add_listeners(struct sipd *s, const struct conf *c,
			 char *err, size_t errsz)
{
	char tlsdir[4100] = "";

	for (size_t i = 0; i < c->sip.nlisten; i++) {
		const struct conf_listen *l = &c->sip.listen[i];
		char url[128];
		const char *u = url;

		if (l->tp == CONF_TP_TLS && !*tlsdir &&
		    tls_folder(c, tlsdir, sizeof(tlsdir), err, errsz))
			return EINVAL;
		listen_url(l, url, sizeof(url));
		if (nta_agent_add_tport(s->agent, URL_STRING_MAKE(u),
					TAG_IF(l->tp == CONF_TP_TLS,
					       TPTAG_CERTIFICATE(tlsdir)),
					TPTAG_IDLE(tport_ms(c->sip.tcp_idle_ms)),
					TPTAG_TIMEOUT(tport_ms(c->sip.tcp_timeout_ms)),
					TAG_END()) < 0) {
			snprintf(err, errsz, "cannot listen on %s: %s", url,
				 strerror(errno));
			return errno ? errno : EADDRINUSE;
		}
		log_info("listening on %s", url);
		if (l->tp != CONF_TP_UDP && l->port &&
		    s->nstream_ports < sizeof(s->stream_ports) / sizeof(s->stream_ports[0]))
			s->stream_ports[s->nstream_ports++] = l->port;
	}
	return 0;
}

/*
 * sofia-sip 1.12.11 arms a connection's idle timer (TPTAG_IDLE) only after
 * its first read or write, so a client that connects and sends nothing
 * holds a descriptor for ever: a thousand of them exhaust the process.
 * Such connections are found by their local port (one of our TCP or TLS
 * listeners) and the kernel's count of bytes received (none, after
 * tcp_idle) and shut down; sofia sees the close and frees its side.
 */
static bool silent_for(int fd, const struct sipd *s)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct tcp_info ti;
	int v = 0;
	uint16_t port;

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) || v != SOCK_STREAM)
		return false;
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) || v)
		return false;
	len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) ||
	    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
		return false;
	port = ntohs(ss.ss_family == AF_INET ?
		     ((const struct sockaddr_in *)&ss)->sin_port :
		     ((const struct sockaddr_in6 *)&ss)->sin6_port);
	for (size_t i = 0; i < s->nstream_ports; i++) {
		if (s->stream_ports[i] != port)
			continue;
		memset(&ti, 0, sizeof(ti));
		len = sizeof(ti);
		/* tcpi_bytes_received needs Linux 4.1: older ones never match */
		return !getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) &&
		       len >= offsetof(struct tcp_info, tcpi_bytes_received) +
			      sizeof(ti.tcpi_bytes_received) &&
		       ti.tcpi_state == 1 /* TCP_ESTABLISHED */ && ti.tcpi_bytes_received == 0 &&
		       ti.tcpi_last_data_recv >= s->idle_ms;
	}
	return false;
}

static void sweep_silent(su_root_magic_t *magic, su_timer_t *t, su_timer_arg_t *arg)
{
	struct sipd *s = (struct sipd *)arg;
	DIR *dir;
	struct dirent *de;
	unsigned n = 0;

	(void)magic;
	(void)t;
	if (s->idle_ms <= 0 || !(dir = opendir("/proc/self/fd")))
		return;
	while ((de = readdir(dir)) != NULL) {
		int fd = atoi(de->d_name);

		if (fd > 2 && fd != dirfd(dir) && silent_for(fd, s) &&
		    !shutdown(fd, SHUT_RDWR))
			n++;
	}
	closedir(dir);
	if (n)
		log_info("closed %u TCP/TLS connections silent for %lld ms", n,
			 (long long)s->idle_ms);
}

/* Whether a bound UDP socket is one of our listeners (port 0: any port). */
static bool is_listener(const struct conf *c, const struct sockaddr_storage *ss)
{
	uint16_t port = ss->ss_family == AF_INET ?
			ntohs(((const struct sockaddr_in *)ss)->sin_port) :
			ss->ss_family == AF_INET6 ?
			ntohs(((const struct sockaddr_in6 *)ss)->sin6_port) : 0;

	for (size_t i = 0; i < c->sip.nlisten; i++)
		if (c->sip.listen[i].tp == CONF_TP_UDP &&
		    (c->sip.listen[i].port == 0 || c->sip.listen[i].port == port))
			return port != 0;
	return false;
}

/*
 * The kernel's default UDP receive buffer (about 200 KB) overflows in a
 * burst of a few hundred messages, and a lost 200 costs a whole call.
 * sofia-sip offers no tag for it, so our UDP listeners are found by their
 * bound address right after they are opened, and given 4 MiB.
 */
static void raise_rcvbuf(const struct conf *c)
{
	int want = 4 << 20;
	long max = sysconf(_SC_OPEN_MAX);

	for (int fd = 3; fd < (max > 0 && max < 4096 ? max : 4096); fd++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int type;
		socklen_t tl = sizeof(type);

		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_DGRAM ||
		    getsockname(fd, (struct sockaddr *)&ss, &len) || !is_listener(c, &ss))
			continue;
		/* FORCE passes rmem_max when we may (root); else the capped value */
		if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof(want)) &&
		    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want)))
			log_warn("cannot raise a SIP socket's receive buffer: %s",
				 strerror(errno));
	}
}

/*
 * sofia listens with a backlog of 64 (its send queue size, TPORT_QUEUESIZE):
 * a burst of connections beyond that is left half-open in the kernel and
 * never reaches us. Listening again on the same socket only raises it.
 */
static void raise_backlog(const struct sipd *s)
{
	long max = sysconf(_SC_OPEN_MAX);

	for (int fd = 3; fd < (max > 0 && max < 4096 ? max : 4096); fd++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int v = 0;
		socklen_t vl = sizeof(v);
		uint16_t port;

		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) || !v ||
		    getsockname(fd, (struct sockaddr *)&ss, &len) ||
		    (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
			continue;
		port = ntohs(ss.ss_family == AF_INET ?
			     ((const struct sockaddr_in *)&ss)->sin_port :
			     ((const struct sockaddr_in6 *)&ss)->sin6_port);
		for (size_t i = 0; i < s->nstream_ports; i++)
			if (s->stream_ports[i] == port && listen(fd, SOMAXCONN))
				log_warn("cannot raise a SIP listener's backlog: %s",
					 strerror(errno));
	}
}

int sipd_alloc(struct sipd **sp, su_root_t *root, const struct conf *conf,
	       char *err, size_t errsz)
{
	struct sipd *s = calloc(1, sizeof(*s));
	int e = 0;

	if (!s)
		return ENOMEM;
	*err = '\0';
	s->agent = nta_agent_create(root, (url_string_t *)-1, on_message,
				    (nta_agent_magic_t *)s,
				    NTATAG_UA(0),
				    NTATAG_SERVER_RPORT(1),
				    NTATAG_MAXSIZE(65536),
				    NTATAG_EXTRA_100(0),
				    NTATAG_TIMEOUT_408(1),
				    NTATAG_SIP_T1X64(SIPD_T1X64_MS),
				    TAG_END());
	if (!s->agent) {
		snprintf(err, errsz, "cannot create SIP agent: %s", strerror(errno));
		e = errno ? errno : ENOMEM;
		goto out;
	}
	e = add_listeners(s, conf, err, errsz);
	if (e)
		goto out;
	raise_rcvbuf(conf);
	raise_backlog(s);
	if (s->nstream_ports) {
		s->tmr_silent = su_timer_create(su_root_task(root), 1000);
		if (s->tmr_silent)
			su_timer_set_for_ever(s->tmr_silent, sweep_silent, s);
	}
	sipd_reload(s, conf);
out:
	if (e) {
		sipd_free(s);
		return e;
	}
	*sp = s;
	return 0;
}

struct sipd *sipd_free(struct sipd *s)
{
	if (!s)
		return NULL;
	su_timer_destroy(s->tmr_silent);
	if (s->agent)
		nta_agent_destroy(s->agent);
	free(s->server);
	free(s);
	return NULL;
}

void sipd_reload(struct sipd *s, const struct conf *conf)
{
	free(s->server);
	s->server = *conf->sip.server ? strdup(conf->sip.server) : NULL;
	s->idle_ms = conf->sip.tcp_idle_ms;
}

void sipd_handle(struct sipd *s, sip_method_t method, sipd_request_h *h,
		 void *arg)
{
	if ((unsigned)method < NMETHODS) {
		s->handlers[method].h = h;
		s->handlers[method].arg = arg;
	}
}

void sipd_set_filter(struct sipd *s, sipd_filter_h *h, void *arg)
{
	s->filter = h;
	s->filter_arg = arg;
}

nta_agent_t *sipd_agent(const struct sipd *s)
{
	return s->agent;
}

const char *sipd_server(const struct sipd *s)
{
	return s->server;
}
