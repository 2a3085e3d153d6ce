#!/usr/bin/env python3
"""Call events (CONTRACT §4) through the generic CRM: call.started ->
call.ringing -> call.answered -> call.ended for an answered call, with valid
signatures, consecutive seq and the right fields; exactly one call.ended
per call whatever happened (answered by the fallback, missed, busy,
cancelled during the lookup, an internal call); agent.status as agents ring,
talk and go idle; the lookup cancelled when the caller hangs up first; the
same events live on GET /api/v1/events (SSE, token required); events the
CRM refuses are retried until it takes them, in order; outbox metrics."""
import json
import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from sipua import UA
from crm_emulator import CrmEmulator

t = Tap()
crm = CrmEmulator(secret="ev-secret")
crm.responsible["+79161111111"] = {"id": "42", "extension": "101", "name": "Ivan"}
crm.responsible["+79162222222"] = {"id": "u-77", "name": "Olga"}   # crm_user only
pbx_port = free_port()
trunk_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = 3s\n"
             "responsible_ring = 1500ms\n" % pbx_port +
             "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n"
             "caller_id = +74950000000\n" % trunk_port +
             "[agent:101]\npassword = pw101\ncrm_user = 42\n"
             "[agent:102]\npassword = pw102\ncrm_user = u-77\n"
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = ev-secret\ncache = 0\ncountry_code = 7\n" % (crm.url, crm.url))
d.start()
server = ("127.0.0.1", d.sip_port)
DID = "sip:84951234567@127.0.0.1:%d" % d.sip_port


class SseClient:
    """Reads GET /api/v1/events in a thread; .events holds the parsed data lines."""

    def __init__(self, port, token):
        self.events, self.status, self.closed = [], None, False
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(("GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                           "Authorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n"
                           % token).encode())
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        buf = b""
        self.sock.settimeout(30)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if self.status is None and b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    self.status = int(head.split()[1])
                    self.head = head.decode(errors="replace")
                for m in re.finditer(rb"data: (\{.*?\})\n", buf):
                    try:
                        self.events.append(json.loads(m.group(1)))
                    except ValueError:
                        pass
                buf = buf[buf.rfind(b"\n") + 1:] if re.search(rb"data: ", buf) else buf
        except OSError:
            pass
        self.closed = True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


sse = SseClient(d.api_port, d.token)
time.sleep(0.3)
t.eq(sse.status, 200, "GET /api/v1/events streams (200)")
t.like(getattr(sse, "head", ""), "text/event-stream", "as text/event-stream")
st, _ = d.http("GET", "/api/v1/events", auth=False)
t.eq(st, 401, "the event stream needs the token")

a101 = UA(ip="127.0.0.2", user="101", server=server)
a102 = UA(ip="127.0.0.3", user="102", server=server)
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)
r1 = a101.register("101", "pw101")
r2 = a102.register("102", "pw102")
t.ok(r1 and r1.status == 200 and r2 and r2.status == 200, "agents registered")


def inbound(number):
    caller = UA(ip="127.0.0.1", user=number, server=server)
    dlg = caller.invite_start(DID, headers=[("From", "<sip:%s@trunk>" % number)])
    return caller, dlg


def call_id_of(leg):
    return leg.invite.get("X-Sipcrm-Call-ID") if leg else None


def events_of(cid, n, timeout=5):
    return crm.wait_for(lambda: len(crm.of_call(cid)) >= n and crm.of_call(cid), timeout) \
        or crm.of_call(cid)


def types(evs):
    return [e.get("type") for e in evs]


RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def check_common(evs, cid, name):
    t.ok(all(e.get("_sig_ok") for e in evs), "%s: every event is signed (HMAC-SHA256)" % name,
         [e.get("_sig_ok") for e in evs])
    t.eq([e.get("seq") for e in evs], list(range(1, len(evs) + 1)),
         "%s: seq 1, 2, 3... in arrival order" % name)
    t.ok(all(e.get("call_id") == cid for e in evs), "%s: one call_id" % name)
    t.eq(len({e.get("id") for e in evs}), len(evs), "%s: unique ids" % name)
    t.ok(all(RFC3339_MS.match(e.get("time") or "") for e in evs),
         "%s: time is RFC 3339 with ms, UTC" % name, [e.get("time") for e in evs])
    t.eq(types(evs).count("call.ended"), 1, "%s: exactly one call.ended" % name)
    t.eq(types(evs)[-1] if evs else None, "call.ended", "%s: call.ended comes last" % name)


# --- 1. known caller, the responsible agent answers ---------------------------------------
caller, dlg = inbound("89161111111")
leg = a101.wait_invite(timeout=5)
t.ok(leg is not None, "the responsible agent's phone rings")
cid = call_id_of(leg)
if leg:
    leg.reply(leg.invite, 180)
    time.sleep(0.3)
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "the caller is connected")
time.sleep(1.1)
dlg.bye()
caller.close()
evs = events_of(cid, 4)
t.eq(types(evs), ["call.started", "call.ringing", "call.answered", "call.ended"],
     "answered call: started, ringing, answered, ended")
