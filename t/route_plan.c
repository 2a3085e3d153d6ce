/*
 * route_plan.c: the routing engine (CONTRACT §3), with no network.
 *
 * The core is a matrix over every mode x responsible x lookup x agent state
 * x fallback combination, checked against a table of expected plans written
 * out by hand. Plans are compared in a rendered form so that one check
 * covers the action, every fork, target, timeout and q value, and a failure
 * prints both plans in full.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "tap.h"
#include "conf.h"
#include "routing/route.h"

#define FB "sip:pbx@127.0.0.1:5070"
#define EXT_URI "sip:{ext}@127.0.0.1:5071"
#define DID "+74951234567"

static char err[512];
static char tmpdir[64];

static struct conf *parse_at(const char *path, const char *text)
{
	struct conf *c = NULL;

	err[0] = '\0';
	if (conf_parse_string(&c, path, text, err, sizeof(err)))
		return NULL;
	return c;
}

static struct conf *parse(const char *text)
{
	return parse_at("/tmp/t.conf", text);
}

/* ---- rendering ---- */

struct sbuf {
	char *p;
	size_t size, len;
};

static void put(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void put(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->len >= b->size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->size - b->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->len += (size_t)n;
}

static void render_target(struct sbuf *b, const struct route_target *t)
{
	switch (t->kind) {
	case ROUTE_TARGET_AGENT:
		put(b, "agent:%s", t->ext);
		if (t->uri[0])
			put(b, "(uri set: %s)", t->uri);
		break;
	case ROUTE_TARGET_URI:
		put(b, "uri:%s", t->uri);
		break;
	case ROUTE_TARGET_TRUNK:
		put(b, "trunk:%s", t->uri);
		break;
	default:
		put(b, "kind%d", (int)t->kind);
	}
	if (t->kind != ROUTE_TARGET_AGENT && t->ext[0])
		put(b, "(ext set: %s)", t->ext);
	put(b, " q%u", t->q1000);
}

/*
 * One line for a whole plan: "BRIDGE [agent:101 q0] t=15000 [uri:X q0] t=0"
 * or "REJECT 480 no route". Anything that should not be there shows up too.
 */
static const char *render(const struct route_plan *p, char *buf, size_t size)
{
	struct sbuf b = { buf, size, 0 };

	buf[0] = '\0';
	if (p->action == ROUTE_REJECT)
		put(&b, "REJECT %d %s", p->reject_status,
		    p->reject_reason ? p->reject_reason : "(null)");
	else if (p->action == ROUTE_BRIDGE || p->action == ROUTE_REDIRECT)
		put(&b, "%s", p->action == ROUTE_BRIDGE ? "BRIDGE" : "REDIRECT");
	else
		put(&b, "action%d", (int)p->action);
	if (p->action != ROUTE_REJECT && (p->reject_status || p->reject_reason))
		put(&b, " (reject %d set)", p->reject_status);
	if (p->nforks > ROUTE_MAX_FORKS) {
		put(&b, " nforks=%zu", p->nforks);
		return buf;
	}
	for (size_t i = 0; i < p->nforks; i++) {
		const struct route_fork *f = &p->forks[i];

		put(&b, " [");
		for (size_t j = 0; j < f->ntargets && j < ROUTE_MAX_TARGETS; j++) {
			if (j)
				put(&b, ", ");
			render_target(&b, &f->targets[j]);
		}
		put(&b, "] t=%lld", (long long)f->timeout_ms);
	}
	return buf;
}

#define is_plan(plan, want, ...) do { \
	char _rb[2048]; \
	is_str(render((plan), _rb, sizeof(_rb)), (want), __VA_ARGS__); \
} while (0)

/* ---- the matrix ---- */

static const char *const mode_name[] = { "bridge", "redirect" };
static const char *const resp_name[] = { "first", "parallel", "off" };
static const char *const lookup_name[] = { "unknown", "failed", "known" };

/* An agent's state together with the two settings that decide reachability. */
struct agent_case {
	const char *name;
	const char *ext;
	bool registered, busy;
	bool ext_uri;           /* [pbx] extension_uri set */
	bool skip_busy;
	bool reachable;         /* expected, by CONTRACT §3.4 and skip_busy */
	const char *cause;      /* in why when known but left out */
};

static const struct agent_case agent_cases[] = {
	{ "no agent", NULL, false, false, false, true, false, "no responsible agent" },
	{ "no agent+exturi", NULL, false, false, true, false, false, "no responsible agent" },
	{ "empty ext", "", true, false, true, true, false, "no responsible agent" },
	{ "reg", "101", true, false, false, true, true, NULL },
	{ "reg+exturi", "101", true, false, true, true, true, NULL },
	{ "reg,noskip", "101", true, false, false, false, true, NULL },
	{ "reg+exturi,noskip", "101", true, false, true, false, true, NULL },
	{ "unreg", "101", false, false, false, true, false, "not registered" },
	{ "unreg+exturi", "101", false, false, true, true, true, NULL },
	{ "unreg,noskip", "101", false, false, false, false, false, "not registered" },
	{ "unreg+exturi,noskip", "101", false, false, true, false, true, NULL },
	{ "busy", "101", true, true, false, true, false, "busy" },
	{ "busy+exturi", "101", true, true, true, true, false, "busy" },
	{ "busy,noskip", "101", true, true, false, false, true, NULL },
	{ "busy+exturi,noskip", "101", true, true, true, false, true, NULL },
	{ "busy unreg", "101", false, true, false, true, false, "busy" },
	{ "busy unreg+exturi", "101", false, true, true, true, false, "busy" },
	{ "busy unreg,noskip", "101", false, true, false, false, false, "not registered" },
	{ "busy unreg+exturi,noskip", "101", false, true, true, false, true, NULL },
};

