#!/usr/bin/env python3
"""The amoCRM adapter against an account emulator (t/lib/amocrm_emulator.py):
the fuzzy contact search checked number by number (a decoy listed first
is not taken), companies after contacts, responsible_user_id routed by
crm_user; each of the seven call types writing exactly what its rule says
(Unsorted in the DID's pipeline, contacts, deals, calls with uniq, tasks),
the per-DID rule winning; a forked call writes one call; retries after
500s and a lost Unsorted answer create nothing twice; 429 on a lookup is
retried; OAuth tokens: the first, refresh on 401, from sqlite after a
restart; webhooks checked by their token, contact deletion dropping the
cached lookup; no secret in the log."""
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from sipua import UA
from amocrm_emulator import AmoCrmEmulator, phone

t = Tap()
amo = AmoCrmEmulator()
K1, K2 = "+79161111111", "+79162222222"
amo.contacts.append(phone(3002, "Decoy", "+1 916 111 11 11", 43))   # fuzzy match, other number
amo.contacts.append(phone(3001, "Ivan", "8 (916) 111-11-11", 42))
amo.companies.append(phone(4001, "Romashka", "+7 916 222 22 22", 43))
pbx_port, trunk_port = free_port(), free_port()
d = Daemon(t)
RULES = (
    "[rule:incoming_unknown_answered]\nunsorted = yes\npipeline = 100\n"
    "contact = New <PhoneNumber>\ndeal = Deal <PhoneNumber>\n"
    "[rule:incoming_known_answered]\ndeal = Repeat <PhoneNumber>\npipeline = 100\nstage = 142\n"
    "task = Follow up <PhoneNumber>\ntask_deadline = 1h\n"
    "[rule:outgoing_unknown_answered]\ncontact = Out <PhoneNumber>\n"
    "[rule:missed_unknown]\nunsorted = yes\npipeline = 100\n"
    "[rule:missed_unknown:+74950000003]\nunsorted = yes\npipeline = 200\ncontact = VIP <PhoneNumber>\n"
    "[rule:missed_known]\ntask = Missed <PhoneNumber>\nresponsible = client\n"
    "[rule:outgoing_known_unanswered]\ntask = Retry <PhoneNumber>\n")
BASE = (d.base_conf() +
        "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = 3s\n"
        "responsible_ring = 1500ms\n" % pbx_port +
        "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n"
        "caller_id = +74950000000\n" % trunk_port +
        "[did:+74950000002]\nresponsible = parallel\n"
        "[agent:101]\npassword = pw101\ncrm_user = 42\n"
        "[agent:102]\npassword = pw102\ncrm_user = 43\n" + RULES)
CRM = ("[crm]\ntype = amocrm\nurl = %s\ntoken = lt-secret\nwebhook_token = amo-hook-tok\n"
       "default_user = 1\nsource = sipcrm-test\nevent_backoff_max = 1s\n" % amo.url)
d.write_conf(BASE + CRM + "cache = 0\n")
d.start()
server = ("127.0.0.1", d.sip_port)
DID1, DID2, DID3 = "+74951234567", "+74950000002", "+74950000003"
dev1 = UA(ip="127.0.0.2", user="101", server=server)
dev2 = UA(ip="127.0.0.3", user="101", server=server)
a102 = UA(ip="127.0.0.4", user="102", server=server)
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)
trunk = UA(ip="127.0.0.1", port=trunk_port, user="provider", server=server)
for ua, ext in ((dev1, "101"), (dev2, "101"), (a102, "102")):
    r = ua.register(ext, "pw" + ext)
    t.ok(r is not None and r.status == 200, "agent %s registered from %s" % (ext, ua.ip))


def drained(timeout=15):
    end = time.time() + timeout
    zeros = 0
    while time.time() < end:
        st, m = d.http("GET", "/metrics", auth=False, raw=True)
        zeros = zeros + 1 if re.search(r"^sipcrm_events_outbox_depth 0$", m, re.M) else 0
        if zeros >= 3:
            return True
        time.sleep(0.1)
    return False


