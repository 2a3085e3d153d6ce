#!/usr/bin/env python3
"""Call core black-box test: an inbound trunk call with an unknown caller
gets 183 and greeting RTP, then the fallback PBX rings and answers; BYE
from either side; caller CANCEL while the PBX rings; no unauthenticated
path from a non-trunk source; port exhaustion gives 503; CDR rows."""
import os
import re
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, SCENARIOS, spawn, free_port, sipp
from sipclient import SipClient

t = Tap()


class RtpSink(threading.Thread):
    """Counts RTP packets arriving at a UDP port and checks continuity."""

    def __init__(self, seconds):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seconds = seconds
        self.pkts = []

    def run(self):
        self.sock.settimeout(0.2)
        end = time.time() + self.seconds
        while time.time() < end:
            try:
                data, _ = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            if len(data) >= 12:
                b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
                self.pkts.append((b1 & 0x7f, b1 >> 7, seq, ts, ssrc, len(data) - 12))
        self.sock.close()


def start_uas(d, scenario, port, delay_ms=200, calls=1, wd=None):
    wd = wd or os.path.join(d.dir, "uas-%d" % port)
    os.makedirs(wd, exist_ok=True)
    return spawn(["sipp", "-sf", os.path.join(SCENARIOS, scenario), "-i", "127.0.0.1",
                  "-p", str(port), "-m", str(calls), "-nostdin", "-d", str(delay_ms),
                  "-mp", str(free_port()), "-timeout", "40s", "-timeout_error", "-trace_err",
                  "-trace_msg"],
                 cwd=wd, stdout=open(os.path.join(wd, "out"), "w"), stderr=subprocess_stdout())


def subprocess_stdout():
    import subprocess
    return subprocess.STDOUT


def trunk_call(d, scenario, rtp_port, delay_ms, did="74951234567", caller="79161234567",
               src_ip="127.0.0.1", timeout=40):
    return sipp(["-sf", os.path.join(SCENARIOS, scenario), "-s", did, "-i", src_ip,
                 "-p", str(free_port()), "-m", "1", "-nostdin", "-d", str(delay_ms),
                 "-key", "rtp_port", str(rtp_port), "-key", "caller", caller,
                 "-timeout", "35s", "-timeout_error", "-trace_err",
                 "127.0.0.1:%d" % d.sip_port], timeout=timeout, cwd=d.dir)


def wait_proc(p, timeout=40):
    try:
        return p.wait(timeout)
    except Exception:
        p.kill()
        return -1


def cdr(d, n=10):
    st, body = d.http("GET", "/api/v1/cdr?limit=%d" % n)
    return body if st == 200 else []


pbx_port = free_port()
extra = ("[routing]\nfallback = sip:pbx@127.0.0.1:%d\ngreeting_min = 1s\n"
         "[trunk:carrier]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n"
         % (pbx_port, free_port()))
d = Daemon(t)
d.write_conf(d.base_conf().replace("greeting =\n", "greeting = %s/conf/sounds/greeting.wav\n"
                                   % os.environ.get("top_srcdir", ".")) + extra)
d.start()

# --- 1. unknown caller, fallback answers, caller hangs up ---------------------------
sink = RtpSink(4)
sink.start()
uas = start_uas(d, "pbx_uas.xml", pbx_port, delay_ms=300)
time.sleep(0.3)
rc, out = trunk_call(d, "trunk_uac.xml", sink.port, 1000)
t.eq(rc, 0, "trunk call: 183, then 200 from the fallback, BYE from the caller") or t.diag(out[-1500:])
t.eq(wait_proc(uas), 0, "the fallback PBX got the INVITE, answered and got the BYE")
sink.join()
greet = [p for p in sink.pkts if p[0] in (0, 8)]
t.ok(len(greet) >= 40, "greeting RTP reached the caller before the answer (%d packets)" % len(greet))
if greet:
    seqs = [p[2] for p in greet]
    tss = [p[3] for p in greet]
    gaps = [((b - a) & 0xffff) for a, b in zip(seqs, seqs[1:])]
    tgaps = [((b - a) & 0xffffffff) for a, b in zip(tss, tss[1:])]
    t.ok(all(g == 1 for g in gaps), "consecutive sequence numbers", gaps[:20])
    t.ok(all(g == 160 for g in tgaps[:45]), "timestamps advance by 160", tgaps[:20])
    t.eq(len(set(p[4] for p in greet[:45])), 1, "one SSRC for the greeting")
    t.eq(greet[0][1], 1, "marker bit on the first packet")
    t.eq(greet[0][0], 8, "PCMA, the caller's first codec")
    t.eq(greet[0][5], 160, "20 ms payloads")
rows = cdr(d)
t.eq(len(rows), 1, "one CDR row")
if rows:
    r = rows[0]
    t.eq(r.get("disposition"), "answered", "disposition answered")
    t.eq((r.get("from"), r.get("did")), ("+79161234567", "+74951234567"),
         "caller and DID in the CDR, in E.164")
    t.eq(len(r.get("legs", [])), 1, "one leg tried")
    t.ok(r.get("legs") and r["legs"][0]["result"] == 200 and "pbx@" in r["legs"][0]["target"],
         "the leg is the fallback with 200", r.get("legs"))
    t.ok(r.get("billsec", -1) >= 0 and r.get("duration", -1) >= 1, "duration and billsec", r)
    st, one = d.http("GET", "/api/v1/calls/" + r["call_id"])
    t.eq(st, 200, "GET /api/v1/calls/{id} finds the ended call")