#define NAGENT_CASES (sizeof(agent_cases) / sizeof(agent_cases[0]))

/* What the plan must be, keyed by mode, responsible, a reachable known
 * responsible agent (before responsible = off is applied) and fallback. */
struct expect {
	int mode, resp;
	bool candidate, fallback;
	const char *plan;
	const char *why;
	bool bridge_greeting;   /* play_greeting and greeting_min expected */
	bool agent_used;
};

#define AGENT_FIRST "BRIDGE [agent:101 q0] t=15000 [uri:" FB " q0] t=0"
#define AGENT_ALONE "BRIDGE [agent:101 q0] t=0"
#define AGENT_PAR "BRIDGE [agent:101 q0, uri:" FB " q0] t=0"
#define FB_ONLY "BRIDGE [uri:" FB " q0] t=0"
#define NO_ROUTE "REJECT 480 no route"
#define R_BOTH "REDIRECT [agent:101 q1000, uri:" FB " q500] t=0"
#define R_AGENT "REDIRECT [agent:101 q1000] t=0"
#define R_FB "REDIRECT [uri:" FB " q500] t=0"

#define B CONF_MODE_BRIDGE
#define R CONF_MODE_REDIRECT
#define FIRST CONF_RESP_FIRST
#define PAR CONF_RESP_PARALLEL
#define OFF CONF_RESP_OFF

static const struct expect expects[] = {
	{ B, FIRST, true, true, AGENT_FIRST,
	  "responsible 101 first for 15000 ms, then fallback " FB, true, true },
	{ B, FIRST, true, false, AGENT_ALONE, "responsible 101, no fallback", true, true },
	{ B, FIRST, false, true, FB_ONLY, "fallback " FB " (", true, false },
	{ B, FIRST, false, false, NO_ROUTE, "no route: ", false, false },
	{ B, PAR, true, true, AGENT_PAR,
	  "responsible 101 in parallel with fallback " FB, true, true },
	{ B, PAR, true, false, AGENT_ALONE, "responsible 101, no fallback", true, true },
	{ B, PAR, false, true, FB_ONLY, "fallback " FB " (", true, false },
	{ B, PAR, false, false, NO_ROUTE, "no route: ", false, false },
	{ B, OFF, true, true, FB_ONLY, "fallback " FB " (", true, false },
	{ B, OFF, true, false, NO_ROUTE, "no route: ", false, false },
	{ B, OFF, false, true, FB_ONLY, "fallback " FB " (", true, false },
	{ B, OFF, false, false, NO_ROUTE, "no route: ", false, false },
	{ R, FIRST, true, true, R_BOTH,
	  "redirect to responsible 101, then fallback " FB, false, true },
	{ R, FIRST, true, false, R_AGENT, "redirect to responsible 101, no fallback",
	  false, true },
	{ R, FIRST, false, true, R_FB, "redirect to fallback " FB " (", false, false },
	{ R, FIRST, false, false, NO_ROUTE, "no route: ", false, false },
	{ R, PAR, true, true, R_BOTH,
	  "redirect to responsible 101, then fallback " FB, false, true },
	{ R, PAR, true, false, R_AGENT, "redirect to responsible 101, no fallback",
	  false, true },
	{ R, PAR, false, true, R_FB, "redirect to fallback " FB " (", false, false },
	{ R, PAR, false, false, NO_ROUTE, "no route: ", false, false },
	{ R, OFF, true, true, R_FB, "redirect to fallback " FB " (", false, false },
	{ R, OFF, true, false, NO_ROUTE, "no route: ", false, false },
	{ R, OFF, false, true, R_FB, "redirect to fallback " FB " (", false, false },
	{ R, OFF, false, false, NO_ROUTE, "no route: ", false, false },
};

static const struct expect *find_expect(int mode, int resp, bool cand, bool fb)
{
	for (size_t i = 0; i < sizeof(expects) / sizeof(expects[0]); i++) {
		const struct expect *e = &expects[i];

		if (e->mode == mode && e->resp == resp && e->candidate == cand &&
		    e->fallback == fb)
			return e;
	}
	return NULL;
}

static struct conf *matrix_conf(int mode, int resp, bool fb, bool ext_uri,
				bool skip_busy)
{
	char text[1024];

	snprintf(text, sizeof(text),
		 "[routing]\n"
		 "mode = %s\n"
		 "responsible = %s\n"
		 "responsible_ring = 15s\n"
		 "greeting_min = 3s\n"
		 "skip_busy = %s\n"
		 "fallback = %s\n"
		 "[pbx]\n"
		 "extension_uri = %s\n",
		 mode_name[mode], resp_name[resp], skip_busy ? "yes" : "no",
		 fb ? FB : "", ext_uri ? EXT_URI : "");
	return parse(text);
}

/* Why the agent was left out, as the log line must say. */
static const char *expected_cause(int lookup, int resp, const struct agent_case *a)
{
	if (lookup == ROUTE_LOOKUP_UNKNOWN)
		return "unknown caller";
	if (lookup == ROUTE_LOOKUP_FAILED)
		return "lookup failed";
	if (!a->ext || !*a->ext)
		return "no responsible agent";
	if (resp == CONF_RESP_OFF)
		return "responsible = off";
	return a->cause;
}