def posts(entries):
    return [p for m, p, _ in entries if m == "POST"]


def bodies(entries, path):
    return [b[0] for m, p, b in entries if m == "POST" and p == path]


def call_id_of(leg):
    return leg.invite.get("X-Sipcrm-Call-ID") if leg else None


def inbound(number, did):
    caller = UA(ip="127.0.0.1", user=number, server=server)
    dlg = caller.invite_start("sip:%s@127.0.0.1:%d" % (did.replace("+7", "8"), d.sip_port),
                              headers=[("From", "<sip:%s@trunk>" % number)])
    return caller, dlg


def answer(leg):
    leg.reply(leg.invite, 180)
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)


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


# --- 1. known contact (the fuzzy search's decoy is not taken) -> 101; deal, call, task ------------
n0 = len(amo.done())
caller, dlg = inbound(K1, DID1)
l1, l2 = dev1.wait_invite(timeout=5), dev2.wait_invite(timeout=5)
t.ok(l1 is not None, "the contact whose number matches exactly routes to 101 (user 42)") \
    or t.diag(d.log()[-3000:])
t.ok(a102.wait_invite(timeout=0.2) is None, "not to 102, the responsible of the decoy")
cid = call_id_of(l1)
if l1:
    answer(l1)
if l2:
    c = l2.wait_request("CANCEL", timeout=3)
    if c is not None:
        l2.answer_cancel(c)
dlg.wait_final(5)
time.sleep(1.1)
dlg.bye()
caller.close()
t.ok(drained(), "delivered")
new = amo.done()[n0:]
look = [q for m, p, q in new if m == "GET"]
t.eq(look[:1], [{"query": "9161111111"}], "the lookup searches contacts by the national digits")
t.eq(posts(new), ["/api/v4/leads", "/api/v4/calls", "/api/v4/tasks"],
     "incoming_known_answered: the deal, the call, the task")
lead = bodies(new, "/api/v4/leads")
lead = lead[0] if lead else {}
t.eq((lead.get("name"), lead.get("pipeline_id"), lead.get("status_id"),
      lead.get("responsible_user_id"), lead.get("_embedded")),
     ("Repeat " + K1, 100, 142, 42, {"contacts": [{"id": 3001}]}),
     "the deal: name, pipeline, stage, responsible, bound to the contact")
call = bodies(new, "/api/v4/calls")
call = call[0] if call else {}
t.eq((call.get("direction"), call.get("uniq"), call.get("source"), call.get("phone"),
      call.get("call_status"), call.get("responsible_user_id")),
     ("inbound", cid, "sipcrm-test", K1, 4, 42), "the call: direction, uniq, source, status 4")
t.ok(call.get("duration", 0) >= 1 and "link" not in call,
     "duration >= 1 s, no link without a recording", call)
task = bodies(new, "/api/v4/tasks")
task = task[0] if task else {}
t.eq((task.get("text"), task.get("responsible_user_id"), task.get("entity_type"),
      task.get("task_type_id")), ("Follow up " + K1, 42, "leads", 1),
     "the task on the new deal, for the agent who answered")
t.ok(abs(task.get("complete_till", 0) - (time.time() + 3600)) < 60, "deadline in 1 h",
     task.get("complete_till"))

# --- 2. a company (after contacts), missed -> the rule's task for the client's user --------------
n0 = len(amo.done())
caller, dlg = inbound(K2, DID1)
leg = a102.wait_invite(timeout=5)
t.ok(leg is not None, "a company's number routes to its responsible (user 43 -> 102)")
if leg:
    leg.reply(leg.invite, 180)
time.sleep(0.3)
cancel(caller, dlg, [leg])
t.ok(drained(), "delivered")
new = amo.done()[n0:]
t.eq([p for m, p, _ in new if m == "GET"][:1], ["/api/v4/contacts"], "contacts first")
t.eq(posts(new), ["/api/v4/calls", "/api/v4/tasks"], "missed_known: the call and the task")
call = bodies(new, "/api/v4/calls")
t.eq(call[0].get("call_status") if call else None, 6, "a missed call: status 6")
task = bodies(new, "/api/v4/tasks")
t.eq((task[0].get("text"), task[0].get("responsible_user_id"), task[0].get("entity_type"),
      task[0].get("entity_id")) if task else None, ("Missed " + K2, 43, "companies", 4001),
     "the task on the company, for its responsible user")

