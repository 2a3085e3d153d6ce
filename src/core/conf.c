/*
 * conf.c: the INI configuration, parsed through one option table.
 *
 * Every key is described once (section, name, type, offset, default, help).
 * Defaults are text and go through the same parsers as the file, so a bad
 * default cannot hide. Errors carry "file:line: message".
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define LOG_MODULE "conf"
#include "log.h"
#include "hmap.h"
#include "conf.h"

enum opt_type {
	T_STR,          /* free text; empty allowed */
	T_PATH,         /* resolved against the config file's folder */
	T_WAV,          /* a path to a readable file (or empty) */
	T_DUR,          /* "300ms", "5s", "2min", "1h", bare "0" */
	T_BOOL,
	T_UINT,
	T_ENUM,
	T_URI,          /* sip:/sips:/tel: URI, or empty */
	T_URI_TMPL,     /* a URI that may hold {ext} */
	T_LOGLEVEL,
	T_LISTENS,      /* "udp:IP:PORT tcp:IP:PORT tls:IP:PORT" */
	T_HOSTPORT,     /* "IP:PORT" for the API */
	T_IP,
	T_PORTRANGE,
	T_CODECS,
	T_CIDRS,
	T_NUMBER,       /* a phone number: +digits or digits, or empty */
	T_RINGBACK,     /* tone | none | WAV path */
	T_EXT,          /* an extension: [A-Za-z0-9_.-]{1,32} */
	T_DIGITS,
	T_HA1,
	T_DIGEST_ALGS,  /* "SHA-256 MD5", in order of preference */
	T_RESPLIST,     /* rule responsible: first_answered last_answered ... */
};

enum sect_kind { S_CONF, S_AGENT, S_DID, S_TRUNK, S_RULE };

struct opt {
	const char *section;
	const char *key;
	enum opt_type type;
	size_t off;
	size_t off2;            /* second field (port, max, count, ...) */
	const char *deflt;      /* NULL: no default (inherit / unset) */
	const char *help;
	const char *const *enums;
};

static const char *const e_mode[] = { "bridge", "redirect", NULL };
static const char *const e_resp[] = { "first", "parallel", "off", NULL };
static const char *const e_srtp[] = { "off", "offer", "require", NULL };
static const char *const e_crm[] = { "none", "generic", "bitrix24", "amocrm",
				     "megaplan", "keycrm", NULL };

#define C(f) offsetof(struct conf, f)
#define A(f) offsetof(struct conf_agent, f)
#define D(f) offsetof(struct conf_did, f)
#define K(f) offsetof(struct conf_trunk, f)
#define R(f) offsetof(struct conf_rule, f)

const char *const conf_rule_types[] = {
	"incoming_unknown_answered", "incoming_known_answered",
	"outgoing_known_answered", "outgoing_unknown_answered",
	"missed_unknown", "missed_known", "outgoing_known_unanswered", NULL
};

static const char *const rule_resp_words[] = {
	"first_answered", "last_answered", "first_rung", "client", "default", NULL
};

