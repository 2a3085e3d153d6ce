#!/usr/bin/env python3
"""The HTTP API under attack (issue 10, CONTRACT.md §5): every /api/v1
endpoint without a token, with a wrong one or with a near miss gets 401
and does nothing (no call placed, none hung up, no reload); SQL
metacharacters and path traversal in call ids, recording names, numbers
and query parameters are harmless (no 5xx, no other file served, the
database intact); bodies over the limit get 413, with or without
Content-Length; the daemon stays up through all of it.

"Does nothing" is checked where it can be seen: a ringing inbound call
(the fallback PBX rings for 60 s) must survive an unauthenticated hangup
and transfer, an unauthenticated click-to-call must not ring the agent
nor reach the trunk, and a reload without a token must not pick up a new
agent. Each has an authenticated control that does act, so that the
checks can fail.
"""
import http.client
import os
import socket
import sqlite3
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port  # noqa: E402
from fake_pbx import FakePbx  # noqa: E402
from sipua import UA  # noqa: E402

t = Tap()
pbx = FakePbx(busy_after=60)
pbx.start()
trunk = FakePbx(busy_after=60)      # counts whatever reaches the trunk
trunk.start()
agent_phone = UA(ip="127.0.0.1", port=free_port(), user="101")

d = Daemon(t, token="s3cret-T0ken")
BASE = d.base_conf() + (
    "[routing]\nfallback = sip:pbx@127.0.0.1:%d\n" % pbx.port +
    "[pbx]\nextension_uri = sip:{ext}@127.0.0.1:%d\n" % agent_phone.port +
    "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n" % trunk.port +
    "[agent:101]\npassword = secret101\n")
d.write_conf(BASE)
d.start()
TOKEN = d.token


def req(method, path, body=None, headers=None, timeout=5):
    """One raw request (the path is sent exactly as given); returns
    (status, headers, body text), or (None, None, error) when the
    connection failed."""
    c = http.client.HTTPConnection("127.0.0.1", d.api_port, timeout=timeout)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        hs = dict(headers or {})
        if body is not None:
            hs.setdefault("Content-Type", "application/json")
            hs.setdefault("Content-Length", str(len(body)))
        for k, v in hs.items():
            c.putheader(k, v)
        c.endheaders()
        if body is not None:
            c.send(body)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read(200000).decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, None, repr(e)
    finally:
        c.close()


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def active_calls():
    st, body = d.http("GET", "/api/v1/calls")
    return body if st == 200 else None


