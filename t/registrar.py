#!/usr/bin/env python3
"""Registrar black-box test: MD5 digest with SIPp, SHA-256 with our own
client, several devices, Expires 0, expiry on time, 423, identical 401s
for unknown users, nonce replay and staleness, bans, scanners, reload and
restart persistence."""
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, SIPCRMCTL, SCENARIOS, sipp, free_port
from sipclient import SipClient, parse_challenge, digest_response

t = Tap()
AGENTS = ("[agent:101]\npassword = secret101\nname = Ivan Petrov\ncrm_user = 42\n"
          "[agent:102]\npassword = secret102\n"
          "[agent:103]\nha1 = %s\n" % __import__("hashlib").md5(b"103:sipcrm.test:secret103").hexdigest())
EXTRA = ("[sip]\n", "min_expires = 2s\nnonce_ttl = 3s\nban_failures = 3\nban_window = 60s\n"
         "ban_time = 60s\ndigest_algorithms = MD5 SHA-256\n")
d = Daemon(t, extra=AGENTS)
# put the [sip] tuning into the generated [sip] section
d.write_conf(d.base_conf().replace("domain = sipcrm.test\n", "domain = sipcrm.test\n" + EXTRA[1]) + AGENTS)
d.start()


def agents():
    st, body = d.http("GET", "/api/v1/agents")
    return {a["extension"]: a for a in body} if st == 200 else {}


def contacts(ext):
    return sorted(c["uri"] for c in agents().get(ext, {}).get("contacts", []))


def sipp_register(user, password, expires, contact_user, port, transport="u1", ip="127.0.0.1"):
    csv = os.path.join(d.dir, "reg-%s-%d.csv" % (contact_user, port))
    with open(csv, "w") as f:
        f.write("SEQUENTIAL\n%s;x;%d;%s\n" % (user, expires, contact_user))
    return sipp(["-sf", os.path.join(SCENARIOS, "register.xml"), "-inf", csv,
                 "-au", user, "-ap", password, "-m", "1", "-i", ip,
                 "-p", str(port), "-t", transport, "-nostdin", "-timeout", "15s",
                 "-timeout_error", "127.0.0.1:%d" % d.sip_port], timeout=25, cwd=d.dir)


# --- MD5 with SIPp, two devices ------------------------------------------------
p1, p2 = free_port(), free_port()
rc, out = sipp_register("101", "secret101", 300, "dev1", p1)
t.eq(rc, 0, "SIPp REGISTER with MD5 digest succeeds") or t.diag(out[-800:])
rc, out = sipp_register("101", "secret101", 300, "dev2", p2)
t.eq(rc, 0, "a second device of the same agent registers") or t.diag(out[-800:])
got = contacts("101")
t.eq(len(got), 2, "both devices are listed")
t.ok(any("dev1@" in c for c in got) and any("dev2@" in c for c in got), "dev1 and dev2 present", got)
a = agents().get("101", {})
t.eq(a.get("status"), "idle", "an agent with contacts is idle")
t.eq(a.get("name"), "Ivan Petrov", "agent name listed")
t.eq(a.get("crm_user"), "42", "crm_user listed")
t.ok(all(0 < c["expires"] <= 300 for c in a.get("contacts", [])), "remaining expiry shown", a)
t.eq(agents().get("102", {}).get("status"), "offline", "an agent without contacts is offline")

# failures come from addresses of their own: 127.0.0.1 must not get banned
rc, out = sipp_register("101", "wrong", 300, "dev3", free_port(), ip="127.0.0.4")
t.ok(rc != 0, "SIPp REGISTER with a wrong password fails")
t.eq(len(contacts("101")), 2, "the failed REGISTER added nothing")

# Expires: 0 removes one device
rc, out = sipp_register("101", "secret101", 0, "dev1", p1)
t.eq(rc, 0, "REGISTER with Expires: 0 is accepted") or t.diag(out[-800:])
got = contacts("101")
t.ok(len(got) == 1 and "dev2@" in got[0], "Expires: 0 removed dev1 only", got)

