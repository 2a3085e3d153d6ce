#!/usr/bin/env python3
"""CRM faults under load (issue 10, CONTRACT §4 "the call is never dropped
because of it"): SIPp places trunk calls at a steady rate through sipcrmd
to a SIPp PBX (the fallback) while the CRM emulator, for lookups and event
POSTs alike, in turn hangs, answers 500, closes connections mid-body,
drips bytes slowly and returns 50 MiB. Every call completes through the
fallback, INVITE to 200 (which includes INVITE to the fallback's INVITE)
within [routing] lookup_timeout + a margin; sipcrmd's RSS (VmRSS) stays
bounded; and once the CRM recovers every event of every call arrives,
seq 1..n, exactly once after de-duplication by id."""
import glob
import os
import random
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, SCENARIOS, free_port, spawn
from crm_emulator import CrmEmulator

LOOKUP_MS = 300
# SIPp measures INVITE to 200: besides INVITE to the fallback's INVITE
# that includes the PBX's answer relayed back (about 8 ms here with ASan)
# and two SIPp processes' own delays: on a loaded CI machine the p95 was
# 336 ms while sipcrmd's own clock said 302 (check 16 below, +10 ms)
MARGIN_MS = int(os.environ.get("FAULT_MARGIN_MS", "50"))
# every call, even when a busy machine (make -j, 2 shared cores) runs the
# loop's timers late: 30-40 ms were seen under make check -j2; SIPp's
# figure adds its own (a max of 400 ms was seen against sipcrmd's 315)
HARD_MS = 100
SIPP_HARD_MS = 150
RATE = 5                          # calls per second
HOLD_MS = 300
PHASE_S = 6
PHASES = (None, "hang", "500", "midbody", "drip", "huge50", None)
if os.environ.get("FAULT_PHASES"):        # e.g. "drip,huge50" to look at one
    PHASES = tuple([None] + os.environ["FAULT_PHASES"].split(",") + [None])
RSS_BOUND_KB = 32 << 10           # growth over the baseline
# with ASan, freed memory sits in its quarantine (256 MiB): keep that
# small so that VmRSS shows what sipcrmd holds
if "quarantine_size_mb" not in os.environ.get("ASAN_OPTIONS", ""):
    os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                        "quarantine_size_mb=1"]))

t = Tap()
crm = CrmEmulator(secret="faults-secret")
uas_port = free_port()
d = Daemon(t)
# media on an address of its own: other tests' daemons may hold ports of
# our RTP range on 127.0.0.1, which at this rate would run us out of pairs
media_ip = "127.%d.%d.%d" % (random.randrange(1, 255), random.randrange(0, 255),
                             random.randrange(1, 255))
d.write_conf(d.base_conf().replace("[media]\nip = 127.0.0.1", "[media]\nip = " + media_ip) +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = %dms\n"
             % (uas_port, LOOKUP_MS) +
             "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n" % free_port() +
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = faults-secret\ncountry_code = 7\ncache = 0s\n"
             "event_backoff_max = 1s\n" % (crm.url, crm.url))