static void matrix_one(const struct conf *c, int mode, int resp, bool fb,
		       const struct agent_case *a, int lookup)
{
	struct route_settings s;
	struct route_input in = { .dir = ROUTE_INBOUND, .caller = "+74951112233",
				  .did = DID, .lookup = lookup };
	struct route_plan p;
	const struct expect *e;
	bool cand = lookup == ROUTE_LOOKUP_KNOWN && a->reachable;
	char label[160];
	int rc;

	snprintf(label, sizeof(label), "%s/%s/%s/%s/%s", mode_name[mode],
		 resp_name[resp], lookup_name[lookup], a->name, fb ? "fb" : "nofb");
	route_settings(c, DID, &s);
	in.agent.ext = a->ext;
	in.agent.registered = a->registered;
	in.agent.busy = a->busy;
	in.set = &s;
	e = find_expect(mode, resp, cand, fb);
	if (!e) {
		ok(0, "%s: no expectation in the table", label);
		return;
	}
	rc = route_plan(&in, &p);
	is_int(rc, 0, "%s: returns 0", label);
	is_plan(&p, e->plan, "%s: plan", label);
	is_int(p.play_greeting, e->bridge_greeting, "%s: play_greeting", label);
	is_int(p.greeting_min_ms, e->bridge_greeting ? 3000 : 0,
	       "%s: greeting_min_ms", label);
	like(p.why, e->why, "%s: why", label);
	if (!e->agent_used) {
		const char *cause = expected_cause(lookup, resp, a);

		like(p.why, cause ? cause : "(no cause expected)",
		     "%s: why names the cause", label);
	}
}

static void test_matrix(void)
{
	for (int mode = 0; mode < 2; mode++)
	for (int resp = 0; resp < 3; resp++)
	for (int fb = 0; fb < 2; fb++)
	for (size_t i = 0; i < NAGENT_CASES; i++) {
		const struct agent_case *a = &agent_cases[i];
		struct conf *c = matrix_conf(mode, resp, fb, a->ext_uri, a->skip_busy);

		if (!c) {
			ok(0, "matrix config parses: %s", err);
			continue;
		}
		for (int lookup = 0; lookup < 3; lookup++)
			matrix_one(c, mode, resp, fb, a, lookup);
		conf_deref(c);
	}
}

/* ---- settings and [did:] overrides ---- */

static const char *base_text =
	"[media]\n"
	"ringback = tone\n"
	"[routing]\n"
	"mode = bridge\n"
	"responsible = first\n"
	"responsible_ring = 15s\n"
	"greeting_min = 3s\n"
	"lookup_timeout = 900ms\n"
	"skip_busy = no\n"
	"fallback = " FB "\n"
	"[pbx]\n"
	"extension_uri = " EXT_URI "\n";

static char conf_path[128], sales_wav[128], rb_wav[128];

static int make_file(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	fputs("RIFF", f);
	return fclose(f);
}

static int setup_dir(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/route_plan.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(conf_path, sizeof(conf_path), "%s/t.conf", tmpdir);
	snprintf(sales_wav, sizeof(sales_wav), "%s/sales.wav", tmpdir);
	snprintf(rb_wav, sizeof(rb_wav), "%s/rb.wav", tmpdir);
	if (make_file(sales_wav) || make_file(rb_wav))
		return -1;
	return 0;
}

static void cleanup_dir(void)
{
	unlink(sales_wav);
	unlink(rb_wav);
	rmdir(tmpdir);
}

/* A conf with the base settings and one [did:DID] section holding did_body. */
static struct conf *did_conf(const char *did_body)
{
	char text[2048];

	snprintf(text, sizeof(text), "%s[did:" DID "]\n%s\n", base_text, did_body);
	return parse_at(conf_path, text);
}

static void check_settings(const struct route_settings *got,
			   const struct route_settings *want, const char *what)
{
	is_int(got->mode, want->mode, "%s: mode", what);
	is_int(got->responsible, want->responsible, "%s: responsible", what);
	is_int(got->responsible_ring_ms, want->responsible_ring_ms,
	       "%s: responsible_ring_ms", what);
	is_int(got->greeting_min_ms, want->greeting_min_ms, "%s: greeting_min_ms", what);
	is_int(got->lookup_timeout_ms, want->lookup_timeout_ms,
	       "%s: lookup_timeout_ms", what);
	is_int(got->skip_busy, want->skip_busy, "%s: skip_busy", what);
	is_str(got->fallback, want->fallback, "%s: fallback", what);
	is_str(got->extension_uri, want->extension_uri, "%s: extension_uri", what);
	is_str(got->greeting, want->greeting, "%s: greeting", what);
	is_str(got->ringback, want->ringback, "%s: ringback", what);
}

static void test_settings_base(void)
{
	struct conf *c = parse_at(conf_path, base_text);
	struct route_settings s;
	char greeting[160];

	ok(c != NULL, "base config parses (%s)", err);
	if (!c)
		return;
	snprintf(greeting, sizeof(greeting), "%s/sounds/greeting.wav", tmpdir);
	memset(&s, 0x5a, sizeof(s));
	route_settings(c, NULL, &s);
	is_int(s.mode, CONF_MODE_BRIDGE, "base: mode bridge");
	is_int(s.responsible, CONF_RESP_FIRST, "base: responsible first");
	is_int(s.responsible_ring_ms, 15000, "base: responsible_ring 15s");
	is_int(s.greeting_min_ms, 3000, "base: greeting_min 3s");
	is_int(s.lookup_timeout_ms, 900, "base: lookup_timeout 900ms");
	is_int(s.skip_busy, 0, "base: skip_busy no");
	is_str(s.fallback, FB, "base: fallback");
	is_str(s.extension_uri, EXT_URI, "base: extension_uri from [pbx]");
	is_str(s.greeting, greeting, "base: default greeting, resolved");
	is_str(s.ringback, "tone", "base: ringback");
	ok(s.fallback == c->routing.fallback, "base: fallback points into the conf");
	ok(s.extension_uri == c->pbx.extension_uri,
	   "base: extension_uri points into the conf");
	ok(s.greeting == c->media.greeting, "base: greeting points into the conf");
	ok(s.ringback == c->media.ringback, "base: ringback points into the conf");
	conf_deref(c);
}

