/*
 * b2b_event.c: the call events of CONTRACT §4 and the agents' status.
 *
 * Every call emits, in seq order: call.started (once, when its targets are
 * chosen, or at its end if it never got that far), call.ringing (once per
 * agent whose phones ring), call.answered (once), call.ended (exactly once,
 * from the one place a call ends). The events go through the CRM core,
 * which stores them in the same batched transaction as the CDR.
 *
 * An agent's status (offline, idle, ringing, busy) is counted, not
 * searched for: each ringing branch and each answered call of an agent
 * adds one while it lasts, so asking costs one hash lookup whatever the
 * number of calls, and agent.status is emitted when the answer changes.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define LOG_MODULE "b2b"
#include "log.h"
#include "clk.h"
#include "conf.h"
#include "hmap.h"
#include "metrics.h"
#include "crm/crm.h"
#include "crm/normalize.h"
#include "sip/b2b.h"
#include "sip/b2b_int.h"
#include "sip/registrar.h"

static const char *const dir_names[] = { "inbound", "internal", "outbound" };

struct agent_act {
	int ringing;                    /* branches ringing its phones */
	int busy;                       /* calls it talks in (or places) */
	char sent[8];                   /* the status last reported */
};

/* ---- call events ------------------------------------------------------------- */

static json_t *str_or_null(const char *s)
{
	return s && *s ? json_string(s) : json_null();
}

/*
 * from, to and did as the CRM sees them: an outbound call is from the
 * agent who placed it, to the number in E.164, on the company number it
 * went out with (the trunk's caller id).
 */
static json_t *call_event(struct call *c, const char *type)
{
	json_t *ev = crm_event_new(type);
	const char *from = c->from, *to = c->to, *did = c->did;
	char e164[CRM_E164_SIZE];

	if (!ev)
		return NULL;
	if (c->dir == ROUTE_OUTBOUND) {
		from = c->caller_agent;
		if (!crm_normalize(c->to, c->conf->crm.country_code, e164, sizeof(e164)))
			to = e164;
		did = c->from;
	}
	json_object_set_new(ev, "call_id", json_string(c->id));
	json_object_set_new(ev, "seq", json_integer(++c->ev_seq));
	json_object_set_new(ev, "direction", json_string(dir_names[c->dir]));
	json_object_set_new(ev, "from", str_or_null(from));
	json_object_set_new(ev, "to", str_or_null(to));
	json_object_set_new(ev, "did", str_or_null(did));
	return ev;
}

static void emit(struct call *c, json_t *ev)
{
	if (!c->ending)
		b2b_cdr_note_open(c, ev);       /* before emit takes ev */
	if (crm_event_emit(c->b2b->crm, c->id, ev))
		log_err("call %s: an event was not stored", c->id);
}

static json_t *crm_user_of(const struct call *c, const char *ext)
{
	const struct conf_agent *a = ext && *ext ? conf_agent_find(c->conf, ext) : NULL;

	return str_or_null(a ? a->crm_user : NULL);
}

void b2b_ev_started(struct call *c)
{
	json_t *ev;

	if (c->ev_started)
		return;
	c->ev_started = true;
	ev = call_event(c, "call.started");
	if (!ev)
		return;
	json_object_set_new(ev, "contact_id", str_or_null(c->lres.contact_id));
	if (c->lres.status == CRM_KNOWN)
		json_object_set_new(ev, "responsible", json_pack("{s:o, s:o, s:o}",
			"id", str_or_null(c->lres.responsible_id),
			"extension", str_or_null(c->lres.responsible_ext),
			"name", str_or_null(c->lres.responsible_name)));
	else
		json_object_set_new(ev, "responsible", json_null());
	emit(c, ev);
}

/* "|101|102|": the agents already reported ringing in this call */
static bool rung_before(struct call *c, const char *ext)
{
	char item[40];
	size_t n = strlen(c->ev_rung);

	snprintf(item, sizeof(item), "|%s|", ext);
	if (strstr(c->ev_rung, item))
		return true;
	if (n + strlen(item) < sizeof(c->ev_rung))
		snprintf(c->ev_rung + n, sizeof(c->ev_rung) - n, "%s", n ? item + 1 : item);
	return false;
}