static const struct opt opts[] = {
	{ "core", "db", T_PATH, C(core.db), 0, "sipcrm.db",
	  "sqlite file (WAL); the embedded store", NULL },
	{ "core", "log_level", T_LOGLEVEL, C(core.log_level), 0, "info",
	  "error | warn | info | debug, optionally per module: \"info sip=debug\"", NULL },

	{ "sip", "listen", T_LISTENS, C(sip.listen), C(sip.nlisten),
	  "udp:127.0.0.1:5060 tcp:127.0.0.1:5060",
	  "SIP listeners: udp:IP:PORT tcp:IP:PORT tls:IP:PORT", NULL },
	{ "sip", "domain", T_STR, C(sip.domain), 0, "sipcrm.local",
	  "registrar domain and digest realm", NULL },
	{ "sip", "tls_cert", T_PATH, C(sip.tls_cert), 0, "",
	  "PEM certificate, needed for tls: listeners", NULL },
	{ "sip", "tls_key", T_PATH, C(sip.tls_key), 0, "",
	  "PEM private key, needed for tls: listeners", NULL },
	{ "sip", "server", T_STR, C(sip.server), 0, "",
	  "Server / User-Agent header; empty sends none", NULL },
	{ "sip", "min_expires", T_DUR, C(sip.min_expires_ms), 0, "60s",
	  "shortest registration accepted (423 below)", NULL },
	{ "sip", "max_expires", T_DUR, C(sip.max_expires_ms), 0, "3600s",
	  "longer registrations are cut to this", NULL },
	{ "sip", "default_expires", T_DUR, C(sip.default_expires_ms), 0, "3600s",
	  "expiry when REGISTER names none", NULL },
	{ "sip", "nonce_ttl", T_DUR, C(sip.nonce_ttl_ms), 0, "300s",
	  "digest nonce lifetime; older nonces get stale=true", NULL },
	{ "sip", "ban_failures", T_UINT, C(sip.ban_failures), 0, "10",
	  "authentication failures from one address that trigger a ban; 0 disables", NULL },
	{ "sip", "ban_window", T_DUR, C(sip.ban_window_ms), 0, "60s",
	  "window in which ban_failures are counted", NULL },
	{ "sip", "ban_time", T_DUR, C(sip.ban_time_ms), 0, "600s",
	  "how long a banned address is ignored", NULL },
	{ "sip", "digest_algorithms", T_DIGEST_ALGS, C(sip.digest_algs), 0,
	  "MD5 SHA-256", "digest algorithms offered, in order of preference", NULL },
	{ "sip", "allow_trunk_refer", T_BOOL, C(sip.allow_trunk_refer), 0, "no",
	  "accept REFER from the trunk side (403 otherwise)", NULL },
	{ "sip", "session_expires", T_DUR, C(sip.session_expires_ms), 0, "1800s",
	  "session timer (RFC 4028) asked of the far side of each call leg; 0 disables", NULL },
	{ "sip", "min_se", T_DUR, C(sip.min_se_ms), 0, "90s",
	  "shortest session interval accepted (422 below)", NULL },
	{ "sip", "tcp_idle", T_DUR, C(sip.tcp_idle_ms), 0, "120s",
	  "TCP/TLS connections with no traffic for this long are closed; 0 never", NULL },
	{ "sip", "tcp_timeout", T_DUR, C(sip.tcp_timeout_ms), 0, "10s",
	  "a message still incomplete this long after its first bytes over TCP/TLS "
	  "is dropped and its connection closed; 0 never", NULL },

	{ "media", "ip", T_IP, C(media.ip), 0, "127.0.0.1",
	  "address put in SDP and bound for RTP", NULL },
	{ "media", "rtp_ports", T_PORTRANGE, C(media.rtp_min), C(media.rtp_max),
	  "20000-29999", "RTP/RTCP port range (pairs)", NULL },
	{ "media", "codecs", T_CODECS, C(media.codecs), 0, "PCMA PCMU",
	  "G.711 codecs in order of preference; telephone-event is always offered", NULL },
	{ "media", "greeting", T_WAV, C(media.greeting), 0, "sounds/greeting.wav",
	  "hold greeting (WAV, any rate and channel count)", NULL },
	{ "media", "ringback", T_RINGBACK, C(media.ringback), 0, "tone",
	  "after the greeting while agents ring: tone | none | FILE.wav", NULL },
	{ "media", "srtp", T_ENUM, C(media.srtp), 0, "offer",
	  "towards agents: off | offer | require", e_srtp },
	{ "media", "record", T_BOOL, C(media.record), 0, "off",
	  "record every bridged call to record_dir", NULL },
	{ "media", "record_dir", T_PATH, C(media.record_dir), 0, "recordings",
	  "folder for recordings", NULL },
	{ "media", "record_min", T_DUR, C(media.record_min_ms), 0, "6s",
	  "shorter recordings are discarded", NULL },
	{ "media", "media_timeout", T_DUR, C(media.media_timeout_ms), 0, "60s",
	  "no RTP from either side for this long ends the call; 0 disables", NULL },

	{ "routing", "mode", T_ENUM, C(routing.mode), 0, "bridge",
	  "bridge | redirect", e_mode },
	{ "routing", "lookup_timeout", T_DUR, C(routing.lookup_timeout_ms), 0, "1500ms",
	  "hard deadline for the CRM lookup", NULL },
	{ "routing", "greeting_min", T_DUR, C(routing.greeting_min_ms), 0, "0ms",
	  "play at least this much greeting before any agent rings", NULL },
	{ "routing", "responsible", T_ENUM, C(routing.responsible), 0, "first",
	  "first | parallel | off", e_resp },
	{ "routing", "responsible_ring", T_DUR, C(routing.responsible_ring_ms), 0, "20s",
	  "how long the responsible agent rings before the fallback", NULL },
	{ "routing", "transfer_ring", T_DUR, C(routing.transfer_ring_ms), 0, "30s",
	  "how long a transfer's target rings before the transfer fails", NULL },
	{ "routing", "click_to_call_ring", T_DUR, C(routing.c2c_ring_ms), 0, "30s",
	  "how long the agent's phones ring for a click-to-call", NULL },
	{ "routing", "agent_dial", T_STR, C(routing.agent_dial), 0, "domestic",
	  "numbers agents may call through the trunk: domestic, any, none, +PREFIX...", NULL },
	{ "routing", "agent_max_calls", T_UINT, C(routing.agent_max_calls), 0, "4",
	  "an agent already in this many calls may not place another (0: no limit)", NULL },
	{ "routing", "skip_busy", T_BOOL, C(routing.skip_busy), 0, "yes",
	  "an agent already in a call counts as unreachable", NULL },
	{ "routing", "fallback", T_URI, C(routing.fallback), 0, "",
	  "the normal route: the PBX behind sipcrm", NULL },

	{ "pbx", "extension_uri", T_URI_TMPL, C(pbx.extension_uri), 0, "",
	  "how to reach an agent who is not registered here; {ext} is replaced", NULL },

	{ "crm", "type", T_ENUM, C(crm.type), 0, "none",
	  "none | generic | bitrix24 | amocrm | megaplan | keycrm", e_crm },
	{ "crm", "lookup_url", T_STR, C(crm.lookup_url), 0, "",
	  "generic: lookup endpoint", NULL },
	{ "crm", "events_url", T_STR, C(crm.events_url), 0, "",
	  "generic: events endpoint", NULL },
	{ "crm", "secret", T_STR, C(crm.secret), 0, "",
	  "Bearer token for lookups; HMAC key for event signatures", NULL },
	{ "crm", "cache", T_DUR, C(crm.cache_ms), 0, "300s",
	  "lookup results cached; 0 disables", NULL },
	{ "crm", "country_code", T_DIGITS, C(crm.country_code), 0, "7",
	  "for E.164 normalisation", NULL },
	{ "crm", "event_retry", T_DUR, C(crm.event_retry_ms), 0, "24h",
	  "how long an undelivered event is retried before it is kept as dead", NULL },
	{ "crm", "event_backoff_max", T_DUR, C(crm.event_backoff_max_ms), 0, "5min",
	  "the longest wait between two attempts to deliver an event", NULL },
	{ "crm", "url", T_STR, C(crm.url), 0, "",
	  "bitrix24: inbound webhook or REST address; amocrm: account address", NULL },
	{ "crm", "subdomain", T_STR, C(crm.subdomain), 0, "",
	  "amocrm: the account's subdomain (SUBDOMAIN.amocrm.ru)", NULL },
	{ "crm", "token", T_STR, C(crm.token), 0, "",
	  "amocrm: long-lived access token", NULL },
	{ "crm", "client_id", T_STR, C(crm.client_id), 0, "",
	  "OAuth application id (bitrix24, amocrm)", NULL },
	{ "crm", "client_secret", T_STR, C(crm.client_secret), 0, "",
	  "OAuth application secret", NULL },
	{ "crm", "refresh_token", T_STR, C(crm.refresh_token), 0, "",
	  "OAuth refresh token to start from (then kept in sqlite)", NULL },
	{ "crm", "redirect_uri", T_STR, C(crm.redirect_uri), 0, "",
	  "amocrm OAuth: the integration's redirect URI", NULL },
	{ "crm", "oauth_url", T_STR, C(crm.oauth_url), 0, "",
	  "OAuth token endpoint; empty: the CRM's own", NULL },
	{ "crm", "webhook_token", T_STR, C(crm.webhook_token), 0, "",
	  "authenticates webhooks: bitrix24 application_token, amocrm ?token=", NULL },
	{ "crm", "default_user", T_STR, C(crm.default_user), 0, "",
	  "CRM user id for calls and entities nobody else is responsible for", NULL },
	{ "crm", "source", T_STR, C(crm.source), 0, "sipcrm",
	  "amocrm: source of calls and unsorted entries", NULL },
	{ "crm", "timeman", T_BOOL, C(crm.timeman), 0, "yes",
	  "bitrix24: a responsible user not at work (TIMEMAN_STATUS) is not rung", NULL },

	{ "api", "listen", T_HOSTPORT, C(api.listen_host), C(api.listen_port),
	  "127.0.0.1:8080", "HTTP API address", NULL },
	{ "api", "token", T_STR, C(api.token), 0, "",
	  "Bearer token for every /api/ request", NULL },
	{ "api", "public_url", T_STR, C(api.public_url), 0, "",
	  "base of the links sipcrm gives out (recording_url); empty: http(s)://LISTEN", NULL },
	{ "api", "tls_cert", T_PATH, C(api.tls_cert), 0, "",
	  "PEM certificate: the API speaks HTTPS; empty: plain HTTP", NULL },
	{ "api", "tls_key", T_PATH, C(api.tls_key), 0, "",
	  "PEM private key for tls_cert", NULL },

	{ "trunk", "match", T_CIDRS, K(match), K(nmatch), "",
	  "source addresses (CIDR list) whose INVITEs are inbound trunk calls", NULL },
	{ "trunk", "uri", T_URI, K(uri), 0, "",
	  "where outbound calls go", NULL },
	{ "trunk", "caller_id", T_NUMBER, K(caller_id), 0, "",
	  "default From number for outbound calls", NULL },
	{ "trunk", "username", T_STR, K(username), 0, "",
	  "digest user offered to the provider", NULL },
	{ "trunk", "password", T_STR, K(password), 0, "",
	  "digest password offered to the provider", NULL },

	{ "did", "greeting", T_WAV, D(greeting), 0, NULL, "greeting for this DID", NULL },
	{ "did", "ringback", T_RINGBACK, D(ringback), 0, NULL, "ringback for this DID", NULL },
	{ "did", "fallback", T_URI, D(fallback), 0, NULL, "fallback for this DID", NULL },
	{ "did", "responsible", T_ENUM, D(responsible), 0, NULL,
	  "first | parallel | off for this DID", e_resp },
	{ "did", "responsible_ring", T_DUR, D(responsible_ring_ms), 0, NULL,
	  "responsible_ring for this DID", NULL },
	{ "did", "greeting_min", T_DUR, D(greeting_min_ms), 0, NULL,
	  "greeting_min for this DID", NULL },
	{ "did", "mode", T_ENUM, D(mode), 0, NULL, "bridge | redirect for this DID", e_mode },

	{ "agent", "password", T_STR, A(password), 0, NULL, "digest password", NULL },
	{ "agent", "ha1", T_HA1, A(ha1), 0, NULL,
	  "stored MD5 HA1 (hex) instead of a password; disables SHA-256 digest", NULL },
	{ "agent", "name", T_STR, A(name), 0, NULL, "display name", NULL },
	{ "agent", "crm_user", T_STR, A(crm_user), 0, NULL, "the CRM's user id", NULL },
	{ "agent", "dial", T_STR, A(dial), 0, NULL,
	  "this agent's [routing] agent_dial", NULL },

	{ "rule", "contact", T_STR, R(contact), 0, NULL,
	  "unknown callers: create a contact with this name template", NULL },
	{ "rule", "lead", T_STR, R(lead), 0, NULL, "bitrix24: create a lead (title template)", NULL },
	{ "rule", "deal", T_STR, R(deal), 0, NULL, "create a deal (title template)", NULL },
	{ "rule", "pipeline", T_STR, R(pipeline), 0, NULL,
	  "the deal's (and unsorted entry's) pipeline id", NULL },
	{ "rule", "stage", T_STR, R(stage), 0, NULL, "the deal's or lead's stage id", NULL },
	{ "rule", "unsorted", T_BOOL, R(unsorted), 0, "no",
	  "amocrm, unknown callers: an Unsorted entry (with its contact and deal)", NULL },
	{ "rule", "crm_create", T_BOOL, R(crm_create), 0, "no",
	  "bitrix24, unknown callers: register the call with CRM_CREATE=1", NULL },
	{ "rule", "task", T_STR, R(task), 0, NULL, "create a task (title template)", NULL },
	{ "rule", "task_deadline", T_DUR, R(task_deadline_ms), 0, "24h",
	  "the task's deadline, from the end of the call", NULL },
	{ "rule", "responsible", T_RESPLIST, R(responsible), 0, NULL,
	  "who is responsible, first that applies: first_answered last_answered "
	  "first_rung client default", NULL },
	{ "rule", "default_user", T_STR, R(default_user), 0, NULL,
	  "the CRM user id 'default' means here", NULL },
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

struct parser {
	const char *path;
	const char *dir;
	int line;
	char *err;
	size_t errsz;
	bool defaults;          /* applying defaults: files need not exist */
};

static int perr(struct parser *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int perr(struct parser *p, const char *fmt, ...)
{
	char msg[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(p->err, p->errsz, "%s:%d: %s", p->path, p->line, msg);
	return EINVAL;
}

/* ---- value parsers ---------------------------------------------------- */

int conf_parse_duration(const char *s, int64_t *ms)
{
	static const struct { const char *u; int64_t mul; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "min", 60000 }, { "h", 3600000 },
	};
	char *end;
	long long v;

	if (!isdigit((unsigned char)*s))
		return EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || v > INT32_MAX)
		return ERANGE;
	if (*end == '\0') {
		if (v != 0)
			return EINVAL;  /* a unit is required */
		*ms = 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (!strcmp(end, units[i].u)) {
			*ms = v * units[i].mul;
			return 0;
		}
	}
	return EINVAL;
}

int conf_parse_bool(const char *s, bool *b)
{
	static const char *const yes[] = { "yes", "on", "true", "1" };
	static const char *const no[] = { "no", "off", "false", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i])) {
			*b = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*b = false;
			return 0;
		}
	}
	return EINVAL;
}

