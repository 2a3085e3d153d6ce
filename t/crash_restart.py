#!/usr/bin/env python3
"""Crash-restart soak (issue 10, CONTRACT §4 "a crash or restart loses no
event", §6 "registrations survive a restart"): trunk calls at a steady rate
through sipcrmd to the fallback PBX, with three registered agents, while
sipcrmd is killed with SIGKILL ten times at random moments and started
again on the same config and database. Afterwards every call whose BYE was
answered has its CDR row and its complete event sequence (call.started ...
call.ended, seq 1..n, one event per seq) at the CRM after de-duplication by
id; the agents are still registered after every restart; the database
passes PRAGMA integrity_check after every kill. Calls in progress at a kill
(CONTRACT §4: exactly one call.ended per call) get their CDR row and their
call.ended (end_reason "restart", the next seq) when sipcrmd starts again:
every call the CRM heard of ends exactly once."""
import os
import random
import signal
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from sipua import UA
from crm_emulator import CrmEmulator

KILLS = 10
AGENTS = ("101", "102", "103")
random.seed(os.environ.get("SEED") or time.time())

t = Tap()
crm = CrmEmulator(secret="crash-secret")
crm.events_delay = 0.1           # kills catch deliveries in flight
pbx_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = 300ms\n" % pbx_port +
             "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n" % free_port() +
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = crash-secret\ncountry_code = 7\n" % (crm.url, crm.url) +
             "".join("[agent:%s]\npassword = pw%s\nname = Agent %s\n" % (a, a, a)
                     for a in AGENTS))
d.start()
server = ("127.0.0.1", d.sip_port)
db_path = os.path.join(d.dir, "sipcrm.db")

agents = []
for i, a in enumerate(AGENTS):
    ua = UA(ip="127.0.0.%d" % (2 + i), user=a, server=server)
    r = ua.register(a, "pw" + a, expires=600)
    agents.append(ua)
    t.ok(r is not None and r.status == 200, "agent %s registered" % a, r)


def registered():
    try:
        st, body = d.http("GET", "/api/v1/agents", timeout=2)
    except Exception:
        return set()
    if st != 200:
        return set()
    return {a.get("extension") for a in body if a.get("contacts")}


pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)
DID = "sip:84951234567@127.0.0.1:%d" % d.sip_port
stop = threading.Event()
done = []            # (call_id, time its BYE was answered)
attempts = [0]


def load():
    """One trunk call after another, each held 50-250 ms."""
    i = 0
    while not stop.is_set():
        i += 1
        attempts[0] += 1
        number = "+7916777%04d" % (i % 10000)
        caller = UA(ip="127.0.0.1", user=number, server=server)
        try:
            dlg = caller.invite_start(DID, headers=[("From", "<sip:%s@trunk>" % number)])
            leg = None
            end = time.time() + 1.5
            while time.time() < end:
                leg = pbx.wait_invite(timeout=max(0.05, end - time.time()))
                if leg is None or number in (leg.invite.get("From") or ""):
                    break
                leg.reply(leg.invite, 486)      # a stale one from an earlier run
                leg = None
            if leg is None:
                time.sleep(0.1)
                continue
            cid = leg.invite.get("X-Sipcrm-Call-ID")
            leg.reply(leg.invite, 200, body=leg.sdp())
            if not leg.wait_ack(1.5):
                continue
            r = dlg.wait_final(1.5)
            if r is None or r.status != 200:
                continue
            time.sleep(random.uniform(0.05, 0.25))
            b = dlg.bye(timeout=1.5)
            if b is not None and b.status == 200 and cid:
                done.append((cid, time.time()))
        except Exception as e:                   # the daemon died under us
            t.diag("call %d: %r" % (i, e))
        finally:
            caller.close()


th = threading.Thread(target=load, daemon=True)
th.start()
t0 = time.time()
kills, integrity, lost_regs, restarts = [], [], [], 0
for k in range(KILLS):
    time.sleep(random.uniform(0.8, 3.0))
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    kills.append(time.time())
    con = sqlite3.connect(db_path, timeout=5)
    integrity.append(con.execute("PRAGMA integrity_check").fetchone()[0])
    con.close()
    if d.start(wait=False).wait_ready(20):
        restarts += 1
    regs = registered()
    if set(AGENTS) - regs:
        lost_regs.append((k, sorted(set(AGENTS) - regs)))
time.sleep(1.5)
stop.set()
th.join(10)
elapsed = time.time() - t0
t.eq(restarts, KILLS, "sipcrmd killed with SIGKILL %d times and started again each time" % KILLS)
t.eq([r for r in integrity if r != "ok"], [], "PRAGMA integrity_check is ok after every kill")
t.eq(lost_regs, [], "the agents are still registered after every restart")
before_kill = [c for c, tm in done if tm < kills[-1]]
close_calls = sum(1 for c, tm in done if any(0 <= k - tm < 0.5 for k in kills))
t.diag("%d calls tried, %d completed in %.1f s (%.1f/s), %d before the last kill, "
       "%d ended less than 0.5 s before a kill" % (attempts[0], len(done), elapsed,
                                                  len(done) / elapsed, len(before_kill),
                                                  close_calls))
