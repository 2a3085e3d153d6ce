#!/usr/bin/env python3
"""SDES-SRTP towards agents ([media] srtp): baresip with its srtp module
as agent 101 answers a plain-RTP customer's call; audio flows both ways and
what crosses loopback between sipcrm and baresip is SRTP (packets 10 bytes
longer than RTP: the HMAC-SHA1-80 tag), seen with a raw packet socket.
srtp = offer: our INVITE is RTP/SAVP with AES_CM_128_HMAC_SHA1_80 and _32
lines, a phone that answers 488 is offered plain RTP again, one that
answers plain RTP is taken as it is; an agent's own SRTP offer is answered
with SRTP. srtp = require: a phone that answers plain RTP fails with 488
and the call goes on to the fallback, a plain offer from an agent gets 488.
No key is ever logged."""
import os
import re
import signal
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from baresip import Baresip, available
from crm_emulator import CrmEmulator
from sipua import UA, parse_sdp

t = Tap()
if not available():
    t.bail("baresip is not installed (apt-get install baresip-core)")
CUSTOMER = "+79163333333"
crm = CrmEmulator(secret="s")
crm.responsible[CUSTOMER] = {"id": "42", "extension": "101"}
pbx_port, trunk_port = free_port(), free_port()
d = Daemon(t)
base = d.base_conf().replace("domain = sipcrm.test\n",
                             "domain = sipcrm.test\ndigest_algorithms = MD5\n")
rtp_lo, rtp_hi = [int(x) for x in re.search(r"rtp_ports = (\d+)-(\d+)", base).groups()]


def conf(srtp):
    return (base.replace("[media]\n", "[media]\nsrtp = %s\n" % srtp) +
            "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nresponsible_ring = 10s\n"
            "lookup_timeout = 1s\n" % pbx_port +
            "[trunk:carrier]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n" % trunk_port +
            "[agent:101]\npassword = secret101\ncrm_user = 42\n"
            "[agent:102]\npassword = secret102\n"
            "[agent:103]\npassword = secret103\n"
            "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
            "secret = s\ncache = 0\n" % (crm.url, crm.url))


d.write_conf(conf("offer"))
d.start()
server = ("127.0.0.1", d.sip_port)
DID = "sip:84951234567@127.0.0.1:%d" % d.sip_port
IN_DLG = {"INVITE", "UPDATE", "BYE", "OPTIONS", "NOTIFY"}
offered_keys = []


def agent(ext):
    st, body = d.http("GET", "/api/v1/agents")
    for a in body if st == 200 and isinstance(body, list) else []:
        if a.get("extension") == ext:
            return a
    return {}


def answer_sdp(ua):
    fin = [m for m in ua.trace if m[1] == "<" and "\r\n\r\nv=0" in m[3]]
    return parse_sdp(fin[-1][3].split("\r\n\r\n", 1)[1]) if fin else None


def cryptos(sdp_text):
    return re.findall(r"a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)", sdp_text or "")


class Sniffer:
    """UDP on loopback between sipcrm's RTP ports and ports outside them
    (the phones), by direction: payload lengths and a few payloads."""

    def __init__(self, skip_ports):
        self.skip = set(skip_ports)
        self.to_phone, self.from_phone = [], []
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.stop = False
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while not self.stop:
            try:
                pkt = self.sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                break
            if len(pkt) < 14 + 20 + 8 or pkt[12:14] != b"\x08\x00" or pkt[14 + 9] != 17:
                continue
            ihl = (pkt[14] & 0x0f) * 4
            sport, dport = struct.unpack("!HH", pkt[14 + ihl:14 + ihl + 4])
            payload = pkt[14 + ihl + 8:]
            ours_s, ours_d = rtp_lo <= sport <= rtp_hi, rtp_lo <= dport <= rtp_hi
            if ours_s and not ours_d and dport not in self.skip:
                self.to_phone.append(payload)
            elif ours_d and not ours_s and sport not in self.skip:
                self.from_phone.append(payload)

    def close(self):
        self.stop = True
        self.th.join(2)
        self.sock.close()


# --- 1. baresip with SRTP as the agent ------------------------------------------------------
b = Baresip(d.dir, "<sip:101@127.0.0.1:%d;transport=udp>;auth_pass=secret101;regint=120;"
            "answermode=auto;mediaenc=srtp-mand" % d.sip_port, extra_modules=["srtp.so"])
with open(os.path.join(b.dir, "config"), "a") as f:
    f.write("ausrc_srate\t48000\nausrc_channels\t2\nnet_interface\t127.0.0.1\n")
b.start()
end = time.time() + 10
while time.time() < end and not agent("101").get("contacts"):
    time.sleep(0.1)
if not t.ok(agent("101").get("contacts"), "baresip (srtp-mand) registered as 101"):
    t.diag(b.log()[-2000:])
    b.stop()
    t.bail("baresip did not register")

