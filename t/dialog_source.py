#!/usr/bin/env python3
"""Requests inside the caller's dialog must come from the caller (issue 10).

Anyone who learns a call's Call-ID and tags could otherwise send a
re-INVITE in the caller's dialog from elsewhere and have sipcrmd relay the
call's audio to an address of their choice, or hang the call up. sipcrmd
takes requests in the caller's dialog only from the address its INVITE came
from (any port: TCP connections come from anywhere); others get 403 and
change nothing.

  * a trunk call (the trunk at 127.0.0.50) answered by the PBX: a forged
    re-INVITE (new SDP pointing at the attacker), UPDATE, BYE, INFO and
    REFER from 127.0.0.66, and from another address inside 127.0.0.0/8,
    get 403; the PBX gets nothing, the call stays up and the PBX's RTP
    still reaches the caller, not the attacker;
  * the real caller's re-INVITE from its own address (another port) still
    works, and its BYE ends the call;
  * an agent's own call (an agent behind NAT at 127.0.0.70): a forged BYE
    from another address gets 403, the agent's own BYE works.
"""
import os
import random
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port  # noqa: E402
from sipua import UA  # noqa: E402

t = Tap()
TRUNK_IP = "127.0.0.50"
ATTACKERS = ("127.0.0.66", "127.0.0.51")
pbx_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\n" % pbx_port +
             "[pbx]\nextension_uri = sip:{ext}@127.0.0.1:%d\n" % pbx_port +
             "[trunk:provider]\nmatch = %s/32\nuri = sip:127.0.0.1:%d\n" % (TRUNK_IP, pbx_port) +
             "[agent:101]\npassword = secret101\n[agent:102]\npassword = secret102\n")
d.start()
SIP = ("127.0.0.1", d.sip_port)
SDP = ("v=0\r\no=- 7 7 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
       "a=rtpmap:101 telephone-event/8000\r\n")


class Forger:
    """A UDP socket on an address of its own, with an RTP socket."""

    def __init__(self, ip):
        self.ip = ip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.port = self.sock.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((ip, 0))
        self.rtp_port = self.rtp.getsockname()[1]

    def send_in(self, dlg, method, extra=()):
        """method inside dlg, as dlg's own side would send it; returns the
        final status (None: nothing)."""
        branch = "z9hG4bK-f%x" % random.getrandbits(40)
        body = SDP.format(ip=self.ip, port=self.rtp_port) if method in ("INVITE", "UPDATE") else ""
        hs = ["Via: SIP/2.0/UDP %s:%d;branch=%s;rport" % (self.ip, self.port, branch),
              "Max-Forwards: 70",
              "From: %s;tag=%s" % (dlg.local_uri, dlg.local_tag),
              "To: %s;tag=%s" % (dlg.remote_uri, dlg.remote_tag),
              "Call-ID: %s" % dlg.call_id,
              "CSeq: %d %s" % (dlg.local_cseq + 10 + random.randrange(1000), method),
              "Contact: <sip:x@%s:%d>" % (self.ip, self.port)] + list(extra)
        if body:
            hs.append("Content-Type: application/sdp")
        hs.append("Content-Length: %d" % len(body))
        ruri = dlg.remote_target or "sip:127.0.0.1:%d" % d.sip_port
        self.sock.sendto(("%s %s SIP/2.0\r\n%s\r\n\r\n%s" % (method, ruri, "\r\n".join(hs),
                                                             body)).encode(), SIP)
        end = time.time() + 2
        while time.time() < end:
            self.sock.settimeout(max(0.01, end - time.time()))
            try:
                text = self.sock.recvfrom(65535)[0].decode(errors="replace")
            except socket.timeout:
                break
            if text.startswith("SIP/2.0 ") and branch in text:
                st = int(text.split(" ")[1])
                if st >= 200:
                    return st
        return None

    def rtp_count(self, wait=0.5):
        n = 0
        self.rtp.settimeout(wait)
        try:
            while True:
                self.rtp.recvfrom(2048)
                n += 1
                self.rtp.settimeout(0.05)
        except socket.timeout:
            return n

    def close(self):
        self.sock.close()
        self.rtp.close()


def active_calls():
    st, calls = d.http("GET", "/api/v1/calls")
    return len(calls) if st == 200 else None