static void test_settings_defaults(void)
{
	struct conf *c = parse("");
	struct route_settings s;

	ok(c != NULL, "empty config parses (%s)", err);
	if (!c)
		return;
	route_settings(c, DID, &s);
	is_int(s.mode, CONF_MODE_BRIDGE, "defaults: mode bridge");
	is_int(s.responsible, CONF_RESP_FIRST, "defaults: responsible first");
	is_int(s.responsible_ring_ms, 20000, "defaults: responsible_ring 20s");
	is_int(s.greeting_min_ms, 0, "defaults: greeting_min 0");
	is_int(s.lookup_timeout_ms, 1500, "defaults: lookup_timeout 1500ms");
	is_int(s.skip_busy, 1, "defaults: skip_busy yes");
	is_str(s.fallback, "", "defaults: no fallback is \"\", not NULL");
	is_str(s.extension_uri, "", "defaults: no extension_uri is \"\"");
	is_str(s.greeting, "/tmp/sounds/greeting.wav", "defaults: greeting");
	is_str(s.ringback, "tone", "defaults: ringback tone");
	conf_deref(c);

	memset(&s, 0x5a, sizeof(s));
	route_settings(NULL, DID, &s);
	is_int(s.responsible, CONF_RESP_OFF, "no conf: responsible off");
	is_int(s.mode, CONF_MODE_BRIDGE, "no conf: mode bridge");
	is_str(s.fallback, "", "no conf: no fallback");
	is_str(s.extension_uri, "", "no conf: no extension_uri");
	is_str(s.greeting, "", "no conf: no greeting");
	is_str(s.ringback, "none", "no conf: ringback none");
}

/* How one [did:] key changes the base settings. */
struct override {
	const char *body;
	void (*apply)(struct route_settings *s);
};

static void o_greeting(struct route_settings *s) { s->greeting = sales_wav; }
static void o_no_greeting(struct route_settings *s) { s->greeting = ""; }
static void o_rb_none(struct route_settings *s) { s->ringback = "none"; }
static void o_rb_file(struct route_settings *s) { s->ringback = rb_wav; }
static void o_fallback(struct route_settings *s)
{
	s->fallback = "sip:sales@127.0.0.1:5072";
}
static void o_no_fallback(struct route_settings *s) { s->fallback = ""; }
static void o_parallel(struct route_settings *s) { s->responsible = CONF_RESP_PARALLEL; }
static void o_off(struct route_settings *s) { s->responsible = CONF_RESP_OFF; }
static void o_ring5(struct route_settings *s) { s->responsible_ring_ms = 5000; }
static void o_ring0(struct route_settings *s) { s->responsible_ring_ms = 0; }
static void o_gmin0(struct route_settings *s) { s->greeting_min_ms = 0; }
static void o_gmin1500(struct route_settings *s) { s->greeting_min_ms = 1500; }
static void o_redirect(struct route_settings *s) { s->mode = CONF_MODE_REDIRECT; }
static void o_nothing(struct route_settings *s) { (void)s; }
static void o_all(struct route_settings *s)
{
	o_greeting(s);
	o_rb_none(s);
	o_fallback(s);
	o_off(s);
	o_ring5(s);
	o_gmin0(s);
	o_redirect(s);
}

static const struct override overrides[] = {
	{ "greeting = sales.wav", o_greeting },
	{ "greeting =", o_no_greeting },
	{ "ringback = none", o_rb_none },
	{ "ringback = rb.wav", o_rb_file },
	{ "ringback =", o_rb_none },
	{ "fallback = sip:sales@127.0.0.1:5072", o_fallback },
	{ "fallback =", o_no_fallback },
	{ "responsible = parallel", o_parallel },
	{ "responsible = off", o_off },
	{ "responsible_ring = 5s", o_ring5 },
	{ "responsible_ring = 0ms", o_ring0 },
	{ "greeting_min = 0ms", o_gmin0 },
	{ "greeting_min = 1500ms", o_gmin1500 },
	{ "mode = redirect", o_redirect },
	{ "", o_nothing },
	{ "greeting = sales.wav\nringback = none\nfallback = sip:sales@127.0.0.1:5072\n"
	  "responsible = off\nresponsible_ring = 5s\ngreeting_min = 0ms\n"
	  "mode = redirect", o_all },
};

static void test_did_overrides(void)
{
	struct conf *base_c = parse_at(conf_path, base_text);
	struct route_settings base;

	ok(base_c != NULL, "base config parses (%s)", err);
	if (!base_c)
		return;
	route_settings(base_c, NULL, &base);
	for (size_t i = 0; i < sizeof(overrides) / sizeof(overrides[0]); i++) {
		const struct override *o = &overrides[i];
		struct conf *c = did_conf(o->body);
		struct route_settings got, want = base, other;
		char what[160];

		snprintf(what, sizeof(what), "[did] '%s'", o->body);
		ok(c != NULL, "%s: parses (%s)", what, err);
		if (!c)
			continue;
		o->apply(&want);
		route_settings(c, DID, &got);
		check_settings(&got, &want, what);
		route_settings(c, "+74950000000", &other);
		check_settings(&other, &base, "another DID keeps the base");
		conf_deref(c);
	}
	conf_deref(base_c);
}