# --- 2. the PBX hangs up ---------------------------------------------------------------
sink = RtpSink(3)
sink.start()
uas = start_uas(d, "pbx_uas_bye.xml", pbx_port, delay_ms=300)
time.sleep(0.3)
rc, out = trunk_call(d, "trunk_uac_wait.xml", sink.port, 300)
t.eq(rc, 0, "BYE from the PBX reaches the caller") or t.diag(out[-1500:])
t.eq(wait_proc(uas), 0, "the PBX's BYE was answered")
sink.join()

# --- 2b. a refresh re-INVITE (same SDP version) from the PBX is answered locally ---
wd = os.path.join(d.dir, "reinvite")
uas = start_uas(d, "pbx_uas_reinvite.xml", pbx_port, delay_ms=300, wd=wd)
time.sleep(0.3)
rc, out = trunk_call(d, "trunk_uac.xml", free_port(), 1500)
t.eq(rc, 0, "call with a mid-call re-INVITE from the PBX completes") or t.diag(out[-1500:])
t.eq(wait_proc(uas), 0, "the PBX's re-INVITE got 200")
trace = "".join(open(os.path.join(wd, f), errors="replace").read()
                for f in os.listdir(wd) if f.endswith("_messages.log"))
ports = re.findall(r"m=audio (\d+)", trace)
# in the trace: our INVITE, the PBX's 200, the PBX's re-INVITE, our 200
t.ok(len(ports) >= 4 and ports[3] == ports[0],
     "the re-INVITE's 200 offers the relay port the PBX was first given", ports)

# --- 3. caller CANCEL while the PBX rings --------------------------------------------
uas = start_uas(d, "pbx_uas_cancel.xml", pbx_port)
time.sleep(0.3)
rc, out = trunk_call(d, "trunk_uac_cancel.xml", free_port(), 2000)
t.eq(rc, 0, "caller CANCEL: 200 and 487") or t.diag(out[-1500:])
t.eq(wait_proc(uas), 0, "the ringing branch got CANCEL and answered 487")
rows = cdr(d)
t.ok(rows and rows[0].get("disposition") in ("cancelled", "missed"),
     "cancelled call recorded as cancelled/missed", rows[:1])

# --- 4. no call from a non-trunk source without authentication ---------------------------
c = SipClient(d.sip_port, src_ip="127.0.0.5")
sdp = "v=0\r\no=x 1 1 IN IP4 127.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
r = c.request("INVITE", "sip:+442071234567@127.0.0.1:%d" % d.sip_port,
              ["From: <sip:101@127.0.0.5>;tag=x1", "To: <sip:+442071234567@127.0.0.1>",
               "Contact: <sip:101@127.0.0.5:%d>" % c.port, "Content-Type: application/sdp"], body=sdp)
t.ok(r is not None and r.status in (401, 403, 407), "unauthenticated INVITE from a non-trunk source is refused",
     r and r.raw)
c.close()
t.eq(len(cdr(d)), 4, "the refused INVITE created no call")

# --- 5. CDR via API and metrics ----------------------------------------------------------
st, calls = d.http("GET", "/api/v1/calls")
t.eq((st, calls), (200, []), "no active calls left")
st, text = d.http("GET", "/metrics", auth=False, raw=True)
t.like(text, "sipcrm_calls_active 0", "active calls gauge back to 0")
t.eq(d.stop(), 0, "SIGTERM exits 0")
t.ok("ERROR: AddressSanitizer" not in d.log() and "runtime error:" not in d.log(),
     "no sanitizer report", d.log()[-3000:])

# --- 6. port exhaustion: two calls fill 4 port pairs, the third gets 503 ------------------
d2 = Daemon(t)
conf = d2.base_conf().replace("greeting =\n", "greeting = %s/conf/sounds/greeting.wav\n"
                              % os.environ.get("top_srcdir", "."))
lo = free_port() & ~1
conf = re.sub(r"rtp_ports = \d+-\d+", "rtp_ports = %d-%d" % (lo, lo + 7), conf)
pbx2 = free_port()
d2.write_conf(conf + "[routing]\nfallback = sip:pbx@127.0.0.1:%d\ngreeting_min = 5s\n"
              "[trunk:carrier]\nmatch = 127.0.0.1/32\n" % pbx2)
d2.start()
held = []
for i in range(2):
    held.append(spawn(["sipp", "-sf", os.path.join(SCENARIOS, "trunk_uac_cancel.xml"), "-s", "100",
                       "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-nostdin", "-d", "3000",
                       "-key", "rtp_port", str(free_port()), "-key", "caller", "2000%d" % i,
                       "-timeout", "20s", "127.0.0.1:%d" % d2.sip_port],
                      cwd=d2.dir, stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w")))
time.sleep(1.0)
c = SipClient(d2.sip_port)
r = c.request("INVITE", "sip:100@127.0.0.1",
              ["From: <sip:300@127.0.0.1>;tag=x2", "To: <sip:100@127.0.0.1>",
               "Contact: <sip:300@127.0.0.1:%d>" % c.port, "Content-Type: application/sdp"],
              body=sdp.replace("127.0.0.5", "127.0.0.1"))
t.eq(r and r.status, 503, "the third concurrent call gets 503 when the port range is full")
c.close()
for p in held:
    wait_proc(p, 20)
t.ok(d2.proc.poll() is None, "sipcrmd keeps running after port exhaustion")
t.eq(d2.stop(), 0, "SIGTERM exits 0")
t.ok("ERROR: AddressSanitizer" not in d2.log(), "no sanitizer report", d2.log()[-3000:])
t.done()