# --- SHA-256 with our own client --------------------------------------------------
c = SipClient(d.sip_port)
r, ch = c.register("102", "secret102", "sipcrm.test", alg="SHA-256")
t.eq(ch and ch.get("algorithm"), "SHA-256", "a SHA-256 challenge is offered")
t.eq(r and r.status, 200, "REGISTER with SHA-256 digest succeeds")
t.ok(r and any("expires=" in v for v in r.all("Contact")), "200 lists the contact with expires", r and r.raw)
t.eq(len(contacts("102")), 1, "SHA-256 registration listed")
c2 = SipClient(d.sip_port, src_ip="127.0.0.5")
r, ch = c2.register("102", "bad", "sipcrm.test", alg="SHA-256")
t.eq(r and r.status, 401, "a wrong SHA-256 response gets 401 again")
c2.close()
c3 = SipClient(d.sip_port)
r, _ = c3.register("103", "secret103", "sipcrm.test", alg="MD5")
t.eq(r and r.status, 200, "an agent with a stored HA1 registers with MD5")
c3.close()
c3 = SipClient(d.sip_port, src_ip="127.0.0.6")
r, _ = c3.register("103", "secret103", "sipcrm.test", alg="SHA-256")
t.eq(r and r.status, 401, "an HA1-only agent cannot use SHA-256")
c3.close()

# the challenge follows digest_algorithms order
r = SipClient(d.sip_port).request("REGISTER", "sip:sipcrm.test",
                                 ["From: <sip:101@sipcrm.test>;tag=1", "To: <sip:101@sipcrm.test>",
                                  "Contact: <sip:x@127.0.0.1:1>"])
algs = [parse_challenge(v).get("algorithm") for v in r.all("WWW-Authenticate")]
t.eq(algs, ["MD5", "SHA-256"], "two challenges in the configured order")
t.ok(all('qop="auth"' in v for v in r.all("WWW-Authenticate")), "qop=auth offered")

# --- unknown user and wrong password look the same ---------------------------------
def normalised(resp):
    keep = []
    for k, v in resp.headers:
        if k.lower() in ("via", "from", "to", "call-id", "cseq"):
            v = "*"
        v = re.sub(r'nonce="[^"]*"', 'nonce="*"', v)
        keep.append((k, v))
    return (resp.status, resp.reason, keep)

u = SipClient(d.sip_port, src_ip="127.0.0.7")
r_unknown, _ = u.register("999", "whatever", "sipcrm.test", alg="MD5")
k = SipClient(d.sip_port, src_ip="127.0.0.8")
r_badpw, _ = k.register("101", "whatever", "sipcrm.test", alg="MD5")
t.ok(r_unknown is not None and r_badpw is not None, "both got an answer")
if r_unknown and r_badpw:
    t.eq(normalised(r_unknown), normalised(r_badpw),
         "unknown user and wrong password get the same 401")
u.close()
k.close()

# --- 423, wildcard, To mismatch ------------------------------------------------------
c4 = SipClient(d.sip_port)
r, _ = c4.register("102", "secret102", "sipcrm.test", expires=1)
t.eq(r and r.status, 423, "expires below min_expires gets 423")
t.eq(r and r.get("Min-Expires"), "2", "423 carries Min-Expires")
r, _ = c4.register("102", "secret102", "sipcrm.test", to_user="101")
t.eq(r and r.status, 403, "To of another agent than the credentials gets 403")
c4.close()

# --- nonce-count replay and stale nonces -------------------------------------------
c5 = SipClient(d.sip_port, src_ip="127.0.0.9")
uri = "sip:sipcrm.test"
base = ["From: <sip:102@sipcrm.test>;tag=r1", "To: <sip:102@sipcrm.test>",
        "Contact: <sip:replay@127.0.0.1:%d>" % c5.port, "Expires: 60"]
r = c5.request("REGISTER", uri, base)
ch = parse_challenge(r.all("WWW-Authenticate")[0])
resp = digest_response("MD5", "102", ch["realm"], "secret102", "REGISTER", uri, ch["nonce"], "00000001", "cn")
auth = ('Authorization: Digest username="102", realm="%s", nonce="%s", uri="%s", response="%s", '
        'algorithm=MD5, cnonce="cn", qop=auth, nc=00000001' % (ch["realm"], ch["nonce"], uri, resp))
r1 = c5.request("REGISTER", uri, base + [auth])
r2 = c5.request("REGISTER", uri, base + [auth])
t.eq(r1 and r1.status, 200, "first use of nonce-count 1 accepted")
t.eq(r2 and r2.status, 401, "the same nonce-count again is refused (replay)")
time.sleep(3.5)
resp = digest_response("MD5", "102", ch["realm"], "secret102", "REGISTER", uri, ch["nonce"], "00000002", "cn")
auth2 = auth.replace("nc=00000001", "nc=00000002").replace(
    re.search(r'response="([^"]*)"', auth).group(1), resp)