/* The strings of an override point into the [did:] section, not copies. */
static void test_did_pointers(void)
{
	struct conf *c = did_conf("fallback = sip:sales@127.0.0.1:5072\n"
				  "greeting = sales.wav\nringback = rb.wav");
	const struct conf_did *d;
	struct route_settings s;

	ok(c != NULL, "did pointer config parses (%s)", err);
	if (!c)
		return;
	d = conf_did_find(c, DID);
	ok(d != NULL, "the [did:] section is found");
	if (d) {
		route_settings(c, DID, &s);
		ok(s.fallback == d->fallback, "DID fallback points into the conf");
		ok(s.greeting == d->greeting, "DID greeting points into the conf");
		ok(s.ringback == d->ringback, "DID ringback points into the conf");
		ok(s.extension_uri == c->pbx.extension_uri,
		   "inherited extension_uri points into the conf");
	}
	conf_deref(c);
}

static void test_did_plus(void)
{
	struct conf *c = parse(
		"[routing]\nfallback = sip:base@127.0.0.1\n"
		"[did:+74951234567]\nfallback = sip:a@127.0.0.1\n"
		"[did:74957654321]\nfallback = sip:b@127.0.0.1\n"
		"[did:+74950000001]\nfallback = sip:plus@127.0.0.1\n"
		"[did:74950000001]\nfallback = sip:bare@127.0.0.1\n");
	static const struct {
		const char *did, *fallback, *what;
	} cases[] = {
		{ "+74951234567", "sip:a@127.0.0.1", "'+' DID, '+' section" },
		{ "74951234567", "sip:a@127.0.0.1", "bare DID finds the '+' section" },
		{ "74957654321", "sip:b@127.0.0.1", "bare DID, bare section" },
		{ "+74957654321", "sip:b@127.0.0.1", "'+' DID finds the bare section" },
		{ "+74950000001", "sip:plus@127.0.0.1", "exact '+' match wins" },
		{ "74950000001", "sip:bare@127.0.0.1", "exact bare match wins" },
		{ "+74959999999", "sip:base@127.0.0.1", "unknown DID: base" },
		{ "74959999999", "sip:base@127.0.0.1", "unknown bare DID: base" },
		{ NULL, "sip:base@127.0.0.1", "NULL DID: base" },
		{ "", "sip:base@127.0.0.1", "empty DID: base" },
		{ "+", "sip:base@127.0.0.1", "'+' alone: base" },
		{ "++74951234567", "sip:base@127.0.0.1", "'++' is not stripped twice" },
		{ "7495123456", "sip:base@127.0.0.1", "a prefix does not match" },
		{ "749512345678", "sip:base@127.0.0.1", "a longer number does not match" },
		{ "1234567890123456789012345678901234567890123456789012345678901234567890",
		  "sip:base@127.0.0.1", "a very long DID: base" },
	};
	struct route_settings s;

	ok(c != NULL, "'+' config parses (%s)", err);
	if (!c)
		return;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		route_settings(c, cases[i].did, &s);
		is_str(s.fallback, cases[i].fallback, "%s (%s)", cases[i].what,
		       cases[i].did ? cases[i].did : "NULL");
	}
	conf_deref(c);
}

/* ---- [did:] overrides seen through route_plan ---- */

static int plan_for(const struct conf *c, const char *did, int lookup,
		    const char *ext, bool registered, bool busy,
		    struct route_plan *p)
{
	struct route_settings s;
	struct route_input in = { .dir = ROUTE_INBOUND, .caller = "+74951112233",
				  .did = did, .lookup = lookup, .set = &s };

	in.agent.ext = ext;
	in.agent.registered = registered;
	in.agent.busy = busy;
	route_settings(c, did, &s);
	return route_plan(&in, p);
}

