#!/usr/bin/env python3
"""Toll fraud (issue 10, CONTRACT.md §6 "Nobody reaches the trunk without
authentication"): 1,000 and more attempts to reach international numbers
through sipcrmd, of which none may reach the trunk's UAS.

The trunk is at 127.0.0.50 (its [trunk] match and uri). The attempts:
  * INVITEs to international numbers in every dialling form, from
    unauthenticated sources that are not the trunk, over UDP and TCP;
  * the same with forged identities: From, P-Asserted-Identity,
    Remote-Party-ID naming agents, and made-up Digest credentials;
  * the trunk's address spoofed in Via, Contact, Record-Route and From
    only (the packets come from elsewhere);
  * tricks inside an existing dialog (a real trunk call answered by the
    PBX): REFER and a re-INVITE to an international number from the
    caller's side, REFER and re-INVITE forged into the PBX leg's dialog
    from another address, and a REFER outside any dialog.
Each must be refused (401/403/407/481/4xx) or dropped; the fake trunk
counts every request it gets. Controls: an authenticated agent's call to
the same number does reach the trunk, so the count can fail.

The contract has no dial-plan or per-agent call cap keys, so an agent's
own calls are not limited here (see the final note of issue 10).
"""
import os
import random
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port  # noqa: E402
from fake_pbx import FakePbx  # noqa: E402
from sipua import UA  # noqa: E402

t = Tap()
TRUNK_IP = "127.0.0.50"
trunk = FakePbx(ip=TRUNK_IP, busy_after=0.2)
trunk.start()
pbx_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf().replace("domain = sipcrm.test\n",
                                   "domain = sipcrm.test\nban_failures = 100000\n") +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nagent_max_calls = 2\n" % pbx_port +
             "[trunk:provider]\nmatch = %s/32\nuri = sip:%s:%d\n" % (TRUNK_IP, TRUNK_IP, trunk.port) +
             "[agent:101]\npassword = secret101\ndial = any\n"
             "[agent:102]\npassword = secret102\n[agent:103]\npassword = secret103\n")
d.start()
SIP = ("127.0.0.1", d.sip_port)

NUMBERS = ["+442079460000", "00442079460000", "011442079460000", "9011442079460000",
           "810442079460000", "442079460000", "+8821234567", "+2693200000", "0088213",
           "+74951112233", "84951112233", "*99#442079460000", "%2B442079460000"]
SDP = ("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\n")


def invite_text(src_ip, src_port, ruri, extra=(), via_host=None, transport="UDP",
                frm=None, contact=None):
    cid = "%x@fraud" % random.getrandbits(64)
    branch = "z9hG4bK-%x" % random.getrandbits(48)
    body = SDP.format(ip=src_ip)
    hs = ["Via: SIP/2.0/%s %s;branch=%s;rport" % (transport, via_host or "%s:%d" % (src_ip, src_port),
                                                   branch),
          "Max-Forwards: 70",
          "From: %s;tag=%x" % (frm or "<sip:attacker@%s>" % src_ip, random.getrandbits(32)),
          "To: <%s>" % ruri,
          "Call-ID: %s" % cid,
          "CSeq: 1 INVITE",
          "Contact: %s" % (contact or "<sip:a@%s:%d>" % (src_ip, src_port)),
          "User-Agent: Grandstream GXP2170 1.0.11.3"] + list(extra) + [
          "Content-Type: application/sdp",
          "Content-Length: %d" % len(body)]
    return "INVITE %s SIP/2.0\r\n%s\r\n\r\n%s" % (ruri, "\r\n".join(hs), body), cid, branch


def ack_for(invite, resp):
    """ACK for a non-2xx final (same branch, the response's To)."""
    head = invite.split("\r\n\r\n", 1)[0].split("\r\n")
    to = next((ln for ln in resp.split("\r\n") if ln.lower().startswith(("to:", "t:"))), None)
    keep = [ln for ln in head[1:] if ln.split(":", 1)[0].lower() in ("via", "from", "call-id")]
    ruri = head[0].split(" ")[1]
    cseq = "CSeq: 1 ACK"
    return "ACK %s SIP/2.0\r\n%s\r\n%s\r\nMax-Forwards: 70\r\n%s\r\nContent-Length: 0\r\n\r\n" % (
        ruri, "\r\n".join(keep), to or "To: <%s>" % ruri, cseq)


