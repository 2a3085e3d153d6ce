/*
 * route.c: who rings, in what order, for how long (CONTRACT §3).
 *
 * Pure decision code: no SIP stack, no sockets, no clock, no static state.
 * The B2BUA hands in what it knows about the call and gets back a plan it
 * executes; every rule here is covered by t/route_plan.c.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "routing/route.h"

/* Room for "+" and the longest DID we bother to look up with one. */
#define DID_ALT_MAX 64

static bool has(const char *s)
{
	return s && *s;
}

static const char *str_or_none(const char *s)
{
	return s ? s : "";
}

/* ---- settings ---- */

/*
 * The To user part comes from the provider with or without '+', and
 * operators write [did:] either way, so both spellings must meet.
 */
static const struct conf_did *did_find(const struct conf *c, const char *did)
{
	const struct conf_did *d;
	char alt[DID_ALT_MAX];

	if (!has(did))
		return NULL;
	d = conf_did_find(c, did);
	if (d)
		return d;
	if (*did == '+')
		return did[1] && did[1] != '+' ? conf_did_find(c, did + 1) : NULL;
	if (snprintf(alt, sizeof(alt), "+%s", did) >= (int)sizeof(alt))
		return NULL;
	return conf_did_find(c, alt);
}

static void apply_did(const struct conf_did *d, struct route_settings *s)
{
	if (d->greeting)
		s->greeting = d->greeting;
	if (d->ringback)
		s->ringback = d->ringback;
	if (d->fallback)
		s->fallback = d->fallback;
	if (d->responsible != CONF_RESP_INHERIT)
		s->responsible = d->responsible;
	if (d->responsible_ring_ms != CONF_INHERIT)
		s->responsible_ring_ms = d->responsible_ring_ms;
	if (d->greeting_min_ms != CONF_INHERIT)
		s->greeting_min_ms = d->greeting_min_ms;
	if (d->mode != CONF_INHERIT)
		s->mode = d->mode;
}

void route_settings(const struct conf *c, const char *did,
		    struct route_settings *s)
{
	const struct conf_did *d;

	memset(s, 0, sizeof(*s));
	s->fallback = s->extension_uri = s->greeting = "";
	s->ringback = "none";
	/* Without a config nobody can be reached: route_plan rejects. */
	s->responsible = CONF_RESP_OFF;
	if (!c)
		return;

	s->mode = c->routing.mode;
	s->responsible = c->routing.responsible;
	s->responsible_ring_ms = c->routing.responsible_ring_ms;
	s->greeting_min_ms = c->routing.greeting_min_ms;
	s->lookup_timeout_ms = c->routing.lookup_timeout_ms;
	s->skip_busy = c->routing.skip_busy;
	s->fallback = str_or_none(c->routing.fallback);
	s->extension_uri = str_or_none(c->pbx.extension_uri);
	s->greeting = str_or_none(c->media.greeting);
	s->ringback = c->media.ringback ? c->media.ringback : "none";

	d = did_find(c, did);
	if (d)
		apply_did(d, s);
}

/* ---- plan building blocks ---- */

static void plan_why(struct route_plan *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void plan_why(struct route_plan *p, const char *fmt, ...)
{
	va_list ap;

	/* Truncation is acceptable: why is only ever a log line. */
	va_start(ap, fmt);
	vsnprintf(p->why, sizeof(p->why), fmt, ap);
	va_end(ap);
}

/* A path that forgets to decide leaves a 500, never a stray bridge. */
static void plan_reset(struct route_plan *p)
{
	memset(p, 0, sizeof(*p));
	p->action = ROUTE_REJECT;
	p->reject_status = 500;
	p->reject_reason = "internal error";
}

static void plan_accept(struct route_plan *p, enum route_action action)
{
	p->action = action;
	p->reject_status = 0;
	p->reject_reason = NULL;
}

/*
 * Inconsistent input is a bug in the caller, not a routing decision; the
 * caller still gets a plan it can execute blindly (500 to the caller).
 */
static int plan_invalid(struct route_plan *p, const char *what)
{
	plan_reset(p);
	p->reject_reason = "bad routing input";
	plan_why(p, "bad routing input: %s", what);
	return EINVAL;
}

static int plan_reject(struct route_plan *p, int status, const char *reason)
{
	p->action = ROUTE_REJECT;
	p->reject_status = status;
	p->reject_reason = reason;
	p->nforks = 0;
	return 0;
}

/* Refuses rather than truncates: a cut URI would ring the wrong party. */
static int copy_field(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);

	if (n >= size)
		return EINVAL;
	memcpy(dst, src, n + 1);
	return 0;
}

