#!/usr/bin/env python3
"""Agents' own calls: agent to agent (internal) with ringing/busy status,
hold and unhold relayed with the SDP rewritten, glare (491), BYE from the
callee; agent to the trunk (outbound) with the trunk's caller id, digest
credentials offered when the provider challenges, and the provider's early
media relayed; no path to the trunk without authentication."""
import hashlib
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port
from sipua import UA, parse_challenge

t = Tap()
trunk_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\n" % free_port() +
             "[trunk:provider]\nmatch = 127.0.0.1/32\nuri = sip:127.0.0.1:%d\n"
             "caller_id = +74950000000\nusername = trunkuser\npassword = trunkpass\n"
             % trunk_port +
             "[agent:101]\npassword = secret101\nname = Ivan Petrov\n"
             "[agent:102]\npassword = secret102\nname = Olga\n")
d.start()
server = ("127.0.0.1", d.sip_port)

a101 = UA(ip="127.0.0.2", user="101", server=server)
a102 = UA(ip="127.0.0.3", user="102", server=server)
trunk = UA(ip="127.0.0.1", port=trunk_port, user="provider", server=server)
r1 = a101.register("101", "secret101")
r2 = a102.register("102", "secret102")
t.ok(r1 and r1.status == 200 and r2 and r2.status == 200, "agents 101 and 102 registered",
     (r1, r2))


def status(ext):
    st, body = d.http("GET", "/api/v1/agents")
    for a in body if st == 200 else []:
        if a.get("extension") == ext or a.get("ext") == ext:
            return a.get("status")
    return None


def sdp_port_ip(m):
    s = m.sdp if m is not None else None
    return (s or {}).get("ip"), (s or {}).get("port"), (s or {}).get("mode")


# --- 1. internal call: 101 calls 102 --------------------------------------------------
dlg = a101.invite_start("sip:102@sipcrm.test", auth=("101", "secret101"),
                        body=None)
callee = a102.wait_invite(timeout=5)
t.ok(callee is not None, "102's phone rings for an internal call") or t.diag(d.log()[-3000:])
if callee is None:
    t.bail("no INVITE at 102")
inv = callee.invite
t.like(inv.get("From") or "", "101", "From carries the calling extension")
t.like(inv.get("From") or "", "Ivan Petrov", "and the caller's name")
t.ok(inv.get("X-Sipcrm-Call-ID"), "X-Sipcrm-Call-ID on the agent's leg")
t.ok(inv.call_id != dlg.call_id, "the two legs have their own Call-IDs")
first_ip, first_port, _ = sdp_port_ip(inv)
t.eq(first_ip, "127.0.0.1", "the offer to 102 points at the relay")
callee.reply(inv, 180)
time.sleep(0.3)
t.eq(status("102"), "ringing", "102 is ringing while its phone rings")
t.eq(status("101"), "busy", "101 is busy while its call rings out")
callee.reply(inv, 200, body=callee.sdp())
t.ok(callee.wait_ack(3) is not None, "the ACK reaches 102")
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "101 gets 200")
caller_ip, caller_port, _ = sdp_port_ip(fin)
t.ok(caller_port and caller_port != first_port, "101 talks to its own relay port",
     (caller_port, first_port))
time.sleep(0.2)
t.eq(status("102"), "busy", "102 is busy in the call")
st, calls = d.http("GET", "/api/v1/calls")
t.ok(st == 200 and len(calls) == 1 and calls[0].get("direction") == "internal",
     "the call is listed as internal", calls)

# --- 2. hold and unhold, relayed -------------------------------------------------------
h = dlg.request_start("INVITE", body=dlg.sdp(mode="sendonly"))
re_inv = callee.wait_request("INVITE", timeout=5)
t.ok(re_inv is not None, "101's hold re-INVITE is relayed to 102")
ip, port, mode = sdp_port_ip(re_inv)
t.eq(mode, "sendonly", "the relayed offer keeps the direction (sendonly)")
t.eq((ip, port), (first_ip, first_port), "and points at 102's relay port")
t.ok(re_inv is not None and re_inv.call_id == inv.call_id, "inside 102's own dialog")
callee.reply(re_inv, 200, body=callee.sdp(mode="recvonly"))
callee.wait_ack(3)
r = h.wait_final(5)
t.eq(r.status if r else None, 200, "101's hold re-INVITE gets 200")
ip, port, mode = sdp_port_ip(r)
t.eq(mode, "recvonly", "the answer carries 102's direction (recvonly)")
t.eq(port, caller_port, "and 101's relay port")

