/*
 * conf_parse.c: the INI parser, every value type and error path.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <unistd.h>

#include "tap.h"
#include "conf.h"

static char err[512];

static struct conf *parse(const char *text)
{
	struct conf *c = NULL;

	err[0] = '\0';
	if (conf_parse_string(&c, "/etc/x/test.conf", text, err, sizeof(err)))
		return NULL;
	return c;
}

/* Expects a parse error containing want (which includes file:line). */
static void fails(const char *text, const char *want, const char *what)
{
	struct conf *c = parse(text);

	ok(c == NULL, "%s: rejected", what);
	like(err, want, "%s: message", what);
	conf_deref(c);
}

static void test_defaults(void)
{
	struct conf *c = parse("");

	ok(c != NULL, "empty file gives defaults (%s)", err);
	if (!c)
		return;
	is_str(c->core.db, "/etc/x/sipcrm.db", "db resolved against the file's folder");
	is_str(c->core.log_level, "info", "log_level default");
	is_int(c->sip.nlisten, 2, "two default listeners");
	is_int(c->sip.listen[0].tp, CONF_TP_UDP, "first is udp");
	is_int(c->sip.listen[1].tp, CONF_TP_TCP, "second is tcp");
	is_int(c->sip.listen[0].port, 5060, "port 5060");
	is_str(c->sip.domain, "sipcrm.local", "domain default");
	is_int(c->media.rtp_min, 20000, "rtp min");
	is_int(c->media.rtp_max, 29999, "rtp max");
	is_int(c->media.codecs, CONF_CODEC_PCMA | CONF_CODEC_PCMU, "codecs");
	is_int(c->media.codec_order[0], CONF_CODEC_PCMA, "PCMA first");
	is_int(c->routing.lookup_timeout_ms, 1500, "lookup_timeout 1500ms");
	is_int(c->routing.responsible, CONF_RESP_FIRST, "responsible first");
	is_int(c->routing.responsible_ring_ms, 20000, "responsible_ring 20s");
	ok(c->routing.skip_busy, "skip_busy yes");
	is_int(c->crm.type, CONF_CRM_NONE, "crm none");
	is_int(c->crm.cache_ms, 300000, "cache 300s");
	is_str(c->api.listen_host, "127.0.0.1", "api host");
	is_int(c->api.listen_port, 8080, "api port");
	is_int(c->media.srtp, CONF_SRTP_OFFER, "srtp offer");
	is_str(c->media.ringback, "tone", "ringback tone");
	is_int(c->media.record_min_ms, 6000, "record_min 6s");
	is_int(c->sip.ndigest_algs, 2, "two digest algorithms by default");
	is_int(c->sip.digest_algs[0], CONF_DIGEST_MD5, "MD5 offered first by default");
	is_int(c->sip.digest_algs[1], CONF_DIGEST_SHA256, "then SHA-256");
	conf_deref(c);
}

