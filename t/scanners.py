#!/usr/bin/env python3
"""SIPVicious (Debian's sipvicious package) against the real sipcrmd
(issue 10): svmap learns no version, svwar enumerates none of 20 agents
with REGISTER, OPTIONS or INVITE, svcrack is banned after ban_failures
and never reaches the password that sits later in its word list.

Each tool runs twice: as shipped (User-Agent "friendly-scanner", which
sipcrmd drops without an answer) and disguised as a softphone (the same
code with another User-Agent), which is what a careful attacker does;
only the disguised runs test the answers themselves. Every attack comes
from an address of its own (127.0.0.2x), so that its ban hits nobody
else; the tools' -b is not passed on by svwar and svcrack 0.3.3, so the
wrapper below does it. A control run puts the password before the ban
threshold: svcrack must find it there, or the test proves nothing.
"""
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, options  # noqa: E402
from sipclient import SipClient  # noqa: E402

SV_PATH = "/usr/share/sipvicious"
if not shutil.which("svwar") or not os.path.isdir(os.path.join(SV_PATH, "sipvicious")):
    print("1..0 # SKIP sipvicious is not installed (apt-get install sipvicious)")
    sys.exit(0)

t = Tap()
AGENTS = ["%d" % (200 + i) for i in range(20)]
BAN_FAILURES = 5
conf_agents = "".join("[agent:%s]\npassword = pw-%s-x\n" % (a, a) for a in AGENTS)
d = Daemon(t)
d.write_conf(d.base_conf().replace(
    "domain = sipcrm.test\n",
    "domain = sipcrm.test\nban_failures = %d\nban_window = 60s\nban_time = 300s\n"
    % BAN_FAILURES) + conf_agents)
d.start()
PORT = str(d.sip_port)
st, health = d.http("GET", "/api/v1/health", auth=False)
VERSION = health.get("version") if isinstance(health, dict) else None
t.ok(VERSION, "the API reports a version to look for", health)

# Runs a sipvicious tool with the User-Agent and source address given:
# argv[1] user agent, argv[2] bind address, argv[3] module, then its options.
WRAP = r"""
import sys
sys.path.insert(0, %r)
from sipvicious.libs import svhelper
ua, bind, tool = sys.argv[1:4]
del sys.argv[1:4]
dflt = list(svhelper.makeRequest.__defaults__)
dflt[dflt.index('friendly-scanner')] = ua
svhelper.makeRequest.__defaults__ = tuple(dflt)
import importlib
m = importlib.import_module('sipvicious.' + tool)
cls = {'svmap': 'DrinkOrSip', 'svwar': 'TakeASip', 'svcrack': 'ASipOfRedWine'}[tool]
orig = getattr(m, cls)
def bound(*a, **k):
    k['bindingip'] = bind
    k['externalip'] = bind
    return orig(*a, **k)
setattr(m, cls, bound)
sys.argv[0] = tool
m.main()
""" % SV_PATH

SHIPPED = "friendly-scanner"
DISGUISED = "Zoiper rv2.10.8.3"


def sv(tool, args, ua, bind, timeout=150):
    cmd = [sys.executable, "-c", WRAP, ua, bind, tool] + args + ["127.0.0.1"]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           cwd=d.dir, stdin=subprocess.DEVNULL)
        out = r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        out = "TIMEOUT\n" + str(e.stdout or "") + str(e.stderr or "")
    t.diag("%s %s (%s, from %s): %.1f s" % (tool, " ".join(args), ua, bind, time.time() - t0))
    return out