static int parse_ip(const char *s, int *family, uint8_t addr[16])
{
	if (inet_pton(AF_INET, s, addr) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, addr) == 1) {
		*family = AF_INET6;
		return 0;
	}
	return EINVAL;
}

int conf_parse_cidr(const char *s, struct conf_cidr *cidr)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t len = slash ? (size_t)(slash - s) : strlen(s);
	unsigned maxp;

	if (len == 0 || len >= sizeof(buf))
		return EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	memset(cidr, 0, sizeof(*cidr));
	if (parse_ip(buf, &cidr->family, cidr->addr))
		return EINVAL;
	maxp = cidr->family == AF_INET ? 32 : 128;
	cidr->prefix = maxp;
	if (slash) {
		char *end;
		unsigned long v;

		if (!isdigit((unsigned char)slash[1]))
			return EINVAL;
		v = strtoul(slash + 1, &end, 10);
		if (*end || v > maxp)
			return EINVAL;
		cidr->prefix = (unsigned)v;
	}
	return 0;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned bytes = prefix / 8, bits = prefix % 8;

	if (memcmp(a, b, bytes))
		return false;
	if (!bits)
		return true;
	return ((a[bytes] ^ b[bytes]) & (uint8_t)(0xff << (8 - bits))) == 0;
}

bool conf_cidr_contains(const struct conf_cidr *cidr, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET && cidr->family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;
		return prefix_match(cidr->addr, (const uint8_t *)&in->sin_addr,
				    cidr->prefix);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		const uint8_t *a = in6->sin6_addr.s6_addr;

		if (cidr->family == AF_INET6)
			return prefix_match(cidr->addr, a, cidr->prefix);
		/* an IPv4-mapped IPv6 source matches an IPv4 CIDR */
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return prefix_match(cidr->addr, a + 12, cidr->prefix);
	}
	return false;
}

static int parse_port(const char *s, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)*s))
		return EINVAL;
	v = strtoul(s, &end, 10);
	if (*end || v > 65535)
		return EINVAL;
	*port = (uint16_t)v;
	return 0;
}

/* "IP:PORT" or "[IPv6]:PORT" */
static int parse_hostport(const char *s, char *host, size_t hostsz, uint16_t *port)
{
	const char *colon;
	size_t hlen;
	int fam;
	uint8_t addr[16];

	if (*s == '[') {
		const char *rb = strchr(s, ']');

		if (!rb || rb[1] != ':')
			return EINVAL;
		hlen = (size_t)(rb - s - 1);
		s++;
		colon = rb + 1;
	}
	else {
		colon = strrchr(s, ':');
		if (!colon)
			return EINVAL;
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0 || hlen >= hostsz)
		return EINVAL;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (parse_ip(host, &fam, addr))
		return EINVAL;
	return parse_port(colon + 1, port);
}

int conf_parse_listen(const char *s, struct conf_listen *l)
{
	static const struct { const char *p; enum conf_transport tp; } tps[] = {
		{ "udp:", CONF_TP_UDP }, { "tcp:", CONF_TP_TCP }, { "tls:", CONF_TP_TLS },
	};

	for (size_t i = 0; i < 3; i++) {
		if (!strncasecmp(s, tps[i].p, 4)) {
			l->tp = tps[i].tp;
			return parse_hostport(s + 4, l->host, sizeof(l->host), &l->port);
		}
	}
	return EINVAL;
}

