#!/usr/bin/env python3
"""Call control: blind transfer by REFER (to an extension, to a tel: number
through the trunk, to a target that rejects: the customer returns to the
first agent), attended transfer by REFER with Replaces, transfers from the
API (blind: the agent leaves at once; attended: on the target's answer),
hangup of the agent leg (the customer goes on to the fallback) and of the
whole call, click-to-call end to end with RTP both ways, its validation;
the events of each: call.transferred, exactly one call.ended, first and
last agent."""
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import subprocess
from sipcrm_test import Tap, Daemon, free_port, SIPCRMCTL
from sipua import UA
from crm_emulator import CrmEmulator

t = Tap()
crm = CrmEmulator(secret="cc")
pbx_port, trunk_port = free_port(), free_port()
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = 1s\n"
             "responsible_ring = 5s\ntransfer_ring = 3s\nclick_to_call_ring = 3s\n" % pbx_port +
             "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n"
             "caller_id = +74950000000\n" % trunk_port +
             "[agent:101]\npassword = pw101\ncrm_user = u1\n"
             "[agent:102]\npassword = pw102\ncrm_user = u2\n"
             "[agent:103]\npassword = pw103\n"
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = cc\ncache = 0\ncountry_code = 7\n" % (crm.url, crm.url))
d.start()
server = ("127.0.0.1", d.sip_port)
DID = "sip:84951234567@127.0.0.1:%d" % d.sip_port
CUSTOMER = "+79161111111"
crm.responsible[CUSTOMER] = {"id": "u1", "extension": "101"}

a101 = UA(ip="127.0.0.2", user="101", server=server)
a102 = UA(ip="127.0.0.3", user="102", server=server)
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)
trunk = UA(ip="127.0.0.1", port=trunk_port, user="provider", server=server)
ok1, ok2 = a101.register("101", "pw101"), a102.register("102", "pw102")
t.ok(ok1 and ok1.status == 200 and ok2 and ok2.status == 200, "agents 101 and 102 registered")
IN_DLG = {"NOTIFY", "BYE", "INVITE", "UPDATE", "OPTIONS"}


def call_info(cid):
    st, body = d.http("GET", "/api/v1/calls/%s" % cid)
    return body if st == 200 else {}


def answered_call():
    """A customer call answered by 101. Returns (customer UA, its dialog, 101's leg, id)."""
    cust = UA(ip="127.0.0.1", user=CUSTOMER, server=server)
    dlg = cust.invite_start(DID, from_user=CUSTOMER)
    leg = a101.wait_invite(timeout=5)
    if leg is None:
        return cust, dlg, None, None
    leg.auto_answer = set(IN_DLG)
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)
    fin = dlg.wait_final(5)
    dlg.auto_answer = set(IN_DLG)
    return cust, dlg, leg, leg.invite.get("X-Sipcrm-Call-ID") if fin and fin.status == 200 \
        else None


def got(dialog, method, timeout=3.0):
    end = time.time() + timeout
    while time.time() < end:
        ms = [m for m in dialog.auto_answered if m.method == method]
        if ms:
            return ms
        time.sleep(0.02)
    return [m for m in dialog.auto_answered if m.method == method]


def events(cid, last="call.ended", timeout=5):
    crm.wait_for(lambda: any(e.get("type") == last for e in crm.of_call(cid)), timeout)
    return crm.of_call(cid)


def types(evs):
    return [e.get("type") for e in evs]


def sipfrags(dialog):
    return [m.body.decode(errors="replace").strip() if isinstance(m.body, bytes) else
            str(m.body).strip() for m in dialog.auto_answered if m.method == "NOTIFY"]


# --- 1. blind REFER to an extension ------------------------------------------------------
cust, dlg, leg, cid = answered_call()
t.ok(cid, "customer connected to 101")
tx = leg.request_start("REFER", headers=[("Refer-To", "<sip:102@sipcrm.test>"),
                                          ("Referred-By", "<sip:101@sipcrm.test>")])