static void test_values(void)
{
	struct conf *c = parse(
		"# comment\n"
		"; another\n"
		"[core]\n"
		"db = /var/lib/sipcrm/x.db   ; inline comment\n"
		"log_level = warn sip=debug\n"
		"[sip]\n"
		"listen = udp:0.0.0.0:5070 tcp:[::1]:5071\n"
		"domain = pbx.example.com # hash comment\n"
		"min_expires = 30s\n"
		"ban_failures = 5\n"
		"[media]\n"
		"codecs = PCMU\n"
		"rtp_ports = 30001-30100\n"
		"ringback = none\n"
		"record = on\n"
		"greeting =\n"
		"[routing]\n"
		"mode = redirect\n"
		"lookup_timeout = 2s\n"
		"responsible = parallel\n"
		"skip_busy = no\n"
		"fallback = sip:pbx@10.0.0.1:5060;transport=tcp\n"
		"[pbx]\n"
		"extension_uri = sip:{ext}@10.0.0.1\n"
		"[trunk:a]\n"
		"match = 10.0.0.0/8, 192.168.1.1 2001:db8::/32\n"
		"uri = sip:10.0.0.2\n"
		"[trunk:b]\n"
		"uri = sip:sip.example.net\n"
		"password = \"p;a #ss\"\n"
		"[did:+74951234567]\n"
		"responsible = off\n"
		"responsible_ring = 5s\n"
		"[did:84950000000]\n"
		"[agent:101]\n"
		"password = secret\n"
		"name = Ivan Petrov\n"
		"crm_user = 42\n"
		"[agent:102]\n"
		"ha1 = 0123456789abcdef0123456789ABCDEF\n"
		"[crm]\n"
		"type = generic\n"
		"lookup_url = http://127.0.0.1:9000/lookup\n"
		"events_url = http://127.0.0.1:9000/events\n"
		"cache = 0\n"
		"[api]\n"
		"listen = [::1]:8081\n");
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
	const struct conf_did *d;
	const struct conf_trunk *t;

	ok(c != NULL, "full file parses (%s)", err);
	if (!c)
		return;
	is_str(c->core.db, "/var/lib/sipcrm/x.db", "absolute db path kept, comment cut");
	is_str(c->core.log_level, "warn sip=debug", "per-module log level");
	is_int(c->sip.nlisten, 2, "two listeners");
	is_str(c->sip.listen[1].host, "::1", "IPv6 listener host");
	is_int(c->sip.listen[1].port, 5071, "IPv6 listener port");
	is_str(c->sip.domain, "pbx.example.com", "# comment cut");
	is_int(c->sip.min_expires_ms, 30000, "min_expires");
	is_int(c->sip.ban_failures, 5, "ban_failures");
	is_int(c->media.codecs, CONF_CODEC_PCMU, "only PCMU");
	is_int(c->media.rtp_min, 30002, "odd low port rounded up to even");
	is_str(c->media.ringback, "none", "ringback none");
	ok(c->media.record, "record on");
	is_str(c->media.greeting, "", "empty greeting allowed");
	is_int(c->routing.mode, CONF_MODE_REDIRECT, "redirect mode");
	is_int(c->routing.lookup_timeout_ms, 2000, "2s");
	is_int(c->routing.responsible, CONF_RESP_PARALLEL, "parallel");
	ok(!c->routing.skip_busy, "skip_busy no");
	is_str(c->routing.fallback, "sip:pbx@10.0.0.1:5060;transport=tcp",
	       "URI parameter ';' is not a comment");
	is_int(c->ntrunks, 2, "two trunks");
	is_int(c->trunks[0].nmatch, 3, "three CIDRs");
	is_str(c->trunks[1].password, "p;a #ss", "quoted value taken literally");
	is_str(c->trunks[1].caller_id, "", "trunk default applied");
	is_int(c->ndids, 2, "two DIDs");
	d = conf_did_find(c, "+74951234567");
	ok(d && d->responsible == CONF_RESP_OFF, "DID override responsible=off");
	ok(d && d->responsible_ring_ms == 5000, "DID override ring 5s");
	ok(d && d->mode == CONF_INHERIT && d->fallback == NULL, "DID inherits the rest");
	is_int(c->nagents, 2, "two agents");
	is_str(conf_agent_find(c, "101")->name, "Ivan Petrov", "agent name with space");
	ok(conf_agent_by_crm_user(c, "42") == conf_agent_find(c, "101"), "crm_user map");
	ok(conf_agent_find(c, "103") == NULL, "unknown agent");
	is_int(c->crm.type, CONF_CRM_GENERIC, "generic CRM");
	is_int(c->crm.cache_ms, 0, "bare 0 duration");
	is_str(c->api.listen_host, "::1", "IPv6 API host");

	inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
	t = conf_trunk_match(c, (struct sockaddr *)&sin);
	is_str(t ? t->name : NULL, "a", "10.1.2.3 matches trunk a");
	inet_pton(AF_INET, "192.168.1.2", &sin.sin_addr);
	ok(conf_trunk_match(c, (struct sockaddr *)&sin) == NULL, "192.168.1.2 matches nothing");
	inet_pton(AF_INET6, "2001:db8::5", &sin6.sin6_addr);
	ok(conf_trunk_match(c, (struct sockaddr *)&sin6) != NULL, "IPv6 CIDR match");
	inet_pton(AF_INET6, "::ffff:10.9.9.9", &sin6.sin6_addr);
	ok(conf_trunk_match(c, (struct sockaddr *)&sin6) != NULL, "v4-mapped matches v4 CIDR");
	conf_deref(c);
}