d.start()
total = RATE * PHASE_S * len(PHASES)
wd = os.path.join(d.dir, "sipp")
os.makedirs(wd)
uas = spawn(["sipp", "-sf", os.path.join(SCENARIOS, "pbx_uas.xml"), "-i", "127.0.0.1",
             "-p", str(uas_port), "-m", str(total), "-nostdin", "-d", "0",
             "-mp", str(free_port()), "-timeout", "120s", "-trace_err"],
            cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
time.sleep(0.3)


def rss_kb():
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


uac_t0 = time.time()
uac = spawn(["sipp", "-sf", os.path.join(SCENARIOS, "trunk_uac_load.xml"),
             "-s", "74951234567", "-i", "127.0.0.1", "-p", str(free_port()),
             "-r", str(RATE), "-m", str(total), "-d", str(HOLD_MS), "-nostdin",
             "-key", "rtp_port", str(free_port()), "-key", "caller", "+79165",
             "-timeout", "120s", "-timeout_error", "-trace_err",
             "-trace_rtt", "-rtt_freq", "1", "127.0.0.1:%d" % d.sip_port],
            cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
phases = []                       # (mode, start, end, peak RSS kB)
base_rss = None
for mode in PHASES:
    crm.mode = crm.events_mode = mode
    start, peak = time.time(), 0
    while time.time() - start < PHASE_S:
        time.sleep(0.25)
        peak = max(peak, rss_kb())
    phases.append((mode, start, time.time(), peak))
    if base_rss is None:
        base_rss = peak
crm.mode = crm.events_mode = None
try:
    out, _ = uac.communicate(timeout=60)
except subprocess.TimeoutExpired:
    uac.kill()
    out, _ = uac.communicate()
out = out.decode(errors="replace")
t.eq(uac.returncode, 0, "SIPp: all %d calls completed (answered, hung up)" % total) or \
    t.diag(out[-1500:] + "\n" + d.log()[-2000:])

# INVITE to 200, per call, from SIPp's response-time trace
rtts = []                         # (start of the call, ms)
for path in glob.glob(os.path.join(wd, "trunk_uac_load_*_rtt.csv")):
    with open(path) as f:
        for line in f:
            p = line.strip().split(";")
            try:
                end_ms, ms = float(p[0]), float(p[1])
            except (ValueError, IndexError):
                continue
            rtts.append((uac_t0 + (end_ms - ms) / 1000.0, ms))
t.eq(len(rtts), total, "a response time for every call")
bound = LOOKUP_MS + MARGIN_MS
for mode, start, end, peak in phases:
    ms = sorted(m for s, m in rtts if start <= s < end)
    looked = sum(1 for tm, q, a in crm.lookups if start <= tm < end)
    if not ms:
        t.ok(False, "calls during %s" % (mode or "normal"))
        continue
    p50, p95, mx = ms[len(ms) // 2], ms[len(ms) * 95 // 100], ms[-1]
    t.diag("%-8s %2d calls, %2d lookups, INVITE->200 p50 %.0f ms p95 %.0f ms max %.0f ms, "
           "peak RSS %d MiB" % (mode or "normal", len(ms), looked, p50, p95, mx, peak >> 10))
    if mode:
        t.ok(p95 <= bound and mx <= LOOKUP_MS + SIPP_HARD_MS, "CRM %s: calls through the "
             "fallback within lookup_timeout + %d ms (p95 %.0f ms), every one within + %d ms "
             "(max %.0f ms)" % (mode, MARGIN_MS, p95, SIPP_HARD_MS, mx))
        t.ok(looked >= len(ms) - 1, "CRM %s: the lookups were tried" % mode,
             "%d lookups for %d calls" % (looked, len(ms)))
    else:
        t.ok(p95 <= bound and mx <= LOOKUP_MS + SIPP_HARD_MS, "CRM up: calls within "
             "lookup_timeout + %d ms (p95 %.0f ms, max %.0f ms)" % (MARGIN_MS, p95, mx))
# the same on sipcrmd's own clock: the INVITE in to the fallback's INVITE
# out ("fork 0 rings"), from its log, which has milliseconds
inv, fwd = {}, []
for line in d.log().splitlines():
    m = re.match(r"\S+T(\d+):(\d+):([\d.]+)Z .*call (\w+):? (inbound|fork 0 rings)", line)
    if m:
        tm = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        if m.group(5) == "inbound":
            inv[m.group(4)] = tm
        elif m.group(4) in inv:
            fwd.append(round((tm - inv.pop(m.group(4))) * 1000))
fwd.sort()
t.eq(len(fwd), total, "every call's INVITE reached the fallback")
p95 = fwd[len(fwd) * 95 // 100] if fwd else None
t.ok(fwd and p95 <= LOOKUP_MS + 10 and fwd[-1] <= LOOKUP_MS + HARD_MS,
     "in sipcrmd, INVITE in to the fallback's INVITE out within lookup_timeout + 10 ms "
     "(p50 %s ms, p95 %s ms), every one within + %d ms (max %s ms)"
     % (fwd[len(fwd) // 2] if fwd else None, p95, HARD_MS, fwd[-1] if fwd else None))
peak = max(p[3] for p in phases)
t.ok(peak - base_rss <= RSS_BOUND_KB, "RSS bounded: %d MiB at the start, peak %d MiB"
     % (base_rss >> 10, peak >> 10))

st, cdr = d.http("GET", "/api/v1/cdr?limit=10000")
ids = [c.get("call_id") for c in cdr] if st == 200 else []
t.eq(len(ids), total, "a CDR row for every call")
t.eq(sorted({c.get("disposition") for c in cdr}) if st == 200 else [], ["answered"],
     "every call was answered")


def complete():
    return all(crm.of_call(c) and crm.of_call(c)[-1].get("type") == "call.ended"
               for c in ids)


t0 = time.time()
ok = crm.wait_for(complete, 60)
t.ok(ok, "the CRM back: every call's events arrive (in %.1f s)" % (time.time() - t0),
     [c for c in ids if not crm.of_call(c) or crm.of_call(c)[-1].get("type") != "call.ended"][:5])
bad, twice = [], []
for c in ids:
    evs = crm.of_call(c)
    seqs = [e.get("seq") for e in evs]
    types = [e.get("type") for e in evs]
    if seqs != list(range(1, len(evs) + 1)) or types[:1] != ["call.started"] \
            or types.count("call.ended") != 1:
        bad.append((c, list(zip(seqs, types))))
    per_seq = {}
    for e in list(crm.received):
        if e.get("call_id") == c:
            per_seq.setdefault(e.get("seq"), set()).add(e["id"])
    if any(len(v) > 1 for v in per_seq.values()):
        twice.append(c)
t.eq(bad[:3], [], "each call's events: call.started ... call.ended, seq 1..n, in order")
t.eq(twice, [], "one id per (call, seq): no event was generated twice")
raw = [e["id"] for e in list(crm.received) if e.get("call_id") in set(ids)]
t.diag("%d events of %d calls received, %d distinct after de-duplication by id"
       % (len(raw), len(ids), len(set(raw))))
t.ok(all(e.get("_sig_ok") for e in list(crm.received)), "every event is signed")
t.ok(crm.wait_for(lambda: "sipcrm_events_outbox_depth 0" in
                  d.http("GET", "/metrics", auth=False, raw=True)[1], 15), "the outbox is empty")
rss_end = rss_kb()
t.diag("RSS at the end: %d MiB" % (rss_end >> 10))
try:
    uas.wait(10)
except subprocess.TimeoutExpired:
    uas.kill()
t.eq(d.stop(), 0, "sipcrmd stops cleanly")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "LeakSanitizer" not in log, "no ASan report")
crm.stop()
t.done()