r3 = c5.request("REGISTER", uri, base + [auth2])
t.eq(r3 and r3.status, 401, "an expired nonce is challenged again")
t.ok(r3 and all("stale=true" in v for v in r3.all("WWW-Authenticate")), "with stale=true", r3 and r3.raw)
c5.close()

# --- expiry without refresh ----------------------------------------------------------
c6 = SipClient(d.sip_port)
r, _ = c6.register("102", "secret102", "sipcrm.test", expires=2, contact_user="short")
t.eq(r and r.status, 200, "a 2 s registration is accepted")
t.ok(any("short@" in x for x in contacts("102")), "short contact listed")
time.sleep(3.5)
t.ok(not any("short@" in x for x in contacts("102")), "it expired on time without any request",
     contacts("102"))
c6.close()

# --- scanners and bans ---------------------------------------------------------------
s = SipClient(d.sip_port, user_agent="friendly-scanner")
r = s.request("OPTIONS", "sip:100@127.0.0.1", ["From: <sip:100@x>;tag=1", "To: <sip:100@x>"], timeout=1.5)
t.ok(r is None, "a friendly-scanner User-Agent gets no answer", r)
s.close()

for i in range(3):
    b = SipClient(d.sip_port, src_ip="127.0.0.2")
    r, _ = b.register("101", "guess%d" % i, "sipcrm.test", alg="MD5")
    t.eq(r and r.status, 401, "bad attempt %d from 127.0.0.2 answered 401" % (i + 1))
    b.close()
b = SipClient(d.sip_port, src_ip="127.0.0.2")
r, _ = b.register("101", "secret101", "sipcrm.test", alg="MD5", timeout=2.0)
t.ok(r is None, "after 3 failures 127.0.0.2 gets no answer, even with the right password", r)
b.close()
g = SipClient(d.sip_port, src_ip="127.0.0.3")
r, _ = g.register("102", "secret102", "sipcrm.test", alg="MD5", contact_user="fromdot3")
t.eq(r and r.status, 200, "127.0.0.3 still registers meanwhile")
g.close()
log = d.log()
t.like(log, 'auth failed for "101" from 127.0.0.2', "the stable fail2ban line is logged")
t.like(log, 'auth failed for "999" from 127.0.0.7', "unknown users are logged the same way")

st, text = d.http("GET", "/metrics", auth=False, raw=True)
t.ok(re.search(r"^sipcrm_bans_total 1$", text, re.M), "one ban counted", text[-1500:])
t.ok(re.search(r'^sipcrm_register_total\{result="ok"\} [1-9]', text, re.M), "successful REGISTERs counted")
t.ok(re.search(r"^sipcrm_auth_failures_total [4-9]", text, re.M), "auth failures counted")
t.ok(re.search(r"^sipcrm_registrations [1-9]", text, re.M), "current registrations gauge")

# --- sipcrmctl agents ------------------------------------------------------------------
env = dict(os.environ, SIPCRM_URL="http://127.0.0.1:%d" % d.api_port, SIPCRM_TOKEN=d.token)
r = subprocess.run([SIPCRMCTL, "agents"], capture_output=True, text=True, timeout=20, env=env)
t.eq(r.returncode, 0, "sipcrmctl agents exits 0")
t.ok("101" in r.stdout and "Ivan Petrov" in r.stdout and "idle" in r.stdout, "sipcrmctl agents table", r.stdout)

# --- restart keeps registrations ------------------------------------------------------
before = contacts("101")
t.eq(d.stop(), 0, "SIGTERM exits 0")
d.start()
t.eq(contacts("101"), before, "registrations survive a restart")
a = agents().get("101", {})
t.ok(a.get("contacts") and a["contacts"][0].get("received", "").startswith("sip:127.0.0.1:"),
     "the NAT source address survives too", a)

# --- reload removing an agent drops its registrations ------------------------------------
conf = open(d.conf_path).read()
d.write_conf(conf.replace("[agent:101]\npassword = secret101\nname = Ivan Petrov\ncrm_user = 42\n", ""))
d.signal(signal.SIGHUP)
time.sleep(0.7)
t.ok("101" not in agents(), "agent 101 gone after the reload")
t.eq(len(contacts("102")) >= 1, True, "agent 102 keeps its contacts")
d.write_conf(conf)
d.signal(signal.SIGHUP)
time.sleep(0.7)
t.eq(contacts("101"), [], "re-added agent 101 starts without the dropped contacts")

t.eq(d.stop(), 0, "final SIGTERM exits 0")
t.ok("ERROR: AddressSanitizer" not in d.log() and "runtime error:" not in d.log(),
     "no sanitizer report", d.log()[-3000:])
t.done()
