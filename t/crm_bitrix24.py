#!/usr/bin/env python3
"""The Bitrix24 adapter against a portal emulator (t/lib/bitrix24_emulator.py):
a known caller routed to the responsible agent (by crm_user and by
USER_PHONE_INNER), a responsible user not at work skipped; per call one
register (EXTERNAL_CALL_ID), show to each agent rung, hide, finish with
the answering or responsible user and STATUS_CODE; each of the seven call
types creating exactly what its rule says, a per-DID rule winning,
CRM_CREATE from the rules; a forked call (two phones and the fallback) is
one CRM call; retries after 500s, a lost answer and QUERY_LIMIT_EXCEEDED
create nothing twice; ONEXTERNALCALLSTART checked by application_token and
handed to click-to-call; cache invalidation by ONCRMCONTACTUPDATE;
attachRecord after finish (events injected into the outbox: recordings
are not made yet); OAuth: the first token, refresh on expired_token, before
expiry, and from sqlite after a restart; no secret in the log."""
import json
import os
import re
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from sipua import UA
from bitrix24_emulator import Bitrix24Emulator, HOOK

t = Tap()
b24 = Bitrix24Emulator()
K1, K2, K3 = "+79161111111", "+79162222222", "+79163333333"
b24.entities[K1] = [{"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 651,
                     "ASSIGNED_BY_ID": 42, "NAME": "Ivan Client"}]
b24.entities[K2] = [{"CRM_ENTITY_TYPE": "COMPANY", "CRM_ENTITY_ID": 77,
                     "ASSIGNED_BY_ID": 500, "NAME": "Romashka LLC"}]
b24.entities[K3] = [{"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": 653,
                     "ASSIGNED_BY_ID": 44, "NAME": "Off Duty"}]
b24.users["500"] = {"USER_PHONE_INNER": "102"}
b24.users["44"] = {"TIMEMAN_STATUS": "CLOSED"}
pbx_port, trunk_port = free_port(), free_port()
d = Daemon(t)
RULES = (
    "[rule:incoming_unknown_answered]\ncontact = In <PhoneNumber>\ntask = Call <PhoneNumber>\n"
    "[rule:incoming_known_answered]\ndeal = Deal <PhoneNumber>\npipeline = 3\nstage = C3:NEW\n"
    "[rule:outgoing_known_answered]\ntask = Out task <PhoneNumber>\n"
    "[rule:outgoing_unknown_answered]\ncontact = Out <PhoneNumber>\nlead = Out lead <PhoneNumber>\n"
    "[rule:missed_unknown]\ncontact = Missed <PhoneNumber>\nlead = Missed lead <PhoneNumber>\n"
    "[rule:missed_unknown:+74950000003]\ncontact = VIP <PhoneNumber>\ncrm_create = yes\n"
    "default_user = 9\nresponsible = default\n"
    "[rule:missed_known]\ntask = Missed <PhoneNumber>\nresponsible = client\n"
    "[rule:outgoing_known_unanswered]\ntask = Retry <PhoneNumber>\n")
BASE = (d.base_conf() +
        "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = 3s\n"
        "responsible_ring = 1500ms\n" % pbx_port +
        "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n"
        "caller_id = +74950000000\n" % trunk_port +
        "[did:+74950000002]\nresponsible = parallel\n"
        "[agent:101]\npassword = pw101\ncrm_user = 42\n"
        "[agent:102]\npassword = pw102\ncrm_user = 43\n"
        "[agent:103]\npassword = pw103\ncrm_user = 44\n" + RULES)
CRM = ("[crm]\ntype = bitrix24\nurl = %s\ndefault_user = 1\nwebhook_token = app-secret-tok\n"
       "event_backoff_max = 1s\n" % b24.webhook_url)
d.write_conf(BASE + CRM + "cache = 0\n")
d.start()
server = ("127.0.0.1", d.sip_port)


def did_uri(n):
    return "sip:%s@127.0.0.1:%d" % (n.replace("+7", "8"), d.sip_port)