# --- 3. a forked call writes one call --------------------------------------------------------------------
n0 = len(amo.done())
caller, dlg = inbound(K1, DID2)
l1, l2, pl = dev1.wait_invite(timeout=5), dev2.wait_invite(timeout=5), pbx.wait_invite(timeout=5)
t.ok(l1 and l2 and pl, "parallel: two phones and the fallback ring")
cid = call_id_of(pl)
if pl:
    answer(pl)
for lg in (l1, l2):
    c = lg.wait_request("CANCEL", timeout=3) if lg else None
    if c is not None:
        lg.answer_cancel(c)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
caller.close()
t.ok(drained(), "delivered")
calls = [b for b in bodies(amo.done()[n0:], "/api/v4/calls") if b.get("uniq") == cid]
t.eq(len(calls), 1, "one call for a call that rang three devices")

# --- 4. incoming_unknown_answered: Unsorted with its contact and deal, no separate call ------------
U1 = "+79165550001"
n0 = len(amo.done())
caller, dlg = inbound(U1, DID1)
pl = pbx.wait_invite(timeout=5)
cid = call_id_of(pl)
if pl:
    answer(pl)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
caller.close()
t.ok(drained(), "delivered")
new = amo.done()[n0:]
t.eq(posts(new), ["/api/v4/leads/unsorted/sip"], "incoming_unknown_answered: one Unsorted entry")
u = bodies(new, "/api/v4/leads/unsorted/sip")
u = u[0] if u else {}
meta, emb = u.get("metadata", {}), u.get("_embedded", {})
t.eq((u.get("source_uid"), u.get("source_name"), u.get("pipeline_id"), meta.get("uniq"),
      meta.get("phone"), meta.get("is_call_event_needed"), meta.get("service_code")),
     (cid, "sipcrm-test", 100, cid, U1, True, "sipcrm-test"),
     "unsorted: source, pipeline, the call's metadata")
t.eq(([c.get("name") for c in emb.get("contacts", [])], [x.get("name") for x in emb.get("leads", [])]),
     (["New " + U1], ["Deal " + U1]), "... with the rule's contact and deal")

# --- 5. missed_unknown, and the DID's own rule ------------------------------------------------------------------
U2, U3 = "+79165550002", "+79165550003"
n0 = len(amo.done())
caller, dlg = inbound(U2, DID1)
reject(caller, dlg, pbx.wait_invite(timeout=5))
t.ok(drained(), "delivered")
u = bodies(amo.done()[n0:], "/api/v4/leads/unsorted/sip")
t.eq((len(u), u[0].get("pipeline_id") if u else None,
      [c.get("name") for c in u[0]["_embedded"]["contacts"]] if u else None,
      "leads" in u[0]["_embedded"] if u else None),
     (1, 100, [U2], False), "missed_unknown: Unsorted in pipeline 100, contact named by number")
t.eq(posts(amo.done()[n0:]), ["/api/v4/leads/unsorted/sip"], "... and nothing else")
n0 = len(amo.done())
caller, dlg = inbound(U3, DID3)
reject(caller, dlg, pbx.wait_invite(timeout=5))
t.ok(drained(), "delivered")
u = bodies(amo.done()[n0:], "/api/v4/leads/unsorted/sip")
t.eq((u[0].get("pipeline_id"), u[0]["_embedded"]["contacts"][0]["name"]) if u else None,
     (200, "VIP " + U3), "the DID's rule wins: its pipeline (DID -> pipeline) and contact name")

# --- 6. outgoing: known answered, unknown answered, known unanswered -----------------------------------------------
n0 = len(amo.done())
dlg = outbound(dev1, "101", K1)
leg = trunk.wait_invite(timeout=5)
cid = call_id_of(leg)
if leg:
    answer(leg)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
