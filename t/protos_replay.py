#!/usr/bin/env python3
"""The PROTOS c07-sip suite against the real sipcrmd, for crashes, hangs and
memory growth (issue 10).

    protos_replay.py            a fixed sample of 1,000 cases, twice (make check)
    protos_replay.py --full     all 4,527 cases, then the sample twice (check-full)
    protos_replay.py --sample N N cases spread over the suite, twice

In each pass every case is sent from two sources: a trunk (127.0.0.3, in [trunk:protos]
match: the INVITE becomes an inbound call that rings a fallback PBX here,
t/lib/fake_pbx.py) and an agent's address (127.0.0.2: challenged with
407). Each time the case's INVITE goes first, then its CANCEL, from one
socket; over UDP, or over TCP for the 162 cases too big for a datagram. A
final answer >= 300 to the INVITE is ACKed, as a UA would, so that sipcrmd
does not retransmit it for 8 s.

Responsiveness: after every message (INVITE and CANCEL) an OPTIONS from
another socket must get 200 (one retry). sipcrmd is single-threaded on
signalling, so that answer also proves the message before it was handled
to the end; checking after each message, not after a batch, names the
exact case that hangs or kills the daemon. Cost: two OPTIONS per case
(about 1 ms each on loopback). A daemon that dies, or that misses three
OPTIONS in a row, ends the test at once with the case and the sanitizer
report.

Memory: VmRSS of sipcrmd after the first 100 cases and at the end must be
within 5%. RSS is a high-water mark: nta keeps every completed transaction
for 8 s (Timers H and J over UDP, sipd.c's SIPD_T1X64_MS; sofia's default
is 32 s) and the allocator keeps the pages after that, so a cold daemon's
RSS climbs for the first seconds of any steady load whether it leaks or
not (measured with the 32 s default: each OPTIONS held about 12 kB for
32 s; 15,000 OPTIONS added 186 MB, and 15,000 more once the timers had run
added 0.2%). So the cases are replayed twice: pass 1 is the robustness run
(the sample, or the whole suite with --full) and brings RSS to its plateau;
pass 2 replays the 1,000-case sample again, and its RSS after its first
100 cases is compared with the RSS at the end of the last pass (pass 2, or
pass 3 with --full: after the longer pass 1, whose busiest seconds leave more
free memory behind to hide a leak in). Memory leaked per case then shows
as growth: 5% of about 95 MB is 4.7 MB, or 2.4 kB per case and source
over one pass. ASan's quarantine (256 MB by default) holds freed blocks
out of reuse and would grow RSS too, so the daemon runs here with
quarantine_size_mb=4; leak detection at exit is unchanged.

The sample is deterministic: protos.sample() takes cases evenly spaced
over the whole ordered suite (first and last included), which meets every
kind of mutation. At the end: daemon alive, API answers, calls drained,
SIGTERM exits 0, and the log holds no AddressSanitizer/UBSan report.

t/corpus_replay.py also replays PROTOS (the first 500 cases and every 10th)
together with RFC 4475 and answer-code checks; this test adds the fixed
sample and the full suite, the per-message OPTIONS on TCP cases too, ACKs,
and the RSS bound. SIPCRM_CORPUS names the corpus folder (default
/work/shared/corpus); without it the test is skipped.
"""
import os
import re
import select
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import protos  # noqa: E402

if not protos.available():
    print("1..0 # SKIP PROTOS corpus not found in %s (set SIPCRM_CORPUS)" % protos.CORPUS)
    sys.exit(0)

# the daemon inherits this: a small quarantine keeps RSS meaningful
_asan = os.environ.get("ASAN_OPTIONS", "")
os.environ["ASAN_OPTIONS"] = (_asan + ":" if _asan else "") + "quarantine_size_mb=4"

from sipcrm_test import Tap, Daemon, free_port, options  # noqa: E402
from fake_pbx import FakePbx  # noqa: E402

TRUNK_IP, AGENT_IP = "127.0.0.3", "127.0.0.2"
VERBOSE = os.environ.get("PROTOS_VERBOSE") == "1"
# diagnosis: PROTOS_SOURCES=trunk or agent sends from one source only;
# PROTOS_RSS_TRACE=N prints VmRSS every N cases
SOURCES = os.environ.get("PROTOS_SOURCES", "both")
RSS_TRACE = int(os.environ.get("PROTOS_RSS_TRACE", "0"))
# PROTOS_PASSES=N replays the sample N - 1 times after pass 1 (default 2,
# 3 with --full)
PASSES = int(os.environ.get("PROTOS_PASSES", "3" if "--full" in sys.argv else "2"))
RSS_BASE_AFTER = 100
RSS_TOLERANCE = 0.05


def parse_args(argv):
    n = 1000
    if "--full" in argv:
        n = None
    if "--sample" in argv:
        n = int(argv[argv.index("--sample") + 1])
    return n


t = Tap()
all_cases = protos.cases()
t.ok(len(all_cases) >= 4500, "PROTOS corpus has its %d cases" % len(all_cases))
want = parse_args(sys.argv[1:])
sample = protos.sample(all_cases, 1000 if want is None else want)
cases = all_cases if want is None else sample