cust = UA(ip="127.0.0.1", user=CUSTOMER, server=server)
sniff = Sniffer([cust.rtp_port])
dlg = cust.invite_start(DID, from_user=CUSTOMER)
fin = dlg.wait_final(10)
dlg.auto_answer = set(IN_DLG)
t.eq(fin.status if fin else None, 200, "baresip answers the customer's call over SRTP")
sd = answer_sdp(cust)
t.eq(sd.get("proto") if sd else None, "RTP/AVP", "the customer (the trunk side) stays plain RTP")
if sd:
    cust.send_rtp((sd["ip"], sd["port"]), count=75, pt=8, payload=b"\x2a" * 160, interval=0.02)
time.sleep(0.5)
sniff.close()
st, calls = d.http("GET", "/api/v1/calls")
cid = calls[0].get("call_id") if st == 200 and calls else None
st, info = d.http("GET", "/api/v1/calls/%s" % cid) if cid else (0, {})
callee = (info.get("media") or {}).get("callee") or {}
got = cust.rtp["packets"]
t.ok(got >= 40, "the customer hears baresip: the relay decrypts its SRTP", got)
tone = [p for p in cust.rtp["raw"] if len(p) == 172]
t.ok(len(set(p[12:] for p in tone)) > 3, "and what it hears is the tone, not one repeated "
     "frame", len(set(p[12:] for p in tone)))
t.ok(callee.get("rx_packets", 0) >= 40 and callee.get("srtp_auth_failures", 1) == 0,
     "the agent's side: packets in, none failing authentication", callee)


def rtp_lens(pkts):
    """Lengths of RTP (not RTCP: payload types 200-204) packets."""
    return [len(p) for p in pkts if len(p) >= 12 and p[0] >> 6 == 2 and
            (p[1] & 0x7f) in (0, 8)]


from_b, to_b = rtp_lens(sniff.from_phone), rtp_lens(sniff.to_phone)
t.ok(from_b and all(n == 182 for n in from_b),
     "baresip -> sipcrm on loopback: SRTP (182-byte packets, not 172-byte G.711)",
     sorted(set(from_b))[:5])
t.ok(to_b and all(n == 182 for n in to_b),
     "sipcrm -> baresip on loopback: SRTP too", sorted(set(to_b))[:5])
plain = [p for p in sniff.to_phone if b"\x2a" * 32 in p]
t.ok(not plain, "the customer's audio is not readable on the agent's side")
dlg.bye()
time.sleep(0.3)
b.stop()
cust.close()

# --- 2. srtp = offer with our UA: the INVITE, a 488 fallback, a plain answer ---------------------
a102 = UA(ip="127.0.0.3", user="102", server=server)
r = a102.register("102", "secret102")
t.ok(r and r.status == 200, "agent 102 (test UA) registered")
crm.responsible[CUSTOMER] = {"id": "u2", "extension": "102"}
cust = UA(ip="127.0.0.1", user=CUSTOMER, server=server)
dlg = cust.invite_start(DID, from_user=CUSTOMER)
leg = a102.wait_invite(timeout=5)
sdp = leg.invite.sdp if leg else None
t.eq(sdp.get("proto") if sdp else None, "RTP/SAVP", "srtp = offer: the agent is offered RTP/SAVP")
cr = cryptos(leg.invite.body if leg else "")
t.eq([(c[0], c[1]) for c in cr], [("1", "AES_CM_128_HMAC_SHA1_80"),
                                   ("2", "AES_CM_128_HMAC_SHA1_32")],
     "with AES_CM_128_HMAC_SHA1_80 and _32 crypto lines")
offered_keys += [c[2] for c in cr]
if leg:
    leg.reply(leg.invite, 488)
leg2 = a102.wait_invite(timeout=5)
t.ok(leg2 and leg2.invite.sdp and leg2.invite.sdp.get("proto") == "RTP/AVP" and
     not cryptos(leg2.invite.body), "after a 488 the phone is offered plain RTP/AVP")
if leg2:
    leg2.auto_answer = set(IN_DLG)
    leg2.reply(leg2.invite, 200, body=a102.sdp())
    leg2.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "and the call is answered")
dlg.auto_answer = set(IN_DLG)
dlg.bye()
cust.close()

cust = UA(ip="127.0.0.1", user=CUSTOMER, server=server)
dlg = cust.invite_start(DID, from_user=CUSTOMER)
leg = a102.wait_invite(timeout=5)
if leg:
    offered_keys += [c[2] for c in cryptos(leg.invite.body)]
    leg.auto_answer = set(IN_DLG)
    leg.reply(leg.invite, 200, body=a102.sdp())
    leg.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "srtp = offer: a plain RTP/AVP answer is taken")
dlg.auto_answer = set(IN_DLG)
sd = answer_sdp(cust)
if sd and leg:
    a102.rtp["packets"] = 0
    cust.send_rtp((sd["ip"], sd["port"]), count=10, pt=8)
    time.sleep(0.3)