r = tx.wait_final(3)
t.eq(r.status if r else None, 202, "REFER to 102: 202 Accepted")
b = a102.wait_invite(timeout=5)
t.ok(b is not None, "102's phone rings")
if b:
    t.like(b.invite.get("From") or "", CUSTOMER, "and shows the customer's number")
    b.auto_answer = set(IN_DLG)
    b.reply(b.invite, 180)
    time.sleep(0.2)
    b.reply(b.invite, 200, body=b.sdp())
    b.wait_ack(3)
t.ok(got(leg, "BYE"), "101's leg ends once 102 answers")
frags = sipfrags(leg)
t.ok(frags and frags[0].startswith("SIP/2.0 100") and frags[-1].startswith("SIP/2.0 200"),
     "NOTIFY sipfrag: 100 Trying, then 200 OK", frags)
t.eq(call_info(cid).get("agent"), "102", "the call is now 102's")
dlg.bye()
t.ok(b and got(b, "BYE"), "the customer's BYE reaches 102")
cust.close()
evs = events(cid)
t.eq(types(evs), ["call.started", "call.ringing", "call.answered", "call.ringing",
                  "call.transferred", "call.ended"], "blind transfer events")
tr = [e for e in evs if e["type"] == "call.transferred"]
t.eq((tr[0].get("agent"), tr[0].get("by"), tr[0].get("mode")) if tr else None,
     ("102", "101", "blind"), "call.transferred: agent 102, by 101, blind")
t.eq((evs[-1].get("first_agent"), evs[-1].get("last_agent"), evs[-1].get("disposition")),
     ("101", "102", "answered"), "call.ended: first 101, last 102")
t.eq([e.get("seq") for e in evs], list(range(1, len(evs) + 1)), "seq holds across the transfer")

# --- 2. blind REFER to a target that rejects: back to 101 -------------------------------------
cust, dlg, leg, cid = answered_call()
tx = leg.request_start("REFER", headers=[("Refer-To", "<sip:102@sipcrm.test>")])
r = tx.wait_final(3)
t.eq(r.status if r else None, 202, "REFER: 202")
b = a102.wait_invite(timeout=5)
if b:
    b.reply(b.invite, 486)
    b.wait_ack(2)
time.sleep(0.5)
frags = sipfrags(leg)
t.ok(frags and frags[-1].startswith("SIP/2.0 486"), "NOTIFY carries the target's 486", frags)
t.eq(got(leg, "BYE", 0.3), [], "101 keeps the call")
t.eq(call_info(cid).get("agent"), "101", "the customer is back with 101")
dlg.bye()
t.ok(got(leg, "BYE"), "and the customer's BYE reaches 101")
cust.close()
evs = events(cid)
t.eq(types(evs).count("call.transferred"), 0, "no call.transferred for a failed transfer")
t.eq((evs[-1].get("last_agent"), types(evs).count("call.ended")), ("101", 1),
     "one call.ended, last agent 101")

# --- 3. blind REFER to a tel: number through the trunk ----------------------------------------
cust, dlg, leg, cid = answered_call()
tx = leg.request_start("REFER", headers=[("Refer-To", "<tel:+79167777777>")])
r = tx.wait_final(3)
t.eq(r.status if r else None, 202, "REFER to tel:+79167777777: 202")
p = trunk.wait_invite(timeout=5)
t.ok(p is not None, "the trunk gets the INVITE")
if p:
    t.like(p.invite.get("From") or "", "+74950000000", "with the trunk's caller id")
    p.auto_answer = set(IN_DLG)
    p.reply(p.invite, 200, body=p.sdp())
    p.wait_ack(3)
t.ok(got(leg, "BYE"), "101 leaves once the number answers")
dlg.bye()
t.ok(p and got(p, "BYE"), "the customer's BYE reaches the number")
cust.close()
evs = events(cid)
tr = [e for e in evs if e["type"] == "call.transferred"]
t.ok(tr and tr[0].get("by") == "101", "call.transferred by 101 to a number", tr)