t.ok(drained(), "delivered")
new = amo.done()[n0:]
t.eq(posts(new), ["/api/v4/calls"], "outgoing_known_answered (no rule): the call only")
call = bodies(new, "/api/v4/calls")
t.eq((call[0].get("direction"), call[0].get("uniq"), call[0].get("responsible_user_id"),
      call[0].get("phone")) if call else None, ("outbound", cid, 42, K1),
     "an outbound call by the calling agent's user")

U4 = "+79165550004"
n0 = len(amo.done())
dlg = outbound(a102, "102", U4)
leg = trunk.wait_invite(timeout=5)
if leg:
    answer(leg)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
t.ok(drained(), "delivered")
new = amo.done()[n0:]
t.eq(posts(new), ["/api/v4/contacts", "/api/v4/calls"],
     "outgoing_unknown_answered: the contact, then the call filed with it")
con = bodies(new, "/api/v4/contacts")
t.eq((con[0].get("name"), con[0].get("responsible_user_id"),
      con[0]["custom_fields_values"][0]["values"][0]["value"]) if con else None,
     ("Out " + U4, 43, U4), "the contact: name, the agent's user, the number")

n0 = len(amo.done())
dlg = outbound(dev1, "101", K1)
leg = trunk.wait_invite(timeout=5)
if leg:
    leg.reply(leg.invite, 486)
    leg.wait_ack(2)
dlg.wait_final(5)
t.ok(drained(), "delivered")
new = amo.done()[n0:]
t.eq(posts(new), ["/api/v4/calls", "/api/v4/tasks"], "outgoing_known_unanswered: call and task")
call = bodies(new, "/api/v4/calls")
task = bodies(new, "/api/v4/tasks")
t.eq((call[0].get("call_status") if call else None,
      (task[0].get("text"), task[0].get("entity_type"), task[0].get("entity_id")) if task else None),
     (7, ("Retry " + K1, "contacts", 3001)), "busy: status 7; the retry task on the contact")

# --- 7. failures: 500s and a lost Unsorted answer create nothing twice; 429 on a lookup --------------------------
amo.fail["POST /api/v4/leads"] = ["500"]
amo.fail["POST /api/v4/tasks"] = ["500", "500"]
n0 = len(amo.done())
caller, dlg = inbound(K1, DID1)
l1, l2 = dev1.wait_invite(timeout=5), dev2.wait_invite(timeout=5)
cid = call_id_of(l1)
if l1:
    answer(l1)
if l2:
    c = l2.wait_request("CANCEL", timeout=3)
    if c is not None:
        l2.answer_cancel(c)
dlg.wait_final(5)
time.sleep(0.2)
dlg.bye()
caller.close()
t.ok(drained(30), "delivered after the retries")
t.eq(posts(amo.done()[n0:]), ["/api/v4/leads", "/api/v4/calls", "/api/v4/tasks"],
     "after 500s: one deal, one call, one task")
U5 = "+79165550005"
amo.fail["POST /api/v4/leads/unsorted/sip"] = ["500-after"]
n0, r0 = len(amo.done()), len(amo.requests)
caller, dlg = inbound(U5, DID1)
pl = pbx.wait_invite(timeout=5)
cid = call_id_of(pl)
reject(caller, dlg, pl)
t.ok(drained(30), "delivered after the lost answer")
t.eq(len([1 for m, p, b in amo.requests[r0:] if p == "/api/v4/leads/unsorted/sip"]), 2,
     "the Unsorted entry whose answer was lost is tried again")
t.eq(len([b for m, p, b in amo.done() if p == "/api/v4/leads/unsorted/sip" and
          b[0].get("source_uid") == cid]), 1,
     "amoCRM holds it once (its duplicate refusal ends the retries)")
t.ok(not re.search(r"outbox_depth [1-9]", d.http("GET", "/metrics", auth=False, raw=True)[1]),
     "nothing left waiting")

amo.fail["GET /api/v4/contacts"] = ["429"]
caller, dlg = inbound(K1, DID1)
l1, l2 = dev1.wait_invite(timeout=5), dev2.wait_invite(timeout=5)
t.ok(l1 is not None, "a lookup told 429 tries again and routes")
cancel(caller, dlg, [l1, l2])
drained()

