#!/usr/bin/env python3
"""CRM-routed inbound calls (CONTRACT §3): the responsible agent's two
registered phones ring together, one answers and the other gets CANCEL;
in first mode an unanswered agent falls back to the PBX after
responsible_ring, and at once when the phones reject; in parallel mode
(a DID override) the agent and the PBX ring together and the first 200
wins; the CRM's user id maps to an extension through crm_user; a caller's
CANCEL cancels every branch; redirect mode answers 302 with the agent's
contacts ahead of the fallback by q."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from sipua import UA
from crm_emulator import CrmEmulator

t = Tap()
crm = CrmEmulator(secret="s3cret")
crm.responsible["+79161111111"] = {"id": "42", "extension": "101", "name": "Ivan"}
crm.responsible["+79162222222"] = {"id": "43", "name": "Olga"}   # crm_user -> 102
pbx_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nresponsible = first\n"
             "responsible_ring = 2s\nlookup_timeout = 1500ms\n" % pbx_port +
             "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n" % free_port() +
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\nsecret = s3cret\n" % (crm.url, crm.url) +
             "[did:+74950000002]\nresponsible = parallel\n"
             "[did:+74950000003]\nmode = redirect\n"
             "[agent:101]\npassword = secret101\ncrm_user = 42\n"
             "[agent:102]\npassword = secret102\ncrm_user = 43\n")
d.start()
server = ("127.0.0.1", d.sip_port)
dev1 = UA(ip="127.0.0.2", user="101", server=server)
dev2 = UA(ip="127.0.0.3", user="101", server=server)
dev3 = UA(ip="127.0.0.4", user="102", server=server)
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)
for ua, ext, pw in ((dev1, "101", "secret101"), (dev2, "101", "secret101"),
                    (dev3, "102", "secret102")):
    r = ua.register(ext, pw)
    t.ok(r is not None and r.status == 200, "%s registered from %s" % (ext, ua.ip), r)


def caller_ua(number):
    return UA(ip="127.0.0.1", user=number, server=server)


def did(n):
    return "sip:%s@127.0.0.1:%d" % (n, d.sip_port)


def status(ext):
    st, body = d.http("GET", "/api/v1/agents")
    for a in body if st == 200 else []:
        if a.get("extension") == ext:
            return a.get("status")
    return None


def last_cdr():
    time.sleep(0.3)
    st, rows = d.http("GET", "/api/v1/cdr?limit=1")
    return rows[0] if st == 200 and rows else {}


# --- A. both phones of the responsible agent ring; one answers, the other is cancelled --------
caller = caller_ua("+79161111111")
dlg = caller.invite_start(did("+74950000001"), headers=[
    ("From", "<sip:+79161111111@trunk>"),
    ("Diversion", "<sip:+74959999999@trunk>;reason=unconditional"),
    ("History-Info", "<sip:+74959999999@trunk>;index=1"),
    ("X-Private", "do-not-leak")])
l1 = dev1.wait_invite(timeout=5)
l2 = dev2.wait_invite(timeout=5)
t.ok(l1 is not None and l2 is not None, "both of the agent's phones ring") or \
    t.diag(d.log()[-3000:])
if l1 is None or l2 is None:
    t.bail("the agent's phones did not ring")
t.like(l1.invite.get("Diversion") or "", "+74959999999", "Diversion is carried to the branch")
t.like(l1.invite.get("History-Info") or "", "index=1", "History-Info is carried too")
t.ok(l1.invite.get("X-Private") is None, "other headers of the caller's leg are not")
t.ok(dlg.call_id not in l1.invite.raw and dlg.local_tag not in l1.invite.raw,
     "nothing of the caller's dialog (Call-ID, tag) leaks into the branch")
t.like(l1.invite.get("From") or "", "79161111111", "the phone shows the caller's number")
l1.reply(l1.invite, 180)
l2.reply(l2.invite, 180)
time.sleep(0.3)
t.eq(status("101"), "ringing", "agent 101 is ringing")
l1.reply(l1.invite, 200, body=l1.sdp())
l1.wait_ack(3)
c2 = l2.wait_request("CANCEL", timeout=5)
t.ok(c2 is not None, "the other phone gets CANCEL")
if c2 is not None:
    l2.answer_cancel(c2)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "the caller is connected")
t.ok(pbx.wait_invite(timeout=0.5) is None, "the PBX never rang")
time.sleep(0.2)
t.eq(status("101"), "busy", "agent 101 is busy")
rb = dlg.request_start("BYE")
b = l1.wait_request("BYE", timeout=5)
if b is not None:
    l1.reply(b, 200)
rb.wait_final(3)
row = last_cdr()
t.eq(row.get("disposition"), "answered", "CDR: answered")
t.eq(row.get("first_agent"), "101", "CDR: first agent 101")
t.eq(row.get("last_agent"), "101", "CDR: last agent 101")
t.ok(len(row.get("legs", [])) >= 2, "CDR: a leg per phone", row.get("legs"))
caller.close()

# --- B. first mode: nobody answers, the PBX rings after responsible_ring ----------------------
caller = caller_ua("+79161111111")
dlg = caller.invite_start(did("+74950000001"), headers=[("From", "<sip:+79161111111@trunk>")])
l1 = dev1.wait_invite(timeout=5)
l2 = dev2.wait_invite(timeout=5)
t0 = time.time()
for leg in (l1, l2):
    if leg:
        leg.reply(leg.invite, 180)
p = pbx.wait_invite(timeout=6)
waited = time.time() - t0
t.ok(p is not None, "unanswered, the call falls back to the PBX")
t.ok(1.6 <= waited <= 4.0, "after responsible_ring (2 s)", "%.2f s" % waited)
for leg in (l1, l2):
    c = leg.wait_request("CANCEL", timeout=3) if leg else None
    t.ok(c is not None, "phone %s is cancelled at the fallback" % (leg.ua.ip if leg else "?"))
    if c is not None:
        leg.answer_cancel(c)
if p:
    p.reply(p.invite, 200, body=p.sdp())
    p.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "the PBX answers the caller")
rb = dlg.request_start("BYE")
if p:
    b = p.wait_request("BYE", timeout=5)
    if b is not None:
        p.reply(b, 200)
rb.wait_final(3)
row = last_cdr()
legs = row.get("legs", [])
t.ok(any(lg.get("agent") == "101" and lg.get("result") == 487 for lg in legs),
     "CDR: the agent's unanswered attempt is in the history", legs)
t.eq(row.get("first_agent"), "101", "CDR: first agent 101 (rang)")
caller.close()

# --- C. first mode: the phones reject, the PBX rings at once ----------------------------------
caller = caller_ua("+79161111111")
dlg = caller.invite_start(did("+74950000001"), headers=[("From", "<sip:+79161111111@trunk>")])
l1 = dev1.wait_invite(timeout=5)
l2 = dev2.wait_invite(timeout=5)
t0 = time.time()
for leg in (l1, l2):
    if leg:
        leg.reply(leg.invite, 486)
p = pbx.wait_invite(timeout=3)
t.ok(p is not None and time.time() - t0 < 1.5, "busy phones: the PBX rings at once")
if p:
    p.reply(p.invite, 486)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 486, "every branch busy: the caller gets 486")
t.eq(last_cdr().get("disposition"), "busy", "CDR: busy")
caller.close()

# --- D. parallel mode (DID override), crm_user mapping: the first 200 wins -------------------
caller = caller_ua("+79162222222")
dlg = caller.invite_start(did("+74950000002"), headers=[("From", "<sip:+79162222222@trunk>")])
l3 = dev3.wait_invite(timeout=5)
p = pbx.wait_invite(timeout=5)
t.ok(l3 is not None, "the CRM's user 43 maps to agent 102 through crm_user")
t.ok(p is not None, "in parallel mode the PBX rings at the same time")
if l3 and p:
    l3.reply(l3.invite, 180)
    p.reply(p.invite, 200, body=p.sdp())
    p.wait_ack(3)
    c = l3.wait_request("CANCEL", timeout=5)
    t.ok(c is not None, "the PBX's 200 wins; the agent's phone gets CANCEL")
    if c is not None:
        l3.answer_cancel(c)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "the caller is connected to the PBX")
rb = dlg.request_start("BYE")
if p:
    b = p.wait_request("BYE", timeout=5)
    if b is not None:
        p.reply(b, 200)
rb.wait_final(3)
caller.close()

# --- E. the caller hangs up while both phones ring ---------------------------------------------
caller = caller_ua("+79161111111")
dlg = caller.invite_start(did("+74950000001"), headers=[("From", "<sip:+79161111111@trunk>")])
l1 = dev1.wait_invite(timeout=5)
l2 = dev2.wait_invite(timeout=5)
for leg in (l1, l2):
    if leg:
        leg.reply(leg.invite, 180)
time.sleep(0.3)
cr = dlg.cancel()
t.eq(cr.status if cr else None, 200, "the caller's CANCEL gets 200")
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 487, "and its INVITE 487")
for leg in (l1, l2):
    c = leg.wait_request("CANCEL", timeout=3) if leg else None
    t.ok(c is not None, "every ringing branch is cancelled")
    if c is not None:
        leg.answer_cancel(c)
t.eq(last_cdr().get("disposition"), "missed", "CDR: missed (the agent had rung)")
caller.close()

# --- F. redirect mode (DID override): 302 with q values ------------------------------------
caller = caller_ua("+79161111111")
x = caller.invite(did("+74950000003"), headers=[("From", "<sip:+79161111111@trunk>")],
                  timeout=5)
t.eq(x.final.status if x.final else None, 302, "redirect mode answers 302")
contacts = ",".join(x.final.all("Contact")) if x.final else ""
qs = {}
for m in re.finditer(r"<([^>]+)>\s*;\s*q=([0-9.]+)", contacts):
    qs[m.group(1)] = float(m.group(2))
agent_q = [q for u, q in qs.items() if "127.0.0.2" in u or "127.0.0.3" in u]
pbx_q = [q for u, q in qs.items() if "pbx@" in u]
t.eq(len(agent_q), 2, "both of the agent's contacts are in the 302") or t.diag(contacts)
t.eq(len(pbx_q), 1, "the fallback is in the 302") or t.diag(contacts)
t.ok(agent_q and pbx_q and min(agent_q) > pbx_q[0], "the fallback has the lower q", qs)
t.ok(dev1.wait_invite(timeout=0.5) is None and pbx.wait_invite(timeout=0.2) is None,
     "no branch rang in redirect mode")
caller.close()

for ua in (dev1, dev2, dev3, pbx):
    ua.close()
t.eq(d.stop(), 0, "sipcrmd exits cleanly")
t.ok("ERROR: AddressSanitizer" not in d.log(), "no ASan report")
t.done()