# --- 3b. a REFER to a number outside the agent's dial plan ------------------------------------------
cust, dlg, leg, cid = answered_call()
tx = leg.request_start("REFER", headers=[("Refer-To", "<tel:+442079460000>")])
r = tx.wait_final(3)
t.eq(r.status if r else None, 403, "REFER to tel:+442079460000 ([routing] agent_dial = "
     "domestic): 403")
t.ok(trunk.wait_invite(timeout=1) is None, "and the trunk gets nothing")
t.eq(call_info(cid).get("agent"), "101", "the call stays 101's")
dlg.bye()
cust.close()
events(cid)

# --- 4. attended transfer: REFER with Replaces --------------------------------------------------
cust, dlg, leg, cid = answered_call()
consult = a101.invite_start("sip:102@sipcrm.test", auth=("101", "pw101"))
b = a102.wait_invite(timeout=5)
ycid = b.invite.get("X-Sipcrm-Call-ID") if b else None
if b:
    b.auto_answer = set(IN_DLG)
    b.reply(b.invite, 200, body=b.sdp())
    b.wait_ack(3)
cf = consult.wait_final(5)
consult.auto_answer = set(IN_DLG)
t.eq(cf.status if cf else None, 200, "101's consultation call to 102 is up")
repl = urllib.parse.quote("%s;to-tag=%s;from-tag=%s" % (consult.call_id, consult.remote_tag,
                                                          consult.local_tag), safe="")
tx = leg.request_start("REFER", headers=[
    ("Refer-To", "<sip:102@sipcrm.test?Replaces=%s>" % repl)])
r = tx.wait_final(3)
t.eq(r.status if r else None, 202, "REFER with Replaces: 202")
t.ok(got(leg, "BYE") and got(consult, "BYE"), "both of 101's legs end")
time.sleep(0.2)
t.eq(call_info(cid).get("agent"), "102", "the customer talks to 102")
t.eq(got(b, "BYE", 0.3) if b else None, [], "102's leg stays up")
dlg.bye()
t.ok(b and got(b, "BYE"), "the customer's BYE reaches 102")
cust.close()
evs = events(cid)
tr = [e for e in evs if e["type"] == "call.transferred"]
t.eq((tr[0].get("agent"), tr[0].get("by"), tr[0].get("mode")) if tr else None,
     ("102", "101", "attended"), "call.transferred: attended, by 101, to 102")
t.eq((evs[-1].get("last_agent"), types(evs).count("call.ended")), ("102", 1),
     "one call.ended, last agent 102")
yev = events(ycid)
t.eq(types(yev).count("call.ended"), 1, "the consultation call ended once")

# --- 5. attended: the target hangs up first, 101 and the customer go on -------------------
cust, dlg, leg, cid = answered_call()
consult = a101.invite_start("sip:102@sipcrm.test", auth=("101", "pw101"))
b = a102.wait_invite(timeout=5)
if b:
    b.reply(b.invite, 200, body=b.sdp())
    b.wait_ack(3)
consult.wait_final(5)
if b:
    b.bye()
time.sleep(0.3)
t.eq(call_info(cid).get("agent"), "101", "102 hung up before the transfer: 101 keeps the customer")
dlg.bye()
t.ok(got(leg, "BYE"), "and the call ends normally")
cust.close()

# --- 6. API blind transfer: 101 leaves at once -------------------------------------------------
cust, dlg, leg, cid = answered_call()
st, body = d.http("POST", "/api/v1/calls/%s/transfer" % cid, {"to": "102", "mode": "blind"})
t.eq(st, 202, "POST transfer (blind): 202")
t.ok(got(leg, "BYE", 2), "the agent's leg ends at once")
b = a102.wait_invite(timeout=5)
if b:
    b.auto_answer = set(IN_DLG)
    b.reply(b.invite, 200, body=b.sdp())
    b.wait_ack(3)
