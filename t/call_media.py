#!/usr/bin/env python3
"""Media in the call core: a bridged call is recorded as a stereo WAV
(caller left, agent right) served by GET /api/v1/recordings/{id} and linked
from call.ended and the CDR; a transfer starts a new segment; a call under
record_min leaves no file; an unwritable record_dir loses the recording,
not the call; DTMF sent by an agent as SIP INFO reaches the customer as
RFC 4733; a call whose RTP stops is ended by media_timeout (BYE both ways,
end_reason in the CDR), a call on hold is not; per-call counters in
GET /api/v1/calls/{id}."""
import warnings
warnings.simplefilter("ignore", DeprecationWarning)
import audioop  # noqa: E402
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import wave
import io

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port, spawn, SCENARIOS
from sipua import UA, parse_sdp
from crm_emulator import CrmEmulator

t = Tap()
crm = CrmEmulator(secret="cm")
pbx_port = free_port()
d = Daemon(t)
rec_dir = os.path.join(d.dir, "rec")


def conf(record_dir=rec_dir):
    return (d.base_conf().replace("[media]\n", "[media]\nsrtp = off\nrecord = on\n"
                                  "record_dir = %s\nrecord_min = 1s\nmedia_timeout = 3s\n"
                                  % record_dir) +
            "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nlookup_timeout = 1s\n"
            "responsible_ring = 5s\ntransfer_ring = 3s\n" % pbx_port +
            "[trunk:provider]\nmatch = 127.0.0.1/32\n"
            "[agent:101]\npassword = pw101\ncrm_user = u1\n"
            "[agent:102]\npassword = pw102\ncrm_user = u2\n"
            "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
            "secret = cm\ncache = 0\ncountry_code = 7\n" % (crm.url, crm.url))


d.write_conf(conf())
d.start()
server = ("127.0.0.1", d.sip_port)
DID = "sip:84951234567@127.0.0.1:%d" % d.sip_port
CUSTOMER = "+79162222222"
crm.responsible[CUSTOMER] = {"id": "u1", "extension": "101"}
a101 = UA(ip="127.0.0.2", user="101", server=server)
a102 = UA(ip="127.0.0.3", user="102", server=server)
ok1, ok2 = a101.register("101", "pw101"), a102.register("102", "pw102")
t.ok(ok1 and ok1.status == 200 and ok2 and ok2.status == 200, "agents registered")
IN_DLG = {"NOTIFY", "BYE", "INVITE", "UPDATE", "OPTIONS"}
CUST_BYTE, AGENT_BYTE, AGENT2_BYTE = 0x2a, 0x55, 0x9c


def answered_call(agent=a101):
    cust = UA(ip="127.0.0.1", user=CUSTOMER, server=server)
    dlg = cust.invite_start(DID, from_user=CUSTOMER,
                            body=cust.sdp(pts=(8, 0, 101)))
    leg = agent.wait_invite(timeout=5)
    if leg is None:
        return cust, dlg, None, None
    leg.auto_answer = set(IN_DLG)
    leg.reply(leg.invite, 200, body=agent.sdp(pts=(8, 101)))
    leg.wait_ack(3)
    fin = dlg.wait_final(5)
    dlg.auto_answer = set(IN_DLG)
    cid = leg.invite.get("X-Sipcrm-Call-ID") if fin and fin.status == 200 else None
    return cust, dlg, leg, cid


def answer_sdp(ua):
    """The SDP of the last message with one that ua received (our answer)."""
    fin = [m for m in ua.trace if m[1] == "<" and "\r\n\r\nv=0" in m[3]]
    return parse_sdp(fin[-1][3].split("\r\n\r\n", 1)[1]) if fin else None


def talk(cust, fin_sdp, agent, leg, secs, agent_byte=AGENT_BYTE):
    """Both parties send PCMA at 20 ms for secs: the customer CUST_BYTE,
    the agent agent_byte."""
    n = int(secs / 0.02)
    th = [threading.Thread(target=cust.send_rtp, kwargs=dict(
              addr=(fin_sdp["ip"], fin_sdp["port"]), count=n, pt=8, ssrc=0x1111,
              payload=bytes([CUST_BYTE]) * 160, interval=0.02)),
          threading.Thread(target=agent.send_rtp, kwargs=dict(
              addr=(leg.invite.sdp["ip"], leg.invite.sdp["port"]), count=n, pt=8,
              ssrc=0x2222, payload=bytes([agent_byte]) * 160, interval=0.02))]
    for x in th:
        x.start()
    for x in th:
        x.join()