DID1, DID2, DID3 = "+74951234567", "+74950000002", "+74950000003"
dev1 = UA(ip="127.0.0.2", user="101", server=server)
dev2 = UA(ip="127.0.0.3", user="101", server=server)
a102 = UA(ip="127.0.0.4", user="102", server=server)
a103 = UA(ip="127.0.0.5", user="103", server=server)
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)
trunk = UA(ip="127.0.0.1", port=trunk_port, user="provider", server=server)
for ua, ext in ((dev1, "101"), (dev2, "101"), (a102, "102"), (a103, "103")):
    r = ua.register(ext, "pw" + ext)
    t.ok(r is not None and r.status == 200, "agent %s registered from %s" % (ext, ua.ip))


def drained(timeout=15):
    """Waits until every event has been delivered (the outbox is empty)."""
    end = time.time() + timeout
    zeros = 0
    while time.time() < end:
        st, m = d.http("GET", "/metrics", auth=False, raw=True)
        zeros = zeros + 1 if re.search(r"^sipcrm_events_outbox_depth 0$", m, re.M) else 0
        if zeros >= 3:
            return True
        time.sleep(0.1)
    return False


def methods(entries):
    return [m for m, _ in entries]


def only(entries, method):
    return [p for m, p in entries if m == method]


def call_id_of(leg):
    return leg.invite.get("X-Sipcrm-Call-ID") if leg else None


def inbound(number, did):
    caller = UA(ip="127.0.0.1", user=number, server=server)
    dlg = caller.invite_start(did_uri(did), headers=[("From", "<sip:%s@trunk>" % number)])
    return caller, dlg


def answer(leg):
    leg.reply(leg.invite, 180)
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)


def end_call(caller, dlg, talk=0.2):
    time.sleep(talk)
    dlg.bye()
    caller.close()


def cancel(caller, dlg, legs):
    for leg in legs:
        if leg:     # a branch is cancelled once it has answered with a 1xx
            leg.reply(leg.invite, 180)
    time.sleep(0.05)
    dlg.cancel()
    for leg in legs:
        c = leg.wait_request("CANCEL", timeout=3) if leg else None
        if c is not None:
            leg.answer_cancel(c)
    caller.close()


def reject(caller, dlg, leg, status=486):
    if leg:
        leg.reply(leg.invite, status)
        leg.wait_ack(2)
    dlg.wait_final(5)
    caller.close()


def outbound(ua, ext, number):
    return ua.invite_start("sip:%s@sipcrm.test" % number, auth=(ext, "pw" + ext))


# --- 1. known caller -> the responsible agent; register, show, finish, the rule's deal ------------
n0 = len(b24.done())
caller, dlg = inbound(K1, DID1)
leg = dev1.wait_invite(timeout=5)
leg2 = dev2.wait_invite(timeout=5)
t.ok(leg is not None, "a known caller rings the responsible agent (ASSIGNED_BY_ID 42 -> 101)") \
    or t.diag(d.log()[-3000:])
cid = call_id_of(leg)
if leg:
    answer(leg)
if leg2:
    c = leg2.wait_request("CANCEL", timeout=3)
    if c is not None:
        leg2.answer_cancel(c)
dlg.wait_final(5)
end_call(caller, dlg, talk=1.1)
t.ok(drained(), "the events are delivered")
new = b24.done()[n0:]
t.eq(methods(new), ["telephony.externalCall.searchCrmEntities", "telephony.externalCall.register",
                    "telephony.externalCall.show", "telephony.externalCall.finish", "crm.deal.add"],
     "known answered call: search, register, show, finish, the rule's deal")
reg = only(new, "telephony.externalCall.register")
reg = reg[0] if reg else {}
t.eq((reg.get("EXTERNAL_CALL_ID"), reg.get("TYPE"), reg.get("LINE_NUMBER"), reg.get("PHONE_NUMBER"),
      reg.get("USER_ID"), reg.get("CRM_ENTITY_TYPE"), reg.get("CRM_ENTITY_ID"), reg.get("SHOW"),
      reg.get("CRM_CREATE")),
     (cid, 2, DID1, K1, "42", "CONTACT", "651", 0, 0),
     "register: EXTERNAL_CALL_ID, TYPE 2, LINE_NUMBER = DID, the client, its user and entity")