time.sleep(0.3)
t.eq(call_info(cid).get("agent"), "102", "the customer is with 102")
dlg.bye()
t.ok(b and got(b, "BYE"), "the customer's BYE reaches 102")
cust.close()
evs = events(cid)
tr = [e for e in evs if e["type"] == "call.transferred"]
t.eq((tr[0].get("agent"), tr[0].get("by"), tr[0].get("mode")) if tr else None,
     ("102", "101", "blind"), "call.transferred from the API")

# --- 7. API attended transfer: 101 stays until 102 answers ----------------------------------------
cust, dlg, leg, cid = answered_call()
st, body = d.http("POST", "/api/v1/calls/%s/transfer" % cid, {"to": "102", "mode": "attended"})
t.eq(st, 202, "POST transfer (attended): 202")
b = a102.wait_invite(timeout=5)
t.eq(got(leg, "BYE", 0.3), [], "101 stays while 102 rings")
if b:
    b.auto_answer = set(IN_DLG)
    b.reply(b.invite, 200, body=b.sdp())
    b.wait_ack(3)
t.ok(got(leg, "BYE"), "101 leaves when 102 answers")
dlg.bye()
cust.close()
evs = events(cid)
t.ok(any(e.get("type") == "call.transferred" and e.get("mode") == "attended" for e in evs),
     "call.transferred attended")
st, _ = d.http("POST", "/api/v1/calls/%s/transfer" % cid, {"to": "102"})
t.eq(st, 404, "transfer of an ended call: 404")

# --- 8. API hangup of the agent leg: the customer goes on to the fallback ---------------------
cust, dlg, leg, cid = answered_call()
st, body = d.http("POST", "/api/v1/calls/%s/hangup" % cid, {"leg": "agent"})
t.eq(st, 202, "POST hangup {leg: agent}: 202")
t.ok(got(leg, "BYE", 2), "the agent's leg ends")
p = pbx.wait_invite(timeout=5)
t.ok(p is not None, "the fallback rings for the customer")
if p:
    p.auto_answer = set(IN_DLG)
    p.reply(p.invite, 200, body=p.sdp())
    p.wait_ack(3)
time.sleep(0.3)
t.eq(got(dlg, "BYE", 0.2), [], "the customer is still connected")
# --- 9. API hangup of the whole call
st, body = d.http("POST", "/api/v1/calls/%s/hangup" % cid)
t.eq(st, 200, "POST hangup: 200")
t.ok(got(dlg, "BYE") and p and got(p, "BYE"), "both sides get BYE",
     (len(got(dlg, "BYE", 0.1)), p and len(got(p, "BYE", 0.1))))
cust.close()
evs = events(cid)
t.eq(types(evs).count("call.ended"), 1, "one call.ended after agent-leg and full hangup")

# --- 10. click-to-call ----------------------------------------------------------------------------
st, body = d.http("POST", "/api/v1/calls", {"agent": "101", "to": "8 (916) 777-77-77"})
t.eq(st, 202, "click-to-call: 202")
ccid = body.get("call_id") if isinstance(body, dict) else None
t.ok(ccid and len(ccid) == 32, "with the call id", body)
leg = a101.wait_invite(timeout=5)
t.ok(leg is not None, "agent 101's phone rings first")
if leg:
    t.like(leg.invite.get("From") or "", "+79167777777", "showing the client's number")
    leg.auto_answer = set(IN_DLG)
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)
p = trunk.wait_invite(timeout=5)
t.ok(p is not None, "then the client is dialled through the trunk")
if p:
    t.like(p.invite.get("From") or "", "+74950000000", "with the trunk's caller id")
    p.auto_answer = set(IN_DLG)
    p.reply(p.invite, 200, body=p.sdp())
    p.wait_ack(3)
time.sleep(0.3)
info = call_info(ccid)
t.eq((info.get("state"), info.get("direction")), ("answered", "outbound"),
     "the legs are bridged (an outbound call)")