class Attacker:
    """One UDP socket on a source address of its own."""

    def __init__(self, ip):
        self.ip = ip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.port = self.sock.getsockname()[1]

    def invite(self, ruri, timeout=2.0, **kw):
        """Sends an INVITE; returns its final status (None: no answer)."""
        msg, cid, branch = invite_text(self.ip, self.port, ruri, **kw)
        self.sock.sendto(msg.encode(), SIP)
        end = time.time() + timeout
        while time.time() < end:
            self.sock.settimeout(max(0.01, end - time.time()))
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                break
            text = data.decode(errors="replace")
            if cid not in text or not text.startswith("SIP/2.0 "):
                continue
            st = int(text.split(" ", 2)[1])
            if st >= 200:
                if st >= 300:
                    self.sock.sendto(ack_for(msg, text).encode(), SIP)
                return st
        return None

    def send(self, text):
        self.sock.sendto(text.encode(), SIP)

    def close(self):
        self.sock.close()


def ruri_for(n, host="127.0.0.1"):
    return "sip:%s@%s:%d" % (n, host, d.sip_port)


results = {}


def attempt(kind, status):
    results.setdefault(kind, {})
    results[kind][status] = results[kind].get(status, 0) + 1


REFUSED = {401, 403, 404, 405, 407, 481, 484, 488, None}

# --- 1. plain INVITEs from ten non-trunk sources ------------------------------------------------
for i in range(480):
    a = Attacker("127.0.0.%d" % (60 + i % 10))
    n = NUMBERS[i % len(NUMBERS)]
    host = ["", TRUNK_IP, "sipcrm.test", "127.0.0.1;user=phone"][i % 4]
    ruri = "sip:%s@%s" % (n, host) if i % 4 else ruri_for(n)
    attempt("unauthenticated", a.invite(ruri))
    a.close()

# --- 2. forged identities ----------------------------------------------------------------------
forgeries = [
    lambda: dict(frm="<sip:101@sipcrm.test>"),
    lambda: dict(frm='"Ivan" <sip:101@127.0.0.1>'),
    lambda: dict(frm="<sip:101@sipcrm.test>",
                 extra=["P-Asserted-Identity: <sip:101@sipcrm.test>"]),
    lambda: dict(extra=["Remote-Party-ID: <sip:102@sipcrm.test>;party=calling;privacy=off;screen=yes"]),
    lambda: dict(frm="<sip:102@sipcrm.test>",
                 extra=['Proxy-Authorization: Digest username="102", realm="sipcrm.test", '
                        'nonce="AAAAAADHbf4xIAzvT22RG5tdB3Pdw9tRf7qm8IK0", uri="sip:x", '
                        'response="00000000000000000000000000000000", algorithm=MD5, '
                        'cnonce="c", qop=auth, nc=00000001']),
    lambda: dict(frm="<sip:101@sipcrm.test>",
                 extra=['Authorization: Digest username="101", realm="sipcrm.test", '
                        'nonce="x", uri="sip:x", response="y"']),
    lambda: dict(frm="<sip:101@sipcrm.test>", extra=["Proxy-Authorization: Basic MTAxOnNlY3JldDEwMQ=="]),
]
for i in range(210):
    a = Attacker("127.0.0.%d" % (70 + i % 10))
    attempt("forged identity", a.invite(ruri_for(NUMBERS[i % len(NUMBERS)]),
                                        **forgeries[i % len(forgeries)]()))
    a.close()

# --- 3. the trunk's address spoofed where it is not the source ----------------------------------
spoofs = [
    lambda a: dict(via_host="%s:5060" % TRUNK_IP),
    lambda a: dict(via_host="%s:%d" % (TRUNK_IP, trunk.port), contact="<sip:t@%s:5060>" % TRUNK_IP),
    lambda a: dict(contact="<sip:t@%s>" % TRUNK_IP,
                   extra=["Record-Route: <sip:%s;lr>" % TRUNK_IP]),
    lambda a: dict(frm="<sip:+74950000000@%s>" % TRUNK_IP,
                   extra=["Via: SIP/2.0/UDP %s:5060;branch=z9hG4bK-under" % TRUNK_IP]),
    lambda a: dict(via_host="%s:5060;received=%s" % (TRUNK_IP, TRUNK_IP),
                   extra=["X-Forwarded-For: %s" % TRUNK_IP]),
]
for i in range(200):
    a = Attacker("127.0.0.%d" % (80 + i % 10))
    kw = spoofs[i % len(spoofs)](a)
    # answers to a spoofed Via go to the Via (or nowhere): do not wait long
    attempt("trunk address spoofed", a.invite(ruri_for(NUMBERS[i % len(NUMBERS)]),
                                              timeout=0.3 if "via_host" in kw else 2.0, **kw))
    a.close()