static struct route_fork *fork_add(struct route_plan *p, int64_t timeout_ms)
{
	struct route_fork *f = &p->forks[p->nforks++];

	f->timeout_ms = timeout_ms;
	return f;
}

static int target_add(struct route_plan *p, struct route_fork *f,
		      enum route_target_kind kind, const char *s, unsigned q1000)
{
	struct route_target *t = &f->targets[f->ntargets];

	t->kind = kind;
	t->q1000 = q1000;
	if (kind == ROUTE_TARGET_AGENT) {
		if (copy_field(t->ext, sizeof(t->ext), s))
			return plan_invalid(p, "extension too long");
	}
	else if (copy_field(t->uri, sizeof(t->uri), s)) {
		return plan_invalid(p, "URI too long");
	}
	f->ntargets++;
	return 0;
}

/* ---- input checks ---- */

static const char *settings_problem(const struct route_settings *s)
{
	if (s->mode != CONF_MODE_BRIDGE && s->mode != CONF_MODE_REDIRECT)
		return "unknown mode";
	if (s->responsible != CONF_RESP_FIRST &&
	    s->responsible != CONF_RESP_PARALLEL &&
	    s->responsible != CONF_RESP_OFF)
		return "unknown responsible setting";
	if (s->responsible_ring_ms < 0 || s->greeting_min_ms < 0)
		return "negative duration";
	return NULL;
}

static const char *input_problem(const struct route_input *in)
{
	if (!in)
		return "no input";
	if (!in->set)
		return "no settings";
	if ((unsigned)in->dir > ROUTE_OUTBOUND)
		return "unknown direction";
	if ((unsigned)in->lookup > ROUTE_LOOKUP_KNOWN)
		return "unknown lookup result";
	return settings_problem(in->set);
}

/* ---- inbound ---- */

/*
 * Whether the responsible agent takes part. When not, reason says why in
 * words for the log ("unknown caller", "responsible 101 busy").
 */
static bool agent_takes_part(const struct route_input *in, char *reason,
			     size_t size)
{
	const struct route_agent *a = &in->agent;
	const struct route_settings *s = in->set;

	if (in->lookup == ROUTE_LOOKUP_UNKNOWN)
		snprintf(reason, size, "unknown caller");
	else if (in->lookup == ROUTE_LOOKUP_FAILED)
		snprintf(reason, size, "lookup failed");
	else if (!has(a->ext))
		snprintf(reason, size, "no responsible agent");
	else if (s->responsible == CONF_RESP_OFF)
		snprintf(reason, size, "responsible %s ignored (responsible = off)",
			 a->ext);
	else if (a->busy && s->skip_busy)
		snprintf(reason, size, "responsible %s busy", a->ext);
	else if (!a->registered && !has(s->extension_uri))
		snprintf(reason, size, "responsible %s not registered, no extension_uri",
			 a->ext);
	else
		return true;
	return false;
}

/* 302: the agent first, the fallback at a lower q (§3.8). */
static int plan_redirect(const struct route_input *in, struct route_plan *p,
			 bool agent, const char *reason)
{
	const char *fb = in->set->fallback;
	struct route_fork *f;
	int err;

	plan_accept(p, ROUTE_REDIRECT);
	if (agent && has(fb))
		plan_why(p, "redirect to responsible %s, then fallback %s",
			 in->agent.ext, fb);
	else if (agent)
		plan_why(p, "redirect to responsible %s, no fallback", in->agent.ext);
	else
		plan_why(p, "redirect to fallback %s (%s)", fb, reason);
	f = fork_add(p, 0);
	if (agent) {
		err = target_add(p, f, ROUTE_TARGET_AGENT, in->agent.ext, 1000);
		if (err)
			return err;
	}
	if (has(fb))
		return target_add(p, f, ROUTE_TARGET_URI, fb, 500);
	return 0;
}

static int bridge_fallback(const struct route_input *in, struct route_plan *p,
			   const char *reason)
{
	plan_why(p, "fallback %s (%s)", in->set->fallback, reason);
	return target_add(p, fork_add(p, 0), ROUTE_TARGET_URI,
			  in->set->fallback, 0);
}

/*
 * Without a fallback the agent rings until it answers or fails: cutting it
 * off after responsible_ring would only leave the caller with nothing.
 */