if leg and p and leg.invite.sdp and p.invite.sdp:
    a101.send_rtp((leg.invite.sdp["ip"], leg.invite.sdp["port"]), 25)
    trunk.send_rtp((p.invite.sdp["ip"], p.invite.sdp["port"]), 25)
    time.sleep(0.8)
    t.ok(a101.rtp["packets"] > 0 and trunk.rtp["packets"] > 0,
         "RTP flows both ways", (a101.rtp["packets"], trunk.rtp["packets"]))
if p:
    p.bye()
t.ok(leg and got(leg, "BYE"), "the client's BYE reaches the agent")
evs = events(ccid)
t.eq(types(evs)[0] if evs else None, "call.started", "click-to-call events start with call.started")
t.eq((evs[0].get("direction"), evs[0].get("from"), evs[0].get("to")) if evs else None,
     ("outbound", "101", "+79167777777"), "as an outbound call from 101")
t.eq((types(evs).count("call.ended"), evs[-1].get("disposition")), (1, "answered"),
     "one call.ended, answered")

st, body = d.http("POST", "/api/v1/calls", {"agent": "999", "to": "+79167777777"})
t.eq(st, 404, "click-to-call for an unknown agent: 404")
st, body = d.http("POST", "/api/v1/calls", {"agent": "103", "to": "+79167777777"})
t.eq(st, 409, "click-to-call for an offline agent: 409")
t.ok(isinstance(body, dict) and body.get("error"), "with a JSON error", body)
st, body = d.http("POST", "/api/v1/calls", {"agent": "101", "to": "hello"})
t.eq(st, 400, "click-to-call to a malformed number: 400")
st, body = d.http("POST", "/api/v1/calls", {"agent": "101", "to": "+79167777777"},
                  auth=False)
t.eq(st, 401, "click-to-call needs the token")

# the agent does not answer: missed, one call.ended
st, body = d.http("POST", "/api/v1/calls", {"agent": "101", "to": "+79168888888"})
ccid = body.get("call_id") if isinstance(body, dict) else None
leg = a101.wait_invite(timeout=5)
if leg:
    leg.reply(leg.invite, 486)
    leg.wait_ack(2)
evs = events(ccid)
t.eq((types(evs).count("call.ended"), evs[-1].get("disposition") if evs else None),
     (1, "busy"), "an agent who rejects the click-to-call: busy, one call.ended")

# --- 11. the same from sipcrmctl -----------------------------------------------------------------
def ctl(*args):
    return subprocess.run([SIPCRMCTL, "-u", "http://127.0.0.1:%d" % d.api_port,
                           "-t", d.token] + list(args), capture_output=True, text=True,
                          timeout=20)


cust, dlg, leg, cid = answered_call()
r = ctl("transfer", cid or "-", "102")
t.eq(r.returncode, 0, "sipcrmctl transfer CALL 102 exits 0") or t.diag(r.stdout + r.stderr)
b = a102.wait_invite(timeout=5)
if b:
    b.auto_answer = set(IN_DLG)
    b.reply(b.invite, 200, body=b.sdp())
    b.wait_ack(3)
t.ok(got(leg, "BYE"), "the agent left (blind)")
time.sleep(0.2)
r = ctl("hangup", cid or "-")
t.eq(r.returncode, 0, "sipcrmctl hangup CALL exits 0") or t.diag(r.stdout + r.stderr)
t.ok(got(dlg, "BYE") and b and got(b, "BYE"), "and ends the call")
cust.close()
r = ctl("call", "+79169999999", "--agent", "103")
t.ok(r.returncode != 0, "sipcrmctl call for an offline agent fails", r.stdout + r.stderr)

st, m = d.http("GET", "/metrics", auth=False, raw=True)
t.like(m, 'sipcrm_agents{status="offline"} 1', "agents by status in /metrics (103 offline)")
t.like(m, 'sipcrm_agents{status="idle"} 2', "and 101, 102 idle")

for ua in (a101, a102, pbx, trunk):
    ua.close()
t.eq(d.stop(), 0, "sipcrmd exits cleanly")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log, "no ASan report")
crm.stop()
t.done()