t.ok(a102.rtp["packets"] >= 8 and a102.rtp["raw"] and len(a102.rtp["raw"][-1]) == 172,
     "and media reaches that phone as plain RTP", a102.rtp["packets"])
dlg.bye()
cust.close()

# --- 3. an agent's own SRTP offer is answered with SRTP ------------------------------------------
KEY = "WnD7c1ksDGs+dIefCEjtnJAvJKxVRmqvNQF0CyHJ"
offer = ("v=0\r\no=a 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
         "m=audio %d RTP/SAVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
         "a=rtpmap:101 telephone-event/8000\r\n"
         "a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:%s\r\na=sendrecv\r\n" % (a102.rtp_port, KEY))
trunk = UA(ip="127.0.0.1", port=trunk_port, user="provider", server=server)
out = a102.invite_start("sip:+74951112233@127.0.0.1:%d" % d.sip_port, body=offer,
                        auth=("102", "secret102"))
tl = trunk.wait_invite(timeout=5)
t.ok(tl and tl.invite.sdp and tl.invite.sdp.get("proto") == "RTP/AVP",
     "an agent's SRTP call goes to the trunk as plain RTP")
if tl:
    tl.auto_answer = set(IN_DLG)
    tl.reply(tl.invite, 200, body=trunk.sdp())
    tl.wait_ack(3)
fin = out.wait_final(5)
out.auto_answer = set(IN_DLG)
resp = [m[3] for m in a102.trace if m[1] == "<" and m[3].startswith("SIP/2.0 200") and
        "\r\n\r\nv=0" in m[3]]
cr = cryptos(resp[-1]) if resp else []
t.ok(resp and "RTP/SAVP" in resp[-1] and len(cr) == 1 and cr[0][0] == "7" and
     cr[0][1] == "AES_CM_128_HMAC_SHA1_32" and cr[0][2] != KEY,
     "sipcrm answers with RTP/SAVP, tag 7, the same suite and a key of its own",
     resp[-1][-400:] if resp else a102.trace_text(4))
offered_keys += [c[2] for c in cr]
out.bye()
trunk.close()

# --- 4. srtp = require --------------------------------------------------------------------------------
d.write_conf(conf("require"))
d.signal(signal.SIGHUP)
time.sleep(0.5)
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=server)
cust = UA(ip="127.0.0.1", user=CUSTOMER, server=server)
dlg = cust.invite_start(DID, from_user=CUSTOMER)
leg = a102.wait_invite(timeout=5)
if leg:
    offered_keys += [c[2] for c in cryptos(leg.invite.body)]
    leg.reply(leg.invite, 200, body=a102.sdp())
    leg.wait_ack(3)
    bye = leg.wait_request("BYE", timeout=3)
    t.ok(bye, "srtp = require: a plain answer gets BYE at once")
    if bye:
        leg.reply(bye, 200)
p = pbx.wait_invite(timeout=5)
t.ok(p is not None, "and the call goes on to the fallback")
if p:
    t.eq(p.invite.sdp.get("proto") if p.invite.sdp else None, "RTP/AVP",
         "the PBX (not an agent) is offered plain RTP")
    p.auto_answer = set(IN_DLG)
    p.reply(p.invite, 200, body=pbx.sdp())
    p.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "the customer is answered by the PBX")
dlg.auto_answer = set(IN_DLG)
dlg.bye()
cust.close()
st, rows = d.http("GET", "/api/v1/cdr?limit=1")
legs = rows[0].get("legs", []) if st == 200 and rows else []
t.ok(any(lg.get("agent") == "102" and lg.get("result") == 488 for lg in legs),
     "the CDR shows 102's branch as 488", legs)

plain = ("v=0\r\no=a 1 1 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n"
         "m=audio %d RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n" % a102.rtp_port)
out = a102.invite_start("sip:+74951112233@127.0.0.1:%d" % d.sip_port, body=plain,
                        auth=("102", "secret102"), expect=(488,))
fin = out.wait_final(5)
t.eq(fin.status if fin else None, 488, "srtp = require: an agent's plain offer gets 488")

KEY2 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"
g729 = offer.replace("RTP/SAVP 8 101", "RTP/SAVP 18").replace(KEY, KEY2)
out = a102.invite_start("sip:+74951112233@127.0.0.1:%d" % d.sip_port, body=g729,
                        auth=("102", "secret102"), expect=(488,))
fin = out.wait_final(5)
t.eq(fin.status if fin else None, 488, "an SRTP offer with no codec in common: 488")
offered_keys.append(KEY2)

# --- 5. keys are never logged ---------------------------------------------------------------------
log = d.log()
t.ok(offered_keys and not [k for k in offered_keys + [KEY] if k in log],
     "none of the %d keys is in the log" % (len(offered_keys) + 1))
t.like(log, "inline:[redacted]", "the SDP of a refused answer is logged with its key redacted")

pbx.close()
a102.close()
d.stop()
crm.stop()
t.done()