show = only(new, "telephony.externalCall.show")
fin = only(new, "telephony.externalCall.finish")
b24id = b24.by_ext.get(cid)
t.eq([(s.get("CALL_ID"), s.get("USER_ID")) for s in show], [(b24id, "42")],
     "show: the card to the rung agent's user")
t.ok(fin and fin[0].get("CALL_ID") == b24id and fin[0].get("USER_ID") == "42" and
     fin[0].get("STATUS_CODE") == "200" and fin[0].get("DURATION", 0) >= 1,
     "finish: the answering user, 200, DURATION >= 1 s", fin)
deal = only(new, "crm.deal.add")
f = deal[0]["fields"] if deal else {}
t.eq((f.get("TITLE"), f.get("CATEGORY_ID"), f.get("STAGE_ID"), f.get("CONTACT_ID"),
      f.get("ASSIGNED_BY_ID")), ("Deal " + K1, "3", "C3:NEW", "651", "42"),
     "incoming_known_answered: the deal in pipeline 3, stage C3:NEW, bound to the contact")

# --- 2. USER_PHONE_INNER maps the company's user; missed -> 304, the rule's task ----------------
n0 = len(b24.done())
caller, dlg = inbound(K2, DID1)
leg = a102.wait_invite(timeout=5)
t.ok(leg is not None, "ASSIGNED_BY.USER_PHONE_INNER 102 routes to agent 102")
cid = call_id_of(leg)
if leg:
    leg.reply(leg.invite, 180)
time.sleep(0.4)
cancel(caller, dlg, [leg])
t.ok(drained(), "delivered")
new = b24.done()[n0:]
t.eq(methods(new), ["telephony.externalCall.searchCrmEntities", "telephony.externalCall.register",
                    "telephony.externalCall.show", "telephony.externalCall.hide",
                    "telephony.externalCall.finish", "tasks.task.add"],
     "missed known call: register, show, hide, finish, the rule's task")
fin = only(new, "telephony.externalCall.finish")
t.eq((fin[0].get("STATUS_CODE"), fin[0].get("USER_ID"), fin[0].get("DURATION")) if fin else None,
     ("304", "500", 0), "finish of a missed call: 304, the client's responsible user, 0 s")
hide = only(new, "telephony.externalCall.hide")
t.eq(hide[0].get("USER_ID") if hide else None, ["43"], "hide: from the agent it was shown to")
task = only(new, "tasks.task.add")
tf = task[0]["fields"] if task else {}
t.eq((tf.get("TITLE"), tf.get("RESPONSIBLE_ID"), tf.get("UF_CRM_TASK")),
     ("Missed " + K2, "500", ["CO_77"]), "missed_known: task for the client's user, on the company")
t.ok(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", tf.get("DEADLINE") or ""),
     "the task has an ISO 8601 deadline", tf.get("DEADLINE"))

# --- 3. the responsible user is not at work: the fallback rings -----------------------------------
n0 = len(b24.done())
caller, dlg = inbound(K3, DID1)
pl = pbx.wait_invite(timeout=5)
t.ok(pl is not None, "TIMEMAN_STATUS CLOSED: the fallback rings")
t.ok(a103.wait_invite(timeout=0.3) is None, "... and the responsible's agent (103) does not")
if pl:
    answer(pl)
dlg.wait_final(5)
end_call(caller, dlg)
t.ok(drained(), "delivered")
new = b24.done()[n0:]
reg = only(new, "telephony.externalCall.register")
t.eq(reg[0].get("USER_ID") if reg else None, "1",
     "registered for [crm] default_user (nobody to ring)")