def get_raw(path, token=d.token):
    """GET, retrying while a recording is still being written (503)."""
    for _ in range(30):
        r = get_once(path, token)
        if r[0] != 503:
            break
        time.sleep(0.1)
    return r


def get_once(path, token=d.token):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (d.api_port, path),
                                 headers={"Authorization": "Bearer " + token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def events(cid, last="call.ended", timeout=6):
    crm.wait_for(lambda: any(e.get("type") == last for e in crm.of_call(cid)), timeout)
    return crm.of_call(cid)


def cdr_of(cid):
    st, rows = d.http("GET", "/api/v1/calls/%s" % cid)
    return rows if st == 200 else {}


def wav_channels(data):
    """(rate, channels, sampwidth, left samples, right samples) of a WAV."""
    w = wave.open(io.BytesIO(data))
    frames = w.readframes(w.getnframes())
    left = audioop.tomono(frames, 2, 1, 0)
    right = audioop.tomono(frames, 2, 0, 1)
    return w.getframerate(), w.getnchannels(), w.getsampwidth(), left, right


def share(samples, want):
    """The share of 16-bit samples equal to want."""
    vals = [int.from_bytes(samples[i:i + 2], "little", signed=True)
            for i in range(0, len(samples) - 1, 2)]
    return sum(1 for v in vals if v == want) / max(1, len(vals))


def lin(byte):
    return int.from_bytes(audioop.alaw2lin(bytes([byte]), 2), "little", signed=True)


# --- 1. a recorded call, DTMF by INFO, counters ----------------------------------------------
cust, dlg, leg, cid = answered_call()
t.ok(cid, "customer connected to 101")
fin_sdp = answer_sdp(cust)
talk(cust, fin_sdp, a101, leg, 1.6)
before = cust.rtp["pts"].get(101, 0)
r = leg.request("INFO", headers=[("Content-Type", "application/dtmf-relay")],
                body="Signal=5\r\nDuration=160\r\n", timeout=3)
t.eq(r.status if r else None, 200, "INFO dtmf-relay: 200")
time.sleep(0.6)
t.ok(cust.rtp["pts"].get(101, 0) - before >= 3,
     "the digit reaches the customer as RFC 4733 telephone-event packets (PT 101)",
     cust.rtp["pts"])
ev = [p for p in cust.rtp["raw"] if (p[1] & 0x7f) == 101]
t.ok(ev and ev[-1][12] == 5, "the event is digit 5", ev[-1][12:16].hex() if ev else None)
r = leg.request("INFO", headers=[("Content-Type", "application/dtmf-relay")],
                body="Signal=banana\r\n", timeout=3)
t.eq(r.status if r else None, 400, "INFO with a garbled digit: 400")
r = leg.request("INFO", headers=[("Content-Type", "application/x-broadsoft")],
                body="whatever", timeout=3)
t.eq(r.status if r else None, 200, "another INFO package: 200, nothing done")
info = cdr_of(cid)
med = info.get("media", {}).get("caller") or {}
t.ok(med.get("rx_packets", 0) >= 50 and "rx_bytes" in med and "late" in med and
     "srtp_auth_failures" in med, "per-call counters in GET /api/v1/calls/{id}", med)
st, ct, body = get_raw("/api/v1/recordings/%s" % cid)
t.eq(st, 404, "a call in progress: its recording is not served yet")
dlg.bye()
evs = events(cid)
end = [e for e in evs if e.get("type") == "call.ended"]
url = end[0].get("recording_url") if end else None
t.ok(url and url.endswith("/api/v1/recordings/%s" % cid),
     "call.ended links the recording", url)
t.like(url or "", "http://127.0.0.1:%d/" % d.api_port, "the link is absolute, on the API address")
st, ct, body = get_raw("/api/v1/recordings/%s" % cid)
t.eq((st, ct), (200, "audio/wav"), "GET /api/v1/recordings/{id}: 200 audio/wav")
if st == 200:
    rate, ch, sw, left, right = wav_channels(body)
    t.eq((rate, ch, sw), (8000, 2, 2), "8 kHz stereo 16-bit PCM")
    secs = len(left) / 2 / 8000
    t.ok(1.2 <= secs <= 6, "about as long as the call", secs)
    t.ok(share(left, lin(CUST_BYTE)) > 0.5, "left channel: the customer",
         share(left, lin(CUST_BYTE)))
    t.ok(share(right, lin(AGENT_BYTE)) > 0.5, "right channel: the agent",
         share(right, lin(AGENT_BYTE)))
day = time.strftime("%Y-%m-%d", time.gmtime())
t.ok(os.path.exists(os.path.join(rec_dir, day, cid + ".wav")),
     "the file is in record_dir/YYYY-MM-DD/")
st, _, _ = get_raw("/api/v1/recordings/%s" % cid, token=None)
t.eq(st, 401, "without the token: 401")
st, _, _ = get_raw("/api/v1/recordings/%s" % cid, token="wrong")
t.eq(st, 401, "with a wrong token: 401")
for bad in ("..%2F..%2Fsipcrm.db", "%2E%2E", "x'%20OR%20'1'='1", "0" * 32, cid + "-2",
            cid + "%2F..%2F..%2Fsipcrm.db"):
    st, _, _ = get_raw("/api/v1/recordings/%s" % bad)
    t.eq(st, 404, "GET /api/v1/recordings/%s: 404" % bad)
st, rows = d.http("GET", "/api/v1/cdr?limit=5")
row = [x for x in rows if x.get("call_id") == cid] if st == 200 else []
t.ok(row and row[0].get("recording_url") == url and row[0].get("recordings") == [url],
     "the CDR row lists the recording", row[0] if row else rows)
cust.close()

# --- 2. a transfer starts a new segment ---------------------------------------------------------
cust, dlg, leg, cid = answered_call()
fin_sdp = answer_sdp(cust)
talk(cust, fin_sdp, a101, leg, 1.4)
st, _ = d.http("POST", "/api/v1/calls/%s/transfer" % cid, {"to": "102", "mode": "blind"})
t.eq(st, 202, "API blind transfer to 102")
b = a102.wait_invite(timeout=5)
if b:
    b.auto_answer = set(IN_DLG)
    b.reply(b.invite, 200, body=a102.sdp(pts=(8, 101)))
    b.wait_ack(3)
    time.sleep(0.2)
    talk(cust, fin_sdp, a102, b, 1.4, agent_byte=AGENT2_BYTE)
dlg.bye()
evs = events(cid)
end = [e for e in evs if e.get("type") == "call.ended"]
recs = end[0].get("recordings") if end else None
t.ok(recs and len(recs) == 2 and recs[1].endswith("/%s-2" % cid),
     "call.ended lists two segments, the second ID-2", recs)
if recs and len(recs) == 2:
    st1, _, w1 = get_raw(re.sub(r"^http://[^/]+", "", recs[0]))
    st2, _, w2 = get_raw(re.sub(r"^http://[^/]+", "", recs[1]))
    t.eq((st1, st2), (200, 200), "both segments are served")
    if st1 == 200 and st2 == 200:
        # segment 2 also holds the transfer's setup, silent: on a loaded
        # machine that is a larger share (wrong audio would be about 0)
        s1 = share(wav_channels(w1)[4], lin(AGENT_BYTE))
        s2 = share(wav_channels(w2)[4], lin(AGENT2_BYTE))
        t.ok(s1 > 0.4, "segment 1: agent 101 right", s1)
        t.ok(s2 > 0.25, "segment 2: agent 102 right", s2)
cust.close()

# --- 3. under record_min: no file ------------------------------------------------------------------
cust, dlg, leg, cid = answered_call()
dlg.bye()
evs = events(cid)
end = [e for e in evs if e.get("type") == "call.ended"]
t.ok(end and end[0].get("recording_url") is None, "a call under record_min: recording_url null",
     end)
time.sleep(0.5)
t.ok(not os.path.exists(os.path.join(rec_dir, day, cid + ".wav")), "and no file")
cust.close()

# --- 4. media timeout -------------------------------------------------------------------------------
cust, dlg, leg, cid = answered_call()
t0 = time.time()
end_ok = crm.wait_for(lambda: any(e.get("type") == "call.ended" for e in crm.of_call(cid)), 8)
took = time.time() - t0
t.ok(end_ok and 2.5 <= took <= 6.5, "no RTP for media_timeout (3 s): the call ends", took)
byes_c = [m for m in dlg.auto_answered if m.method == "BYE"]
byes_a = [m for m in leg.auto_answered if m.method == "BYE"]
t.ok(byes_c and byes_a, "BYE to the customer and to the agent")
end = [e for e in crm.of_call(cid) if e.get("type") == "call.ended"]
t.eq((end[0].get("disposition"), end[0].get("end_reason")) if end else None,
     ("answered", "media_timeout"), "call.ended: answered, end_reason media_timeout")
st, rows = d.http("GET", "/api/v1/cdr?limit=5")
row = [x for x in rows if x.get("call_id") == cid] if st == 200 else []
t.eq(row[0].get("end_reason") if row else None, "media_timeout", "the CDR notes it")
cust.close()

# --- 5. on hold: exempt ------------------------------------------------------------------------------
cust, dlg, leg, cid = answered_call()
r = dlg.request("INVITE", body=cust.sdp(mode="sendonly", pts=(8, 0, 101)), timeout=5)
t.eq(r.status if r else None, 200, "the customer puts the call on hold")
time.sleep(4.5)
t.ok(not [m for m in dlg.auto_answered if m.method == "BYE"],
     "a call on hold outlives media_timeout")
dlg.bye()
events(cid)
cust.close()

# --- 6. an unwritable record_dir: the call goes on, unrecorded ------------------------------------------
blocker = os.path.join(d.dir, "not-a-dir")
open(blocker, "w").close()
d.write_conf(conf(os.path.join(blocker, "rec")))
d.signal(signal.SIGHUP)
time.sleep(0.5)
cust, dlg, leg, cid = answered_call()
fin_sdp = answer_sdp(cust)
talk(cust, fin_sdp, a101, leg, 1.4)
t.ok(a101.rtp["packets"] > 0, "media flows although the recording cannot be written")
r = dlg.bye()
t.eq(r.status if r else None, 200, "the call ends normally")
events(cid)
time.sleep(0.5)
st, rows = d.http("GET", "/api/v1/cdr?limit=5")
row = [x for x in rows if x.get("call_id") == cid] if st == 200 else []
t.ok(row and row[0].get("recording_url") is None and row[0].get("recordings") == [],
     "the CDR lists no recording", row[0] if row else rows)
st, text = d.http("GET", "/metrics", auth=False, raw=True)
m = re.search(r"^sipcrm_recording_errors_total (\d+)", text or "", re.M)
t.ok(m and int(m.group(1)) >= 1, "counted in sipcrm_recording_errors_total",
     m.group(0) if m else None)
t.ok(d.proc.poll() is None, "sipcrmd is still running")
cust.close()

# --- 7. RFC 4733 from SIPp, between the payload types each side chose --------------------------
def agent_sdp(ua, te):
    te_lines = "a=rtpmap:%d telephone-event/8000\r\na=fmtp:%d 0-16\r\n" % (te, te) if te else ""
    return ("v=0\r\no=ag 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/AVP 8%s\r\na=rtpmap:8 PCMA/8000\r\n%sa=sendrecv\r\n"
            % (ua.ip, ua.ip, ua.rtp_port, " %d" % te if te else "", te_lines))


def sipp_dtmf_call(te):
    """SIPp as the trunk presses 1 (PT 101); 101 answers with telephone-event
    te (None: without). Returns what 101 received: {pt: count}, raw packets."""
    a101.rtp["pts"], a101.rtp["raw"] = {}, []
    wd = os.path.join(d.dir, "sipp-dtmf-%s" % te)
    os.makedirs(wd, exist_ok=True)
    p = spawn(["sipp", "-sf", os.path.join(SCENARIOS, "trunk_uac_dtmf.xml"), "-s", "74951234567",
               "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_port()), "-m", "1",
               "-nostdin", "-d", "1500", "-key", "caller", CUSTOMER[1:], "-timeout", "20s",
               "-timeout_error", "-trace_err", "127.0.0.1:%d" % d.sip_port],
              cwd=wd, stdout=open(os.path.join(wd, "out"), "w"), stderr=open(os.devnull, "w"))
    leg = a101.wait_invite(timeout=5)
    if leg:
        leg.auto_answer = set(IN_DLG)
        leg.reply(leg.invite, 200, body=agent_sdp(a101, te))
        leg.wait_ack(3)
    try:
        rc = p.wait(25)
    except Exception:
        p.kill()
        rc = -1
    return rc, dict(a101.rtp["pts"]), list(a101.rtp["raw"])


rc, pts, raw = sipp_dtmf_call(96)
t.eq(rc, 0, "SIPp places a call and sends digit 1 as RFC 2833 (PT 101)")
t.ok(pts.get(96, 0) >= 5 and not pts.get(101), "the agent gets it as PT 96, the type it chose",
     pts)
ev = [x for x in raw if (x[1] & 0x7f) == 96]
t.ok(ev and all(x[12] == 1 for x in ev), "digit 1, intact", [x[12:16].hex() for x in ev[:3]])
rc, pts, raw = sipp_dtmf_call(None)
t.eq(rc, 0, "again, to an agent that negotiated no telephone-event")
t.ok(not pts.get(101) and not pts.get(96) and all((x[1] & 0x7f) == 8 for x in raw),
     "it gets no event packets at all (no garbage audio)", pts)

a101.close()
a102.close()
d.stop()
crm.stop()
t.done()
