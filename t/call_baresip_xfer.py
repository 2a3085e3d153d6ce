#!/usr/bin/env python3
"""A real softphone transfers a call: baresip registers as agent 101 and
answers a CRM-routed inbound call by itself; then its own transfer command
(ctrl_tcp "transfer") sends REFER. sipcrm rings agent 102 (our UA), and on
its answer the customer talks to 102, baresip's leg ends, and the CRM sees
one call with call.transferred by 101."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from baresip import Baresip, available
from crm_emulator import CrmEmulator
from sipua import UA

t = Tap()
if not available():
    t.bail("baresip is not installed (apt-get install baresip-core)")

CUSTOMER = "+79161234567"
crm = CrmEmulator(secret="s")
crm.responsible[CUSTOMER] = {"id": "42", "extension": "101"}
d = Daemon(t)
conf = d.base_conf().replace("domain = sipcrm.test\n",
                             "domain = sipcrm.test\ndigest_algorithms = MD5\n")
d.write_conf(conf +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nresponsible_ring = 10s\n"
             "transfer_ring = 5s\n" % free_port() +
             "[trunk:carrier]\nmatch = 127.0.0.1/32\n"
             "[agent:101]\npassword = secret101\ncrm_user = 42\n"
             "[agent:102]\npassword = secret102\n"
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = s\n" % (crm.url, crm.url))
d.start()
server = ("127.0.0.1", d.sip_port)

b = Baresip(d.dir, "<sip:101@127.0.0.1:%d;transport=udp>;auth_pass=secret101;regint=120;"
            "answermode=auto" % d.sip_port)
with open(os.path.join(b.dir, "config"), "a") as f:
    f.write("ausrc_srate\t48000\nausrc_channels\t2\nnet_interface\t127.0.0.1\n")
b.start()


def agent(ext):
    st, body = d.http("GET", "/api/v1/agents")
    for a in body if st == 200 and isinstance(body, list) else []:
        if a.get("extension") == ext:
            return a
    return {}


end = time.time() + 10
while time.time() < end and not agent("101").get("contacts"):
    time.sleep(0.1)
if not t.ok(agent("101").get("contacts"), "baresip registered as 101"):
    t.diag(b.log()[-2000:])
    b.stop()
    t.bail("baresip did not register")

a102 = UA(ip="127.0.0.3", user="102", server=server)
r = a102.register("102", "secret102")
t.ok(r and r.status == 200, "agent 102 registered")

cust = UA(ip="127.0.0.1", user=CUSTOMER, server=server)
dlg = cust.invite_start("sip:84951234567@127.0.0.1:%d" % d.sip_port, from_user=CUSTOMER)
fin = dlg.wait_final(10)
dlg.auto_answer = {"INVITE", "UPDATE", "BYE", "OPTIONS"}
t.eq(fin.status if fin else None, 200, "baresip answers the customer's call")
time.sleep(1.0)
st, calls = d.http("GET", "/api/v1/calls")
cid = calls[0].get("call_id") if st == 200 and calls else None
t.eq(calls[0].get("agent") if cid else None, "101", "the call is 101's")

reply = b.command("transfer", "sip:102@127.0.0.1:%d" % d.sip_port)
t.ok(reply is not None, "baresip takes its transfer command", reply)
leg = a102.wait_invite(timeout=8)
t.ok(leg is not None, "baresip's REFER makes 102's phone ring") or t.diag(b.log()[-2000:])
if leg:
    t.like(leg.invite.get("From") or "", CUSTOMER, "with the customer's number")
    leg.auto_answer = {"INVITE", "UPDATE", "BYE", "OPTIONS"}
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)
end = time.time() + 5
while time.time() < end and (agent("101").get("status") != "idle" or
                             (d.http("GET", "/api/v1/calls/%s" % cid)[1] or {}).get("agent")
                             != "102"):
    time.sleep(0.1)
st, info = d.http("GET", "/api/v1/calls/%s" % cid)
t.eq(info.get("agent") if st == 200 else None, "102", "the customer now talks to 102")
t.eq(agent("101").get("status"), "idle", "baresip's leg has ended: 101 is idle")
t.eq(agent("102").get("status"), "busy", "102 is busy")
dlg.bye()
end = time.time() + 3
while time.time() < end and not any(m.method == "BYE" for m in leg.auto_answered if leg):
    time.sleep(0.05)
t.ok(leg and any(m.method == "BYE" for m in leg.auto_answered), "the customer's BYE reaches 102")
crm.wait_for(lambda: any(e.get("type") == "call.ended" for e in crm.of_call(cid)), 5)
evs = crm.of_call(cid)
tr = [e for e in evs if e.get("type") == "call.transferred"]
t.eq((tr[0].get("agent"), tr[0].get("by"), tr[0].get("mode")) if tr else None,
     ("102", "101", "blind"), "call.transferred: to 102, by 101 (baresip), blind")
t.eq([e.get("type") for e in evs].count("call.ended"), 1, "one call.ended")
t.eq((evs[-1].get("first_agent"), evs[-1].get("last_agent")) if evs else None,
     ("101", "102"), "first agent 101, last agent 102")

cust.close()
a102.close()
b.stop()
t.eq(d.stop(), 0, "sipcrmd exits cleanly")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log, "no ASan report")
crm.stop()
t.done()
