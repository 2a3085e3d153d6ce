/*
 * route.h: the routing engine. Pure code: it takes a description of a
 * call and returns a plan; it knows nothing of SIP stacks, sockets or HTTP,
 * so every decision is unit-tested without a network (CONTRACT §3).
 */
#ifndef SIPCRM_ROUTE_H
#define SIPCRM_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conf;

enum route_direction {
	ROUTE_INBOUND,          /* from a trunk to the company */
	ROUTE_INTERNAL,         /* an agent calls an extension */
	ROUTE_OUTBOUND,         /* an agent calls a number through the trunk */
};

enum route_lookup {
	ROUTE_LOOKUP_UNKNOWN,   /* the CRM does not know the caller (or no CRM) */
	ROUTE_LOOKUP_FAILED,    /* timeout, error, garbage: routed as unknown */
	ROUTE_LOOKUP_KNOWN,     /* known caller; responsible_ext may be set */
};

/* What the router needs to know about one agent right now. */
struct route_agent {
	const char *ext;        /* NULL: no agent */
	bool registered;        /* at least one live contact */
	bool busy;              /* already in a call */
};

/* The settings for one call: [routing]/[media] with the DID's overrides. */
struct route_settings {
	int mode;               /* enum conf_routing_mode */
	int responsible;        /* enum conf_responsible (never inherit) */
	int64_t responsible_ring_ms;
	int64_t greeting_min_ms;
	int64_t lookup_timeout_ms;
	bool skip_busy;
	const char *fallback;   /* NULL or "" when none */
	const char *extension_uri;
	const char *greeting;   /* path, "" for none */
	const char *ringback;   /* "tone", "none" or a path */
};

/*
 * Resolves the settings for a call to did (may be NULL or unknown): [routing],
 * [media] and [pbx], with whatever the matching [did:] section sets. The DID
 * matches with or without its leading '+'; an exact match wins. Strings point
 * into c, which must outlive s, and are never NULL: "" means none.
 */
void route_settings(const struct conf *c, const char *did,
		    struct route_settings *s);

struct route_input {
	enum route_direction dir;
	const char *caller;             /* E.164 or extension */
	const char *did;                /* inbound: the dialled company number */
	const char *dest;               /* internal: extension; outbound: number */
	enum route_lookup lookup;
	struct route_agent agent;       /* inbound: the responsible agent;
					   internal: the called agent */
	const struct route_settings *set;
};

#define ROUTE_MAX_FORKS 4
#define ROUTE_MAX_TARGETS 4
#define ROUTE_URI_MAX 256
#define ROUTE_WHY_MAX 160

enum route_target_kind {
	ROUTE_TARGET_AGENT,     /* every registered contact of ext, or
				   extension_uri when none (expanded by the
				   B2BUA, which knows the contacts) */
	ROUTE_TARGET_URI,       /* a fixed URI: the fallback */
	ROUTE_TARGET_TRUNK,     /* outbound: dest through the trunk */
};

struct route_target {
	enum route_target_kind kind;
	char ext[33];                   /* AGENT */
	char uri[ROUTE_URI_MAX];        /* URI; TRUNK: the number */
	unsigned q1000;                 /* redirect: Contact q times 1000 */
};

/* Targets that ring together; the next fork starts when this one fails or
 * when timeout_ms passes (0: no limit of its own). */
struct route_fork {
	struct route_target targets[ROUTE_MAX_TARGETS];
	size_t ntargets;
	int64_t timeout_ms;
};

enum route_action {
	ROUTE_BRIDGE,           /* ring the forks in order, anchor media */
	ROUTE_REDIRECT,         /* 302 with forks[0].targets as Contacts */
	ROUTE_REJECT,           /* answer reject_status */
};

struct route_plan {
	enum route_action action;
	int reject_status;              /* REJECT: e.g. 480, 486, 404 */
	const char *reject_reason;      /* short text, for logs and the CDR */
	struct route_fork forks[ROUTE_MAX_FORKS];
	size_t nforks;
	int64_t greeting_min_ms;        /* inbound bridge: ring no earlier */
	bool play_greeting;             /* inbound bridge with a greeting */
	/* One line for the log: "responsible 101 first for 20000 ms, then
	 * fallback sip:pbx@...". Held in the plan, not pointed to, so that a
	 * copied plan stays valid and route_plan needs no static state;
	 * long URIs are cut short here (and only here). */
	char why[ROUTE_WHY_MAX];
};

/*
 * Builds the plan for in; plan is overwritten whole and owns everything it
 * holds except reject_reason, which is static. Returns 0 (also for a REJECT
 * decided by the rules), or EINVAL when in is inconsistent: in or in->set
 * NULL, an unknown direction, lookup, mode or responsible, a negative
 * duration, an extension over 32 characters or a URI that does not fit
 * ROUTE_URI_MAX. Then plan is a REJECT 500 and why says what was wrong.
 */
int route_plan(const struct route_input *in, struct route_plan *plan);

#endif