# --- 4. over TCP -------------------------------------------------------------------------------
for i in range(100):
    ip = "127.0.0.%d" % (90 + i % 5)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((ip, 0))
    s.settimeout(3)
    st = None
    try:
        s.connect(SIP)
        msg, cid, _ = invite_text(ip, s.getsockname()[1], ruri_for(NUMBERS[i % len(NUMBERS)]),
                                  transport="TCP",
                                  frm="<sip:101@sipcrm.test>" if i % 2 else None)
        s.sendall(msg.encode())
        buf = b""
        end = time.time() + 3
        while time.time() < end and st is None:
            chunk = s.recv(65535)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").split("\r\n"):
                if line.startswith("SIP/2.0 ") and int(line.split(" ")[1]) >= 200:
                    st = int(line.split(" ")[1])
                    s.sendall(ack_for(msg, buf.decode(errors="replace")).encode())
                    break
    except OSError:
        pass
    finally:
        s.close()
    attempt("over TCP", st)

# --- 5. inside an existing dialog ----------------------------------------------------------------
pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=SIP)
caller = UA(ip=TRUNK_IP, user="+79161234567", server=SIP)
dlg = caller.invite_start(ruri_for("+74951234567"))
leg = pbx.wait_invite(timeout=5)
t.ok(leg is not None, "a trunk call reaches the PBX (the dialog to play tricks in)") \
    or t.diag(d.log()[-3000:])
if leg is None:
    t.bail("no call to play in")
leg.auto_answer = {"INVITE", "UPDATE", "OPTIONS"}
leg.reply(leg.invite, 200, body=leg.sdp())
leg.wait_ack(3)
fin = dlg.wait_final(5)
t.eq(fin.status if fin else None, 200, "and is answered")

n_dialog = 0
for n in NUMBERS[:5]:
    r = dlg.request("REFER", headers=[("Refer-To", "<sip:%s@%s>" % (n, TRUNK_IP)),
                                      ("Referred-By", "<sip:101@sipcrm.test>")])
    attempt("REFER from the caller", r.status if r else None)
    r = dlg.request("REFER", headers=[("Refer-To", "<tel:%s>" % n)])
    attempt("REFER from the caller", r.status if r else None)
    n_dialog += 2
# a re-INVITE whose Request-URI names a number: a re-INVITE only changes media
r = dlg.request("INVITE", body=dlg.sdp())
attempt("re-INVITE from the caller", 200 if r and r.status == 200 else r and r.status)
n_dialog += 1


def forged(method, extra, src_ip, to_leg=leg):
    """A request in the PBX leg's dialog, sent by someone else: the leg's
    identifiers are what an on-path attacker sees."""
    a = Attacker(src_ip)
    ruri = to_leg.remote_target or "sip:127.0.0.1:%d" % d.sip_port
    branch = "z9hG4bK-f%x" % random.getrandbits(40)
    body = SDP.format(ip=src_ip) if method == "INVITE" else ""
    hs = ["Via: SIP/2.0/UDP %s:%d;branch=%s;rport" % (src_ip, a.port, branch),
          "Max-Forwards: 70",
          "From: %s;tag=%s" % (to_leg.local_uri, to_leg.local_tag),
          "To: %s;tag=%s" % (to_leg.remote_uri, to_leg.remote_tag),
          "Call-ID: %s" % to_leg.call_id,
          "CSeq: %d %s" % (to_leg.local_cseq + 50 + random.randrange(1000), method),
          "Contact: <sip:pbx@%s:%d>" % (src_ip, a.port)] + extra
    if body:
        hs.append("Content-Type: application/sdp")
    hs.append("Content-Length: %d" % len(body))
    a.send("%s %s SIP/2.0\r\n%s\r\n\r\n%s" % (method, ruri, "\r\n".join(hs), body))
    st = None
    end = time.time() + 2
    while time.time() < end:
        a.sock.settimeout(max(0.01, end - time.time()))
        try:
            data, _ = a.sock.recvfrom(65535)
        except socket.timeout:
            break
        text = data.decode(errors="replace")
        if text.startswith("SIP/2.0 ") and int(text.split(" ")[1]) >= 200:
            st = int(text.split(" ")[1])
            break
    a.close()
    return st


for i, n in enumerate(NUMBERS[:5]):
    attempt("REFER forged into the PBX leg",
            forged("REFER", ["Refer-To: <sip:%s@%s>" % (n, TRUNK_IP)], "127.0.0.%d" % (100 + i)))
    n_dialog += 1