deal = only(new, "crm.deal.add")
t.eq(deal[0]["fields"].get("CONTACT_ID") if deal else None, "653",
     "known caller all the same: the deal is bound to its contact")

# --- 4. a forked call: two phones of the agent and the fallback ring; one CRM call -----------------
n0 = len(b24.done())
caller, dlg = inbound(K1, DID2)
l1, l2, pl = dev1.wait_invite(timeout=5), dev2.wait_invite(timeout=5), pbx.wait_invite(timeout=5)
t.ok(l1 is not None and l2 is not None and pl is not None,
     "parallel: both phones of 101 and the fallback ring")
cid = call_id_of(l1)
for lg in (l1, l2, pl):
    if lg:
        lg.reply(lg.invite, 180)
if l2:
    answer(l2)
for lg in (l1, pl):
    c = lg.wait_request("CANCEL", timeout=3) if lg else None
    if c is not None:
        lg.answer_cancel(c)
dlg.wait_final(5)
end_call(caller, dlg)
t.ok(drained(), "delivered")
new = b24.done()[n0:]
t.eq(len(only(new, "telephony.externalCall.register")), 1, "forked call: one register")
t.eq(len(only(new, "telephony.externalCall.show")), 1, "... one show (one agent)")
t.eq(len(only(new, "telephony.externalCall.finish")), 1, "... one finish")
t.eq(len([r for r in b24.requests if r[0] == "telephony.externalCall.register" and
          r[1].get("EXTERNAL_CALL_ID") == cid]), 1, "... and no second registration attempt")

# --- 5. incoming_unknown_answered --------------------------------------------------------------------
U1 = "+79165550001"
n0 = len(b24.done())
caller, dlg = inbound(U1, DID1)
pl = pbx.wait_invite(timeout=5)
if pl:
    answer(pl)
dlg.wait_final(5)
end_call(caller, dlg)
t.ok(drained(), "delivered")
new = b24.done()[n0:]
t.eq(methods(new), ["telephony.externalCall.searchCrmEntities", "telephony.externalCall.register",
                    "telephony.externalCall.finish", "crm.contact.add", "tasks.task.add"],
     "incoming_unknown_answered: finish, then the rule's contact and task")
con = only(new, "crm.contact.add")
cf = con[0]["fields"] if con else {}
t.eq((cf.get("NAME"), cf.get("PHONE"), cf.get("ASSIGNED_BY_ID")),
     ("In " + U1, [{"VALUE": U1, "VALUE_TYPE": "WORK"}], "1"),
     "contact: the template, the number, [crm] default_user (the fallback answered)")
reg = only(new, "telephony.externalCall.register")
t.eq(reg[0].get("CRM_CREATE") if reg else None, 0, "no rule asks for CRM_CREATE here")
task = only(new, "tasks.task.add")
new_contact = [r for m, r in b24.log if m == "crm.contact.add"]
t.ok(task and task[0]["fields"].get("UF_CRM_TASK", [""])[0].startswith("C_"),
     "the task is bound to the new contact", task)

# --- 6. missed_unknown (busy) -------------------------------------------------------------------------
U2 = "+79165550002"
n0 = len(b24.done())
caller, dlg = inbound(U2, DID1)
reject(caller, dlg, pbx.wait_invite(timeout=5))
t.ok(drained(), "delivered")
new = b24.done()[n0:]
t.eq(methods(new)[2:], ["telephony.externalCall.finish", "crm.contact.add", "crm.lead.add"],
     "missed_unknown: finish, contact, lead")
fin = only(new, "telephony.externalCall.finish")
t.eq((fin[0].get("STATUS_CODE"), fin[0].get("USER_ID")) if fin else None, ("486", "1"),
     "busy: STATUS_CODE 486, the default user")
lead = only(new, "crm.lead.add")
t.eq(lead[0]["fields"].get("TITLE") if lead else None, "Missed lead " + U2, "lead title")
t.ok(lead and lead[0]["fields"].get("CONTACT_ID"), "the lead is bound to the new contact")