# --- 8. webhooks: the token, and a deleted contact's cached lookup ------------------------------------------------------


def hook(fields, token="amo-hook-tok"):
    body = urllib.parse.urlencode(fields).encode()
    url = "http://127.0.0.1:%d/api/v1/crm/amocrm%s" % (
        d.api_port, "?token=" + token if token is not None else "")
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


d.write_conf(BASE + CRM + "cache = 300s\n")
st, _ = d.http("POST", "/api/v1/reload")
t.eq(st, 200, "reloaded with the cache on")
t.eq(hook({"contacts[delete][0][id]": "3001"}, token="wrong")[0], 401, "a wrong token: 401")
t.eq(hook({"contacts[delete][0][id]": "3001"}, token=None)[0], 401, "no token: 401")


def searches():
    return len([1 for m, p, q in amo.requests if m == "GET" and p == "/api/v4/contacts"])


def ring_and_cancel():
    caller, dlg = inbound(K1, DID1)
    l1, l2 = dev1.wait_invite(timeout=5), dev2.wait_invite(timeout=5)
    cancel(caller, dlg, [l1, l2])
    return l1 is not None


s0 = searches()
ring_and_cancel()
ring_and_cancel()
drained()
t.eq(searches() - s0, 1, "the second call is answered from the cache")
st, body = hook({"leads[delete][0][id]": "77", "account[subdomain]": "test"})
t.eq((st, body.replace(" ", "")), (200, '{"invalidated":0}'), "a lead event changes nothing")
st, body = hook({"contacts[delete][0][id]": "3001", "contacts[delete][0][type]": "contact",
                 "account[subdomain]": "test"})
t.eq((st, body.replace(" ", "")), (200, '{"invalidated":1}'),
     "contacts[delete] drops the contact's cached lookup")
t.ok(ring_and_cancel(), "the next call routes")
drained()
t.eq(searches() - s0, 2, "... after searching again")
st, body = hook({"contacts[update][0][id]": "999",
                 "contacts[update][0][custom_fields][0][code]": "PHONE",
                 "contacts[update][0][custom_fields][0][values][0][value]": "8 916 111 11 11"})
t.eq((st, body.replace(" ", "")), (200, '{"invalidated":1}'),
     "an update drops the cached lookups of the numbers it carries")

# --- 9. OAuth ----------------------------------------------------------------------------------------------------------
OAUTH = ("[crm]\ntype = amocrm\nurl = %s\nclient_id = cid\nclient_secret = csec\n"
         "refresh_token = reftok0\nredirect_uri = https://sipcrm.example/oauth\n"
         "webhook_token = amo-hook-tok\ndefault_user = 1\nsource = sipcrm-test\n"
         "event_backoff_max = 1s\ncache = 0\n" % amo.url)
d.write_conf(BASE + OAUTH)
st, _ = d.http("POST", "/api/v1/reload")
t.eq(st, 200, "reloaded with OAuth")
t.ok(ring_and_cancel(), "OAuth: the first lookup gets a token and routes")
t.ok(drained(), "delivered")
t.eq(amo.refreshes, 1, "one refresh")
amo.expire_tokens()
t.ok(ring_and_cancel(), "a 401 refreshes the token, and the lookup still routes")
t.ok(drained(), "delivered")
t.eq(amo.refreshes, 2, "one more refresh")
t.eq(d.stop(), 0, "stopped")
d.start()
amo.expire_tokens()
t.ok(ring_and_cancel() and drained() and amo.refreshes == 3,
     "after a restart the stored refresh token works", amo.refreshes)
log = d.log()
t.eq([s for s in ("lt-secret", "amo-hook-tok", "csec", "acctok", "reftok") if s in log], [],
     "no token or secret in the log")

for ua in (dev1, dev2, a102, pbx, trunk):
    ua.close()
t.eq(d.stop(), 0, "sipcrmd exits cleanly")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log, "no ASan report")
amo.stop()
t.done()