# --- a trunk call ---------------------------------------------------------------------------
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=SIP)
caller = UA(ip=TRUNK_IP, user="+79161234567", server=SIP)
dlg = caller.invite_start("sip:+74951234567@127.0.0.1:%d" % d.sip_port)
leg = pbx.wait_invite(timeout=5)
if leg is None:
    t.bail("the trunk call did not reach the PBX:\n" + d.log()[-3000:])
leg.auto_answer = {"INVITE", "UPDATE", "OPTIONS", "INFO"}
leg.reply(leg.invite, 200, body=leg.sdp())
leg.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "a trunk call is answered by the PBX")
relay = leg.invite.sdp                 # where the PBX sends its RTP
t.ok(relay and relay["port"], "the PBX leg has sipcrmd's SDP", leg.invite.body)

for ip in ATTACKERS:
    f = Forger(ip)
    got = {m: f.send_in(dlg, m, ["Refer-To: <sip:102@sipcrm.test>"] if m == "REFER" else [])
           for m in ("INVITE", "UPDATE", "INFO", "REFER", "BYE")}
    t.eq(got, {m: 403 for m in got},
         "INVITE, UPDATE, INFO, REFER and BYE forged into the caller's dialog from %s: 403" % ip)
    t.eq(active_calls(), 1, "the call is still up")
    # the PBX's audio still goes to the caller, not to the forger's SDP
    before = caller.rtp["packets"]
    pbx.send_rtp((relay["ip"], relay["port"]), count=20, interval=0.005)
    n_forger = f.rtp_count()
    t.eq(n_forger, 0, "no RTP reaches the forger's address (%s)" % ip)
    t.ok(caller.rtp["packets"] - before >= 15, "the caller still gets the PBX's RTP",
         "got %d of 20" % (caller.rtp["packets"] - before))
    f.close()
t.eq([m.method for m in leg.auto_answered], [], "nothing forged reached the PBX")
t.ok(leg.state != "terminated" and dlg.state != "terminated", "neither side was hung up")

# the real caller, from another port of its own address (as over TCP)
caller2 = UA(ip=TRUNK_IP, user="+79161234567", server=SIP)
dlg.ua = caller2
r = dlg.request("INVITE", body=dlg.sdp())
t.eq(r.status if r else None, 200, "the caller's own re-INVITE (same address, other port): 200")
time.sleep(0.3)
t.eq([m.method for m in leg.auto_answered], ["INVITE"], "and it was relayed to the PBX")
dlg.ua = caller
r = dlg.bye()
t.eq(r.status if r else None, 200, "the caller's BYE: 200")
t.ok(leg.wait_request("BYE", timeout=3) is not None, "and the PBX gets BYE")

# --- an agent's own call, the agent behind NAT ------------------------------------------------
phone = UA(ip="127.0.0.70", user="101", server=SIP)
x = phone.invite_start("sip:102@127.0.0.1:%d" % d.sip_port, auth=("101", "secret101"))
leg2 = pbx.wait_invite(timeout=5)
if leg2 is None:
    t.bail("the agent's call did not reach 102:\n" + d.log()[-3000:])
leg2.auto_answer = {"INVITE", "UPDATE", "OPTIONS"}
leg2.reply(leg2.invite, 200, body=leg2.sdp())
leg2.wait_ack(3)
fin = x.wait_final(5)
t.eq(fin.status if fin else None, 200, "agent 101 (at 127.0.0.70) calls 102: answered")
f = Forger("127.0.0.71")
t.eq(f.send_in(x, "BYE"), 403, "a BYE forged into the agent's dialog from 127.0.0.71: 403")
t.eq(f.send_in(x, "INVITE"), 403, "a re-INVITE forged the same way: 403")
f.close()
t.eq(active_calls(), 1, "the agent's call is still up")
r = x.request("INVITE", body=x.sdp())
t.eq(r.status if r else None, 200, "the agent's own re-INVITE: 200")
r = x.bye()
t.eq(r.status if r else None, 200, "the agent's own BYE: 200")
t.ok(leg2.wait_request("BYE", timeout=3) is not None, "and 102 gets BYE")

log = d.log()
t.ok("from another address refused" in log, "the refusals are logged (debug)")
t.eq(d.stop(), 0, "SIGTERM exits 0")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "runtime error:" not in log,
     "no sanitizer report", log[-3000:])
for u in (pbx, caller, caller2, phone):
    u.close()
t.done()