h = dlg.request_start("INVITE", body=dlg.sdp(mode="sendrecv"))
re_inv = callee.wait_request("INVITE", timeout=5)
t.eq(sdp_port_ip(re_inv)[2], "sendrecv", "unhold is relayed")
callee.reply(re_inv, 200, body=callee.sdp())
callee.wait_ack(3)
r = h.wait_final(5)
t.eq(sdp_port_ip(r)[2], "sendrecv", "unhold answered sendrecv")

# a refresh with the same SDP version goes no further
h = dlg.request_start("INVITE", body=dlg.sdp(version=dlg.sdp_version))
r = h.wait_final(5)
t.eq(r.status if r else None, 200, "a re-INVITE with an unchanged SDP version is answered")
t.ok(callee.wait_request("INVITE", timeout=0.7) is None, "and is not relayed")

# UPDATE from the callee, relayed as an offer to the caller
u = callee.request_start("UPDATE", body=callee.sdp(mode="sendonly"))
up = dlg.wait_request(timeout=5)
t.ok(up is not None and up.method in ("INVITE", "UPDATE"),
     "102's UPDATE offer reaches 101", up)
t.eq(sdp_port_ip(up)[2], "sendonly", "with its direction")
dlg.reply(up, 200, body=dlg.sdp(mode="recvonly"))
if up is not None and up.method == "INVITE":
    dlg.wait_ack(3)
r = u.wait_final(5)
t.eq(r.status if r else None, 200, "102's UPDATE gets 200")
t.eq(sdp_port_ip(r)[2], "recvonly", "with 101's direction")

# --- 3. glare ----------------------------------------------------------------------------
g1 = dlg.request_start("INVITE", body=dlg.sdp())
relayed = callee.wait_request("INVITE", timeout=5)
g2 = callee.request_start("INVITE", body=callee.sdp())
r2 = g2.wait_final(5)
t.eq(r2.status if r2 else None, 491, "102's re-INVITE while one is under way gets 491")
# 102 as a real phone answers the crossing re-INVITE 491 too
callee.reply(relayed, 491)
callee.wait_ack(2)
r1 = g1.wait_final(5)
t.eq(r1.status if r1 else None, 491, "102's 491 is relayed to 101")
time.sleep(0.3)
g1 = dlg.request_start("INVITE", body=dlg.sdp())
relayed = callee.wait_request("INVITE", timeout=5)
callee.reply(relayed, 200, body=callee.sdp())
callee.wait_ack(2)
r1 = g1.wait_final(5)
t.eq(r1.status if r1 else None, 200, "after the glare a new offer goes through")

# --- 4. BYE from the callee ---------------------------------------------------------------
rb = callee.request_start("BYE")
b = dlg.wait_request("BYE", timeout=5)
t.ok(b is not None, "102's BYE reaches 101")
if b is not None:
    dlg.reply(b, 200)
rr = rb.wait_final(5)
t.eq(rr.status if rr else None, 200, "102's BYE is answered")
time.sleep(0.3)
t.eq(status("101"), "idle", "101 is idle after the call")
st, cdr = d.http("GET", "/api/v1/cdr?limit=5")
row = cdr[0] if st == 200 and cdr else {}
t.eq(row.get("direction"), "internal", "CDR: direction internal")
t.eq(row.get("disposition"), "answered", "CDR: answered")
t.eq(row.get("from"), "101", "CDR: from 101")
t.eq(row.get("last_agent"), "102", "CDR: last agent 102")

# --- 4b. an offerless INVITE: our offer in the 200, the answer in the ACK ------------------
dlg = a102.invite_start("sip:101@sipcrm.test", auth=("102", "secret102"), body="", ack=False)
callee = a101.wait_invite(timeout=5)
t.ok(callee is not None and callee.invite.sdp is not None,
     "an offerless INVITE still reaches 101 with an offer from the relay")
if callee is not None:
    callee.reply(callee.invite, 200, body=callee.sdp())
    callee.wait_ack(3)
fin = dlg.wait_final(5)
t.ok(fin is not None and fin.status == 200 and fin.sdp is not None,
     "the late-offer caller gets our offer in the 200", fin)