check_common(evs, cid, "answered call")
ev = {e["type"]: e for e in evs}
s = ev.get("call.started", {})
t.eq((s.get("direction"), s.get("from"), s.get("to"), s.get("did")),
     ("inbound", "+79161111111", "+74951234567", "+74951234567"),
     "call.started: direction, from, to, did in E.164")
t.eq(s.get("contact_id"), "c-1", "call.started: contact_id")
t.eq((s.get("responsible") or {}).get("extension"), "101", "call.started: responsible")
t.eq((s.get("responsible") or {}).get("id"), "42", "call.started: responsible's CRM id")
t.eq((ev.get("call.ringing", {}).get("agent"), ev.get("call.ringing", {}).get("crm_user")),
     ("101", "42"), "call.ringing: agent and crm_user")
t.eq((ev.get("call.answered", {}).get("agent"), ev.get("call.answered", {}).get("crm_user")),
     ("101", "42"), "call.answered: agent and crm_user")
e = ev.get("call.ended", {})
t.eq((e.get("disposition"), e.get("first_agent"), e.get("last_agent")),
     ("answered", "101", "101"), "call.ended: answered, first and last agent")
t.ok(isinstance(e.get("duration"), int) and isinstance(e.get("billsec"), int) and
     e.get("billsec", 0) >= 1 and e.get("duration", 0) >= e.get("billsec", 0),
     "call.ended: duration >= billsec >= 1 s", (e.get("duration"), e.get("billsec")))
t.ok("recording_url" in e and e["recording_url"] is None, "call.ended: recording_url null")
st = [x.get("status") for x in crm.received
      if x.get("type") == "agent.status" and x.get("agent") == "101"]
t.eq(st[:4], ["idle", "ringing", "busy", "idle"],
     "agent.status for 101: idle (registered), ringing, busy, idle")
t.ok(all(x.get("_sig_ok") for x in crm.received if x.get("type") == "agent.status"),
     "agent.status events are signed")

# --- 2. responsible by crm_user rings out, the fallback answers ---------------------------
caller, dlg = inbound("+79162222222")
leg = a102.wait_invite(timeout=5)
t.ok(leg is not None, "crm_user u-77 maps to agent 102, whose phone rings")
cid = call_id_of(leg)
if leg:
    leg.reply(leg.invite, 180)
pl = pbx.wait_invite(timeout=5)
t.ok(pl is not None, "after responsible_ring the fallback rings")
if pl:
    pl.reply(pl.invite, 200, body=pl.sdp())
    pl.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "the fallback answers")
time.sleep(0.2)
dlg.bye()
caller.close()
evs = events_of(cid, 4)
t.eq(types(evs), ["call.started", "call.ringing", "call.answered", "call.ended"],
     "fallback answered: started, ringing (102), answered, ended")
check_common(evs, cid, "fallback answered")
ev = {e["type"]: e for e in evs}
t.eq(ev.get("call.answered", {}).get("agent", "absent"), None,
     "call.answered by the fallback names no agent")
t.eq((ev.get("call.ended", {}).get("disposition"), ev.get("call.ended", {}).get("first_agent"),
      ev.get("call.ended", {}).get("last_agent", "absent")), ("answered", "102", None),
     "call.ended: answered, first_agent 102, no last agent")

# --- 3. missed: the agent rings, the caller gives up ---------------------------------------
caller, dlg = inbound("+79161111111")
leg = a101.wait_invite(timeout=5)
cid = call_id_of(leg)
if leg:
    leg.reply(leg.invite, 180)
time.sleep(0.4)
dlg.cancel()
if leg:
    c = leg.wait_request("CANCEL", timeout=3)
    if c is not None:
        leg.answer_cancel(c)
caller.close()
evs = events_of(cid, 3)
t.eq(types(evs), ["call.started", "call.ringing", "call.ended"],
     "missed call: started, ringing, ended; never answered")
check_common(evs, cid, "missed call")
t.eq(evs[-1].get("disposition") if evs else None, "missed", "disposition missed")

# --- 4. unknown caller, the fallback is busy ------------------------------------------------
caller, dlg = inbound("+79163333333")
pl = pbx.wait_invite(timeout=5)
cid = call_id_of(pl)
if pl:
    pl.reply(pl.invite, 486)
    pl.wait_ack(2)
dlg.wait_final(5)
caller.close()
evs = events_of(cid, 2)
t.eq(types(evs), ["call.started", "call.ended"], "unknown caller, busy: started, ended")
check_common(evs, cid, "busy call")
t.eq(evs[0].get("responsible", "absent") if evs else None, None,
     "call.started: responsible null for an unknown caller")
t.eq(evs[-1].get("disposition") if evs else None, "busy", "disposition busy")