# --- 7. the DID's own rule wins; it asks for CRM_CREATE --------------------------------------------
U3 = "+79165550003"
n0 = len(b24.done())
caller, dlg = inbound(U3, DID3)
reject(caller, dlg, pbx.wait_invite(timeout=5), 480)
t.ok(drained(), "delivered")
new = b24.done()[n0:]
t.eq(methods(new)[2:], ["telephony.externalCall.finish", "crm.contact.add"],
     "[rule:missed_unknown:+74950000003]: only its contact")
reg = only(new, "telephony.externalCall.register")
t.eq(reg[0].get("CRM_CREATE") if reg else None, 1, "... and register with CRM_CREATE=1")
con = only(new, "crm.contact.add")
t.eq((con[0]["fields"].get("NAME"), con[0]["fields"].get("ASSIGNED_BY_ID")) if con else None,
     ("VIP " + U3, "9"), "the DID rule's name and default_user")
fin = only(new, "telephony.externalCall.finish")
t.eq(fin[0].get("USER_ID") if fin else None, "9", "finish: the rule's responsible for a missed call")

# --- 8. outgoing_known_answered -----------------------------------------------------------------------
n0 = len(b24.done())
dlg = outbound(dev1, "101", "89161111111")
leg = trunk.wait_invite(timeout=5)
if leg:
    answer(leg)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
t.ok(drained(), "delivered")
new = b24.done()[n0:]
t.eq(methods(new), ["telephony.externalCall.searchCrmEntities", "telephony.externalCall.register",
                    "telephony.externalCall.finish", "tasks.task.add"],
     "outgoing_known_answered: search (no lookup ran), register, finish, task")
reg = only(new, "telephony.externalCall.register")
t.eq((reg[0].get("TYPE"), reg[0].get("USER_ID"), reg[0].get("SHOW"), reg[0].get("PHONE_NUMBER"),
      reg[0].get("CRM_ENTITY_ID")) if reg else None, (1, "42", 1, K1, "651"),
     "outbound register: TYPE 1 for the calling agent's user, card shown")
task = only(new, "tasks.task.add")
t.eq((task[0]["fields"].get("TITLE"), task[0]["fields"].get("RESPONSIBLE_ID")) if task else None,
     ("Out task " + K1, "42"), "task for the agent who called")

# --- 9. outgoing_unknown_answered ----------------------------------------------------------------------
U4 = "+79165550004"
n0 = len(b24.done())
dlg = outbound(a102, "102", U4)
leg = trunk.wait_invite(timeout=5)
if leg:
    answer(leg)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
t.ok(drained(), "delivered")
new = b24.done()[n0:]
t.eq(methods(new)[2:], ["telephony.externalCall.finish", "crm.contact.add", "crm.lead.add"],
     "outgoing_unknown_answered: contact and lead")
lead = only(new, "crm.lead.add")
t.eq((lead[0]["fields"].get("TITLE"), lead[0]["fields"].get("ASSIGNED_BY_ID")) if lead else None,
     ("Out lead " + U4, "43"), "the lead's title and the calling agent's user")

# --- 10. outgoing_known_unanswered -----------------------------------------------------------------------
n0 = len(b24.done())
dlg = outbound(dev1, "101", K1)
leg = trunk.wait_invite(timeout=5)
if leg:
    leg.reply(leg.invite, 486)
    leg.wait_ack(2)
dlg.wait_final(5)
t.ok(drained(), "delivered")
new = b24.done()[n0:]
fin = only(new, "telephony.externalCall.finish")
task = only(new, "tasks.task.add")
t.eq(fin[0].get("STATUS_CODE") if fin else None, "486", "unanswered outgoing: 486")
t.eq((task[0]["fields"].get("TITLE"), task[0]["fields"].get("RESPONSIBLE_ID")) if task else None,
     ("Retry " + K1, "42"), "outgoing_known_unanswered: the retry task for the client's user")
t.eq([m for m in methods(new) if not m.startswith("telephony.")], ["tasks.task.add"],
     "... and nothing else")

