#!/usr/bin/env python3
"""Durable events (CONTRACT §4): with the CRM down, 20 calls are placed;
sipcrmd is killed with SIGKILL and started again; once the CRM is back,
every event of every call arrives, in seq order per call, with no gaps and
exactly one call.ended each; their CDR rows survived too; delivered
events are not sent again after a further restart; and a backlog of rows
from an earlier run drains at most 500 a second while a new call's events
overtake it."""
import json
import os
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from sipua import UA
from crm_emulator import CrmEmulator

CALLS = 20
t = Tap()
crm = CrmEmulator(secret="dur-secret")
crm.stop()                       # the CRM is down: its port refuses
pbx_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = 500ms\n" % pbx_port +
             "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n" % free_port() +
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = dur-secret\ncountry_code = 7\n" % (crm.url, crm.url))
d.start()
server = ("127.0.0.1", d.sip_port)
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)
DID = "sip:84951234567@127.0.0.1:%d" % d.sip_port

ids = []
for i in range(CALLS):
    number = "+7916555%04d" % i
    caller = UA(ip="127.0.0.1", user=number, server=server)
    dlg = caller.invite_start(DID, headers=[("From", "<sip:%s@trunk>" % number)])
    leg = pbx.wait_invite(timeout=5)
    if leg is None:
        caller.close()
        continue
    ids.append(leg.invite.get("X-Sipcrm-Call-ID"))
    if i % 2:
        leg.reply(leg.invite, 486)
        leg.wait_ack(2)
        dlg.wait_final(5)
    else:
        leg.reply(leg.invite, 200, body=leg.sdp())
        leg.wait_ack(3)
        dlg.wait_final(5)
        dlg.bye()
    caller.close()
t.eq(len(ids), CALLS, "%d calls placed while the CRM is down" % CALLS)
time.sleep(0.5)
d.proc.send_signal(signal.SIGKILL)
d.proc.wait(10)
t.eq(len(crm.received), 0, "nothing was delivered before the kill")

d.start()
st, cdr = d.http("GET", "/api/v1/cdr?limit=100")
cdr_ids = {c.get("call_id") for c in cdr} if st == 200 else set()
t.ok(set(ids) <= cdr_ids, "every call's CDR row survived SIGKILL",
     "%d missing" % len(set(ids) - cdr_ids))
crm.start()                      # back, on the same port


def complete():
    return all(crm.of_call(c) and crm.of_call(c)[-1].get("type") == "call.ended"
               for c in ids)


t.ok(crm.wait_for(complete, 30), "after the restart, every call's events arrive")
gaps, order, ended, signed = [], [], [], True
for c in ids:
    evs = crm.of_call(c)
    seqs = [e.get("seq") for e in evs]
    if sorted(seqs) != list(range(1, len(evs) + 1)):
        gaps.append((c, seqs))
    if seqs != sorted(seqs):
        order.append((c, seqs))
    if [e.get("type") for e in evs].count("call.ended") != 1:
        ended.append(c)
    if evs and evs[0].get("type") != "call.started":
        gaps.append((c, "first is %s" % evs[0].get("type")))
    signed = signed and all(e.get("_sig_ok") for e in evs)