static bool valid_hostchar(char c)
{
	return isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_' ||
	       c == ':' || c == '[' || c == ']';
}

int conf_check_uri(const char *s)
{
	const char *p, *host;

	if (!strncasecmp(s, "tel:", 4)) {
		p = s + 4;
		if (*p == '+')
			p++;
		if (!isdigit((unsigned char)*p))
			return EINVAL;
		return 0;
	}
	if (!strncasecmp(s, "sip:", 4))
		p = s + 4;
	else if (!strncasecmp(s, "sips:", 5))
		p = s + 5;
	else
		return EINVAL;
	host = strchr(p, '@');
	host = host ? host + 1 : p;
	if (host == p && strchr(p, '@'))
		return EINVAL;
	if (!*host || *host == ';' || *host == ':')
		return EINVAL;
	for (p = host; *p && *p != ';' && *p != '?'; p++)
		if (!valid_hostchar(*p))
			return EINVAL;
	for (p = s; *p; p++)
		if (isspace((unsigned char)*p) || *p == '<' || *p == '>' || *p == '"')
			return EINVAL;
	return 0;
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

static bool valid_number(const char *s)
{
	return all_digits(*s == '+' ? s + 1 : s);
}

static bool valid_ext(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.' && *s != '-')
			return false;
	return true;
}

/* ---- storing values ---------------------------------------------------- */

static int set_str(char **dst, const char *v)
{
	char *s = strdup(v);

	if (!s)
		return ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static int resolve_path(struct parser *p, char **dst, const char *v)
{
	char *s;

	if (!*v || *v == '/')
		return set_str(dst, v);
	if (asprintf(&s, "%s/%s", p->dir, v) < 0)
		return ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static int set_listens(struct parser *p, void *base, const struct opt *o,
		       const char *v)
{
	struct conf_listen *ls = NULL;
	size_t n = 0;
	char *buf = strdup(v), *save = NULL;
	int err = 0;

	if (!buf)
		return ENOMEM;
	for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
		struct conf_listen *nl = realloc(ls, (n + 1) * sizeof(*ls));

		if (!nl) {
			err = ENOMEM;
			break;
		}
		ls = nl;
		if (conf_parse_listen(w, &ls[n])) {
			err = perr(p, "%s: bad listen address '%s' "
				   "(expected udp:IP:PORT, tcp:IP:PORT or tls:IP:PORT)",
				   o->key, w);
			break;
		}
		n++;
	}
	free(buf);
	if (!err && n == 0)
		err = perr(p, "%s: at least one listen address is needed", o->key);
	if (err) {
		free(ls);
		return err;
	}
	free(*(struct conf_listen **)((char *)base + o->off));
	*(struct conf_listen **)((char *)base + o->off) = ls;
	*(size_t *)((char *)base + o->off2) = n;
	return 0;
}

static int set_cidrs(struct parser *p, void *base, const struct opt *o,
		     const char *v)
{
	struct conf_cidr *cs = NULL;
	size_t n = 0;
	char *buf = strdup(v), *save = NULL;
	int err = 0;

	if (!buf)
		return ENOMEM;
	for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
		struct conf_cidr *nc = realloc(cs, (n + 1) * sizeof(*cs));

		if (!nc) {
			err = ENOMEM;
			break;
		}
		cs = nc;
		if (conf_parse_cidr(w, &cs[n])) {
			err = perr(p, "%s: bad CIDR '%s'", o->key, w);
			break;
		}
		n++;
	}
	free(buf);
	if (err) {
		free(cs);
		return err;
	}
	free(*(struct conf_cidr **)((char *)base + o->off));
	*(struct conf_cidr **)((char *)base + o->off) = cs;
	*(size_t *)((char *)base + o->off2) = n;
	return 0;
}

static int set_codecs(struct parser *p, struct conf *c, const struct opt *o,
		      const char *v)
{
	char *buf = strdup(v), *save = NULL;
	unsigned bits = 0;
	size_t n = 0;
	int err = 0;

	if (!buf)
		return ENOMEM;
	for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
		unsigned bit;

		if (!strcasecmp(w, "PCMA"))
			bit = CONF_CODEC_PCMA;
		else if (!strcasecmp(w, "PCMU"))
			bit = CONF_CODEC_PCMU;
		else {
			err = perr(p, "%s: unknown codec '%s' (PCMA, PCMU)", o->key, w);
			break;
		}
		if (bits & bit) {
			err = perr(p, "%s: codec '%s' listed twice", o->key, w);
			break;
		}
		bits |= bit;
		c->media.codec_order[n++] = (uint8_t)bit;
	}
	free(buf);
	if (!err && n == 0)
		err = perr(p, "%s: at least one codec is needed", o->key);
	if (err)
		return err;
	c->media.codecs = bits;
	c->media.ncodecs = n;
	return 0;
}

static int set_digest_algs(struct parser *p, struct conf *c, const struct opt *o,
			   const char *v)
{
	char *buf = strdup(v), *save = NULL;
	uint8_t algs[2];
	size_t n = 0;
	int err = 0;

	if (!buf)
		return ENOMEM;
	for (char *w = strtok_r(buf, " \t,", &save); w && !err;
	     w = strtok_r(NULL, " \t,", &save)) {
		uint8_t a = !strcasecmp(w, "MD5") ? CONF_DIGEST_MD5 :
			    !strcasecmp(w, "SHA-256") ? CONF_DIGEST_SHA256 : 0;

		if (!a)
			err = perr(p, "%s: unknown algorithm '%s' (SHA-256, MD5)", o->key, w);
		else if ((n > 0 && algs[0] == a) || n == 2)
			err = perr(p, "%s: '%s' listed twice", o->key, w);
		else
			algs[n++] = a;
	}
	free(buf);
	if (!err && n == 0)
		err = perr(p, "%s: at least one algorithm is needed", o->key);
	if (err)
		return err;
	memcpy(c->sip.digest_algs, algs, sizeof(algs));
	c->sip.ndigest_algs = n;
	return 0;
}

/* "last_answered client default": words of rule_resp_words, each once */
static int set_resplist(struct parser *p, char **dst, const struct opt *o,
			const char *v)
{
	char *buf = strdup(v), *save = NULL;
	unsigned seen = 0;
	int err = 0;

	if (!buf)
		return ENOMEM;
	for (char *w = strtok_r(buf, " \t,", &save); w && !err;
	     w = strtok_r(NULL, " \t,", &save)) {
		int i;

		for (i = 0; rule_resp_words[i] && strcmp(w, rule_resp_words[i]); i++)
			;
		if (!rule_resp_words[i])
			err = perr(p, "%s: '%s' is not one of first_answered | last_answered"
				   " | first_rung | client | default", o->key, w);
		else if (seen & (1u << i))
			err = perr(p, "%s: '%s' listed twice", o->key, w);
		seen |= 1u << i;
	}
	free(buf);
	if (!err && !seen)
		err = perr(p, "%s: name at least one of first_answered | last_answered"
			   " | first_rung | client | default", o->key);
	return err ? err : set_str(dst, v);
}