# --- 11. failures: a lost register answer, a 500, QUERY_LIMIT_EXCEEDED ------------------------------------
U5 = "+79165550005"
b24.fail["telephony.externalCall.register"] = ["500-after"]
b24.fail["crm.lead.add"] = ["500"]
b24.fail["telephony.externalCall.finish"] = ["limit"]
n0, r0 = len(b24.done()), len(b24.requests)
caller, dlg = inbound(U5, DID1)
pl = pbx.wait_invite(timeout=5)
cid = call_id_of(pl)
reject(caller, dlg, pl)
t.ok(drained(30), "delivered in the end")
new = b24.done()[n0:]
regs = [r for r in b24.requests[r0:] if r[0] == "telephony.externalCall.register"]
t.eq(len(regs), 2, "the register whose answer was lost is sent again")
t.eq(len({b24.by_ext.get(cid)}), 1, "... and Bitrix24 keeps one call (same EXTERNAL_CALL_ID)")
t.eq(len(only(new, "crm.contact.add")), 1, "the contact is created once despite the retries")
t.eq(len(only(new, "crm.lead.add")), 1, "the lead once, after its 500")
t.eq(len(only(new, "telephony.externalCall.finish")), 1,
     "finish once, after QUERY_LIMIT_EXCEEDED")
st, m = d.http("GET", "/metrics", auth=False, raw=True)
t.ok(re.search(r"^sipcrm_events_retried_total [1-9]", m, re.M), "the retries are counted")

b24.fail["telephony.externalCall.searchCrmEntities"] = ["limit"]
caller, dlg = inbound(K1, DID1)
leg = dev1.wait_invite(timeout=5)
leg2 = dev2.wait_invite(timeout=5)
t.ok(leg is not None, "a lookup told QUERY_LIMIT_EXCEEDED tries again and still routes")
cancel(caller, dlg, [leg, leg2])
drained()

# --- 12. ONEXTERNALCALLSTART -------------------------------------------------------------------------------------