t.ok(len(before_kill) >= 2 * KILLS, "steady load: at least %d calls ended before kills" % (2 * KILLS),
     len(before_kill))

ids = [c for c, _ in done]
cdr_ids = set()
try:
    st, cdr = d.http("GET", "/api/v1/cdr?limit=10000")
    cdr_ids = {c.get("call_id") for c in cdr} if st == 200 else set()
except Exception as e:
    t.diag("cdr: %r" % e)
missing = [c for c in ids if c not in cdr_ids]
t.eq(missing, [], "every completed call has its CDR row (%d)" % len(ids))


def complete():
    return all(crm.of_call(c) and crm.of_call(c)[-1].get("type") == "call.ended"
               for c in ids)


t.ok(crm.wait_for(complete, 30), "every completed call's events reached the CRM",
     [c for c in ids if not crm.of_call(c) or crm.of_call(c)[-1].get("type") != "call.ended"][:5])
bad, dup_seq = [], []
for c in ids:
    evs = crm.of_call(c)
    seqs = [e.get("seq") for e in evs]
    types = [e.get("type") for e in evs]
    if seqs != list(range(1, len(evs) + 1)) or not types or types[0] != "call.started" \
            or types.count("call.ended") != 1 or types[-1] != "call.ended":
        bad.append((c, list(zip(seqs, types))))
    # distinct ids for one seq would be one event generated twice
    per_seq = {}
    for e in crm.received:
        if e.get("call_id") == c:
            per_seq.setdefault(e.get("seq"), set()).add(e["id"])
    if any(len(v) > 1 for v in per_seq.values()):
        dup_seq.append(c)
t.eq(bad[:3], [], "each call's events: call.started ... call.ended, seq 1..n, in order")
t.eq(dup_seq, [], "no event of a completed call was generated twice (one id per seq)")
raw = [e["id"] for e in crm.received if e.get("call_id") in set(ids)]
t.diag("%d events of completed calls received, %d distinct (resent after kills: %d)"
       % (len(raw), len(set(raw)), len(raw) - len(set(raw))))
t.ok(all(e.get("_sig_ok") for e in crm.received), "every event is signed")

# calls cut short by a kill: open_calls -> a CDR row and call.ended at the restart
all_ids = sorted({e.get("call_id") for e in list(crm.received) if e.get("call_id")})


def ended_once(c):
    return [e.get("type") for e in crm.of_call(c)].count("call.ended") == 1


t.ok(crm.wait_for(lambda: all(ended_once(c) for c in all_ids), 30),
     "every call the CRM heard of (%d) got its call.ended" % len(all_ids),
     [(c, [e.get("type") for e in crm.of_call(c)]) for c in all_ids if not ended_once(c)][:3])
cut = [c for c in all_ids if any(e.get("type") == "call.ended" and e.get("end_reason") == "restart"
                                 for e in crm.of_call(c))]
t.diag("%d calls were in progress at a kill and ended at the restart" % len(cut))
t.ok(len(cut) >= 1, "calls in progress at a kill are ended after the restart "
     "(%d kills under steady load)" % KILLS, len(cut))
bad_all = []
for c in all_ids:
    evs = crm.of_call(c)
    seqs = [e.get("seq") for e in evs]
    types = [e.get("type") for e in evs]
    if seqs != list(range(1, len(evs) + 1)) or types.count("call.ended") != 1 \
            or types[-1] != "call.ended":
        bad_all.append((c, list(zip(seqs, types))))
t.eq(bad_all[:3], [], "every call's events, cut short or not: seq 1..n, one call.ended, last")
try:
    st, cdr = d.http("GET", "/api/v1/cdr?limit=10000")
    cdr_rows = {c.get("call_id"): c for c in cdr} if st == 200 else {}
except Exception as e:
    t.diag("cdr: %r" % e)
    cdr_rows = {}
t.eq([c for c in all_ids if c not in cdr_rows], [], "every call the CRM heard of has its CDR row")
t.eq([c for c in cut if (cdr_rows.get(c) or {}).get("end_reason") != "restart"], [],
     "the CDR rows of the calls cut short say end_reason restart")
con = sqlite3.connect(db_path, timeout=5)
t.eq(con.execute("SELECT COUNT(*) FROM open_calls").fetchone()[0], 0,
     "no call is left in open_calls once the load has stopped")
con.close()

for ua in agents + [pbx]:
    ua.close()
t.eq(d.stop(), 0, "sipcrmd stops cleanly at the end")
con = sqlite3.connect(db_path, timeout=5)
t.eq(con.execute("PRAGMA integrity_check").fetchone()[0], "ok", "integrity_check ok at the end")
con.close()
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log, "no ASan report")
crm.stop()
t.done()
