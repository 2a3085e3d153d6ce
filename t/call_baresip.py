#!/usr/bin/env python3
"""A real softphone takes a real call: baresip registers as agent 101, the
CRM names 101 as responsible for the caller, a SIPp trunk places an inbound
call whose media is a socket of this test sending a 1 kHz G.711 tone, and
baresip answers by itself and sends its 440 Hz sine. Audio must flow both
ways through the relay: the live call's counters grow on both relay ports,
the caller hears 440 Hz after the answer, baresip's recording holds the
1 kHz tone; the caller's BYE ends the call and the CDR names agent 101."""
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import wave

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, SCENARIOS, TOP_SRCDIR, spawn, free_port
from baresip import Baresip, available
from crm_emulator import CrmEmulator

CALLER = "79161234567"
DID = "74951234567"
CALLER_HZ = 1000.0      # what the trunk side sends
BARESIP_HZ = 440.0      # t/lib/baresip.py: audio_source ausine,440
RINGBACK_HZ = 425.0     # sipcrmd's ringback tone (src/media/prompt.c)
HOLD_MS = 6000          # how long the caller keeps the call up after the ACK

t = Tap()
if not available():
    t.bail("baresip is not installed (apt-get install baresip-core)")


# ---- G.711 and a tone detector, in plain Python ------------------------------------------

def ulaw_decode(u):
    u = ~u & 0xFF
    s = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)
    return 0x84 - s if u & 0x80 else s - 0x84


def alaw_decode(a):
    a ^= 0x55
    s = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    s = s + 8 if seg == 0 else (s + 0x108) << (seg - 1)
    return s if a & 0x80 else -s


DECODE = {0: [ulaw_decode(i) for i in range(256)], 8: [alaw_decode(i) for i in range(256)]}


def encode(pt, samples):
    """Nearest code of the decode table: exact for any G.711 law."""
    table = DECODE[pt]
    return bytes(min(range(256), key=lambda c: abs(table[c] - s)) for s in samples)


def goertzel(samples, hz, rate=8000):
    w = 2 * math.pi * hz / rate
    coeff = 2 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def peak_hz(samples, rate=8000, lo=300, hi=1500, step=5):
    return max(range(lo, hi + 1, step), key=lambda f: goertzel(samples, f, rate))


def rms(samples):
    return math.sqrt(sum(x * x for x in samples) / len(samples)) if samples else 0.0


# 1 kHz at 8 kHz repeats every 8 samples, so one 20 ms frame serves every packet
TONE = [int(8000 * math.sin(2 * math.pi * CALLER_HZ * i / 8000)) for i in range(160)]
FRAME = {0: encode(0, TONE), 8: encode(8, TONE)}


class RtpPeer(threading.Thread):
    """The trunk's media: records every RTP packet that arrives and, once
    sipcrmd's relay port is known (its greeting comes from there; the relay
    is symmetric), sends a 20 ms G.711 packet of the tone every 20 ms in the
    payload type the relay sends."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop_ev = threading.Event()
        self.rx = []            # (time, pt, seq, ssrc, payload)
        self.sent = 0
        self.peer = None
        self.pt = None

    def run(self):
        self.sock.settimeout(0.005)
        seq, ts, ssrc = 1000, 0, 0x5151CAFE
        next_tx = None
        while not self.stop_ev.is_set():
            now = time.monotonic()
            if self.peer and self.pt is not None and now >= next_tx:
                hdr = struct.pack("!BBHII", 0x80, self.pt | (0x80 if self.sent == 0 else 0),
                                  seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
                try:
                    self.sock.sendto(hdr + FRAME[self.pt], self.peer)
                    self.sent += 1
                except OSError:
                    pass
                seq += 1
                ts += 160
                next_tx += 0.020
                if next_tx < now - 0.2:         # never burst after a stall
                    next_tx = now + 0.020
                continue
            try:
                data, src = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                break
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            pt = data[1] & 0x7F
            _, _, rseq, _, rssrc = struct.unpack("!BBHII", data[:12])
            self.rx.append((time.monotonic(), pt, rseq, rssrc, data[12:]))
            if self.peer is None and pt in (0, 8):
                self.peer, self.pt = src, pt
                next_tx = time.monotonic()
        self.sock.close()

    def samples_after(self, t0, n):
        out = []
        for when, pt, _, _, payload in self.rx:
            if when >= t0 and pt in DECODE:
                out.extend(DECODE[pt][b] for b in payload)
        return out[:n]

    def count_after(self, t0):
        return sum(1 for p in self.rx if p[0] >= t0 and p[1] in DECODE)


# ---- sipcrmd, the CRM, baresip ----------------------------------------------------------

crm = CrmEmulator()
crm.responsible["+" + CALLER] = {"id": "42", "name": "Ivan Petrov"}
d = Daemon(t)
conf = d.base_conf()
conf = conf.replace("domain = sipcrm.test\n", "domain = sipcrm.test\ndigest_algorithms = MD5\n")
conf = conf.replace("greeting =\n", "greeting = %s\n" % os.path.join(TOP_SRCDIR, "conf", "sounds",
                                                                     "greeting.wav"))
d.write_conf(conf +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nresponsible_ring = 10s\n"
             "[trunk:carrier]\nmatch = 127.0.0.1/32\n"
             "[agent:101]\npassword = secret101\nname = Ivan Petrov\ncrm_user = 42\n"
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = s\n" % (free_port(), crm.url, crm.url))
d.start()

b = Baresip(d.dir, "<sip:101@127.0.0.1:%d;transport=udp>;auth_pass=secret101;regint=120;"
            "answermode=auto" % d.sip_port, extra_modules=("sndfile.so",))
# baresip 1.0.0: ausine makes 48 kHz stereo only (the core resamples to the codec's
# rate), and aufile is a source only, so what baresip hears is saved by the
# sndfile filter: <snd_path>/dump-<time>-dec.wav is the decoded audio.
with open(os.path.join(b.dir, "config"), "a") as f:
    f.write("ausrc_srate\t48000\nausrc_channels\t2\nsnd_path\t%s\n"
            "net_interface\t127.0.0.1\n" % b.dir)      # SDP and RTP on 127.0.0.1 only
b.start()


def blog(n=3000):
    """baresip's log without the blank lines its menu prints."""
    return "\n".join(x for x in b.log().splitlines() if x.strip())[-n:]