def db_tables():
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(d.dir, "sipcrm.db"), uri=True,
                         timeout=5)
    try:
        return sorted(r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        db.close()


# --- a ringing inbound call to aim at ------------------------------------------------------
caller = UA(ip="127.0.0.1", user="+79161234567", server=("127.0.0.1", d.sip_port))
dlg = caller.invite_start("sip:+74951234567@127.0.0.1:%d" % d.sip_port)
end = time.time() + 10
calls = []
while time.time() < end and not (calls and pbx.counts.get("INVITE")):
    calls = active_calls() or []
    time.sleep(0.1)
t.eq(len(calls), 1, "an inbound call is ringing the fallback PBX") or t.diag(d.log()[-3000:])
CALL = calls[0]["call_id"] if calls else "none"
tables_before = db_tables()

# --- every endpoint: no token, a wrong one, near misses ---------------------------------------
ENDPOINTS = [
    ("GET", "/api/v1/agents", None),
    ("GET", "/api/v1/calls", None),
    ("GET", "/api/v1/calls/%s" % CALL, None),
    ("GET", "/api/v1/cdr?limit=5", None),
    ("POST", "/api/v1/calls", b'{"agent":"101","to":"+442079460000"}'),
    ("POST", "/api/v1/calls/%s/transfer" % CALL, b'{"to":"+442079460000","mode":"blind"}'),
    ("POST", "/api/v1/calls/%s/hangup" % CALL, b"{}"),
    ("GET", "/api/v1/events", None),
    ("GET", "/api/v1/recordings/%s" % CALL, None),
    ("POST", "/api/v1/crm/generic", b'{"event":"ONEXTERNALCALLSTART"}'),
    ("POST", "/api/v1/crm/bitrix24", b"event=ONEXTERNALCALLSTART&data[PHONE_NUMBER]=+442079460000"),
    ("POST", "/api/v1/reload", b""),
    ("GET", "/api/v1/nonexistent", None),
    ("DELETE", "/api/v1/agents", None),
]
BAD_AUTH = [
    ("no Authorization", {}),
    ("a wrong token", bearer("wrong")),
    ("the token plus a byte", bearer(TOKEN + "x")),
    ("the token minus a byte", bearer(TOKEN[:-1])),
    ("the token's prefix only", bearer(TOKEN[:4])),
    ("an empty Bearer", {"Authorization": "Bearer "}),
    ("Basic with the token", {"Authorization": "Basic " + TOKEN}),
    ("the token without a scheme", {"Authorization": TOKEN}),
    ("the token in another header", {"X-Api-Token": TOKEN}),
    ("a NUL after the token", bearer(TOKEN + "%00")),
]

# reload without a token must not pick up a new agent (the file changes first)
with open(d.conf_path, "w") as f:
    f.write(BASE + "[agent:150]\npassword = secret150\n")

bad = []
for method, path, body in ENDPOINTS:
    for name, hs in BAD_AUTH:
        st, rh, text = req(method, path, body, hs)
        if st != 401 or '"error"' not in text:
            bad.append((method, path, name, st, text[:120]))
    # the token as a query parameter instead of the header
    sep = "&" if "?" in path else "?"
    st, rh, text = req(method, path + sep + "token=" + TOKEN, body)
    if st != 401:
        bad.append((method, path, "?token=", st, text[:120]))
t.eq(bad, [], "%d endpoints x %d kinds of missing or wrong credentials: all 401 with an "
     "error body" % (len(ENDPOINTS), len(BAD_AUTH) + 1))
st, _, text = req("GET", "/api/v1/nonexistent", None, {})
st2, _, text2 = req("GET", "/api/v1/agents", None, {})
t.eq((st, text), (st2, text2), "an unknown path gets the same 401 as a real one")

time.sleep(1.0)
calls = active_calls() or []
t.eq([c["call_id"] for c in calls], [CALL], "the ringing call survived the unauthenticated "
     "hangups and transfers")
t.eq(trunk.counts.get("INVITE", 0), 0, "nothing reached the trunk")
t.ok(agent_phone.wait_invite(timeout=0.2) is None, "the agent's phone did not ring")
st, agents = d.http("GET", "/api/v1/agents")
t.ok(st == 200 and "150" not in [a["extension"] for a in agents],
     "the unauthenticated reloads changed nothing", agents)
st, _ = d.http("POST", "/api/v1/reload", body={})
time.sleep(0.5)
st, agents = d.http("GET", "/api/v1/agents")
t.ok(st == 200 and "150" in [a["extension"] for a in agents],
     "control: a reload with the token adds the new agent", agents)

# --- SQL metacharacters and path traversal ---------------------------------------------------
NASTY = ["' OR '1'='1", "1; DROP TABLE cdr;--", "\" OR \"\"=\"", "x') UNION SELECT * FROM cdr--",
         "%", "_", "*", "\\", "../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd",
         "%2e%2e%2f%2e%2e%2fsipcrm.db", "..", ".", "%00", "x%00y", "%ff%fe", "%c0%ae%c0%ae",
         "A" * 5000, "%s%s%s%n", "$(id)", "`id`", "{{7*7}}"]


def q(s):
    # keep what is already %-encoded as it is: it is the attack
    return urllib.parse.quote(s, safe="%/.*_\\$(){}`'\";=,!@")


bad5 = []
served = []
for n in NASTY:
    for method, path, body in [
            ("GET", "/api/v1/calls/" + q(n), None),
            ("GET", "/api/v1/recordings/" + q(n), None),
            ("POST", "/api/v1/calls/%s/hangup" % q(n), b"{}"),
            ("POST", "/api/v1/calls/%s/transfer" % q(n), b'{"to":"102","mode":"blind"}'),
            ("POST", "/api/v1/calls/%s/transfer" % CALL,
             ('{"to":"%s","mode":"blind"}' % n.replace("\\", "\\\\").replace('"', '\\"')).encode()),
            ("POST", "/api/v1/calls",
             ('{"agent":"%s","to":"%s"}' % ((n.replace("\\", "\\\\").replace('"', '\\"'),) * 2)).encode()),
            ("GET", "/api/v1/cdr?since=%s&limit=%s" % (q(n), q(n)), None)]:
        st, rh, text = req(method, path, body, bearer(TOKEN))
        if st is None or st >= 500:
            bad5.append((method, path[:80], st, text[:120]))
        if st == 200 and ("root:" in text or "SQLite format" in text or "[api]" in text):
            served.append((method, path[:80], text[:120]))
t.eq(bad5, [], "%d hostile ids, numbers and parameters on 7 endpoints: no 5xx, no dropped "
     "connection" % len(NASTY))
t.eq(served, [], "no file from outside the API is served")
for path in ["/api/v1/../../../../etc/passwd", "/api/v1/recordings/../../sipcrm.conf",
             "/api/v1/recordings/..%2f..%2fsipcrm.conf", "/api/v1/recordings/%2e%2e/sipcrm.db",
             "/../../../etc/passwd", "/metrics/../api/v1/agents", "//api/v1/agents",
             "/api/v1//agents", "/API/V1/AGENTS", "/api/v1/agents/", "/api/v1/agents%00",
             "/api/v1/agents?x=../../etc/passwd"]:
    st, rh, text = req("GET", path, None, {})
    t.ok(st in (400, 401, 404) and "root:" not in text and "[api]" not in text,
         "without a token %s gets %s" % (path, st), text[:300])
t.eq(db_tables(), tables_before, "every table of the database is still there")
st, cdr = d.http("GET", "/api/v1/cdr?limit=100")
t.ok(st == 200 and isinstance(cdr, list) and
     all(c.get("call_id") not in NASTY for c in cdr), "the CDR list is sane", cdr)
t.eq(trunk.counts.get("INVITE", 0), 0, "no hostile click-to-call reached the trunk")
st, cdr = d.http("GET", "/api/v1/cdr?limit=1&since=1970-01-01T00:00:00Z")
t.eq(st, 200, "control: a well-formed cdr query still answers 200")

# --- size limits ----------------------------------------------------------------------------
BIG = 2 * 1024 * 1024
st, _, text = req("POST", "/api/v1/calls", b"x", dict(bearer(TOKEN), **{"Content-Length": str(BIG)}))
t.eq(st, 413, "a Content-Length of 2 MB gets 413 before any body is read")


def chunked(path, total, chunk=65536):
    c = http.client.HTTPConnection("127.0.0.1", d.api_port, timeout=20)
    try:
        c.putrequest("POST", path, skip_accept_encoding=True)
        c.putheader("Authorization", "Bearer " + TOKEN)
        c.putheader("Content-Type", "application/json")
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        sent = 0
        try:
            while sent < total:
                c.send(b"%x\r\n%s\r\n" % (chunk, b" " * chunk))
                sent += chunk
            c.send(b"0\r\n\r\n")
        except OSError:
            pass        # the server may close as soon as it has answered
        return c.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return repr(e)
    finally:
        c.close()


t.eq(chunked("/api/v1/calls", BIG), 413, "a 2 MB chunked body gets 413")


def early_answer(headers):
    """Sends the head of a POST with a 1 GB Content-Length and reads the
    answer before any body; then pushes body bytes until the server has
    closed. Returns (status line, bytes it swallowed after answering)."""
    s = socket.create_connection(("127.0.0.1", d.api_port), timeout=5)
    try:
        s.sendall(("POST /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\n%s"
                   "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
                   % "".join("%s: %s\r\n" % kv for kv in headers.items())).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            b = s.recv(4096)
            if not b:
                break
            head += b
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sent += s.send(b" " * 65536)
        except OSError:
            pass
        return head.split(b"\r\n", 1)[0].decode(errors="replace"), sent
    except OSError as e:
        return repr(e), None
    finally:
        s.close()


line, swallowed = early_answer({})
t.like(line, " 401 ", "a 1 GB upload without a token gets 401 before its body")
t.ok(swallowed is not None and swallowed < 16 * 1024 * 1024,
     "and the connection closes instead of swallowing the body", swallowed)
line, swallowed = early_answer(bearer(TOKEN))
t.like(line, " 413 ", "with the token it gets 413 before its body")
t.ok(swallowed is not None and swallowed < 16 * 1024 * 1024,
     "and the connection closes once the discard limit is passed", swallowed)
st, _, text = req("GET", "/api/v1/agents", None, dict(bearer(TOKEN), **{"X-Big": "a" * 200000}))
t.ok(st is None or st in (400, 413, 431), "a 200 kB header is refused", (st, text[:200]))
st, _ = d.http("GET", "/api/v1/agents")
t.eq(st, 200, "the API still answers after all of it")
t.eq([c["call_id"] for c in (active_calls() or [])], [CALL], "and the call is still ringing")

# control: an authenticated hangup does end it
st, _ = d.http("POST", "/api/v1/calls/%s/hangup" % CALL, body={})
t.ok(st in (200, 202, 204), "control: a hangup with the token is accepted", st)
end = time.time() + 5
while time.time() < end and active_calls():
    time.sleep(0.1)
t.eq(active_calls(), [], "and ends the call")
t.eq(trunk.counts.get("INVITE", 0), 0, "the trunk never saw an INVITE")

t.eq(d.stop(), 0, "SIGTERM exits 0")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "runtime error:" not in log,
     "no sanitizer report", log[-3000:])
caller.close()
agent_phone.close()
pbx.stop()
trunk.stop()
t.done()