static void test_did_plans(void)
{
	struct conf *c = parse_at(conf_path,
		"[routing]\nresponsible_ring = 15s\ngreeting_min = 3s\n"
		"fallback = " FB "\n"
		"[did:+74951234567]\nmode = redirect\n"
		"[did:+74951234568]\nresponsible = off\n"
		"[did:+74951234569]\nresponsible_ring = 5s\ngreeting_min = 2s\n"
		"[did:+74951234570]\ngreeting =\n"
		"[did:+74951234571]\nfallback = sip:sales@127.0.0.1:5072\n"
		"responsible = parallel\ngreeting = sales.wav\n"
		"[did:+74951234572]\nfallback =\n"
		"[did:+74951234573]\nresponsible_ring = 0s\n");
	struct route_plan p;
	int rc;

	ok(c != NULL, "DID plan config parses (%s)", err);
	if (!c)
		return;

	rc = plan_for(c, "74951234567", ROUTE_LOOKUP_KNOWN, "101", true, false, &p);
	is_int(rc, 0, "DID mode redirect: rc");
	is_plan(&p, R_BOTH, "DID mode = redirect (matched without '+')");
	is_int(p.play_greeting, 0, "DID redirect: no greeting");
	is_int(p.greeting_min_ms, 0, "DID redirect: no greeting_min");

	rc = plan_for(c, "+74951234568", ROUTE_LOOKUP_KNOWN, "101", true, false, &p);
	is_int(rc, 0, "DID responsible off: rc");
	is_plan(&p, FB_ONLY, "DID responsible = off ignores the known agent");
	like(p.why, "responsible = off", "DID responsible off: why");

	rc = plan_for(c, "+74951234569", ROUTE_LOOKUP_KNOWN, "101", true, false, &p);
	is_int(rc, 0, "DID responsible_ring: rc");
	is_plan(&p, "BRIDGE [agent:101 q0] t=5000 [uri:" FB " q0] t=0",
		"DID responsible_ring = 5s times the first fork");
	is_int(p.greeting_min_ms, 2000, "DID greeting_min reaches the plan");
	is_int(p.play_greeting, 1, "DID inherits the default greeting");

	rc = plan_for(c, "+74951234570", ROUTE_LOOKUP_UNKNOWN, NULL, false, false, &p);
	is_int(rc, 0, "DID greeting off: rc");
	is_plan(&p, FB_ONLY, "DID greeting off: fallback");
	is_int(p.play_greeting, 0, "DID greeting = (empty) plays none");
	is_int(p.greeting_min_ms, 3000, "greeting_min is still copied");

	rc = plan_for(c, "+74951234571", ROUTE_LOOKUP_KNOWN, "102", false, false, &p);
	is_int(rc, 0, "DID unreachable agent: rc");
	is_plan(&p, "BRIDGE [uri:sip:sales@127.0.0.1:5072 q0] t=0",
		"DID fallback replaces the routing fallback");
	like(p.why, "responsible 102 not registered", "why: not registered");

	rc = plan_for(c, "+74951234571", ROUTE_LOOKUP_KNOWN, "102", true, false, &p);
	is_int(rc, 0, "DID parallel: rc");
	is_plan(&p, "BRIDGE [agent:102 q0, uri:sip:sales@127.0.0.1:5072 q0] t=0",
		"DID responsible = parallel with the DID fallback");
	is_int(p.play_greeting, 1, "DID greeting plays");

	rc = plan_for(c, "+74951234572", ROUTE_LOOKUP_FAILED, "101", true, false, &p);
	is_int(rc, 0, "DID without fallback: rc");
	is_plan(&p, NO_ROUTE, "DID fallback = (empty) removes the fallback: 480");
	like(p.why, "lookup failed", "why: lookup failed");
	is_int(p.play_greeting, 0, "a reject plays no greeting");
	is_int(p.greeting_min_ms, 0, "a reject has no greeting_min");

	rc = plan_for(c, "+74951234572", ROUTE_LOOKUP_KNOWN, "101", true, false, &p);
	is_int(rc, 0, "DID without fallback, agent: rc");
	is_plan(&p, AGENT_ALONE, "DID without fallback: the agent rings unlimited");

	rc = plan_for(c, "+74951234573", ROUTE_LOOKUP_KNOWN, "101", true, false, &p);
	is_int(rc, 0, "responsible_ring 0: rc");
	is_plan(&p, "BRIDGE [agent:101 q0] t=0 [uri:" FB " q0] t=0",
		"responsible_ring = 0: no limit, fallback after a failure");
	like(p.why, "until it fails", "responsible_ring 0: why");

	rc = plan_for(c, "+74950000000", ROUTE_LOOKUP_KNOWN, "101", true, false, &p);
	is_int(rc, 0, "other DID: rc");
	is_plan(&p, AGENT_FIRST, "another DID uses [routing]");
	conf_deref(c);
}

/* ---- greeting propagation ---- */

static void test_greeting(void)
{
	struct conf *c = parse("[media]\ngreeting =\n[routing]\ngreeting_min = 4s\n"
			       "fallback = " FB "\n");
	struct route_plan p;

	ok(c != NULL, "no-greeting config parses (%s)", err);
	if (!c)
		return;
	is_int(plan_for(c, DID, ROUTE_LOOKUP_KNOWN, "101", true, false, &p), 0,
	       "no greeting: rc");
	is_int(p.play_greeting, 0, "[media] greeting = (empty): no greeting");
	is_int(p.greeting_min_ms, 4000, "greeting_min copied without a greeting");
	is_plan(&p, "BRIDGE [agent:101 q0] t=20000 [uri:" FB " q0] t=0",
		"default responsible_ring 20s");
	like(p.why, "responsible 101 first for 20000 ms, then fallback " FB,
	     "why for first");
	conf_deref(c);

	c = parse("[routing]\nfallback = " FB "\n");
	ok(c != NULL, "default greeting config parses (%s)", err);
	if (!c)
		return;
	is_int(plan_for(c, DID, ROUTE_LOOKUP_UNKNOWN, NULL, false, false, &p), 0,
	       "default greeting: rc");
	is_int(p.play_greeting, 1, "the default greeting plays");
	is_int(p.greeting_min_ms, 0, "default greeting_min 0");
	conf_deref(c);
}

/* ---- internal and outbound ---- */

static struct route_settings manual_settings(void)
{
	struct route_settings s = {
		.mode = CONF_MODE_BRIDGE, .responsible = CONF_RESP_FIRST,
		.responsible_ring_ms = 15000, .greeting_min_ms = 3000,
		.lookup_timeout_ms = 1500, .skip_busy = true, .fallback = FB,
		.extension_uri = "", .greeting = "/tmp/g.wav", .ringback = "tone",
	};

	return s;
}

static void internal_case(const char *ext, bool reg, bool busy, bool skip,
			  const char *ext_uri, int mode, const char *want,
			  const char *why, const char *what)
{
	struct route_settings s = manual_settings();
	struct route_input in = { .dir = ROUTE_INTERNAL, .caller = "101",
				  .dest = ext, .lookup = ROUTE_LOOKUP_KNOWN, .set = &s };
	struct route_plan p;

	s.skip_busy = skip;
	s.extension_uri = ext_uri;
	s.mode = mode;
	in.agent.ext = ext;
	in.agent.registered = reg;
	in.agent.busy = busy;
	is_int(route_plan(&in, &p), 0, "internal %s: rc", what);
	is_plan(&p, want, "internal %s: plan", what);
	is_int(p.play_greeting, 0, "internal %s: no greeting", what);
	is_int(p.greeting_min_ms, 0, "internal %s: no greeting_min", what);
	like(p.why, why, "internal %s: why", what);
}