static void test_parsers(void)
{
	int64_t ms = -1;
	struct conf_cidr cidr;
	struct conf_listen l;
	bool b;

	ok(conf_parse_duration("250ms", &ms) == 0 && ms == 250, "250ms");
	ok(conf_parse_duration("2min", &ms) == 0 && ms == 120000, "2min");
	ok(conf_parse_duration("1h", &ms) == 0 && ms == 3600000, "1h");
	ok(conf_parse_duration("15", &ms) == EINVAL, "a bare number needs a unit");
	ok(conf_parse_duration("-1s", &ms) != 0, "negative rejected");
	ok(conf_parse_duration("5 s", &ms) != 0, "space before unit rejected");
	ok(conf_parse_duration("5d", &ms) != 0, "unknown unit rejected");
	ok(conf_parse_bool("On", &b) == 0 && b, "On");
	ok(conf_parse_bool("false", &b) == 0 && !b, "false");
	ok(conf_parse_bool("maybe", &b) != 0, "maybe rejected");
	ok(conf_parse_cidr("10.0.0.0/33", &cidr) != 0, "/33 rejected");
	ok(conf_parse_cidr("10.0.0/8", &cidr) != 0, "short IPv4 rejected");
	ok(conf_parse_cidr("::/0", &cidr) == 0 && cidr.prefix == 0, "::/0");
	ok(conf_parse_cidr("1.2.3.4", &cidr) == 0 && cidr.prefix == 32, "host /32");
	ok(conf_parse_listen("sctp:1.2.3.4:5", &l) != 0, "sctp rejected");
	ok(conf_parse_listen("udp:1.2.3.4:70000", &l) != 0, "port > 65535 rejected");
	ok(conf_parse_listen("tls:[::1]:5061", &l) == 0 && l.tp == CONF_TP_TLS, "tls v6");
	ok(conf_check_uri("sip:1.2.3.4") == 0, "sip:host");
	ok(conf_check_uri("sips:u@h:5061;transport=tls") == 0, "sips with params");
	ok(conf_check_uri("tel:+74951234567") == 0, "tel:");
	ok(conf_check_uri("http://x") != 0, "http: rejected");
	ok(conf_check_uri("sip:") != 0, "empty host rejected");
	ok(conf_check_uri("sip:u@") != 0, "user without host rejected");
	ok(conf_check_uri("sip:a b@c") != 0, "space rejected");
}