pbx = FakePbx()
pbx.start()
d = Daemon(t)
conf = d.base_conf().replace("log_level = debug", "log_level = info")
conf = conf.replace("domain = sipcrm.test\n", "domain = sipcrm.test\nban_failures = 0\n")
conf += ("[routing]\nfallback = sip:pbx@127.0.0.1:%d\n"
         "[trunk:protos]\nmatch = %s/32\nuri = sip:127.0.0.1:%d\n"
         "[agent:101]\npassword = secret101\n" % (pbx.port, TRUNK_IP, free_port()))
d.write_conf(conf)
d.start()
PORT = d.sip_port

where = "startup"
misses = 0


def alive():
    return d.proc.poll() is None


def sanitizer_report(log):
    i = max(log.find("ERROR: AddressSanitizer"), log.find("runtime error:"),
            log.find("ERROR: LeakSanitizer"))
    return log[i:i + 6000] if i >= 0 else None


def bail_out(why):
    log = d.log()
    t.ok(False, "%s after %s" % (why, where),
         "exit status %r\n%s" % (d.proc.poll(), sanitizer_report(log) or log[-3000:]))
    t.bail("sipcrmd %s after %s" % (why, where))


def probe():
    """OPTIONS from a fresh socket must get 200 (one retry)."""
    global misses
    for _ in range(2):
        r = options(PORT, timeout=2.0)
        if r and r.startswith("SIP/2.0 200"):
            misses = 0
            return True
        if not alive():
            bail_out("died")
    misses += 1
    if misses >= 3:
        bail_out("stopped answering OPTIONS")
    return False


STATUS = re.compile(rb"(?m)^SIP/2\.0 (\d{3}) ")
TO_HDR = re.compile(rb"(?im)^(?:to|t)[ \t]*:[^\r\n]*")


def statuses(buf):
    return [int(m.group(1)) for m in STATUS.finditer(buf)]


def ack_for(invite, response):
    """ACK for a non-2xx final: the INVITE's request line, top Via, From,
    Call-ID and CSeq number, and the response's To (RFC 3261 §17.1.1.3)."""
    head = invite.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    to = TO_HDR.search(response)
    if not head or not to:
        return None
    rl = head[0].split(b" ")
    if len(rl) < 3:
        return None
    out = [b"ACK " + rl[1] + b" SIP/2.0"]
    via = next((h for h in head[1:] if re.match(rb"(?i)(via|v)[ \t]*:", h)), None)
    if not via:
        return None
    out.append(via)
    for name in (rb"from|f", rb"call-id|i"):
        h = next((h for h in head[1:] if re.match(rb"(?i)(" + name + rb")[ \t]*:", h)), None)
        if h:
            out.append(h)
    cseq = next((h for h in head[1:] if re.match(rb"(?i)cseq[ \t]*:", h)), b"CSeq: 1")
    num = re.search(rb"\d+", cseq)
    out += [to.group(0), b"CSeq: " + (num.group(0) if num else b"1") + b" ACK",
            b"Max-Forwards: 70", b"Content-Length: 0"]
    return b"\r\n".join(out) + b"\r\n\r\n"


def finals_to_ack(buf):
    """The final responses >= 300 to an INVITE in buf, one per message."""
    out = []
    for part in re.split(rb"(?=SIP/2\.0 \d{3} )", buf):
        codes = statuses(part)
        if codes and codes[0] >= 300 and re.search(rb"(?im)^cseq[ \t]*:[ \t]*\d+[ \t]+INVITE", part):
            out.append(part)
    return out


def drain_udp(sock, wait):
    got, end = b"", time.time() + wait
    while True:
        left = end - time.time()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return got
        try:
            got += sock.recv(70000)
        except OSError:
            return got


def run_udp(case, recs, ip, tag):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    lport = s.getsockname()[1]
    answers, ok = [], True
    try:
        for rec in recs:
            msg = protos.fill(rec, case, ip, lport, "udp", tag, PORT)
            s.sendto(msg, ("127.0.0.1", PORT))
            ok = probe() and ok
            buf = drain_udp(s, 0.01)
            answers.append(buf)
            if rec is recs[0]:
                invite = msg
            for fin in finals_to_ack(buf):
                a = ack_for(invite, fin)
                if a:
                    s.sendto(a, ("127.0.0.1", PORT))
    finally:
        s.close()
    return answers, ok


def read_tcp(c, wait):
    buf, end = b"", time.time() + wait
    while time.time() < end:
        if not select.select([c], [], [], max(0, end - time.time()))[0]:
            break
        try:
            chunk = c.recv(70000)
        except OSError:
            chunk = b""
        if not chunk:
            return buf, True
        buf += chunk
        if statuses(buf):
            end = min(end, time.time() + 0.05)
    return buf, False