attempt("re-INVITE forged into the PBX leg", forged("INVITE", [], "127.0.0.105"))
n_dialog += 1
for src in ("127.0.0.106", TRUNK_IP):
    a = Attacker(src)
    msg, cid, _ = invite_text(src, a.port, ruri_for("+442079460000"))
    head = msg.split("\r\n\r\n", 1)[0].replace("INVITE", "REFER", 1)
    head = head.replace("CSeq: 1 INVITE", "CSeq: 1 REFER").replace(
        "Content-Type: application/sdp", "Refer-To: <sip:+442079460000@%s>" % TRUNK_IP)
    head = head.rsplit("\r\n", 1)[0] + "\r\nContent-Length: 0"
    a.send(head + "\r\n\r\n")
    st = None
    a.sock.settimeout(2)
    try:
        text = a.sock.recvfrom(65535)[0].decode(errors="replace")
        st = int(text.split(" ")[1])
    except (socket.timeout, ValueError, IndexError):
        pass
    a.close()
    attempt("REFER outside a dialog", st)
time.sleep(1.5)

total = sum(sum(v.values()) for v in results.values())
t.diag("attempts by kind and answer: %s" % results)
t.ok(total >= 1000, "%d attempts made" % total)
t.eq(trunk.counts, {}, "none of %d attempts reached the trunk (requests it got by method)" % total)
accepted = {k: {s: c for s, c in v.items() if s not in REFUSED}
            for k, v in results.items() if not k.startswith("re-INVITE")}
accepted = {k: v for k, v in accepted.items() if v}
t.eq(accepted, {}, "every out-of-dialog attempt and every REFER was refused or dropped")
st, calls = d.http("GET", "/api/v1/calls")
t.eq(len(calls) if st == 200 else None, 1, "only the real call is up")
t.ok(leg.state != "terminated", "and the PBX leg is still up")
r = dlg.bye()
t.eq(r.status if r else None, 200, "the caller hangs up")

# --- controls ------------------------------------------------------------------------------------
phone = UA(ip="127.0.0.1", user="101", server=SIP)
x = phone.invite(ruri_for("+442079460000"), auth=("101", "secret101"), timeout=5, expect=(200, 486))
t.eq(trunk.counts.get("INVITE", 0), 1,
     "control: an authenticated agent's call to the same number does reach the trunk")
# the dial plan: [routing] agent_dial = domestic (the default), 101 has any
p102 = UA(ip="127.0.0.1", user="102", server=SIP)
x = p102.invite(ruri_for("+442079460000"), auth=("102", "secret102"), timeout=5,
                expect=(403,))
t.eq((x.final.status, x.final.reason) if x.final else None, (403, "Number Not Allowed"),
     "an agent without international in its dial plan: 403 Number Not Allowed")
time.sleep(0.3)
t.eq(trunk.counts.get("INVITE", 0), 1, "and nothing more reaches the trunk")
x = p102.invite(ruri_for("+74951112233"), auth=("102", "secret102"), timeout=5,
                expect=(200, 486))
t.eq(trunk.counts.get("INVITE", 0), 2, "a domestic number: it reaches the trunk")
# the cap: [routing] agent_max_calls = 2
p103 = UA(ip="127.0.0.1", user="103", server=SIP)
r = p103.register("103", "secret103")
t.ok(r and r.status == 200, "agent 103 registered")
ringing = [p102.invite_start(ruri_for("103"), auth=("102", "secret102")) for _ in range(2)]
legs = [p103.wait_invite(timeout=5) for _ in range(2)]
t.ok(all(legs), "agent 102 places two calls (to 103, ringing)")
x = p102.invite(ruri_for("103"), auth=("102", "secret102"), timeout=5, expect=(403,))
t.eq((x.final.status, x.final.reason) if x.final else None, (403, "Too Many Calls"),
     "a third at once: 403 Too Many Calls")
for dl in ringing:
    dl.cancel(timeout=3)
for lg in legs:
    if lg:
        lg.reply(lg.invite, 487)
time.sleep(0.5)
x = p102.invite(ruri_for("+74951112233"), auth=("102", "secret102"), timeout=5,
                expect=(200, 486))
t.eq(trunk.counts.get("INVITE", 0), 3, "once those end it may call again")
p102.close()
p103.close()
a = Attacker(TRUNK_IP)
st = a.invite(ruri_for("+74951234567"), timeout=3)
a.close()
t.ok(pbx.wait_invite(timeout=3) is not None,
     "control: an INVITE really from the trunk's address is an inbound call")
st, text = d.http("GET", "/metrics", auth=False, raw=True)
t.diag("\n".join(x for x in text.splitlines() if "auth" in x or "dropped" in x))

t.eq(d.stop(), 0, "SIGTERM exits 0")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "runtime error:" not in log,
     "no sanitizer report", log[-3000:])
for u in (pbx, caller, phone):
    u.close()
trunk.stop()
t.done()