static int set_enum(struct parser *p, int *dst, const struct opt *o, const char *v)
{
	char list[128] = "";

	for (int i = 0; o->enums[i]; i++) {
		if (!strcasecmp(v, o->enums[i])) {
			*dst = i;
			return 0;
		}
		if (i)
			strcat(list, " | ");
		strcat(list, o->enums[i]);
	}
	return perr(p, "%s: '%s' is not one of %s", o->key, v, list);
}

static int set_value(struct parser *p, struct conf *c, void *base,
		     const struct opt *o, const char *v)
{
	void *f = (char *)base + o->off;
	char lerr[128];
	int64_t ms;
	int fam;
	uint8_t addr[16];

	switch (o->type) {
	case T_STR:
		return set_str(f, v);
	case T_PATH:
		return resolve_path(p, f, v);
	case T_WAV:
		if (*v) {
			int err = resolve_path(p, f, v);

			if (err)
				return err;
			if (!p->defaults && access(*(char **)f, R_OK))
				return perr(p, "%s: cannot read '%s': %s", o->key,
					    *(char **)f, strerror(errno));
			return 0;
		}
		return set_str(f, v);
	case T_RINGBACK:
		if (!strcasecmp(v, "tone") || !strcasecmp(v, "none") || !*v)
			return set_str(f, *v ? v : "none");
		if (resolve_path(p, f, v))
			return ENOMEM;
		if (access(*(char **)f, R_OK))
			return perr(p, "%s: cannot read '%s': %s "
				    "(tone | none | FILE.wav)", o->key,
				    *(char **)f, strerror(errno));
		return 0;
	case T_DUR:
		if (conf_parse_duration(v, &ms))
			return perr(p, "%s: bad duration '%s' "
				    "(a number with a unit: ms, s, min or h)", o->key, v);
		*(int64_t *)f = ms;
		return 0;
	case T_BOOL:
		if (conf_parse_bool(v, f))
			return perr(p, "%s: '%s' is not yes/no/on/off/true/false",
				    o->key, v);
		return 0;
	case T_UINT: {
		char *end;
		long long n;

		errno = 0;
		n = strtoll(v, &end, 10);
		if (!isdigit((unsigned char)*v) || *end || errno || n > INT32_MAX)
			return perr(p, "%s: '%s' is not a whole number", o->key, v);
		*(int64_t *)f = n;
		return 0;
	}
	case T_ENUM:
		return set_enum(p, f, o, v);
	case T_URI:
		if (*v && conf_check_uri(v))
			return perr(p, "%s: bad URI '%s' (expected sip:, sips: or tel:)",
				    o->key, v);
		return set_str(f, v);
	case T_URI_TMPL:
		if (*v && conf_check_uri(v))
			return perr(p, "%s: bad URI '%s' (expected sip:{ext}@HOST)",
				    o->key, v);
		if (*v && !strstr(v, "{ext}"))
			return perr(p, "%s: '%s' must contain {ext}", o->key, v);
		return set_str(f, v);
	case T_LOGLEVEL:
		if (log_spec_check(v, lerr, sizeof(lerr)))
			return perr(p, "%s: %s", o->key, lerr);
		return set_str(f, v);
	case T_LISTENS:
		return set_listens(p, base, o, v);
	case T_HOSTPORT:
		if (parse_hostport(v, lerr, sizeof(lerr),
				   (uint16_t *)((char *)base + o->off2)))
			return perr(p, "%s: bad address '%s' (expected IP:PORT)",
				    o->key, v);
		return set_str(f, lerr);
	case T_IP:
		if (parse_ip(v, &fam, addr))
			return perr(p, "%s: '%s' is not an IP address", o->key, v);
		return set_str(f, v);
	case T_PORTRANGE: {
		uint16_t lo, hi;
		const char *dash = strchr(v, '-');
		char lo_s[8];

		if (!dash || dash - v >= (long)sizeof(lo_s))
			return perr(p, "%s: bad port range '%s' (expected LOW-HIGH)",
				    o->key, v);
		memcpy(lo_s, v, (size_t)(dash - v));
		lo_s[dash - v] = '\0';
		if (parse_port(lo_s, &lo) || parse_port(dash + 1, &hi) ||
		    lo < 1024 || hi < lo + 1)
			return perr(p, "%s: bad port range '%s' (1024-65535, "
				    "at least one even/odd pair)", o->key, v);
		*(uint16_t *)f = lo;
		*(uint16_t *)((char *)base + o->off2) = hi;
		return 0;
	}
	case T_CODECS:
		return set_codecs(p, c, o, v);
	case T_DIGEST_ALGS:
		return set_digest_algs(p, c, o, v);
	case T_CIDRS:
		return set_cidrs(p, base, o, v);
	case T_NUMBER:
		if (*v && !valid_number(v))
			return perr(p, "%s: '%s' is not a phone number (+digits)",
				    o->key, v);
		return set_str(f, v);
	case T_EXT:
		if (!valid_ext(v))
			return perr(p, "%s: bad extension '%s'", o->key, v);
		return set_str(f, v);
	case T_DIGITS:
		if (!all_digits(v) || strlen(v) > 3)
			return perr(p, "%s: '%s' is not a country code (1-3 digits)",
				    o->key, v);
		return set_str(f, v);
	case T_HA1:
		if (strlen(v) != 32 || strspn(v, "0123456789abcdefABCDEF") != 32)
			return perr(p, "%s: HA1 must be 32 hex digits", o->key);
		return set_str(f, v);
	case T_RESPLIST:
		return set_resplist(p, f, o, v);
	}
	return EINVAL;
}

/* ---- sections ------------------------------------------------------------ */

struct section {
	enum sect_kind kind;
	char name[16];
	void *base;
	bool seen[NOPTS];
};

static const struct opt *find_opt(const char *section, const char *key)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (!strcmp(opts[i].section, section) && !strcasecmp(opts[i].key, key))
			return &opts[i];
	return NULL;
}

static int apply_defaults(struct parser *p, struct conf *c, const char *section,
			  void *base)
{
	int err = 0;

	p->defaults = true;
	for (size_t i = 0; i < NOPTS && !err; i++)
		if (!strcmp(opts[i].section, section) && opts[i].deflt)
			err = set_value(p, c, base, &opts[i], opts[i].deflt);
	p->defaults = false;
	return err;
}

#define GROW(arr, n) \
	({ void *_na = realloc((arr), ((n) + 1) * sizeof(*(arr))); \
	   if (_na) { (arr) = _na; memset(&(arr)[(n)], 0, sizeof(*(arr))); } \
	   _na != NULL; })