def run_tcp(case, recs, ip, tag):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.bind((ip, 0))
    c.settimeout(3)
    answers, ok, closed = [], True, False
    try:
        c.connect(("127.0.0.1", PORT))
        lport = c.getsockname()[1]
    except OSError:
        closed, lport = True, 0
    for rec in recs:
        buf = b""
        if not closed:
            try:
                c.sendall(protos.fill(rec, case, ip, lport, "tcp", tag, PORT))
                buf, closed = read_tcp(c, 1.0)
            except OSError:
                closed = True
        ok = probe() and ok
        answers.append(buf)
    c.close()
    return answers, ok


def active_calls():
    st, calls = d.http("GET", "/api/v1/calls")
    return len(calls) if st == 200 and isinstance(calls, list) else None


def rss_now():
    with open("/proc/%d/status" % d.proc.pid) as f:
        m = re.search(r"VmRSS:\s*(\d+)", f.read())
    return int(m.group(1)) if m else None


def drained(label):
    end, n = time.time() + 20, None
    while time.time() < end:
        n = active_calls()
        if n == 0:
            break
        time.sleep(0.25)
    t.eq(n, 0, "%s: every call has ended" % label)


# ---- the replay -------------------------------------------------------------------------
sources = tuple(s for s in ((TRUNK_IP, "t"), (AGENT_IP, "n"))
                if SOURCES == "both" or (SOURCES == "trunk") == (s[1] == "t"))


def replay(name, cases, rss_marks=()):
    """Every case from every source, OPTIONS after each message. Returns
    the VmRSS (kB) after each count of cases in rss_marks."""
    global where
    hist, bad, tcp_cases, rss = {}, [], 0, {}
    t0 = time.time()
    for i, case in enumerate(cases):
        recs = protos.records(case)
        big = protos.is_big(recs)
        tcp_cases += big
        for ip, tag in sources:
            where = "%s, PROTOS case %s over %s from %s" % (name, case, "TCP" if big else "UDP", ip)
            answers, ok = (run_tcp if big else run_udp)(case, recs, ip, tag)
            codes = statuses(answers[0]) if answers else []
            key = "%s %s" % (tag, [c for c in codes if c >= 200][:1] or codes[:1] or "silence")
            hist[key] = hist.get(key, 0) + 1
            if VERBOSE:
                t.diag("%s %s: %s" % (case, ip, codes))
            if not ok:
                bad.append("%s/%s" % (case, tag))
        if RSS_TRACE and (i + 1) % RSS_TRACE == 0:
            t.diag("%s, after %d cases: VmRSS %s kB, %s calls"
                   % (name, i + 1, rss_now(), active_calls()))
        if i + 1 in rss_marks:
            rss[i + 1] = rss_now()
    secs = time.time() - t0
    t.ok(not bad and alive(),
         "%s: %d cases x %d sources (%d over TCP): OPTIONS 200 after every message"
         % (name, len(cases), len(sources), tcp_cases),
         "no OPTIONS answer after: %s" % " ".join(bad[:50]))
    t.diag("%s: %.1fs, %.1f ms per case and source; answers to the INVITE (first final, "
           "else first): %s" % (name, secs, 1000 * secs / max(1, len(cases) * len(sources)),
                                ", ".join("%s=%d" % kv for kv in sorted(hist.items()))))
    return rss


t.diag("pass 1: %d cases (%s); pass 2: the %d-case sample; from %s"
       % (len(cases), "all" if want is None else "sample", len(sample),
          " and ".join(ip for ip, _ in sources)))
replay("pass 1", cases)
if any(tag == "t" for _, tag in sources):
    t.ok(pbx.counts.get("INVITE", 0) > 0,
         "trunk cases reached the fallback PBX (%s)" % pbx.counts)
rss = replay("pass 2", sample, (RSS_BASE_AFTER, len(sample)))
for n in range(3, PASSES + 1):
    rss[len(sample)] = replay("pass %d" % n, sample, (len(sample),))[len(sample)]
drained("after the last pass")

# ---- memory ----------------------------------------------------------------------------------
base, end = rss.get(RSS_BASE_AFTER), rss.get(len(sample))
if base and end and len(sample) > RSS_BASE_AFTER:
    growth = (end - base) / base
    t.ok(growth <= RSS_TOLERANCE,
         "RSS %d kB after %d cases of pass 2, %d kB at the end of pass %d: %+.1f%% "
         "(at most +%d%%)" % (base, RSS_BASE_AFTER, end, max(2, PASSES), 100 * growth,
                              100 * RSS_TOLERANCE))
else:
    t.diag("pass 2 has no more than %d cases: no RSS comparison (%s)" % (RSS_BASE_AFTER, rss))

# ---- the end: alive, clean exit ------------------------------------------------------------
where = "the whole replay"
t.ok(alive(), "daemon alive after the replay")
st, _ = d.http("GET", "/api/v1/health", auth=False)
t.eq(st, 200, "the HTTP API still answers")
rc = d.stop()
pbx.stop()
t.eq(rc, 0, "SIGTERM: exit status 0")
rep = sanitizer_report(d.log())
t.ok(rep is None, "no sanitizer report", rep)
t.done()