static void test_errors(void)
{
	fails("[core]\nfoo = 1\n", "test.conf:2: unknown key 'foo' in [core]", "unknown key");
	fails("[nope]\n", "test.conf:1: unknown section [nope]", "unknown section");
	fails("[nope:x]\n", "test.conf:1: unknown section [nope:x]", "unknown named section");
	fails("[agent]\n", "test.conf:1: [agent] needs a name", "agent without name");
	fails("db = x\n", "test.conf:1: 'db' outside of any section", "key outside a section");
	fails("[core\n", "test.conf:1: missing ']'", "unterminated header");
	fails("[core] x\n", "test.conf:1: text after section header", "junk after header");
	fails("[core]\n\n\njust words\n", "test.conf:4: expected 'key = value'", "no '='");
	fails("[core]\n= x\n", "test.conf:2: missing key", "empty key");
	fails("[core]\ndb = a\ndb = b\n", "test.conf:3: 'db' set twice", "duplicate key");
	fails("[core]\nlog_level = loud\n", "test.conf:2: log_level: unknown log level 'loud'",
	      "bad log level");
	fails("[sip]\nlisten = 1.2.3.4:5060\n", "test.conf:2: listen: bad listen address",
	      "listen without transport");
	fails("[sip]\nlisten =\n", "test.conf:2: listen: at least one", "empty listen");
	fails("[sip]\nlisten = tls:127.0.0.1:5061\n", "[sip] a tls: listener needs tls_cert",
	      "tls without cert");
	fails("[sip]\nmin_expires = 10\n", "test.conf:2: min_expires: bad duration '10'",
	      "duration without unit");
	fails("[sip]\nmin_expires = 2h\n", "min_expires is larger than max_expires",
	      "min > max expires");
	fails("[sip]\nban_failures = -3\n", "test.conf:2: ban_failures: '-3' is not a whole number",
	      "negative count");
	fails("[sip]\nallow_trunk_refer = perhaps\n", "test.conf:2: allow_trunk_refer: 'perhaps'",
	      "bad bool");
	fails("[media]\nip = localhost\n", "test.conf:2: ip: 'localhost' is not an IP", "bad ip");
	fails("[media]\nrtp_ports = 20000\n", "test.conf:2: rtp_ports: bad port range", "bad range");
	fails("[media]\nrtp_ports = 30000-20000\n", "test.conf:2: rtp_ports: bad port range",
	      "reversed range");
	fails("[media]\ncodecs = G729\n", "test.conf:2: codecs: unknown codec 'G729'", "bad codec");
	fails("[media]\ncodecs = PCMA PCMA\n", "listed twice", "duplicate codec");
	fails("[media]\ngreeting = /nonexistent/x.wav\n",
	      "test.conf:2: greeting: cannot read '/nonexistent/x.wav'", "missing greeting");
	fails("[media]\nringback = /nonexistent/r.wav\n", "test.conf:2: ringback: cannot read",
	      "missing ringback file");
	fails("[media]\nsrtp = maybe\n", "test.conf:2: srtp: 'maybe' is not one of off | offer | require",
	      "bad enum");
	fails("[routing]\nfallback = pbx.example.com\n", "test.conf:2: fallback: bad URI",
	      "bad URI");
	fails("[pbx]\nextension_uri = sip:pbx@h\n", "test.conf:2: extension_uri: 'sip:pbx@h' must contain {ext}",
	      "template without {ext}");
	fails("[trunk:x]\nmatch = 10.0.0.0/40\n", "test.conf:2: match: bad CIDR '10.0.0.0/40'",
	      "bad CIDR");
	fails("[trunk:x]\n", "test.conf:1: [trunk:x] needs match or uri", "empty trunk");
	fails("[trunk:x]\nuri=sip:a\n[trunk:x]\n", "test.conf:3: [trunk:x] defined twice",
	      "duplicate trunk");
	fails("[trunk:x]\nuri=sip:a\ncaller_id = abc\n", "test.conf:3: caller_id: 'abc' is not a phone",
	      "bad caller id");
	fails("[did:abc]\n", "test.conf:1: [did:abc]: a DID is a number", "bad DID");
	fails("[did:+7]\n[did:+7]\n", "test.conf:2: [did:+7] defined twice", "duplicate DID");
	fails("[did:+7]\nresponsible = always\n", "test.conf:2: responsible: 'always'", "bad DID enum");
	fails("[agent:1 01]\n", "test.conf:1: [agent:1 01]: bad extension", "bad extension");
	fails("[agent:101]\nname = x\n", "test.conf:1: [agent:101] needs password or ha1",
	      "agent without secret");
	fails("[agent:101]\npassword = a\nha1 = 0123456789abcdef0123456789abcdef\n",
	      "test.conf:1: [agent:101]: set password or ha1, not both", "password and ha1");
	fails("[agent:101]\nha1 = xyz\n", "test.conf:2: ha1: HA1 must be 32 hex digits", "bad ha1");
	fails("[agent:101]\npassword=a\ncrm_user=1\n[agent:102]\npassword=b\ncrm_user=1\n",
	      "test.conf:4: [agent:102]: crm_user 1 is already used by agent 101", "duplicate crm_user");
	fails("[agent:101]\npassword=a\n[agent:101]\npassword=b\n",
	      "test.conf:3: [agent:101] defined twice", "duplicate agent");
	fails("[crm]\ntype = salesforce\n", "test.conf:2: type: 'salesforce' is not one of", "bad CRM");
	fails("[crm]\ntype = generic\n", "[crm] type = generic needs lookup_url and events_url",
	      "generic without URLs");
	fails("[crm]\ncountry_code = +7\n", "test.conf:2: country_code: '+7' is not a country code",
	      "bad country code");
	fails("[sip]\ndigest_algorithms = SHA-1\n",
	      "test.conf:2: digest_algorithms: unknown algorithm 'SHA-1'", "bad digest algorithm");
	fails("[sip]\ndigest_algorithms = MD5 md5\n", "listed twice", "digest algorithm twice");
	fails("[api]\nlisten = 8080\n", "test.conf:2: listen: bad address '8080'", "bad API address");
	fails("[trunk:x]\nuri = \"sip:a\n", "test.conf:2: unterminated quoted value", "open quote");
}

static void test_file(void)
{
	struct conf *c = NULL;
	char path[] = "/tmp/sipcrm-conf-XXXXXX";
	int fd = mkstemp(path);

	ok(conf_load(&c, "/nonexistent/sipcrm.conf", err, sizeof(err)) != 0,
	   "missing file fails");
	like(err, "/nonexistent/sipcrm.conf:0: cannot open", "missing file message");
	if (fd >= 0) {
		ok(write(fd, "[core]\nx\0y\n", 11) == 11, "wrote a file with a NUL");
		close(fd);
		ok(conf_load(&c, path, err, sizeof(err)) != 0, "NUL byte rejected");
		like(err, "NUL byte", "NUL message");
		unlink(path);
	}
}

static void test_shipped(void)
{
	const char *top = getenv("top_srcdir");
	char path[4096];
	struct conf *c = NULL;

	snprintf(path, sizeof(path), "%s/conf/sipcrm.conf", top ? top : ".");
	ok(conf_load(&c, path, err, sizeof(err)) == 0, "conf/sipcrm.conf is valid (%s)", err);
	ok(c && c->nagents >= 1 && c->ntrunks == 1, "shipped config has agents and a trunk");
	conf_deref(c);
}

int main(void)
{
	test_defaults();
	test_values();
	test_parsers();
	test_errors();
	test_file();
	test_shipped();
	return tap_done();
}