/* [rule:TYPE] or [rule:TYPE:DID] */
static int open_rule(struct parser *p, struct conf *c, struct section *s,
		     const char *name)
{
	char type[40];
	const char *colon = strchr(name, ':'), *did = colon ? colon + 1 : NULL;
	size_t n = colon ? (size_t)(colon - name) : strlen(name);
	struct conf_rule *r;
	int i;

	snprintf(type, sizeof(type), "%.*s", (int)(n < sizeof(type) ? n : 0), name);
	for (i = 0; conf_rule_types[i] && strcmp(type, conf_rule_types[i]); i++)
		;
	if (!conf_rule_types[i])
		return perr(p, "[rule:%s]: the type is one of incoming_unknown_answered, "
			    "incoming_known_answered, outgoing_known_answered, "
			    "outgoing_unknown_answered, missed_unknown, missed_known, "
			    "outgoing_known_unanswered", name);
	if (did && !valid_number(did))
		return perr(p, "[rule:%s]: a DID is a number (+digits)", name);
	if (conf_rule_find(c, type, did))
		return perr(p, "[rule:%s] defined twice", name);
	if (!GROW(c->rules, c->nrules))
		return ENOMEM;
	r = &c->rules[c->nrules++];
	r->line = p->line;
	s->kind = S_RULE;
	s->base = r;
	if (set_str(&r->type, type) || (did && set_str(&r->did, did)))
		return ENOMEM;
	return apply_defaults(p, c, "rule", r) ? EINVAL : 0;
}

static int open_named(struct parser *p, struct conf *c, struct section *s,
		      const char *kind, const char *name)
{
	if (!*name)
		return perr(p, "[%s:] needs a name", kind);

	if (!strcmp(kind, "agent")) {
		if (!valid_ext(name))
			return perr(p, "[agent:%s]: bad extension (letters, digits, _ . -)",
				    name);
		if (conf_agent_find(c, name))
			return perr(p, "[agent:%s] defined twice", name);
		if (!GROW(c->agents, c->nagents))
			return ENOMEM;
		s->kind = S_AGENT;
		s->base = &c->agents[c->nagents];
		c->agents[c->nagents].line = p->line;
		if (set_str(&c->agents[c->nagents++].ext, name))
			return ENOMEM;
		if ((!c->agent_idx && hmap_alloc(&c->agent_idx, 64)) ||
		    hmap_set(c->agent_idx, name, (void *)(uintptr_t)c->nagents))
			return ENOMEM;
	}
	else if (!strcmp(kind, "did")) {
		struct conf_did *d;

		if (!valid_number(name))
			return perr(p, "[did:%s]: a DID is a number (+digits)", name);
		if (conf_did_find(c, name))
			return perr(p, "[did:%s] defined twice", name);
		if (!GROW(c->dids, c->ndids))
			return ENOMEM;
		d = &c->dids[c->ndids++];
		d->line = p->line;
		d->responsible = d->mode = CONF_INHERIT;
		d->responsible_ring_ms = d->greeting_min_ms = CONF_INHERIT;
		s->kind = S_DID;
		s->base = d;
		if (set_str(&d->number, name))
			return ENOMEM;
	}
	else if (!strcmp(kind, "trunk")) {
		for (size_t i = 0; i < c->ntrunks; i++)
			if (!strcmp(c->trunks[i].name, name))
				return perr(p, "[trunk:%s] defined twice", name);
		if (!GROW(c->trunks, c->ntrunks))
			return ENOMEM;
		s->kind = S_TRUNK;
		s->base = &c->trunks[c->ntrunks];
		c->trunks[c->ntrunks].line = p->line;
		if (set_str(&c->trunks[c->ntrunks++].name, name))
			return ENOMEM;
		if (apply_defaults(p, c, "trunk", s->base))
			return EINVAL;
	}
	else if (!strcmp(kind, "rule")) {
		int e = open_rule(p, c, s, name);

		if (e)
			return e;
	}
	else {
		return perr(p, "unknown section [%s:%s]", kind, name);
	}
	snprintf(s->name, sizeof(s->name), "%s", kind);
	return 0;
}

static int open_section(struct parser *p, struct conf *c, struct section *s,
			char *hdr)
{
	static const char *const plain[] = { "core", "sip", "media", "routing",
					     "pbx", "crm", "api", NULL };
	char *colon = strchr(hdr, ':');

	memset(s->seen, 0, sizeof(s->seen));
	if (colon) {
		*colon = '\0';
		return open_named(p, c, s, hdr, colon + 1);
	}
	for (int i = 0; plain[i]; i++) {
		if (!strcmp(hdr, plain[i])) {
			s->kind = S_CONF;
			s->base = c;
			snprintf(s->name, sizeof(s->name), "%s", hdr);
			return 0;
		}
	}
	if (!strcmp(hdr, "agent") || !strcmp(hdr, "did") || !strcmp(hdr, "trunk"))
		return perr(p, "[%s] needs a name: [%s:NAME]", hdr, hdr);
	if (!strcmp(hdr, "rule"))
		return perr(p, "[rule] needs a call type: [rule:TYPE] or [rule:TYPE:DID]");
	return perr(p, "unknown section [%s]", hdr);
}

/* ---- lines ---------------------------------------------------------------- */

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/*
 * A comment starts at '#' or ';' at the start of a line or after
 * white space, so "sip:a@b;transport=tcp" keeps its parameter. A value
 * in double quotes is taken literally.
 */
static int split_value(struct parser *p, char *v, char **out)
{
	v = trim(v);
	if (*v == '"') {
		char *q = strchr(v + 1, '"');
		char *rest;

		if (!q)
			return perr(p, "unterminated quoted value");
		*q = '\0';
		rest = trim(q + 1);
		if (*rest && *rest != '#' && *rest != ';')
			return perr(p, "text after a quoted value");
		*out = v + 1;
		return 0;
	}
	for (char *q = v; *q; q++) {
		if ((*q == '#' || *q == ';') && (q == v || isspace((unsigned char)q[-1]))) {
			*q = '\0';
			break;
		}
	}
	*out = trim(v);
	return 0;
}

static int parse_line(struct parser *p, struct conf *c, struct section *s,
		      char *line)
{
	char *l = trim(line), *eq, *key, *val = NULL;
	const struct opt *o;
	int err;

	if (!*l || *l == '#' || *l == ';')
		return 0;
	if (*l == '[') {
		char *rb = strchr(l, ']'), *rest;

		if (!rb)
			return perr(p, "missing ']' in section header");
		*rb = '\0';
		rest = trim(rb + 1);
		if (*rest && *rest != '#' && *rest != ';')
			return perr(p, "text after section header");
		return open_section(p, c, s, trim(l + 1));
	}
	eq = strchr(l, '=');
	if (!eq)
		return perr(p, "expected 'key = value'");
	*eq = '\0';
	key = trim(l);
	if (!*key)
		return perr(p, "missing key before '='");
	if (!s->base)
		return perr(p, "'%s' outside of any section", key);
	o = find_opt(s->name, key);
	if (!o)
		return perr(p, "unknown key '%s' in [%s]", key, s->name);
	if (s->seen[o - opts])
		return perr(p, "'%s' set twice in this section", key);
	s->seen[o - opts] = true;
	err = split_value(p, eq + 1, &val);
	if (err)
		return err;
	return set_value(p, c, s->base, o, val);
}

/* ---- cross-field checks ------------------------------------------------- */

