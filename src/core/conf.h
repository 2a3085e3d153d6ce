/*
 * conf.h: the INI configuration (CONTRACT §2).
 *
 * A struct conf is immutable once loaded and reference counted: a SIGHUP
 * builds a new one and swaps it in, while calls in progress keep a
 * reference to the one they started with.
 */
#ifndef SIPCRM_CONF_H
#define SIPCRM_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <netinet/in.h>

enum conf_transport { CONF_TP_UDP, CONF_TP_TCP, CONF_TP_TLS };

struct conf_listen {
	enum conf_transport tp;
	char host[64];          /* literal address, no brackets */
	uint16_t port;          /* 0 picks a free port */
};

struct conf_cidr {
	int family;             /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	unsigned prefix;
};

enum conf_routing_mode { CONF_MODE_BRIDGE, CONF_MODE_REDIRECT };
enum conf_responsible { CONF_RESP_FIRST, CONF_RESP_PARALLEL, CONF_RESP_OFF,
			CONF_RESP_INHERIT = -1 };
enum conf_srtp { CONF_SRTP_OFF, CONF_SRTP_OFFER, CONF_SRTP_REQUIRE };
enum conf_crm_type { CONF_CRM_NONE, CONF_CRM_GENERIC, CONF_CRM_BITRIX24,
		     CONF_CRM_AMOCRM, CONF_CRM_MEGAPLAN, CONF_CRM_KEYCRM };
enum conf_codec { CONF_CODEC_PCMA = 1, CONF_CODEC_PCMU = 2 };
enum conf_digest { CONF_DIGEST_MD5 = 1, CONF_DIGEST_SHA256 = 2 };

/* -1 in a duration or tristate field of a [did:] section means "inherit". */
#define CONF_INHERIT (-1)

struct conf_trunk {
	char *name;
	struct conf_cidr *match;
	size_t nmatch;
	char *uri;
	char *caller_id;
	char *username;
	char *password;
	int line;               /* where the section starts */
};

struct conf_did {
	char *number;
	char *greeting;         /* absolute path, NULL: inherit */
	char *ringback;         /* NULL: inherit */
	char *fallback;         /* NULL: inherit */
	int responsible;        /* enum conf_responsible, or inherit */
	int64_t responsible_ring_ms;
	int64_t greeting_min_ms;
	int mode;               /* enum conf_routing_mode, or inherit */
	int line;
};

/*
 * [rule:TYPE] and [rule:TYPE:DID]: what the CRM adapters create for a call
 * of one of the seven types (conf_rule_types), see crm/crm_rules.h.
 */
struct conf_rule {
	char *type;             /* one of conf_rule_types */
	char *did;              /* NULL: every DID */
	char *contact;          /* name templates; NULL or "": nothing */
	char *lead;
	char *deal;
	char *task;
	char *pipeline;
	char *stage;
	char *responsible;      /* a list of sources, tried in order; NULL: default */
	char *default_user;     /* NULL: [crm] default_user */
	bool unsorted;
	bool crm_create;
	int64_t task_deadline_ms;
	int line;
};

/* The seven call types, NULL-terminated. */
extern const char *const conf_rule_types[];

struct conf_agent {
	char *ext;
	char *password;
	char *ha1;              /* hex MD5 HA1; password or ha1, not both */
	char *name;
	char *crm_user;
	char *dial;             /* overrides [routing] agent_dial; NULL: not set */
	int line;
};

struct conf {
	unsigned refs;
	char *path;             /* as given */
	char *dir;              /* folder for relative paths */

	struct {
		char *db;
		char *log_level;
	} core;

	struct {
		struct conf_listen *listen;
		size_t nlisten;
		char *domain;
		char *tls_cert;
		char *tls_key;
		char *server;           /* Server/User-Agent header; empty: none */
		int64_t min_expires_ms;
		int64_t max_expires_ms;
		int64_t default_expires_ms;
		int64_t nonce_ttl_ms;
		int64_t ban_failures;
		int64_t ban_window_ms;
		int64_t ban_time_ms;
		bool allow_trunk_refer;
		int64_t session_expires_ms;
		int64_t min_se_ms;
		int64_t tcp_idle_ms;    /* TCP/TLS connection without traffic: closed */
		int64_t tcp_timeout_ms; /* a message arriving over TCP/TLS for longer */
		uint8_t digest_algs[2];   /* enum conf_digest, preference order */
		size_t ndigest_algs;
	} sip;