def agent():
    st, body = d.http("GET", "/api/v1/agents")
    return body[0] if st == 200 and isinstance(body, list) and body else {}


end = time.time() + 10
while time.time() < end and not agent().get("contacts"):
    time.sleep(0.1)
a = agent()
if not t.ok(a.get("status") == "idle" and a.get("contacts"),
            "baresip registered: agent 101 is idle with a contact", a):
    t.diag(blog(2000))
    t.bail("baresip did not register")

# ---- the call -----------------------------------------------------------------------------

rtp = RtpPeer()
rtp.start()
wd = os.path.join(d.dir, "trunk")
os.makedirs(wd)
uac_out = os.path.join(wd, "out")
uac = spawn(["sipp", "-sf", os.path.join(SCENARIOS, "trunk_uac.xml"), "-s", DID, "-i", "127.0.0.1",
             "-p", str(free_port()), "-m", "1", "-nostdin", "-d", str(HOLD_MS),
             "-key", "rtp_port", str(rtp.port), "-key", "caller", CALLER,
             "-timeout", "30s", "-timeout_error", "-trace_err", "127.0.0.1:%d" % d.sip_port],
            cwd=wd, stdout=open(uac_out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def calls():
    st, body = d.http("GET", "/api/v1/calls")
    return body if st == 200 and isinstance(body, list) else []


# wait for the bridged call in the list of active calls
call, answered_at = None, None
end = time.time() + 15
while time.time() < end and uac.poll() is None:
    cs = calls()
    if cs and cs[0].get("state") == "answered":
        call, answered_at = cs[0], time.monotonic()
        break
    time.sleep(0.05)
if not t.ok(call is not None, "the call reaches baresip and is answered (the call list shows it answered)",
            "calls: %r" % (calls(),)):
    t.diag(blog())
    t.diag(open(uac_out, errors="replace").read()[-2000:])
call_id = call["call_id"] if call else "none"
t.ok(any(q.get("phone") == "+" + CALLER for _, q, _ in crm.lookups),
     "the CRM was asked who is responsible for the caller", crm.lookups)
t.eq(call and call.get("agent"), "101", "the answering agent is 101")
t.ok(rtp.peer is not None, "the caller got early RTP from sipcrmd's relay port (greeting)",
     "received %d packets" % len(rtp.rx))


def media():
    st, body = d.http("GET", "/api/v1/calls/" + call_id)
    return body.get("media") if st == 200 and isinstance(body, dict) else None


# counters while the call is up: sample shortly after the answer and 2 s later
time.sleep(0.5)
m1 = media()
time.sleep(2.0)
m2 = media()
t.ok(isinstance(m1, dict) and isinstance(m2, dict) and m1.get("caller") and m1.get("callee"),
     "GET /api/v1/calls/{id} shows media.caller and media.callee", (m1, m2))
KEYS = [(side, k) for side in ("caller", "callee") for k in ("rx_packets", "tx_packets")]


def counter(m, side, k):
    try:
        return int(m[side][k])
    except (TypeError, KeyError, ValueError):
        return -1


for side, k in KEYS:
    a1, a2 = counter(m1, side, k), counter(m2, side, k)
    t.ok(a2 > a1 >= 0 and a2 > 50 and a2 - a1 >= 50,
         "media.%s.%s grows while the call is up (%d -> %d in 2 s)" % (side, k, a1, a2), (m1, m2))
for side in ("caller", "callee"):
    t.ok(counter(m2, side, "lost") == 0, "media.%s.lost is 0" % side, m2)
# baresip may send RTP/RTCP while its 200 is on the way, before sipcrmd knows
# the callee's address: such packets count as dropped; a few at most
t.ok(counter(m2, "caller", "dropped") == 0 and 0 <= counter(m2, "callee", "dropped") <= 10,
     "nothing dropped on the caller side, at most a few early packets on the callee side", m2)

# the caller-side receiver: after the answer it hears baresip's 440 Hz, not ringback
rx_after = rtp.count_after(answered_at + 0.5) if answered_at else 0
t.ok(rx_after >= 80, "the caller keeps receiving RTP after the answer (%d packets in ~2 s)" % rx_after)
heard = rtp.samples_after(answered_at + 0.5, 4000) if answered_at else []
pk = peak_hz(heard) if len(heard) >= 2000 else None
t.ok(len(heard) >= 2000 and rms(heard) > 500 and pk is not None and abs(pk - BARESIP_HZ) <= 10,
     "the caller hears baresip's 440 Hz sine (peak %s Hz, rms %.0f)" % (pk, rms(heard)))
t.ok(len(heard) >= 2000 and goertzel(heard, BARESIP_HZ) > 20 * goertzel(heard, RINGBACK_HZ),
     "what the caller hears after the answer is not the 425 Hz ringback")

# ---- the caller hangs up ----------------------------------------------------------------------

try:
    rc = uac.wait(HOLD_MS / 1000.0 + 10)
except subprocess.TimeoutExpired:
    uac.kill()
    rc = -1
out = open(uac_out, errors="replace").read()
t.eq(rc, 0, "the caller got 183 and 200, and its BYE got 200") or t.diag(out[-2000:])
sent_total = rtp.sent
rtp.stop_ev.set()
rtp.join(2)
t.ok(sent_total >= 200, "the caller sent its tone throughout the call (%d packets)" % sent_total)

end = time.time() + 5
while time.time() < end and calls():
    time.sleep(0.1)
t.eq(calls(), [], "BYE from the caller ends the call: no active call left")

# baresip hung up too, which closes sndfile's recording of what it heard
end = time.time() + 5
while time.time() < end and "terminated" not in b.log():
    time.sleep(0.1)
b.stop()
dec = [f for f in os.listdir(b.dir) if f.startswith("dump-") and f.endswith("-dec.wav")]
frames, rate = [], 8000
try:
    with wave.open(os.path.join(b.dir, dec[0]), "rb") as w:
        rate, width, ch = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    if width == 2:
        frames = list(struct.unpack("<%dh" % (len(raw) // 2), raw))[::ch]
except (IndexError, OSError, EOFError, wave.Error) as e:
    t.diag("baresip's recording %r: %r" % (dec, e))
blk = rate // 50
blocks = [rms(frames[i:i + blk]) for i in range(0, len(frames) - blk + 1, blk)]
loud = [x for x in blocks if x > 1000]
t.ok(len(blocks) >= 100 and len(loud) >= 0.8 * len(blocks),
     "baresip heard non-silent audio for the whole call (%d of %d 20 ms blocks)"
     % (len(loud), len(blocks)))
# the middle of the recording: well inside the bridged part
mid = frames[len(frames) // 2: len(frames) // 2 + rate // 2]
pk = peak_hz(mid, rate) if len(mid) >= rate // 4 else None
t.ok(pk is not None and abs(pk - CALLER_HZ) <= 10,
     "what baresip heard is the caller's 1 kHz tone (peak %s Hz)" % pk)

# ---- CDR ------------------------------------------------------------------------------------

st, one = d.http("GET", "/api/v1/calls/" + call_id)
t.ok(st == 200 and isinstance(one, dict) and one.get("state") == "ended" and
     one.get("disposition") == "answered" and one.get("last_agent") == "101",
     "GET /api/v1/calls/{id}: ended, answered, last_agent 101", one)
st, rows = d.http("GET", "/api/v1/cdr?limit=1")
r = rows[0] if st == 200 and isinstance(rows, list) and rows else {}
t.eq(r.get("call_id"), call_id, "the CDR row is this call's")
t.eq(r.get("disposition"), "answered", "CDR disposition answered")
t.eq(r.get("last_agent"), "101", "CDR last_agent 101")
t.eq(r.get("first_agent"), "101", "CDR first_agent 101 (the CRM's responsible agent)")
legs = r.get("legs") or []
t.ok(len(legs) == 1 and legs[0].get("result") == 200 and
     ("127.0.0.1:%d" % b.sip_port) in (legs[0].get("target") or ""),
     "one leg, to baresip's contact, answered 200", legs)
t.ok(r.get("billsec", -1) >= HOLD_MS // 1000 - 1, "billsec covers the bridged time", r)

t.eq(d.stop(), 0, "SIGTERM exits 0")
t.ok("ERROR: AddressSanitizer" not in d.log() and "runtime error:" not in d.log(),
     "no sanitizer report", d.log()[-3000:])
crm.stop()
t.done()