/* [crm] for bitrix24 and amocrm: where the account is, and how to log in. */
static int check_crm_account(struct parser *p, struct conf *c)
{
	bool oauth = *c->crm.client_id || *c->crm.client_secret || *c->crm.refresh_token;

	if (c->crm.type != CONF_CRM_BITRIX24 && c->crm.type != CONF_CRM_AMOCRM)
		return 0;
	p->line = 0;
	if (oauth && (!*c->crm.client_id || !*c->crm.client_secret ||
		      !*c->crm.refresh_token))
		return perr(p, "[crm] OAuth needs client_id, client_secret and refresh_token");
	if (c->crm.type == CONF_CRM_BITRIX24) {
		if (strncmp(c->crm.url, "http://", 7) && strncmp(c->crm.url, "https://", 8))
			return perr(p, "[crm] type = bitrix24 needs url: the inbound webhook "
				    "https://PORTAL/rest/USER/TOKEN/ (or, with OAuth, "
				    "https://PORTAL/rest/)");
		if (!*c->crm.default_user)
			return perr(p, "[crm] type = bitrix24 needs default_user: the "
				    "portal user calls nobody has answered yet belong to");
		return 0;
	}
	if (!*c->crm.subdomain && strncmp(c->crm.url, "http://", 7) &&
	    strncmp(c->crm.url, "https://", 8))
		return perr(p, "[crm] type = amocrm needs subdomain (or url)");
	if (!oauth && !*c->crm.token)
		return perr(p, "[crm] type = amocrm needs token (a long-lived token) or "
			    "client_id, client_secret and refresh_token");
	if (oauth && !*c->crm.redirect_uri)
		return perr(p, "[crm] amocrm OAuth needs redirect_uri (the integration's)");
	return 0;
}

/* What a rule may ask of the configured CRM, and of its call type. */
static int check_rules(struct parser *p, struct conf *c)
{
	for (size_t i = 0; i < c->nrules; i++) {
		const struct conf_rule *r = &c->rules[i];
		bool known = strstr(r->type, "_known") != NULL;

		p->line = r->line;
		if (known && r->contact && *r->contact)
			return perr(p, "[rule:%s]: contact is for unknown numbers only",
				    r->type);
		if (known && r->unsorted)
			return perr(p, "[rule:%s]: unsorted is for unknown numbers only",
				    r->type);
		if (known && r->crm_create)
			return perr(p, "[rule:%s]: crm_create is for unknown numbers only",
				    r->type);
		if (c->crm.type == CONF_CRM_AMOCRM && r->lead && *r->lead)
			return perr(p, "[rule:%s]: amoCRM has no leads apart from deals; "
				    "use deal", r->type);
		if (c->crm.type == CONF_CRM_AMOCRM && r->crm_create)
			return perr(p, "[rule:%s]: crm_create is for bitrix24", r->type);
		if (c->crm.type == CONF_CRM_BITRIX24 && r->unsorted)
			return perr(p, "[rule:%s]: unsorted is for amocrm", r->type);
	}
	p->line = 0;
	return 0;
}

/*
 * A certificate and key that sofia (OpenSSL) or libmicrohttpd (GnuTLS)
 * cannot load would only show when a client connects, with a TLS error
 * on the client's side: refuse them at startup instead.
 */
static int check_pem_pair(struct parser *p, const char *sect, const char *cert,
			  const char *key)
{
	FILE *fc = fopen(cert, "r"), *fk = fopen(key, "r");
	X509 *x = fc ? PEM_read_X509(fc, NULL, NULL, NULL) : NULL;
	EVP_PKEY *k = fk ? PEM_read_PrivateKey(fk, NULL, NULL, NULL) : NULL;
	int e = 0;

	if (!fc || !fk)
		e = perr(p, "[%s] cannot read %s: %s", sect, fc ? key : cert,
			 strerror(errno));
	else if (!x)
		e = perr(p, "[%s] tls_cert %s: no PEM certificate in it", sect, cert);
	else if (!k)
		e = perr(p, "[%s] tls_key %s: no PEM private key in it "
			 "(or it is encrypted)", sect, key);
	else if (X509_check_private_key(x, k) != 1)
		e = perr(p, "[%s] tls_key %s does not match tls_cert %s", sect, key,
			 cert);
	ERR_clear_error();
	X509_free(x);
	EVP_PKEY_free(k);
	if (fc)
		fclose(fc);
	if (fk)
		fclose(fk);
	return e;
}

/* A dial plan: words domestic, any, none, and +DIGITS prefixes. */
static int check_dial(struct parser *p, const char *where, const char *v)
{
	char buf[512], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", v ? v : "");
	for (char *w = strtok_r(buf, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
		if (!strcmp(w, "domestic") || !strcmp(w, "any") || !strcmp(w, "none"))
			continue;
		if (w[0] == '+' && w[1] && w[strspn(w + 1, "0123456789") + 1] == '\0')
			continue;
		return perr(p, "%s: '%s' is not domestic, any, none or a +prefix", where, w);
	}
	return 0;
}

static int check_conf(struct parser *p, struct conf *c)
{
	bool tls = false;

	if (check_dial(p, "[routing] agent_dial", c->routing.agent_dial))
		return EINVAL;

	for (size_t i = 0; i < c->nagents; i++) {
		struct conf_agent *a = &c->agents[i];

		p->line = a->line;
		if (!a->password && !a->ha1)
			return perr(p, "[agent:%s] needs password or ha1", a->ext);
		if (a->password && a->ha1)
			return perr(p, "[agent:%s]: set password or ha1, not both", a->ext);
		if (a->dial && check_dial(p, "dial", a->dial))
			return EINVAL;
		if (a->crm_user) {
			const struct conf_agent *o = conf_agent_by_crm_user(c, a->crm_user);

			if (o)
				return perr(p, "[agent:%s]: crm_user %s is "
					    "already used by agent %s", a->ext,
					    a->crm_user, o->ext);
			if ((!c->crm_user_idx && hmap_alloc(&c->crm_user_idx, 64)) ||
			    hmap_set(c->crm_user_idx, a->crm_user, (void *)(uintptr_t)(i + 1)))
				return ENOMEM;
		}
	}
	for (size_t i = 0; i < c->ntrunks; i++) {
		p->line = c->trunks[i].line;
		if (!c->trunks[i].nmatch && !*c->trunks[i].uri)
			return perr(p, "[trunk:%s] needs match or uri", c->trunks[i].name);
	}
	p->line = 0;
	for (size_t i = 0; i < c->sip.nlisten; i++)
		if (c->sip.listen[i].tp == CONF_TP_TLS)
			tls = true;
	if (tls && (!*c->sip.tls_cert || !*c->sip.tls_key))
		return perr(p, "[sip] a tls: listener needs tls_cert and tls_key");
	if (tls && check_pem_pair(p, "sip", c->sip.tls_cert, c->sip.tls_key))
		return EINVAL;
	if (!*c->api.tls_cert != !*c->api.tls_key)
		return perr(p, "[api] tls_cert and tls_key go together");
	if (*c->api.tls_cert &&
	    check_pem_pair(p, "api", c->api.tls_cert, c->api.tls_key))
		return EINVAL;
	if (c->sip.min_expires_ms > c->sip.max_expires_ms)
		return perr(p, "[sip] min_expires is larger than max_expires");
	if (c->crm.type == CONF_CRM_GENERIC &&
	    (!*c->crm.lookup_url || !*c->crm.events_url))
		return perr(p, "[crm] type = generic needs lookup_url and events_url");
	if (check_crm_account(p, c) || check_rules(p, c))
		return EINVAL;
	if (c->media.rtp_min % 2)
		c->media.rtp_min++;
	if (c->media.rtp_max < c->media.rtp_min + 1)
		return perr(p, "[media] rtp_ports holds no even/odd port pair");
	return 0;
}

/* ---- public ------------------------------------------------------------- */

static struct conf *conf_new(const char *path)
{
	struct conf *c = calloc(1, sizeof(*c));
	char *slash;

	if (!c)
		return NULL;
	c->refs = 1;
	c->path = strdup(path);
	c->dir = strdup(path);
	if (!c->path || !c->dir) {
		conf_deref(c);
		return NULL;
	}
	slash = strrchr(c->dir, '/');
	if (slash == c->dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		strcpy(c->dir, ".");
	return c;
}

int conf_parse_string(struct conf **confp, const char *path, const char *text,
		      char *err, size_t errsz)
{
	struct parser p = { .path = path, .err = err, .errsz = errsz };
	struct section s = { 0 };
	struct conf *c = conf_new(path);
	char *buf = NULL, *save = NULL, *line;
	const char *plain[] = { "core", "sip", "media", "routing", "pbx", "crm", "api" };
	int e = 0;

	if (!c || !(buf = strdup(text))) {
		e = ENOMEM;
		goto out;
	}
	p.dir = c->dir;
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]) && !e; i++)
		e = apply_defaults(&p, c, plain[i], c);
	if (e)
		goto out;

	/* strsep keeps empty lines, so line numbers stay right */
	save = buf;
	while ((line = strsep(&save, "\n")) && !e) {
		p.line++;
		if (strlen(line) > 4096)
			e = perr(&p, "line too long");
		else
			e = parse_line(&p, c, &s, line);
	}
	if (!e)
		e = check_conf(&p, c);
