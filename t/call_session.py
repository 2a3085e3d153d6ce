#!/usr/bin/env python3
"""Inbound trunk calls and the finer points of a session: a caller that
requires 100rel gets its 183 reliably (RSeq, retransmitted until PRACK);
session timers (RFC 4028) on both legs, with short intervals standing in
for a 30-minute call: sipcrm refreshes the PBX leg where it is the
refresher, the caller's refreshes keep the call up, and a caller that stops
refreshing has the call ended; 422 below Min-SE; 420 for an unknown
Require; a hold re-INVITE from the PBX relayed to the caller."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from sipua import UA

t = Tap()
pbx_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf().replace("domain = sipcrm.test\n",
                                   "domain = sipcrm.test\nmin_se = 2s\nsession_expires = 5s\n") +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\n" % pbx_port +
             "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n" % free_port())
d.start()
server = ("127.0.0.1", d.sip_port)
DID = "sip:+74951234567@127.0.0.1:%d" % d.sip_port

caller = UA(ip="127.0.0.1", user="+79161234567", server=server)
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)


def active_calls():
    st, body = d.http("GET", "/api/v1/calls")
    return len(body) if st == 200 else -1


# --- 1. 422 and 420 ---------------------------------------------------------------------
x = caller.invite(DID, headers=[("Session-Expires", "1"), ("Supported", "timer")], timeout=4)
t.eq(x.final.status if x.final else None, 422, "a session interval below min_se gets 422")
t.eq(x.final.get("Min-SE") if x.final else None, "2", "with Min-SE")
x = caller.invite(DID, headers=[("Require", "foo")], timeout=4)
t.eq(x.final.status if x.final else None, 420, "an unknown Require gets 420")
t.eq(x.final.get("Unsupported") if x.final else None, "foo", "naming it in Unsupported")
t.ok(pbx.wait_invite(timeout=0.5) is None, "neither reached the PBX")

# --- 2. 100rel: a reliable 183, retransmitted until PRACK ------------------------------------
dlg = caller.invite_start(DID, headers=[("Require", "100rel"), ("Supported", "timer"),
                                        ("Session-Expires", "5;refresher=uac")])
p = dlg.wait_provisional(183, timeout=3)
t.ok(p is not None, "183 arrives")
t.ok(p is not None and p.get("RSeq"), "the 183 carries RSeq", p)
t.ok(p is not None and "100rel" in (p.get("Require") or ""), "and Require: 100rel")
t.ok(p is not None and p.get("Contact"), "and a Contact (it opens an early dialog)")
time.sleep(1.3)
got = dlg.invite_txn.last().responses     # every copy, retransmissions too
same = [m for m in got if m.status == 183 and p and m.get("RSeq") == p.get("RSeq")]
t.ok(len(same) >= 2, "without a PRACK the 183 is sent again", len(same))
pr = dlg.prack(p)
t.eq(pr.status if pr else None, 200, "the PRACK gets 200")
n = len([m for m in got if m.status == 183])
time.sleep(1.2)
t.eq(len([m for m in got if m.status == 183]), n,
     "after the PRACK the 183 stops")

# the PBX answers and makes sipcrm the refresher of its leg
leg = pbx.wait_invite(timeout=5)
t.ok(leg is not None, "the PBX gets the INVITE") or t.diag(d.log()[-3000:])
if leg is None:
    t.bail("no INVITE at the PBX")
t.like(leg.invite.get("Session-Expires") or "", "5", "the PBX leg asks for our session interval")
t.ok(leg.invite.has_option("Supported", "timer"), "and says Supported: timer")
leg.auto_answer = {"UPDATE", "INVITE", "OPTIONS"}
leg.reply(leg.invite, 200, body=leg.sdp(),
          headers=[("Session-Expires", "5;refresher=uac"), ("Require", "timer")])
leg.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "the caller gets 200")
se = (fin.get("Session-Expires") or "") if fin else ""
t.like(se, "5", "the 200 carries the caller's session interval")
t.like(se, "refresher=uac", "the caller refreshes")
t.like((fin.get("Require") or "") if fin else "", "timer", "and Require: timer")

# --- 3. a long call: the caller refreshes, sipcrm refreshes the PBX leg ----------------------
start = time.time()
ok_refresh = True
while time.time() - start < 11:      # over twice the 5 s interval
    r = dlg.request("UPDATE", headers=[("Session-Expires", "5;refresher=uac")], timeout=3)
    ok_refresh = ok_refresh and r is not None and r.status == 200
    time.sleep(1.0)
t.ok(ok_refresh, "the caller's refreshes (UPDATE) get 200")
refreshes = [m for m in leg.auto_answered if m.method in ("UPDATE", "INVITE")]
t.ok(len(refreshes) >= 3, "sipcrm refreshed the PBX leg at half the interval",
     len(refreshes))
t.eq(active_calls(), 1, "the call is still up after twice the session interval")

# a refresh from the caller while ours to the PBX waits is no glare: two dialogs
leg.auto_answer = set()
held = leg.wait_request(timeout=4)
t.ok(held is not None and held.method in ("UPDATE", "INVITE"), "sipcrm refreshes the PBX leg",
     held)
r = dlg.request("UPDATE", headers=[("Session-Expires", "5;refresher=uac")], timeout=3)
t.eq(r.status if r else None, 200,
     "the caller's refresh gets 200 while the PBX leg's refresh is unanswered")
if held is not None:
    leg.reply(held, 200, body=leg.sdp(version=leg.sdp_version) if held.method == "INVITE"
              else None, headers=[("Session-Expires", "5;refresher=uac")])
leg.auto_answer = {"UPDATE", "INVITE", "OPTIONS"}

# a hold re-INVITE from the PBX reaches the caller, rewritten
h = leg.request_start("INVITE", body=leg.sdp(mode="sendonly"))
ri = dlg.wait_request("INVITE", timeout=5)
t.ok(ri is not None and ri.sdp and ri.sdp.get("mode") == "sendonly",
     "the PBX's hold re-INVITE is relayed to the caller", ri)
t.eq(ri.sdp.get("port") if ri and ri.sdp else None, fin.sdp.get("port") if fin.sdp else -1,
     "pointing at the caller's relay port")
t.like((ri.get("Session-Expires") or "") if ri else "", "refresher=uas",
       "the relayed re-INVITE keeps the caller as the refresher")
dlg.reply(ri, 200, body=dlg.sdp(mode="recvonly"),
          headers=[("Session-Expires", "5;refresher=uas"), ("Require", "timer")])
dlg.wait_ack(3)
r = h.wait_final(5)
t.ok(r is not None and r.status == 200 and r.sdp and r.sdp.get("mode") == "recvonly",
     "the PBX gets the caller's answer", r)

# --- 4. the caller goes quiet: the session expires --------------------------------------------
bye = dlg.wait_request("BYE", timeout=8)
t.ok(bye is not None, "a caller that stops refreshing gets BYE when its session expires")
if bye is not None:
    dlg.reply(bye, 200)
pbye = leg.wait_request("BYE", timeout=3)
t.ok(pbye is not None, "and so does the PBX")
if pbye is not None:
    leg.reply(pbye, 200)
time.sleep(0.3)
t.eq(active_calls(), 0, "the call is gone")
st, cdr = d.http("GET", "/api/v1/cdr?limit=1")
t.eq(cdr[0].get("disposition") if st == 200 and cdr else None, "answered",
     "CDR: answered (it was a real call)")

caller.close()
pbx.close()
t.eq(d.stop(), 0, "sipcrmd exits cleanly")
t.ok("ERROR: AddressSanitizer" not in d.log(), "no ASan report")
t.done()