def post_form(path, fields, token=None):
    body = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (d.api_port, path), data=body,
                                 method="POST", headers={
                                     "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


start = {"event": "ONEXTERNALCALLSTART", "data[PHONE_NUMBER]": "89165550009",
         "data[USER_ID]": "42", "data[CALL_ID]": "externalCall.from-b24.1",
         "data[LINE_NUMBER]": "", "data[CRM_ENTITY_TYPE]": "CONTACT",
         "data[CRM_ENTITY_ID]": "651", "ts": str(int(time.time())),
         "auth[domain]": "portal.bitrix24.ru",
         "auth[application_token]": "wrong"}
st, body = post_form("/api/v1/crm/bitrix24", start)
t.eq(st, 401, "ONEXTERNALCALLSTART with a wrong application_token: 401 (no Bearer token needed)")
st, _ = post_form("/api/v1/crm/amocrm", start)
t.eq(st, 401, "another CRM's webhook path: 401")
start["auth[application_token]"] = "app-secret-tok"
start["data[USER_ID]"] = "999"
st, body = post_form("/api/v1/crm/bitrix24", start)
t.eq(st, 404, "a Bitrix24 user no agent maps to: 404")
start["data[USER_ID]"] = "42"
# Bitrix24 registered this CALL_ID itself before it sent the event
b24.calls["externalCall.from-b24.1"] = {"_result": {}}
n0 = len(b24.done())
for ts, why in (("1", "stamped in 1970"), (str(int(time.time()) - 3600), "an hour old"),
                (str(int(time.time()) + 3600), "an hour ahead"), ("12x", "not a number")):
    st, body = post_form("/api/v1/crm/bitrix24", dict(start, ts=ts))
    t.eq(st, 403, "ONEXTERNALCALLSTART %s: 403, refused as a replay" % why)
st, body = post_form("/api/v1/crm/bitrix24", {k: v for k, v in start.items() if k != "ts"})
t.eq(st, 400, "ONEXTERNALCALLSTART without ts: 400")
t.ok(dev1.wait_invite(timeout=0.5) is None, "none of them rang the agent")
st, body = post_form("/api/v1/crm/bitrix24", start)
# Click-to-call itself belongs to the call core: until it registers its
# handler, crm_click_to_call() is ENOTSUP and the answer 503.
t.ok(st in (200, 503), "a valid ONEXTERNALCALLSTART reaches click-to-call (503 without "
     "the call core's handler, 200 with it)", (st, body))
if st == 200:
    legs = [dev1.wait_invite(timeout=5), dev2.wait_invite(timeout=2)]
    t.ok(any(legs), "the agent's phone rings for the click-to-call")
    t.ok(body.get("call_id"), "the answer names sipcrm's call id", body)
    st2, body2 = post_form("/api/v1/crm/bitrix24", start)
    t.eq((st2, body2.get("call_id"), body2.get("duplicate")), (200, body.get("call_id"), True),
         "the same request again (a replay within the window): the same call, no new one")
    t.ok(dev1.wait_invite(timeout=0.5) is None and dev2.wait_invite(timeout=0.1) is None,
         "and no phone rings again")
    for lg in legs:
        if lg:
            lg.reply(lg.invite, 486)
            lg.wait_ack(2)
    t.ok(drained(), "the click-to-call's events are delivered")
    fin = only(b24.done()[n0:], "telephony.externalCall.finish")
    t.eq([f.get("CALL_ID") for f in fin], ["externalCall.from-b24.1"],
         "... and finish Bitrix24's own CALL_ID")
else:
    t.like(json.dumps(body), "click-to-call", "503 says click-to-call is not available")
time.sleep(0.3)
t.eq([m for m in methods(b24.done()[n0:]) if m == "telephony.externalCall.register"], [],
     "Bitrix24's own CALL_ID is never registered again")
st, body = post_form("/api/v1/crm/bitrix24", {"event": "ONAPPINSTALL",
                                              "auth[application_token]": "app-secret-tok"})
t.eq((st, body), (200, {"ignored": True}), "other events are acknowledged and ignored")
st, _ = d.http("POST", "/api/v1/crm/generic", {"invalidate_all": True})
t.eq(st, 404, "the generic webhook is not in force")

# --- 13. cache invalidation from ONCRMCONTACTUPDATE --------------------------------------------------------------------
d.write_conf(BASE + CRM + "cache = 300s\n")
st, _ = d.http("POST", "/api/v1/reload")
t.eq(st, 200, "reloaded with the lookup cache on")


def searches():
    return len([1 for m, p in b24.requests if m == "telephony.externalCall.searchCrmEntities"
                and p.get("PHONE_NUMBER") == K1])


def ring_and_cancel():
    caller, dlg = inbound(K1, DID1)
    l1, l2 = dev1.wait_invite(timeout=5), dev2.wait_invite(timeout=5)
    cancel(caller, dlg, [l1, l2])
    return l1 is not None


s0 = searches()
ring_and_cancel()
ring_and_cancel()
t.eq(searches() - s0, 1, "the second call is answered from the cache")
st, body = post_form("/api/v1/crm/bitrix24", {"event": "ONCRMCONTACTUPDATE",
                                              "data[FIELDS][ID]": "651",
                                              "auth[application_token]": "app-secret-tok"})
t.eq((st, body), (200, {"invalidated": 1}), "ONCRMCONTACTUPDATE of contact 651 drops its entry")
t.ok(ring_and_cancel(), "the next call still routes")
t.eq(searches() - s0, 2, "... after asking Bitrix24 again")
drained()

# --- 14. attachRecord after finish (events put in the outbox while sipcrmd is down) ---------------------------------------
t.eq(d.stop(), 0, "sipcrmd stops")
db = sqlite3.connect(os.path.join(d.dir, "sipcrm.db"))
now = int(time.time() * 1000)
common = {"call_id": "rec-call-1", "direction": "inbound", "from": K1, "to": DID1, "did": DID1,
          "time": "2026-01-01T10:00:00.000Z"}
evs = [dict(common, id="rec-e1", type="call.started", seq=1, contact_id="CONTACT:651",
            responsible={"id": "42", "extension": "101", "name": None}),
       dict(common, id="rec-e2", type="call.ended", seq=2, disposition="answered", duration=30,
            billsec=25, first_agent="101", last_agent="101",
            recording_url="https://rec.example/rec-call-1.mp3")]
for ev in evs:
    db.execute("INSERT INTO outbox (okey, body, created) VALUES (?, ?, ?)",
               ("rec-call-1", json.dumps(ev), now))
db.commit()
db.close()
n0 = len(b24.done())
d.start()
t.ok(drained(), "the injected events are delivered")
new = b24.done()[n0:]
t.eq(methods(new), ["telephony.externalCall.register", "telephony.externalCall.finish",
                    "telephony.externalCall.attachRecord", "crm.deal.add"],
     "a call with a recording: register, finish, attachRecord (after finish), the deal")
rec = only(new, "telephony.externalCall.attachRecord")
b24id = b24.by_ext.get("rec-call-1")
t.eq((rec[0].get("CALL_ID"), rec[0].get("RECORD_URL"), rec[0].get("FILENAME")) if rec else None,
     (b24id, "https://rec.example/rec-call-1.mp3", "rec-call-1.mp3"),
     "attachRecord: the call, RECORD_URL and its file name")
fin = only(new, "telephony.externalCall.finish")
t.eq((fin[0].get("DURATION"), fin[0].get("USER_ID")) if fin else None, (25, "42"),
     "finish: the talk time and the answering agent's user")

# --- 15. OAuth: first token, expired_token, before expiry, after a restart --------------------------------------------------
OAUTH = ("[crm]\ntype = bitrix24\nurl = %s\ndefault_user = 1\nwebhook_token = app-secret-tok\n"
         "client_id = app.1\nclient_secret = sec.1\nrefresh_token = reftok0\noauth_url = %s\n"
         "cache = 0\nevent_backoff_max = 1s\n" % (b24.rest_url, b24.token_url))
d.write_conf(BASE + OAUTH)
st, _ = d.http("POST", "/api/v1/reload")
t.eq(st, 200, "reloaded with OAuth")
n0, r0 = len(b24.done()), len(b24.requests)
t.ok(ring_and_cancel(), "OAuth: the first lookup gets a token and routes the call")
t.ok(drained(), "delivered")
t.eq(b24.refreshes, 1, "one refresh for the first token")
t.ok(len(b24.done()[n0:]) >= 3, "the call's events went through with it")
b24.expire_tokens()
t.ok(ring_and_cancel(), "after expired_token the lookup refreshes and still routes")
t.ok(drained(), "delivered")
t.eq(b24.refreshes, 2, "one more refresh")
b24.expires_in = 120
b24.expire_tokens()
ring_and_cancel()
drained()
b24.expires_in = 3600
n_ref, n_rej = b24.refreshes, b24.rejected
ring_and_cancel()
drained()
t.ok(b24.refreshes > n_ref and b24.rejected == n_rej,
     "a token about to expire is refreshed before it does (no request refused)",
     (b24.refreshes, n_ref, b24.rejected, n_rej))
t.eq(d.stop(), 0, "stopped")
d.start()
b24.expire_tokens()
ok_route = ring_and_cancel()
t.ok(drained(), "delivered")
t.ok(ok_route and b24.refreshes >= 5,
     "after a restart the stored (rotated) refresh token is used, not the config's", b24.refreshes)
log = d.log()
leaks = [s for s in ("app-secret-tok", HOOK, "sec.1", "acctok", "reftok") if s in log]
t.eq(leaks, [], "no token or secret in the log")

for ua in (dev1, dev2, a102, a103, pbx, trunk):
    ua.close()
t.eq(d.stop(), 0, "sipcrmd exits cleanly")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log, "no ASan report")
b24.stop()
t.done()