static int bridge_agent_only(const struct route_input *in, struct route_plan *p)
{
	plan_why(p, "responsible %s, no fallback", in->agent.ext);
	return target_add(p, fork_add(p, 0), ROUTE_TARGET_AGENT,
			  in->agent.ext, 0);
}

static int bridge_parallel(const struct route_input *in, struct route_plan *p)
{
	struct route_fork *f = fork_add(p, 0);
	int err;

	plan_why(p, "responsible %s in parallel with fallback %s",
		 in->agent.ext, in->set->fallback);
	err = target_add(p, f, ROUTE_TARGET_AGENT, in->agent.ext, 0);
	if (err)
		return err;
	return target_add(p, f, ROUTE_TARGET_URI, in->set->fallback, 0);
}

/* A responsible_ring of 0 means no limit: the fallback waits for a failure. */
static int bridge_first(const struct route_input *in, struct route_plan *p)
{
	int64_t ring = in->set->responsible_ring_ms;
	int err;

	if (ring > 0)
		plan_why(p, "responsible %s first for %lld ms, then fallback %s",
			 in->agent.ext, (long long)ring, in->set->fallback);
	else
		plan_why(p, "responsible %s first until it fails, then fallback %s",
			 in->agent.ext, in->set->fallback);
	err = target_add(p, fork_add(p, ring), ROUTE_TARGET_AGENT,
			 in->agent.ext, 0);
	if (err)
		return err;
	return target_add(p, fork_add(p, 0), ROUTE_TARGET_URI,
			  in->set->fallback, 0);
}

static int plan_bridge(const struct route_input *in, struct route_plan *p,
		       bool agent, const char *reason)
{
	const struct route_settings *s = in->set;

	plan_accept(p, ROUTE_BRIDGE);
	p->play_greeting = has(s->greeting);
	p->greeting_min_ms = s->greeting_min_ms;
	if (!agent)
		return bridge_fallback(in, p, reason);
	if (!has(s->fallback))
		return bridge_agent_only(in, p);
	if (s->responsible == CONF_RESP_PARALLEL)
		return bridge_parallel(in, p);
	return bridge_first(in, p);
}

static int plan_inbound(const struct route_input *in, struct route_plan *p)
{
	const struct route_settings *s = in->set;
	char reason[96];
	bool agent = agent_takes_part(in, reason, sizeof(reason));

	if (!agent && !has(s->fallback)) {
		plan_why(p, "no route: %s and no fallback", reason);
		return plan_reject(p, 480, "no route");
	}
	if (s->mode == CONF_MODE_REDIRECT)
		return plan_redirect(in, p, agent, reason);
	return plan_bridge(in, p, agent, reason);
}

/* ---- internal and outbound ---- */

static int plan_internal(const struct route_input *in, struct route_plan *p)
{
	const struct route_agent *a = &in->agent;
	const struct route_settings *s = in->set;

	if (!has(a->ext)) {
		plan_why(p, "internal: no such extension %s", str_or_none(in->dest));
		return plan_reject(p, 404, "no such extension");
	}
	if (a->busy && s->skip_busy) {
		plan_why(p, "internal: %s busy", a->ext);
		return plan_reject(p, 486, "busy");
	}
	if (!a->registered && !has(s->extension_uri)) {
		plan_why(p, "internal: %s not registered, no extension_uri", a->ext);
		return plan_reject(p, 480, "not registered");
	}
	plan_accept(p, ROUTE_BRIDGE);
	plan_why(p, "internal call to %s", a->ext);
	return target_add(p, fork_add(p, 0), ROUTE_TARGET_AGENT, a->ext, 0);
}

static int plan_outbound(const struct route_input *in, struct route_plan *p)
{
	if (!has(in->dest)) {
		plan_why(p, "outbound: no number");
		return plan_reject(p, 484, "no number");
	}
	plan_accept(p, ROUTE_BRIDGE);
	plan_why(p, "outbound to %s through the trunk", in->dest);
	return target_add(p, fork_add(p, 0), ROUTE_TARGET_TRUNK, in->dest, 0);
}

int route_plan(const struct route_input *in, struct route_plan *plan)
{
	const char *problem;

	if (!plan)
		return EINVAL;
	plan_reset(plan);
	problem = input_problem(in);
	if (problem)
		return plan_invalid(plan, problem);

	switch (in->dir) {
	case ROUTE_INBOUND:
		return plan_inbound(in, plan);
	case ROUTE_INTERNAL:
		return plan_internal(in, plan);
	case ROUTE_OUTBOUND:
		return plan_outbound(in, plan);
	}
	return plan_invalid(plan, "unknown direction");
}
