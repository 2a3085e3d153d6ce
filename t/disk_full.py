#!/usr/bin/env python3
"""Disk full (issue 10): the sqlite file lives on a small tmpfs that a
filler file fills up (or, where mount is not allowed, the daemon runs with
a low RLIMIT_FSIZE set from outside with prlimit, SIGXFSZ ignored, so its
writes fail with EFBIG). While the database refuses writes sipcrmd keeps
routing calls (each is answered and hung up), logs the failure once, and
keeps the events it could not store in memory (sipcrm_events_unstored).
When space returns, the kept events are stored and delivered, so every
call's events (those during the fault too) reach the CRM, seq 1..n, and
new calls get their CDR rows again; nothing is counted as lost and the
database passes integrity_check. DISK_FULL_MODE=rlimit forces the
fallback."""
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port, spawn, SIPCRMD
from sipua import UA
from crm_emulator import CrmEmulator

t = Tap()
crm = CrmEmulator(secret="df-secret")
pbx_port = free_port()
d = Daemon(t)
mnt = tempfile.mkdtemp(prefix="sipcrm-df-")
mode = os.environ.get("DISK_FULL_MODE") or "tmpfs"
mounted = False
if mode == "tmpfs":
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", mnt],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    mounted = r.returncode == 0
    if not mounted:
        t.diag("cannot mount a tmpfs (%s): falling back to RLIMIT_FSIZE"
               % r.stderr.decode(errors="replace").strip())
        mode = "rlimit"
t.diag("disk full by %s" % mode)
db_path = os.path.join(mnt, "sipcrm.db")
filler = os.path.join(mnt, "filler")


def cleanup():
    try:
        os.unlink(filler)
    except OSError:
        pass
    if mounted:
        subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
    try:
        os.rmdir(mnt)
    except OSError:
        pass


d.write_conf(d.base_conf().replace("db = sipcrm.db", "db = %s" % db_path) +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = 300ms\n" % pbx_port +
             "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n" % free_port() +
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = df-secret\ncountry_code = 7\n" % (crm.url, crm.url))


def start():
    if mode == "tmpfs":
        return d.start()
    # the log goes through a pipe, which RLIMIT_FSIZE does not limit
    d.logf = open(d.log_path, "ab")
    d.proc = spawn([SIPCRMD, "-f", "-c", d.conf_path], stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT,
                   preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))

    def copy(src, dst):
        for line in iter(src.readline, b""):
            dst.write(line)
            dst.flush()
    threading.Thread(target=copy, args=(d.proc.stdout, d.logf), daemon=True).start()
    if not d.wait_ready():
        t.bail("sipcrmd did not start:\n" + d.log())
    return d


def fault(on):
    if mode == "tmpfs":
        if on:
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
        else:
            os.unlink(filler)
    else:
        inf = resource.RLIM_INFINITY
        if on:
            sizes = [os.path.getsize(p) for p in (db_path, db_path + "-wal")
                     if os.path.exists(p)]
            resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (max(sizes + [65536]), inf))
        else:
            resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (inf, inf))


def metric(name):
    st, m = d.http("GET", "/metrics", auth=False, raw=True)
    for line in m.splitlines() if st == 200 else []:
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


start()
server = ("127.0.0.1", d.sip_port)
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)
DID = "sip:84951234567@127.0.0.1:%d" % d.sip_port
n = [0]


def call():
    """One trunk call answered by the PBX and hung up; its id or None."""
    n[0] += 1
    number = "+7916888%04d" % n[0]
    caller = UA(ip="127.0.0.1", user=number, server=server)
    try:
        dlg = caller.invite_start(DID, headers=[("From", "<sip:%s@trunk>" % number)])
        leg = pbx.wait_invite(timeout=3)
        if leg is None:
            return None
        cid = leg.invite.get("X-Sipcrm-Call-ID")
        leg.reply(leg.invite, 200, body=leg.sdp())
        leg.wait_ack(2)
        r = dlg.wait_final(3)
        if r is None or r.status != 200:
            return None
        time.sleep(0.05)
        b = dlg.bye(timeout=3)
        return cid if b is not None and b.status == 200 else None
    finally:
        caller.close()


def cdr_ids():
    st, cdr = d.http("GET", "/api/v1/cdr?limit=1000")
    return {c.get("call_id") for c in cdr} if st == 200 else set()


def complete(ids):
    return all(crm.of_call(c) and crm.of_call(c)[-1].get("type") == "call.ended"
               for c in ids)


before = [call() for _ in range(3)]
t.ok(all(before), "3 calls before the fault are answered", before)
t.ok(crm.wait_for(lambda: complete(before), 5), "and their events delivered")

fault(True)
during = [call() for _ in range(8)]
t.ok(all(during), "the database full: 8 calls still answered and hung up", during)
time.sleep(1.5)                  # a few retries of the kept events
unstored = metric("sipcrm_events_unstored")
t.ok(unstored and unstored > 0, "the events not stored wait in memory (%s)" % unstored)
t.eq([c for c in during if crm.of_call(c)], [],
     "nothing is sent that is not durable")
log = d.log()
t.eq(len(re.findall(r"cannot write the database", log)), 1,
     "the write failure is logged once", )
t.ok(len(re.findall(r"event.*lost|not stored", log)) <= 1,
     "no log line per event", "\n".join(l for l in log.splitlines()
                                       if re.search(r"lost|not stored", l))[-1500:])
during_cdr = set(during) & cdr_ids()
t.diag("CDR rows of the calls during the fault: %d of %d (not kept)"
       % (len(during_cdr), len(during)))

fault(False)
t.ok(crm.wait_for(lambda: complete(during), 10),
     "space back: the events kept in memory are stored and delivered")
after = [call() for _ in range(3)]
t.ok(all(after), "3 calls after the fault are answered", after)
t.ok(set(after) <= cdr_ids(), "and have their CDR rows again")
t.ok(crm.wait_for(lambda: complete(after), 5), "and their events are delivered")
bad = []
for c in before + during + after:
    evs = crm.of_call(c)
    seqs = [e.get("seq") for e in evs]
    types = [e.get("type") for e in evs]
    if seqs != list(range(1, len(evs) + 1)) or types[:1] != ["call.started"] \
            or types.count("call.ended") != 1:
        bad.append((c, list(zip(seqs, types))))
t.eq(bad, [], "every call's events: call.started ... call.ended, seq 1..n, in order")
t.eq(metric("sipcrm_events_unstored"), 0, "nothing waits in memory any more")
t.eq(metric("sipcrm_events_lost_total"), 0, "no event was lost")
t.ok(crm.wait_for(lambda: metric("sipcrm_events_outbox_depth") == 0, 5), "the outbox is empty")
t.like(d.log(), "the database can be written again", "the recovery is logged")

pbx.close()
t.eq(d.stop(), 0, "sipcrmd stops cleanly")
con = sqlite3.connect(db_path, timeout=5)
t.eq(con.execute("PRAGMA integrity_check").fetchone()[0], "ok", "PRAGMA integrity_check is ok")
con.close()
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log, "no ASan report")
crm.stop()
cleanup()
t.done()