# --- 5. the caller hangs up during the lookup ----------------------------------------------
crm.delay = 2.0
n_abort = len(crm.aborted)
n_look = len(crm.lookups)
caller, dlg = inbound("+79164444444")
crm.wait_for(lambda: len(crm.lookups) > n_look, 3)
cid = crm.lookups[-1][1].get("call_id") if len(crm.lookups) > n_look else None
time.sleep(0.3)
dlg.cancel()
caller.close()
t.ok(crm.wait_for(lambda: len(crm.aborted) > n_abort, 3),
     "hanging up during the lookup cancels the HTTP request")
crm.delay = 0
evs = events_of(cid, 2)
t.eq(types(evs), ["call.started", "call.ended"], "cancelled during the lookup: started, ended")
check_common(evs, cid, "cancelled call")
t.eq(evs[-1].get("disposition") if evs else None, "cancelled", "disposition cancelled")

# --- 6. an internal call ----------------------------------------------------------------------
dlg = a101.invite_start("sip:102@sipcrm.test", auth=("101", "pw101"))
leg = a102.wait_invite(timeout=5)
cid = call_id_of(leg)
if leg:
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
evs = events_of(cid, 4)
t.eq(types(evs), ["call.started", "call.ringing", "call.answered", "call.ended"],
     "internal call: started, ringing, answered, ended")
check_common(evs, cid, "internal call")
t.eq((evs[0].get("direction"), evs[0].get("from"), evs[0].get("to")) if evs else None,
     ("internal", "101", "102"), "internal call: direction, from and to are extensions")

# --- 6b. an outbound call -------------------------------------------------------------------
trunk = UA(ip="127.0.0.1", port=trunk_port, user="provider", server=server)
dlg = a101.invite_start("sip:89167777777@sipcrm.test", auth=("101", "pw101"))
leg = trunk.wait_invite(timeout=5)
cid = call_id_of(leg)
if leg:
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
trunk.close()
evs = events_of(cid, 3)
t.eq(types(evs), ["call.started", "call.answered", "call.ended"],
     "outbound call: started, answered, ended")
check_common(evs, cid, "outbound call")
t.eq((evs[0].get("direction"), evs[0].get("from"), evs[0].get("to"), evs[0].get("did"))
     if evs else None, ("outbound", "101", "+79167777777", "+74950000000"),
     "outbound call: from the agent, to E.164, did the trunk's caller id")

# --- 7. the CRM refuses events for a while: retried, in order --------------------------------
crm.events_status = 500
caller, dlg = inbound("+79165555555")
pl = pbx.wait_invite(timeout=5)
cid = call_id_of(pl)
if pl:
    pl.reply(pl.invite, 200, body=pl.sdp())
    pl.wait_ack(3)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
caller.close()
time.sleep(1.5)
t.eq(len(crm.of_call(cid)), 0, "while the CRM answers 500 nothing is taken")
st, m = d.http("GET", "/metrics", auth=False, raw=True)
depth = re.search(r"^sipcrm_events_outbox_depth (\d+)", m, re.M)
t.ok(depth and int(depth.group(1)) >= 3, "the outbox depth shows the waiting events",
     depth and depth.group(0))
t.like(m, "sipcrm_events_retried_total", "retries are counted")
crm.events_status = 200
evs = events_of(cid, 3, timeout=8)
t.eq(types(evs), ["call.started", "call.answered", "call.ended"],
     "refused events arrive, complete, once the CRM takes them")
t.eq([e.get("seq") for e in evs], list(range(1, len(evs) + 1)), "still in seq order")
time.sleep(1.5)
st, m = d.http("GET", "/metrics", auth=False, raw=True)
t.like(m, "sipcrm_events_outbox_depth 0", "the outbox drains to 0")
t.ok(re.search(r"^sipcrm_events_delivered_total [1-9]", m, re.M),
     "delivered events are counted")

# --- every call: exactly one call.ended; SSE saw the same events ------------------------------
ended = {}
for e in crm.received:
    if e.get("type") == "call.ended":
        ended.setdefault(e["call_id"], set()).add(e["id"])
t.ok(ended and all(len(v) == 1 for v in ended.values()), "one call.ended per call, over all calls",
     {k: len(v) for k, v in ended.items()})
time.sleep(0.3)
crm_ids = {e["id"] for e in crm.received}
sse_ids = {e.get("id") for e in sse.events}
t.ok(crm_ids and crm_ids <= sse_ids, "the SSE client saw every event the CRM got",
     "%d missing" % len(crm_ids - sse_ids))
t.ok(len(sse.events) == len(sse_ids), "SSE shows each event once")
sse.close()
time.sleep(0.2)
st, m = d.http("GET", "/metrics", auth=False, raw=True)
st2, _ = d.http("GET", "/api/v1/health", auth=False)
t.eq(st2, 200, "the API still answers after the SSE client left")

for ua in (a101, a102, pbx):
    ua.close()
t.eq(d.stop(), 0, "sipcrmd exits cleanly")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log, "no ASan report")
crm.stop()
t.done()