	struct {
		char *ip;
		uint16_t rtp_min, rtp_max;
		unsigned codecs;        /* enum conf_codec bits */
		uint8_t codec_order[2];
		size_t ncodecs;
		char *greeting;
		char *ringback;         /* "tone", "none" or a path */
		int srtp;
		bool record;
		char *record_dir;
		int64_t record_min_ms;
		int64_t media_timeout_ms;
	} media;

	struct {
		int mode;
		int64_t lookup_timeout_ms;
		int64_t greeting_min_ms;
		int responsible;
		int64_t responsible_ring_ms;
		int64_t transfer_ring_ms;
		int64_t c2c_ring_ms;
		char *agent_dial;       /* what agents may dial: domestic any none +P */
		int64_t agent_max_calls;        /* 0: no limit */
		bool skip_busy;
		char *fallback;
	} routing;

	struct {
		char *extension_uri;
	} pbx;

	struct {
		int type;
		char *lookup_url;
		char *events_url;
		char *secret;
		int64_t cache_ms;
		char *country_code;
		int64_t event_retry_ms;
		int64_t event_backoff_max_ms;
		/* bitrix24 and amocrm (crm_bitrix24.c, crm_amocrm.c) */
		char *url;
		char *subdomain;
		char *token;
		char *client_id;
		char *client_secret;
		char *refresh_token;
		char *redirect_uri;
		char *oauth_url;
		char *webhook_token;
		char *default_user;
		char *source;
		bool timeman;
	} crm;

	struct {
		char *listen_host;
		uint16_t listen_port;
		char *token;
		char *public_url;
		char *tls_cert;         /* HTTPS; empty: plain HTTP */
		char *tls_key;
	} api;

	struct conf_trunk *trunks;
	size_t ntrunks;
	struct conf_did *dids;
	size_t ndids;
	struct conf_agent *agents;
	size_t nagents;
	struct hmap *agent_idx;         /* ext -> index + 1 */
	struct hmap *crm_user_idx;      /* crm_user -> index + 1 */
	struct conf_rule *rules;
	size_t nrules;
};

/*
 * Loads and validates FILE. On success *confp holds a new conf with one
 * reference. On failure returns an errno value and writes a
 * "file:line: message" text into err.
 */
int conf_load(struct conf **confp, const char *path, char *err, size_t errsz);

/* Parses from a string; path is used for messages and relative paths. */
int conf_parse_string(struct conf **confp, const char *path, const char *text,
		      char *err, size_t errsz);

struct conf *conf_ref(struct conf *c);
/* Drops a reference; accepts NULL and returns NULL. */
struct conf *conf_deref(struct conf *c);

/* Look-ups over the named sections. NULL when not found. */
const struct conf_agent *conf_agent_find(const struct conf *c, const char *ext);
const struct conf_agent *conf_agent_by_crm_user(const struct conf *c,
						const char *crm_user);
const struct conf_did *conf_did_find(const struct conf *c, const char *number);
/* The rule for type and did exactly as written (did NULL: the section without a DID). */
const struct conf_rule *conf_rule_find(const struct conf *c, const char *type,
				       const char *did);
/* The trunk whose match list contains the address, or NULL. */
const struct conf_trunk *conf_trunk_match(const struct conf *c,
					  const struct sockaddr *sa);

/* Value parsers, exposed for the tests and the other modules. */
int conf_parse_duration(const char *s, int64_t *ms);
int conf_parse_bool(const char *s, bool *b);
int conf_parse_cidr(const char *s, struct conf_cidr *cidr);
bool conf_cidr_contains(const struct conf_cidr *cidr, const struct sockaddr *sa);
int conf_parse_listen(const char *s, struct conf_listen *l);
/* Checks a sip:/sips:/tel: URI with a host; templates may hold {ext}. */
int conf_check_uri(const char *s);

/* Prints the option table (name, default, help) for --help-config. */
void conf_print_options(FILE *f);

#endif