t.eq(gaps, [], "no call is missing an event (seq 1..n, starting with call.started)")
t.eq(order, [], "each call's events arrived in seq order")
t.eq(ended, [], "exactly one call.ended per call")
t.ok(signed, "every event is signed")
raw_ids = [e["id"] for e in crm.received if e.get("call_id") in ids]
t.diag("%d events received, %d distinct" % (len(raw_ids), len(set(raw_ids))))
t.eq(len(set(raw_ids)), 3 * (CALLS // 2) + 2 * (CALLS // 2),
     "every event: started, answered, ended for answered calls; started, ended for busy ones")

# delivered events are gone from the outbox: a restart sends nothing again
time.sleep(0.5)
n = len(crm.received)
t.eq(d.stop(), 0, "sipcrmd stops cleanly")
d.start()
time.sleep(2.0)
t.eq(len(crm.received) - n, 0, "after another restart nothing is delivered twice")
st, m = d.http("GET", "/metrics", auth=False, raw=True)
t.like(m, "sipcrm_events_outbox_depth 0", "the outbox is empty")

# an event the CRM never takes is kept as dead after [crm] event_retry
crm.events_status = 503
with open(d.conf_path) as f:
    conf = f.read()
d.write_conf(conf.replace("[crm]\n", "[crm]\nevent_retry = 1500ms\n"))
st, _ = d.http("POST", "/api/v1/reload")
t.eq(st, 200, "reloaded with event_retry = 1500ms")


def busy_call(number):
    """One call the PBX answers 486; returns its sipcrm call id."""
    caller = UA(ip="127.0.0.1", user=number, server=server)
    dlg = caller.invite_start(DID, headers=[("From", "<sip:%s@trunk>" % number)])
    leg = pbx.wait_invite(timeout=5)
    cid = leg.invite.get("X-Sipcrm-Call-ID") if leg else None
    if leg:
        leg.reply(leg.invite, 486)
        leg.wait_ack(2)
    dlg.wait_final(5)
    caller.close()
    return cid


dead_id = busy_call("+79169990000")


def dead_total():
    st, m = d.http("GET", "/metrics", auth=False, raw=True)
    for line in m.splitlines():
        if line.startswith("sipcrm_events_dead_total "):
            return int(line.split()[1])
    return 0


t.ok(crm.wait_for(lambda: dead_total() >= 2, 10), "refused past event_retry: kept as dead",
     dead_total())
crm.events_status = 200
time.sleep(1.5)
t.eq(len(crm.of_call(dead_id)), 0, "dead events are not sent again")
st, m = d.http("GET", "/metrics", auth=False, raw=True)
t.like(m, "sipcrm_events_outbox_depth 0", "and no longer count as waiting")
# a backlog (rows from an earlier run) drains at most 500 events a second,
# and a new call's events overtake it
BACKLOG = 3000
t.eq(d.stop(), 0, "sipcrmd stops, to be given a backlog")
db = sqlite3.connect(os.path.join(d.dir, "sipcrm.db"))
now_ms = int(time.time() * 1000)
db.executemany("INSERT INTO outbox (okey, body, created) VALUES (?, ?, ?)",
               [("bk%d" % i, json.dumps({"id": "bk-%d" % i, "type": "agent.status",
                                         "time": "2026-01-01T00:00:00Z", "agent": "bk%d" % i,
                                         "status": "idle"}), now_ms) for i in range(BACKLOG)])
db.commit()
db.close()
n0 = len(crm.received)


def backlog_got():
    return sum(1 for e in crm.received[n0:] if str(e.get("id", "")).startswith("bk-"))


d.start()
t0 = time.time()
new_id = busy_call("+79169990001")
got_new = crm.wait_for(lambda: any(e.get("type") == "call.ended" for e in crm.of_call(new_id)), 5)
at_new = backlog_got()
t.ok(got_new and at_new < BACKLOG // 2,
     "a new call's events overtake the backlog (less than half of it was in)",
     "%d of %d backlog events were in" % (at_new, BACKLOG))
all_in = crm.wait_for(lambda: backlog_got() >= BACKLOG, 60)
took = time.time() - t0
t.ok(all_in, "the whole backlog arrives", backlog_got())
t.diag("backlog: %d events in %.2f s; %d were in when the new call's arrived"
       % (BACKLOG, took, at_new))
t.ok(took >= (BACKLOG - 100) / 500.0,
     "at most 500 backlog events a second", "%d in %.2f s" % (BACKLOG, took))
pbx.close()
t.eq(d.stop(), 0, "sipcrmd exits cleanly")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log, "no ASan report")
crm.stop()
t.done()