def table_rows(out):
    """The rows of the result table a tool prints ("| a | b |")."""
    rows = []
    for line in out.splitlines():
        if line.startswith("|") and not line.startswith("| SIP Device") and \
           not line.startswith("| Extension") and not line.startswith("+"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


# --- svmap --------------------------------------------------------------------------------
out = sv("svmap", ["-p", PORT], SHIPPED, "127.0.0.21")
t.eq(table_rows(out), [], "svmap as shipped finds nothing (friendly-scanner gets no answer)") \
    or t.diag(out[-1500:])
out = sv("svmap", ["-p", PORT, "--debug"], DISGUISED, "127.0.0.22")
rows = table_rows(out)
t.eq(len(rows), 1, "svmap disguised finds the server") or t.diag(out[-1500:])
t.ok(rows and rows[0][-1] == "unknown", "and learns no User-Agent or Server", rows)
t.ok(VERSION and VERSION not in out and "sipcrm" not in out.lower(),
     "svmap's raw answers hold no version and no product name", out[-1500:])

# the answers svmap does not ask for: OPTIONS, a challenge, a 407, 501
c = SipClient(d.sip_port, src_ip="127.0.0.22")
answers = [c.request("OPTIONS", "sip:127.0.0.1:%s" % PORT,
                     ["From: <sip:x@127.0.0.22>;tag=1", "To: <sip:127.0.0.1>"]),
           c.request("REGISTER", "sip:sipcrm.test",
                     ["From: <sip:200@sipcrm.test>;tag=2", "To: <sip:200@sipcrm.test>",
                      "Contact: <sip:x@127.0.0.22:%d>" % c.port]),
           c.request("INVITE", "sip:+442079460000@127.0.0.1:%s" % PORT,
                     ["From: <sip:200@sipcrm.test>;tag=3", "To: <sip:+442079460000@sipcrm.test>",
                      "Contact: <sip:x@127.0.0.22:%d>" % c.port]),
           c.request("FOO", "sip:127.0.0.1:%s" % PORT,
                     ["From: <sip:x@127.0.0.22>;tag=4", "To: <sip:127.0.0.1>"])]
c.close()
got = [a.status if a else None for a in answers]
t.eq(got, [200, 401, 407, 501], "OPTIONS, REGISTER, INVITE and FOO are answered")
leaks = [(a.status, k, v) for a in answers if a for k, v in a.headers
         if k.lower() in ("server", "user-agent") or (VERSION and VERSION in v)]
t.eq(leaks, [], "no answer has a Server or User-Agent header or the version")

# --- svwar --------------------------------------------------------------------------------
n = 30
for method in ("REGISTER", "OPTIONS", "INVITE"):
    for ua in (SHIPPED, DISGUISED):
        n += 1
        for force in ([], ["--force"]):
            out = sv("svwar", ["-p", PORT, "-e", "190-229", "-m", method, "--maximumtime", "4"]
                     + force, ua, "127.0.0.%d" % n)
            found = [r[0] for r in table_rows(out)]
            hits = sorted(set(found) & set(AGENTS))
            others = sorted(set(found) - set(AGENTS))
            # --force with identical answers would list every number tried:
            # that tells the agents apart no better than listing none
            t.ok(not hits or len(others) == 20,
                 "svwar -m %s %s(%s): none of the 20 agents told apart"
                 % (method, " ".join(force) + " " if force else "",
                    "shipped" if ua == SHIPPED else "disguised"),
                 "agents listed %s, other numbers listed %s\n%s" % (hits, others, out[-1500:]))

# --- svcrack ------------------------------------------------------------------------------
def wordlist(name, password, at):
    words = ["guess%04d" % i for i in range(1000)]
    words[at] = password
    path = os.path.join(d.dir, name)
    with open(path, "w") as f:
        f.write("\n".join(words) + "\n")
    return path


def fails_from(ip):
    return len(re.findall(r'auth failed for "[^"]*" from %s$' % re.escape(ip), d.log(), re.M))


def cracked(out, password):
    return any(password in r for r in table_rows(out))


# control: before the threshold svcrack does find it (the tool works here)
out = sv("svcrack", ["-p", PORT, "-u", "201", "-d", wordlist("w1", "pw-201-x", 2),
                     "--maximumtime", "4"], DISGUISED, "127.0.0.41")
t.ok(cracked(out, "pw-201-x"), "control: a password third in the list is found", out[-1500:])

out = sv("svcrack", ["-p", PORT, "-u", "205", "-d", wordlist("w2", "pw-205-x", 500),
                     "--maximumtime", "4"], SHIPPED, "127.0.0.42")
t.ok(not cracked(out, "pw-205-x"), "svcrack as shipped finds nothing", out[-1500:])
t.eq(fails_from("127.0.0.42"), 0, "and is not even answered (no failure logged)")

t0 = time.time()
out = sv("svcrack", ["-p", PORT, "-u", "205", "-d", wordlist("w3", "pw-205-x", 500),
                     "--maximumtime", "4"], DISGUISED, "127.0.0.43")
t.ok(not cracked(out, "pw-205-x"),
     "svcrack disguised: the password 501st of 1,000 words is never found", out[-1500:])
t.eq(fails_from("127.0.0.43"), BAN_FAILURES,
     "exactly ban_failures wrong passwords were checked, then nothing")
t.like(d.log(), "banned 127.0.0.43", "the source is banned and that is logged")
c = SipClient(d.sip_port, src_ip="127.0.0.43")
r, _ = c.register("205", "pw-205-x", "sipcrm.test", timeout=1.5)
c.close()
t.ok(r is None, "the banned source gets no answer even with the right password", r)

# nobody else suffers: the agent registers from its own address
c = SipClient(d.sip_port, src_ip="127.0.0.1")
r, _ = c.register("205", "pw-205-x", "sipcrm.test")
c.close()
t.eq(r and r.status, 200, "agent 205 still registers from its own address")
t.like(options(d.sip_port) or "", "SIP/2.0 200", "OPTIONS from 127.0.0.1 still answered")
st, text = d.http("GET", "/metrics", auth=False, raw=True)
m = re.search(r'^sipcrm_dropped_requests_total\{reason="scanner"\} (\d+)', text, re.M)
t.ok(m and int(m.group(1)) > 0, "scanner drops are counted", text[-800:])

t.eq(d.stop(), 0, "SIGTERM exits 0")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "runtime error:" not in log,
     "no sanitizer report", log[-3000:])
t.done()