void b2b_ev_ringing(struct call *c, const char *ext)
{
	json_t *ev;

	if (!ext || !*ext || rung_before(c, ext))
		return;
	b2b_ev_started(c);
	ev = call_event(c, "call.ringing");
	if (!ev)
		return;
	json_object_set_new(ev, "agent", json_string(ext));
	json_object_set_new(ev, "crm_user", crm_user_of(c, ext));
	emit(c, ev);
}

void b2b_ev_answered(struct call *c, const struct leg *l)
{
	json_t *ev;

	/* a phone that answers without a 180 still rang */
	b2b_ev_ringing(c, l->agent);
	b2b_ev_started(c);
	ev = call_event(c, "call.answered");
	if (!ev)
		return;
	json_object_set_new(ev, "agent", str_or_null(*l->agent ? l->agent :
						     c->dir == ROUTE_OUTBOUND ?
						     c->caller_agent : NULL));
	json_object_set_new(ev, "crm_user", crm_user_of(c, *l->agent ? l->agent :
							c->dir == ROUTE_OUTBOUND ?
							c->caller_agent : NULL));
	emit(c, ev);
}

void b2b_ev_transferred(struct call *c, const char *agent, const char *by,
			const char *mode)
{
	json_t *ev = call_event(c, "call.transferred");

	if (!ev)
		return;
	json_object_set_new(ev, "agent", str_or_null(agent));
	json_object_set_new(ev, "crm_user", crm_user_of(c, agent));
	json_object_set_new(ev, "by", str_or_null(by));
	json_object_set_new(ev, "mode", json_string(mode));
	emit(c, ev);
}

void b2b_ev_ended(struct call *c)
{
	char url[512];
	json_t *ev;

	b2b_ev_started(c);
	ev = call_event(c, "call.ended");
	if (!ev)
		return;
	json_object_set_new(ev, "disposition", json_string(c->disposition));
	json_object_set_new(ev, "duration",
			    json_integer((c->ended_ms - c->started_ms) / 1000));
	json_object_set_new(ev, "billsec", json_integer(c->answered_ms ?
				(c->ended_ms - c->answered_ms) / 1000 : 0));
	json_object_set_new(ev, "first_agent", str_or_null(c->first_agent));
	json_object_set_new(ev, "last_agent", str_or_null(c->last_agent));
	json_object_set_new(ev, "recording_url", b2b_rec_first_url(c, url, sizeof(url)) ?
			    json_string(url) : json_null());
	json_object_set_new(ev, "recordings", b2b_recs_json(c->conf, c->recs));
	if (*c->end_reason)
		json_object_set_new(ev, "end_reason", json_string(c->end_reason));
	emit(c, ev);
}

/* ---- agents' status ------------------------------------------------------------- */

static const char *status_of(const struct b2b *b, const struct agent_act *a,
			     const char *ext)
{
	if (a && a->busy > 0)
		return "busy";
	if (a && a->ringing > 0)
		return "ringing";
	return reg_contacts(b->reg, ext) ? "idle" : "offline";
}

unsigned b2b_agent_calls(struct b2b *b, const char *ext)
{
	const struct agent_act *a = hmap_get(b->acts, ext);

	return a && a->busy > 0 ? (unsigned)a->busy : 0;
}

const char *b2b_agent_status(struct b2b *b, const char *ext)
{
	return status_of(b, hmap_get(b->acts, ext), ext);
}

static struct agent_act *act_get(struct b2b *b, const char *ext)
{
	struct agent_act *a = hmap_get(b->acts, ext);

	if (a || !conf_agent_find(b->conf, ext))
		return a;
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	snprintf(a->sent, sizeof(a->sent), "%s", status_of(b, a, ext));
	if (hmap_set(b->acts, ext, a)) {
		free(a);
		return NULL;
	}
	return a;
}

/* Emits agent.status when the agent's status is not the one last sent. */
static void act_check(struct b2b *b, struct agent_act *a, const char *ext)
{
	const char *now = status_of(b, a, ext);
	const struct conf_agent *ca;
	json_t *ev;
	char key[48];

	if (!strcmp(now, a->sent))
		return;
	snprintf(a->sent, sizeof(a->sent), "%s", now);
	b2b_blf_status(b, ext, now);
	ev = crm_event_new("agent.status");
	if (!ev)
		return;
	ca = conf_agent_find(b->conf, ext);
	json_object_set_new(ev, "agent", json_string(ext));
	json_object_set_new(ev, "crm_user", str_or_null(ca ? ca->crm_user : NULL));
	json_object_set_new(ev, "status", json_string(now));
	snprintf(key, sizeof(key), "agent/%s", ext);
	if (crm_event_emit(b->crm, key, ev))
		log_err("agent %s: a status event was not stored", ext);
}