static void test_internal(void)
{
	const char *a102 = "BRIDGE [agent:102 q0] t=0";

	internal_case(NULL, false, false, true, "", B, "REJECT 404 no such extension",
		      "no such extension", "no agent");
	internal_case("", true, false, true, "", B, "REJECT 404 no such extension",
		      "no such extension", "empty extension");
	internal_case("102", true, false, true, "", B, a102, "internal call to 102",
		      "registered");
	internal_case("102", true, true, true, "", B, "REJECT 486 busy",
		      "102 busy", "busy, skip_busy");
	internal_case("102", true, true, true, EXT_URI, B, "REJECT 486 busy",
		      "102 busy", "busy, skip_busy, extension_uri");
	internal_case("102", false, true, true, EXT_URI, B, "REJECT 486 busy",
		      "102 busy", "busy unregistered, skip_busy");
	internal_case("102", true, true, false, "", B, a102, "internal call to 102",
		      "busy, no skip_busy");
	internal_case("102", false, false, true, "", B, "REJECT 480 not registered",
		      "not registered", "unregistered");
	internal_case("102", false, true, false, "", B, "REJECT 480 not registered",
		      "not registered", "busy unregistered, no skip_busy");
	internal_case("102", false, false, true, EXT_URI, B, a102,
		      "internal call to 102", "unregistered, extension_uri");
	internal_case("102", false, false, true, NULL, B, "REJECT 480 not registered",
		      "not registered", "unregistered, NULL extension_uri");
	internal_case("102", true, false, true, "", R, a102, "internal call to 102",
		      "in redirect mode still bridges");
}

static void outbound_case(const char *dest, int mode, const char *want,
			  const char *why, const char *what)
{
	struct route_settings s = manual_settings();
	struct route_input in = { .dir = ROUTE_OUTBOUND, .caller = "101",
				  .dest = dest, .set = &s };
	struct route_plan p;

	s.mode = mode;
	is_int(route_plan(&in, &p), 0, "outbound %s: rc", what);
	is_plan(&p, want, "outbound %s: plan", what);
	is_int(p.play_greeting, 0, "outbound %s: no greeting", what);
	is_int(p.greeting_min_ms, 0, "outbound %s: no greeting_min", what);
	like(p.why, why, "outbound %s: why", what);
}

static void test_outbound(void)
{
	outbound_case(NULL, B, "REJECT 484 no number", "no number", "NULL dest");
	outbound_case("", B, "REJECT 484 no number", "no number", "empty dest");
	outbound_case("+74951112233", B, "BRIDGE [trunk:+74951112233 q0] t=0",
		      "outbound to +74951112233 through the trunk", "a number");
	outbound_case("84951112233", R, "BRIDGE [trunk:84951112233 q0] t=0",
		      "outbound to 84951112233", "redirect mode still bridges");
}

/* ---- inconsistent input ---- */

static void expect_einval(const struct route_input *in, const char *why,
			  const char *what)
{
	struct route_plan p;

	memset(&p, 0xa5, sizeof(p));
	is_int(route_plan(in, &p), EINVAL, "%s: EINVAL", what);
	is_plan(&p, "REJECT 500 bad routing input", "%s: REJECT 500, no forks", what);
	is_int(p.play_greeting, 0, "%s: no greeting", what);
	is_int(p.greeting_min_ms, 0, "%s: no greeting_min", what);
	like(p.why, why, "%s: why", what);
}

static void long_string(char *buf, size_t len, const char *prefix, char fill)
{
	size_t n = strlen(prefix);

	memcpy(buf, prefix, n);
	memset(buf + n, fill, len - n);
	buf[len] = '\0';
}

static struct route_input inbound_known(struct route_settings *s, const char *ext)
{
	struct route_input in = { .dir = ROUTE_INBOUND, .caller = "+74951112233",
				  .did = DID, .lookup = ROUTE_LOOKUP_KNOWN, .set = s };

	in.agent.ext = ext;
	in.agent.registered = true;
	return in;
}

static void test_einval_basic(void)
{
	struct route_settings s = manual_settings();
	struct route_input in = inbound_known(&s, "101");
	struct route_plan p;

	expect_einval(NULL, "no input", "NULL input");
	in.set = NULL;
	expect_einval(&in, "no settings", "NULL settings");
	in.set = &s;
	in.dir = (enum route_direction)7;
	expect_einval(&in, "unknown direction", "direction 7");
	in.dir = (enum route_direction)-1;
	expect_einval(&in, "unknown direction", "direction -1");
	in.dir = ROUTE_INBOUND;
	in.lookup = (enum route_lookup)3;
	expect_einval(&in, "unknown lookup", "lookup 3");
	in.lookup = ROUTE_LOOKUP_KNOWN;

	s.mode = CONF_INHERIT;
	expect_einval(&in, "unknown mode", "mode inherit");
	s.mode = 2;
	expect_einval(&in, "unknown mode", "mode 2");
	s = manual_settings();
	s.responsible = CONF_RESP_INHERIT;
	expect_einval(&in, "unknown responsible", "responsible inherit");
	s.responsible = 3;
	expect_einval(&in, "unknown responsible", "responsible 3");
	s = manual_settings();
	s.responsible_ring_ms = CONF_INHERIT;
	expect_einval(&in, "negative duration", "responsible_ring inherit");
	s = manual_settings();
	s.greeting_min_ms = -5;
	expect_einval(&in, "negative duration", "negative greeting_min");
	s = manual_settings();
	in.dir = ROUTE_OUTBOUND;
	in.set = NULL;
	expect_einval(&in, "no settings", "outbound without settings");
	in.dir = ROUTE_INTERNAL;
	expect_einval(&in, "no settings", "internal without settings");

	in = inbound_known(&s, "101");
	is_int(route_plan(&in, NULL), EINVAL, "NULL plan: EINVAL, no crash");
	is_int(route_plan(&in, &p), 0, "valid again after the errors");
	is_plan(&p, AGENT_FIRST, "valid again: plan");
}