dlg.ack(body=dlg.sdp())
time.sleep(0.3)         # the relay learns the new peer from the ACK
if callee is not None and callee.invite.sdp:
    relay = (callee.invite.sdp["ip"], callee.invite.sdp["port"])
    before = a102.rtp["packets"]
    a101.send_rtp(relay, count=10)
    time.sleep(0.5)
    t.ok(a102.rtp["packets"] - before >= 5,
         "media flows to the address the ACK's answer gave", a102.rtp)
rb = dlg.request_start("BYE")
if callee is not None:
    b = callee.wait_request("BYE", timeout=5)
    if b is not None:
        callee.reply(b, 200)
rb.wait_final(3)

# --- 5. outbound through the trunk, with digest towards the provider ------------------------
dlg = a101.invite_start("sip:+74951112233@sipcrm.test", auth=("101", "secret101"))
p1 = trunk.wait_invite(timeout=5)
t.ok(p1 is not None, "an agent's call to a number goes to the trunk") or t.diag(d.log()[-3000:])
if p1 is None:
    t.bail("no INVITE at the trunk")
t.like(p1.invite.uri, "+74951112233@127.0.0.1", "Request-URI: the number at the trunk's host")
t.like(p1.invite.get("From") or "", "+74950000000", "From: the trunk's caller_id")
t.ok(p1.invite.get("Authorization") is None, "no credentials before a challenge")
nonce = "n0nce%d" % int(time.time())
p1.reply(p1.invite, 401, headers=[("WWW-Authenticate",
                                   'Digest realm="provider", nonce="%s", qop="auth", '
                                   'algorithm=MD5, opaque="op1"' % nonce)])
p2 = trunk.wait_invite(timeout=5)
t.ok(p2 is not None, "after 401 the INVITE is sent again")
auth = parse_challenge(p2.invite.get("Authorization") or "") if p2 else {}
t.eq(auth.get("username"), "trunkuser", "with the trunk's username")
t.eq(auth.get("opaque"), "op1", "the opaque value echoed")
t.ok(p2 is not None and p2.invite.call_id == p1.invite.call_id and
     p2.invite.cseq[0] > p1.invite.cseq[0], "same Call-ID, higher CSeq")
ha1 = hashlib.md5(b"trunkuser:provider:trunkpass").hexdigest()
ha2 = hashlib.md5(("INVITE:%s" % auth.get("uri", "")).encode()).hexdigest()
want = hashlib.md5(("%s:%s:%s:%s:auth:%s" % (ha1, nonce, auth.get("nc"), auth.get("cnonce"),
                                             ha2)).encode()).hexdigest()
t.eq(auth.get("response"), want, "the digest response is right for the trunk's password")
p2.reply(p2.invite, 183, body=p2.sdp())
prov = dlg.wait_provisional(183, timeout=5)
t.ok(prov is not None and prov.sdp and prov.sdp.get("ip") == "127.0.0.1",
     "the provider's early media reaches the agent through the relay", prov)
p2.reply(p2.invite, 200, body=p2.sdp())
p2.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "the outbound call is answered")
rb = dlg.request_start("BYE")
b = p2.wait_request("BYE", timeout=5)
t.ok(b is not None, "the agent's BYE reaches the provider")
if b is not None:
    p2.reply(b, 200)
rb.wait_final(3)
time.sleep(0.3)
st, cdr = d.http("GET", "/api/v1/cdr?limit=5")
row = cdr[0] if st == 200 and cdr else {}
t.eq(row.get("direction"), "outbound", "CDR: direction outbound")
t.eq(row.get("to"), "+74951112233", "CDR: the number called")

# --- 6. nobody reaches the trunk without credentials ------------------------------------------
stranger = UA(ip="127.0.0.5", user="x", server=server)
x = stranger.invite("sip:+74951112233@sipcrm.test", timeout=4)
t.eq(x.final.status if x.final else None, 407, "an unauthenticated INVITE is challenged")
x = stranger.invite("sip:+74951112233@sipcrm.test", auth=("101", "wrong"), timeout=4)
t.ok(x.final is not None and x.final.status in (403, 407),
     "wrong credentials never get through", x.final)
t.ok(trunk.wait_invite(timeout=1) is None, "and the trunk never saw an INVITE")

for ua in (a101, a102, trunk, stranger):
    ua.close()
t.eq(d.stop(), 0, "sipcrmd exits cleanly")
t.ok("ERROR: AddressSanitizer" not in d.log(), "no ASan report")
t.done()