out:
	free(buf);
	if (e) {
		if (e == ENOMEM)
			snprintf(err, errsz, "%s: out of memory", path);
		conf_deref(c);
		return e;
	}
	*confp = c;
	return 0;
}

int conf_load(struct conf **confp, const char *path, char *err, size_t errsz)
{
	FILE *f = fopen(path, "r");
	char *text = NULL;
	size_t len = 0, cap = 0;
	int e;

	if (!f) {
		snprintf(err, errsz, "%s:0: cannot open: %s", path, strerror(errno));
		return errno;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			char *nt;

			cap = cap ? cap * 2 : 16384;
			if (cap > 16 * 1024 * 1024 || !(nt = realloc(text, cap))) {
				free(text);
				fclose(f);
				snprintf(err, errsz, "%s:0: file too large", path);
				return EFBIG;
			}
			text = nt;
		}
		size_t n = fread(text + len, 1, 4096, f);
		len += n;
		if (n < 4096)
			break;
	}
	e = ferror(f) ? EIO : 0;
	fclose(f);
	if (e) {
		free(text);
		snprintf(err, errsz, "%s:0: read error", path);
		return e;
	}
	text[len] = '\0';
	if (memchr(text, '\0', len)) {
		free(text);
		snprintf(err, errsz, "%s:0: file contains a NUL byte", path);
		return EINVAL;
	}
	e = conf_parse_string(confp, path, text, err, errsz);
	free(text);
	return e;
}

struct conf *conf_ref(struct conf *c)
{
	if (c)
		c->refs++;
	return c;
}

static void free_fields(void *base, const char *section)
{
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
		void *f = (char *)base + o->off;

		if (strcmp(o->section, section))
			continue;
		switch (o->type) {
		case T_STR: case T_PATH: case T_WAV: case T_URI: case T_URI_TMPL:
		case T_LOGLEVEL: case T_HOSTPORT: case T_IP: case T_NUMBER:
		case T_RINGBACK: case T_EXT: case T_DIGITS: case T_HA1:
		case T_LISTENS: case T_CIDRS: case T_RESPLIST:
			free(*(void **)f);
			*(void **)f = NULL;
			break;
		default:
			break;
		}
	}
}

struct conf *conf_deref(struct conf *c)
{
	const char *plain[] = { "core", "sip", "media", "routing", "pbx", "crm", "api" };

	if (!c || --c->refs > 0)
		return NULL;
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		free_fields(c, plain[i]);
	for (size_t i = 0; i < c->nagents; i++) {
		free_fields(&c->agents[i], "agent");
		free(c->agents[i].ext);
	}
	hmap_free(c->agent_idx);
	hmap_free(c->crm_user_idx);
	for (size_t i = 0; i < c->ndids; i++) {
		free_fields(&c->dids[i], "did");
		free(c->dids[i].number);
	}
	for (size_t i = 0; i < c->ntrunks; i++) {
		free_fields(&c->trunks[i], "trunk");
		free(c->trunks[i].name);
	}
	for (size_t i = 0; i < c->nrules; i++) {
		free_fields(&c->rules[i], "rule");
		free(c->rules[i].type);
		free(c->rules[i].did);
	}
	free(c->rules);
	free(c->agents);
	free(c->dids);
	free(c->trunks);
	free(c->path);
	free(c->dir);
	free(c);
	return NULL;
}

/* The agents are indexed as they are read: ten thousand of them cost one
   hash lookup per REGISTER, not a scan. */
static const struct conf_agent *by_index(const struct conf *c,
					 const struct hmap *idx, const char *key)
{
	uintptr_t i = idx && key ? (uintptr_t)hmap_get(idx, key) : 0;

	return i && i <= c->nagents ? &c->agents[i - 1] : NULL;
}

const struct conf_agent *conf_agent_find(const struct conf *c, const char *ext)
{
	return by_index(c, c->agent_idx, ext);
}

const struct conf_agent *conf_agent_by_crm_user(const struct conf *c,
						const char *crm_user)
{
	return by_index(c, c->crm_user_idx, crm_user);
}

const struct conf_did *conf_did_find(const struct conf *c, const char *number)
{
	for (size_t i = 0; i < c->ndids; i++)
		if (c->dids[i].number && !strcmp(c->dids[i].number, number))
			return &c->dids[i];
	return NULL;
}

const struct conf_rule *conf_rule_find(const struct conf *c, const char *type,
				       const char *did)
{
	for (size_t i = 0; i < c->nrules; i++) {
		const struct conf_rule *r = &c->rules[i];

		if (!strcmp(r->type, type) &&
		    (did ? r->did && !strcmp(r->did, did) : !r->did))
			return r;
	}
	return NULL;
}

const struct conf_trunk *conf_trunk_match(const struct conf *c,
					  const struct sockaddr *sa)
{
	for (size_t i = 0; i < c->ntrunks; i++)
		for (size_t j = 0; j < c->trunks[i].nmatch; j++)
			if (conf_cidr_contains(&c->trunks[i].match[j], sa))
				return &c->trunks[i];
	return NULL;
}

void conf_print_options(FILE *f)
{
	const char *last = "";

	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];

		if (strcmp(last, o->section)) {
			bool named = !strcmp(o->section, "agent") ||
				     !strcmp(o->section, "did") ||
				     !strcmp(o->section, "trunk");
			bool rule = !strcmp(o->section, "rule");
			fprintf(f, "\n[%s%s]\n", o->section, rule ? ":TYPE[:DID]" :
				named ? ":NAME" : "");
			last = o->section;
		}
		fprintf(f, "%-18s = %-28s ; %s\n", o->key,
			o->deflt ? o->deflt : "(inherit/unset)", o->help);
	}
}