static void test_einval_lengths(void)
{
	struct route_settings s = manual_settings();
	struct route_input in = inbound_known(&s, "101");
	char uri255[256], uri256[257], ext32[33], ext33[34], want[512];
	struct route_plan p;

	long_string(uri255, 255, "sip:", 'a');
	long_string(uri256, 256, "sip:", 'a');
	long_string(ext32, 32, "", '7');
	long_string(ext33, 33, "", '7');

	s.fallback = uri256;
	expect_einval(&in, "URI too long", "256-char fallback, first");
	s.responsible = CONF_RESP_PARALLEL;
	expect_einval(&in, "URI too long", "256-char fallback, parallel");
	s.mode = CONF_MODE_REDIRECT;
	expect_einval(&in, "URI too long", "256-char fallback, redirect");
	s = manual_settings();
	s.fallback = uri256;
	in.lookup = ROUTE_LOOKUP_UNKNOWN;
	expect_einval(&in, "URI too long", "256-char fallback, unknown caller");

	s = manual_settings();
	s.fallback = uri255;
	is_int(route_plan(&in, &p), 0, "255-char fallback fits");
	snprintf(want, sizeof(want), "BRIDGE [uri:%s q0] t=0", uri255);
	is_plan(&p, want, "255-char fallback kept whole");
	is_int(strlen(p.why) + 1, ROUTE_WHY_MAX, "why is cut to its buffer, terminated");

	s = manual_settings();
	in = inbound_known(&s, ext33);
	expect_einval(&in, "extension too long", "33-char responsible, first");
	s.mode = CONF_MODE_REDIRECT;
	expect_einval(&in, "extension too long", "33-char responsible, redirect");
	s = manual_settings();
	in = inbound_known(&s, ext32);
	is_int(route_plan(&in, &p), 0, "32-char responsible fits");
	snprintf(want, sizeof(want), "BRIDGE [agent:%s q0] t=15000 [uri:" FB " q0] t=0",
		 ext32);
	is_plan(&p, want, "32-char responsible kept whole");

	in = inbound_known(&s, ext33);
	in.lookup = ROUTE_LOOKUP_UNKNOWN;
	is_int(route_plan(&in, &p), 0, "an unused over-long extension is ignored");
	is_plan(&p, FB_ONLY, "unused over-long extension: fallback");

	in = inbound_known(&s, ext33);
	in.dir = ROUTE_INTERNAL;
	expect_einval(&in, "extension too long", "33-char internal extension");

	in.dir = ROUTE_OUTBOUND;
	in.dest = uri256;
	expect_einval(&in, "URI too long", "256-char outbound number");
	in.dest = uri255;
	is_int(route_plan(&in, &p), 0, "255-char outbound number fits");
	snprintf(want, sizeof(want), "BRIDGE [trunk:%s q0] t=0", uri255);
	is_plan(&p, want, "255-char outbound number kept whole");
}

/* ---- the plan is self-contained ---- */

static void test_plan_reset_and_copy(void)
{
	struct route_settings s = manual_settings();
	struct route_input in = inbound_known(&s, "101");
	struct route_plan p, copy;

	memset(&p, 0xa5, sizeof(p));
	in.lookup = ROUTE_LOOKUP_UNKNOWN;
	is_int(route_plan(&in, &p), 0, "garbage plan: rc");
	is_plan(&p, FB_ONLY, "garbage plan is fully overwritten");
	is_int(p.forks[0].targets[1].kind, 0, "unused target zeroed");
	is_int(p.forks[1].ntargets, 0, "unused fork zeroed");
	is_int(p.forks[0].targets[0].ext[0], 0, "URI target has no ext");
	is_int(p.reject_status, 0, "bridge has no reject status");
	ok(p.reject_reason == NULL, "bridge has no reject reason");

	copy = p;
	memset(&p, 0, sizeof(p));
	like(copy.why, "fallback " FB " (unknown caller)", "a copied plan keeps its why");

	in.lookup = ROUTE_LOOKUP_KNOWN;
	in.agent.busy = true;
	is_int(route_plan(&in, &p), 0, "busy responsible: rc");
	like(p.why, "fallback " FB " (responsible 101 busy)", "why: busy responsible");
	like(copy.why, "(unknown caller)", "an earlier copy is untouched");
}

int main(void)
{
	if (setup_dir()) {
		ok(0, "temporary folder: %s", strerror(errno));
		return tap_done();
	}
	test_matrix();
	test_settings_base();
	test_settings_defaults();
	test_did_overrides();
	test_did_pointers();
	test_did_plus();
	test_did_plans();
	test_greeting();
	test_internal();
	test_outbound();
	test_einval_basic();
	test_einval_lengths();
	test_plan_reset_and_copy();
	cleanup_dir();
	return tap_done();
}
