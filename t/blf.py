#!/usr/bin/env python3
"""Busy lamp field: the dialog event package (RFC 4235). Agent 102's phone
subscribes to 101 (digest-authenticated) and gets dialog-info NOTIFYs: none
while 101 is idle, "early" while it rings, "confirmed" while it talks, none
again after; Expires: 0 ends the subscription with a terminated NOTIFY.
Other events get 489, unknown extensions 404, strangers a challenge."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from sipua import UA
from crm_emulator import CrmEmulator

t = Tap()
crm = CrmEmulator(secret="b")
CUSTOMER = "+79164444444"
crm.responsible[CUSTOMER] = {"id": "u1", "extension": "101"}
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = 1s\n"
             "responsible_ring = 5s\n" % free_port() +
             "[trunk:provider]\nmatch = 127.0.0.1/32\n"
             "[agent:101]\npassword = pw101\n[agent:102]\npassword = pw102\n"
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = b\ncache = 0\n" % (crm.url, crm.url))
d.start()
server = ("127.0.0.1", d.sip_port)
a101 = UA(ip="127.0.0.2", user="101", server=server)
a102 = UA(ip="127.0.0.3", user="102", server=server)
t.ok(a101.register("101", "pw101").status == 200 and a102.register("102", "pw102").status == 200,
     "agents registered")
URI = "sip:101@127.0.0.1:%d" % d.sip_port


def notifies(dlg):
    return [m for m in dlg.auto_answered if m.method == "NOTIFY"]


def wait_notify(dlg, n, timeout=4):
    end = time.time() + timeout
    while time.time() < end and len(notifies(dlg)) < n:
        time.sleep(0.02)
    ns = notifies(dlg)
    return ns[n - 1] if len(ns) >= n else None


def state_of(m):
    body = m.body.decode() if isinstance(m.body, bytes) else m.body
    s = re.search(r"<state>(\w+)</state>", body or "")
    return s.group(1) if s else "none"


stranger = UA(ip="127.0.0.4", user="x", server=server)
r = stranger.request("SUBSCRIBE", URI, headers=[("Event", "dialog"), ("Expires", "60")])
t.eq(r.status if r else None, 401, "SUBSCRIBE without credentials: 401 challenge")
stranger.close()
r = a102.request("SUBSCRIBE", URI, headers=[("Event", "presence"), ("Expires", "60")],
                 auth=("102", "pw102"))
t.eq(r.status if r else None, 489, "Event: presence: 489 Bad Event")
r = a102.request("SUBSCRIBE", "sip:999@127.0.0.1:%d" % d.sip_port,
                 headers=[("Event", "dialog"), ("Expires", "60")], auth=("102", "pw102"))
t.eq(r.status if r else None, 404, "an unknown extension: 404")

sub = a102.subscribe_start(URI, auth=("102", "pw102"))
fin = sub.wait_final(5)
t.eq(fin.status if fin else None, 200, "102 subscribes to 101's dialogs: 200")
t.ok(fin and fin.get("Expires") == "600" and fin.get("Contact"), "with Expires and Contact")
n1 = wait_notify(sub, 1)
t.ok(n1 is not None, "a NOTIFY at once")
if n1:
    t.like(n1.get("Content-Type") or "", "application/dialog-info+xml", "dialog-info+xml")
    t.like(n1.get("Subscription-State") or "", "active", "Subscription-State: active")
    t.eq(state_of(n1), "none", "101 is idle: no dialog")
    t.like(n1.body.decode() if isinstance(n1.body, bytes) else n1.body,
           'entity="sip:101@', "the entity is 101")

cust = UA(ip="127.0.0.1", user=CUSTOMER, server=server)
dlg = cust.invite_start("sip:84951234567@127.0.0.1:%d" % d.sip_port, from_user=CUSTOMER)
leg = a101.wait_invite(timeout=5)
n2 = wait_notify(sub, 2)
t.eq(state_of(n2) if n2 else None, "early", "101 rings: early")
if leg:
    leg.auto_answer = {"BYE", "INVITE", "UPDATE", "OPTIONS"}
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)
fin = dlg.wait_final(5)
dlg.auto_answer = {"BYE", "INVITE", "UPDATE", "OPTIONS"}
n3 = wait_notify(sub, 3)
t.eq(state_of(n3) if n3 else None, "confirmed", "101 talks: confirmed")
dlg.bye()
n4 = wait_notify(sub, 4)
t.eq(state_of(n4) if n4 else None, "none", "the call ends: no dialog")
vers = [int(re.search(r'version="(\d+)"', (m.body.decode() if isinstance(m.body, bytes)
                                           else m.body)).group(1)) for m in notifies(sub)]
t.ok(vers == sorted(set(vers)), "versions go up", vers)

r = sub.request("SUBSCRIBE", headers=[("Event", "dialog"), ("Expires", "0")], timeout=3)
t.eq(r.status if r else None, 200, "Expires: 0 in the dialog: 200")
n5 = wait_notify(sub, 5)
t.like(n5.get("Subscription-State") if n5 else "", "terminated",
       "and a final NOTIFY: Subscription-State terminated")
r = sub.request("SUBSCRIBE", headers=[("Event", "dialog"), ("Expires", "60")], timeout=3)
t.eq(r.status if r else None, 481, "the ended subscription is gone: 481")
cust.close()
a101.close()
a102.close()
d.stop()
crm.stop()
t.done()