static void act_add(struct b2b *b, const char *ext, int ringing, int busy)
{
	struct agent_act *a = *ext ? act_get(b, ext) : NULL;

	if (!a)
		return;
	a->ringing += ringing;
	a->busy += busy;
	act_check(b, a, ext);
}

void b2b_act_leg(struct leg *l, bool ringing)
{
	if (l->act_ringing == ringing || !*l->agent)
		return;
	l->act_ringing = ringing;
	act_add(l->call->b2b, l->agent, ringing ? 1 : -1, 0);
}

void b2b_act_busy(struct call *c, bool caller, bool busy)
{
	bool *flag = caller ? &c->act_caller : &c->act_winner;
	const char *ext = caller ? c->caller_agent :
			  c->winner ? c->winner->agent : "";

	if (*flag == busy || !*ext)
		return;
	*flag = busy;
	act_add(c->b2b, ext, 0, busy ? 1 : -1);
}

void b2b_act_call_end(struct call *c)
{
	for (struct leg *l = c->legs; l; l = l->next)
		b2b_act_leg(l, false);
	b2b_act_busy(c, false, false);
	b2b_act_busy(c, true, false);
}

const char *b2b_agent_activity(struct b2b *b, const char *ext, const struct call *self)
{
	const struct agent_act *a = hmap_get(b->acts, ext);
	int busy, ringing;

	if (!a)
		return NULL;
	busy = a->busy;
	ringing = a->ringing;
	if (self) {
		busy -= (self->act_caller && !strcmp(self->caller_agent, ext)) +
			(self->act_winner && !strcmp(self->winner->agent, ext));
		for (const struct leg *l = self->legs; l; l = l->next)
			ringing -= l->act_ringing && !strcmp(l->agent, ext);
	}
	return busy > 0 ? "busy" : ringing > 0 ? "ringing" : NULL;
}

/* The registrar says an agent came online or went offline. */
static void on_reg_status(const char *ext, bool online, void *arg)
{
	struct b2b *b = arg;
	struct agent_act *a = hmap_get(b->acts, ext);

	if (!a) {
		a = act_get(b, ext);
		if (!a)
			return;
		/* it was created just now, after the change: what it was before */
		if (!a->busy && !a->ringing)
			snprintf(a->sent, sizeof(a->sent), "%s", online ? "offline" : "idle");
	}
	act_check(b, a, ext);
}

/* sipcrm_agents{status}: how many configured agents are in each status. */
static void collect(void *arg)
{
	static const char *const names[] = { "offline", "idle", "ringing", "busy" };
	static struct metric *m[4];
	struct b2b *b = arg;
	int64_t n[4] = { 0 };

	if (!b->acts)
		return;
	for (size_t k = 0; k < 4 && !m[3]; k++) {
		char lbl[32];

		snprintf(lbl, sizeof(lbl), "status=\"%s\"", names[k]);
		m[k] = metrics_gauge("sipcrm_agents", "configured agents by status", lbl);
	}
	for (size_t i = 0; i < b->conf->nagents; i++) {
		const char *ext = b->conf->agents[i].ext;
		const char *st = status_of(b, hmap_get(b->acts, ext), ext);

		for (size_t k = 0; k < 4; k++)
			if (!strcmp(st, names[k]))
				n[k]++;
	}
	for (size_t k = 0; k < 4; k++)
		metrics_set(m[k], n[k]);
}

int b2b_act_init(struct b2b *b)
{
	if (hmap_alloc(&b->acts, 64))
		return -1;
	reg_on_status(b->reg, on_reg_status, b);
	metrics_on_collect(collect, b);
	return 0;
}

static int free_act(const char *key, void *val, void *arg)
{
	(void)key;
	(void)arg;
	free(val);
	return 0;
}

void b2b_act_fini(struct b2b *b)
{
	if (b->reg)
		reg_on_status(b->reg, NULL, NULL);
	if (b->acts) {
		hmap_apply(b->acts, free_act, NULL);
		b->acts = hmap_free(b->acts);
	}
}
