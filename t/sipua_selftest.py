#!/usr/bin/env python3
"""Self-test of t/lib/sipua.py against the real sipcrmd: a trunk UA calls,
sipcrmd answers 183 and forks to the fallback, where a PBX UA answers;
BYE from either side; caller CANCEL while the PBX rings; an agent phone
registers with digest; in-dialog OPTIONS; hold/unhold and UPDATE relayed
across the call with each side's relay SDP, glare 491; a caller requiring
100rel gets a reliable 183 and PRACKs it. Then the UA against itself for
what sipcrmd does not exercise: 407 with SHA-256, retransmissions, glare,
late ACK, auto-answered UPDATE, reliable provisionals."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port  # noqa: E402
from sipua import UA  # noqa: E402

t = Tap()
pbx_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\ngreeting_min = 0ms\n"
             "[trunk:carrier]\nmatch = 127.0.0.1/32\n"
             "[agent:101]\npassword = secret101\n"
             "[crm]\ntype = none\n" % pbx_port)
d.start()
server = ("127.0.0.1", d.sip_port)
DID = "sip:+74951234567@127.0.0.1:%d" % d.sip_port
trunk = UA("127.0.0.1", user="79161234567", server=server)
pbx = UA("127.0.0.1", pbx_port, user="pbx", server=server)


def diag(*uas):
    return "\n\n".join("--- %s:%d ---\n%s" % (u.ip, u.port, u.trace_text(12)) for u in uas)


def answered_call(name):
    """trunk INVITE -> PBX rings and answers; returns (trunk dialog, PBX dialog)."""
    td = trunk.invite_start(DID)
    pd = pbx.wait_invite(5)
    if not t.ok(pd is not None, "%s: the PBX gets the INVITE" % name, diag(trunk, pbx)):
        return td, None
    pd.reply(pd.invite, 180)
    pd.reply(pd.invite, 200, body=pd.sdp())
    t.ok(pd.wait_ack(3) is not None, "%s: the PBX gets the ACK for its 200" % name, diag(pbx))
    fin = td.wait_final(5)
    t.eq(fin and fin.status, 200, "%s: the trunk gets 200" % name)
    return td, pd


# --- 1. trunk call, PBX answers, trunk hangs up ---------------------------------------
start = time.time()
td = trunk.invite_start(DID)
pd = pbx.wait_invite(5)
t.ok(pd is not None, "the PBX gets the INVITE from sipcrmd", diag(trunk, pbx))
early = td.wait_provisional(183, 2)
codes = [p.status for p in td.provisionals]
t.ok(100 in codes, "the trunk gets 100 Trying", codes)
t.ok(early is not None and early.sdp is not None, "the trunk gets 183 with SDP", codes)
t.ok(early is not None and early.to_tag and td.remote_tag == early.to_tag and td.state == "early",
     "the 183 makes an early dialog", td)
esdp = early.sdp if early is not None and early.sdp else {}
t.eq(esdp.get("ip"), "127.0.0.1", "the 183's SDP points at sipcrm's media address")
t.ok(esdp.get("port") and esdp["port"] != trunk.rtp_port, "the 183 offers a relay port", esdp)
xid = None
if pd:
    inv = pd.invite
    xid = inv.get("X-Sipcrm-Call-ID")
    t.ok(xid and len(xid) >= 16, "the PBX's INVITE carries X-Sipcrm-Call-ID", inv.raw)
    t.ok(inv.call_id and inv.call_id != td.call_id, "the two legs have different Call-IDs",
         (inv.call_id, td.call_id))
    t.ok(inv.sdp is not None and inv.sdp["ip"] == "127.0.0.1" and inv.sdp["port"] != trunk.rtp_port,
         "the PBX is offered a relay port, not the trunk's", inv.sdp)
    t.ok(inv.uri.startswith("sip:pbx@127.0.0.1:%d" % pbx_port), "Request-URI is the fallback", inv.uri)
    pd.reply(inv, 180)
    pd.reply(inv, 200, body=pd.sdp())
    t.ok(pd.wait_ack(3) is not None, "the PBX gets the ACK for its 200", diag(pbx))
    t.eq(pd.state, "confirmed", "the PBX's dialog is confirmed")
fin = td.wait_final(5)
t.eq(fin and fin.status, 200, "the trunk gets 200")
t.ok(td.ok and td.state == "confirmed" and td.remote_tag, "the trunk's dialog is confirmed", td)
t.ok(fin is not None and fin.sdp is not None and fin.sdp["ip"] == "127.0.0.1", "the 200 carries SDP",
     fin and fin.raw)
t.ok(180 in [p.status for p in td.provisionals], "the PBX's 180 is relayed to the trunk",
     [p.status for p in td.provisionals])
time.sleep(0.3)
st, calls = d.http("GET", "/api/v1/calls")
t.ok(st == 200 and len(calls) == 1, "one live call in the API", calls)
h = td.request_start("BYE")
bye = pd.wait_request("BYE", 5) if pd else None
t.ok(bye is not None, "the PBX gets the BYE", diag(trunk, pbx))
if bye:
    pd.reply(bye, 200)
r = h.wait_final(5)
t.eq(r and r.status, 200, "the trunk's BYE gets 200")
time.sleep(0.3)
st, rows = d.http("GET", "/api/v1/cdr?limit=1")
t.ok(st == 200 and rows and rows[0].get("call_id") == xid and rows[0].get("disposition") == "answered",
     "the CDR row has the X-Sipcrm-Call-ID and disposition answered", rows)
t.eq(trunk.pending(), [], "nothing left unread at the trunk")

# --- 2. the PBX hangs up -------------------------------------------------------------------
td, pd = answered_call("PBX BYE")
if pd:
    h = pd.request_start("BYE")
    bye = td.wait_request("BYE", 5)
    t.ok(bye is not None, "PBX BYE: the trunk gets the BYE", diag(trunk, pbx))
    if bye:
        td.reply(bye, 200)
        t.eq((bye.to_tag, bye.from_tag), (td.local_tag, td.remote_tag),
             "PBX BYE: the BYE is in the trunk's dialog")
    r = h.wait_final(5)
    t.eq(r and r.status, 200, "PBX BYE: the PBX's BYE gets 200")

# --- 3. caller CANCEL while the PBX rings ----------------------------------------------------
td = trunk.invite_start(DID)
pd = pbx.wait_invite(5)
t.ok(pd is not None, "CANCEL: the PBX gets the INVITE", diag(trunk, pbx))
if pd:
    pd.reply(pd.invite, 180)
    time.sleep(0.3)
    c = td.cancel()
    t.eq(c and c.status, 200, "CANCEL: the trunk's CANCEL gets 200")
    fin = td.wait_final(5)
    t.eq(fin and fin.status, 487, "CANCEL: the trunk's INVITE gets 487")
    pc = pd.wait_request("CANCEL", 5)
    t.ok(pc is not None, "CANCEL: the PBX gets a CANCEL", diag(pbx))
    if pc:
        t.eq(pc.branch, pd.invite.branch, "CANCEL: same branch as the INVITE")
        pd.reply(pc, 200)
        pd.reply(pd.invite, 487)
        a = pd.wait_ack(3)
        t.ok(a is not None and a.branch == pd.invite.branch,
             "CANCEL: the PBX gets the ACK for its 487 (same branch)", diag(pbx))
    time.sleep(0.3)
    st, rows = d.http("GET", "/api/v1/cdr?limit=1")
    t.ok(st == 200 and rows and rows[0].get("disposition") in ("cancelled", "missed"),
         "CANCEL: the CDR says cancelled", rows[:1])

# --- 4. an agent phone registers -------------------------------------------------------------
agent = UA("127.0.0.1", user="101", server=server)
r = agent.register("101", "secret101", expires=300)
t.eq(r and r.status, 200, "agent 101 registers with digest")
t.ok(r is not None and ("127.0.0.1:%d" % agent.port) in (r.get("Contact") or ""),
     "the 200 lists the agent's contact", r and r.raw)
st, agents = d.http("GET", "/api/v1/agents")
t.ok(st == 200 and any(("%d" % agent.port) in str(a.get("contacts")) for a in agents),
     "the API lists the contact", agents)
r = agent.register("101", "secret101", expires=300)
t.eq(r and r.status, 200, "the refresh (same Call-ID, next CSeq) is accepted")
r = agent.register("101", "wrong", expires=300)
t.eq(r and r.status, 401, "a wrong password gets 401 again")
r = agent.register("101", "secret101", expires=0)
t.eq(r and r.status, 200, "unregister")

# --- 5. in-dialog OPTIONS; hold and unhold relayed across the call ---------------------------
td, pd = answered_call("in-dialog")
if pd:
    relay_trunk = td.final.sdp["port"] if td.final and td.final.sdp else None
    relay_pbx = pd.invite.sdp["port"]
    r = td.request("OPTIONS")
    t.eq(r and r.status, 200, "in-dialog OPTIONS from the trunk gets 200")
    r = pd.request("OPTIONS")
    t.eq(r and r.status, 200, "in-dialog OPTIONS from the PBX gets 200")

    def relayed(frm, to, method, mode, answer_mode, name):
        """frm sends an offer; sipcrmd relays it to `to` as a re-INVITE,
        which answers; returns (offer seen by `to`, answer seen by frm)."""
        h = frm.request_start(method, body=frm.sdp(mode=mode))
        ri = to.wait_request("INVITE", 5)
        t.ok(ri is not None and ri.sdp is not None, "%s: relayed as a re-INVITE with SDP" % name,
             diag(trunk, pbx))
        if ri is None:
            return None, h.wait_final(5)
        to.reply(ri, 200, body=to.sdp(mode=answer_mode))
        t.ok(to.wait_ack(3) is not None, "%s: the relayed re-INVITE's 200 is ACKed" % name)
        return ri.sdp, h.wait_final(5)

    offer, ans = relayed(pd, td, "INVITE", "sendonly", "recvonly", "hold from the PBX")
    t.ok(offer and offer["port"] == relay_trunk and offer["mode"] == "sendonly",
         "hold from the PBX: the trunk is offered its relay port, sendonly", offer)
    t.eq(ans and ans.status, 200, "hold from the PBX: the PBX gets 200")
    t.ok(ans is not None and ans.sdp and ans.sdp["port"] == relay_pbx and ans.sdp["mode"] == "recvonly",
         "hold from the PBX: the answer is the PBX side's relay port, recvonly", ans and ans.sdp)
    offer, ans = relayed(pd, td, "INVITE", "sendrecv", "sendrecv", "unhold from the PBX")
    t.ok(ans is not None and ans.status == 200 and ans.sdp and ans.sdp["mode"] == "sendrecv"
         and offer and offer["mode"] == "sendrecv", "unhold from the PBX: sendrecv both ways",
         (offer, ans and ans.sdp))
    offer, ans = relayed(td, pd, "UPDATE", "sendonly", "recvonly", "UPDATE from the trunk")
    t.ok(ans is not None and ans.status == 200 and ans.sdp and ans.sdp["port"] == relay_trunk
         and offer and offer["port"] == relay_pbx,
         "UPDATE from the trunk: 200 with the trunk side's relay port", (offer, ans and ans.sdp))
    # glare: the trunk offers while the PBX's offer is being relayed to it
    h = pd.request_start("INVITE", body=pd.sdp())
    ri = td.wait_request("INVITE", 5)
    r = td.request("INVITE", body=td.sdp())
    t.eq(r and r.status, 491, "glare: the trunk's re-INVITE gets 491 while an offer is relayed to it")
    if ri:
        td.reply(ri, 200, body=td.sdp())
        td.wait_ack(3)
    r = h.wait_final(5)
    t.eq(r and r.status, 200, "glare: the PBX's offer still completes")
    time.sleep(0.2)
    t.eq([m for m in pbx.pending() + trunk.pending() if m.call_id in (pd.call_id, td.call_id)], [],
         "no stray message left for either dialog")
    h = td.request_start("BYE")
    bye = pd.wait_request("BYE", 5)
    t.ok(bye is not None, "in-dialog: the PBX gets the BYE")
    if bye:
        pd.reply(bye, 200)
    r = h.wait_final(5)
    t.eq(r and r.status, 200, "in-dialog: BYE gets 200")

# --- 5b. a caller that requires 100rel: reliable 183, PRACK ------------------------------------
trunk.supported = ["100rel"]
td = trunk.invite_start(DID, headers=[("Require", "100rel")], prack=True)
p = td.wait_provisional(183, 3)
t.ok(p is not None and p.reliable and p.contact_uri, "100rel: the 183 is reliable, with Contact",
     p and p.raw)
pd = pbx.wait_invite(5)
if pd:
    pd.reply(pd.invite, 180)
    pd.reply(pd.invite, 200, body=pd.sdp())
    pd.wait_ack(3)
fin = td.wait_final(5)
pr = td.invite_txn.last().pracks
t.ok(pr and pr[0].wait_final(1) is not None and pr[0].last().final.status == 200,
     "100rel: the PRACK gets 200", diag(trunk))
t.eq(fin and fin.status, 200, "100rel: the call is answered")
trunk.supported = []
if pd and fin and fin.status == 200:
    h = pd.request_start("BYE")
    bye = td.wait_request("BYE", 5)
    if bye:
        td.reply(bye, 200)
    r = h.wait_final(5)
    t.eq(r and r.status, 200, "100rel: BYE from the PBX gets 200")

# --- 6. the UA against itself: what sipcrmd does not exercise yet ----------------------------
a = UA("127.0.0.1", user="alice")
b = UA("127.0.0.1", user="bob")
a.server = (b.ip, b.port)
b.server = (a.ip, a.port)


def answer_challenged():
    """Bob challenges the first INVITE (407, SHA-256), checks the digest of
    the second and answers 200 without reading the ACK for a while."""
    m = b.recv_request("INVITE", 3)
    if m is None:
        return None, None, None
    b.reply(m, 407, headers=[("Proxy-Authenticate",
                              'Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth"')])
    ack = b.recv_request("ACK", 3)
    bd = b.wait_invite(3)
    return m, ack, bd


ad = a.invite_start("sip:bob@%s:%d" % (b.ip, b.port), auth=("101", "pw"))
first, ack, bd = answer_challenged()
t.ok(ack is not None and first is not None and ack.branch == first.branch and ack.to_tag,
     "UA: the 407 is ACKed on the INVITE's branch, with the To tag", diag(a, b))
if bd:
    from sipclient import parse_challenge, digest_response
    ch = parse_challenge(bd.invite.get("Proxy-Authorization") or "")
    want = digest_response("SHA-256", "101", "r", "pw", "INVITE", ch.get("uri", ""), "n1",
                           ch.get("nc", ""), ch.get("cnonce", ""))
    t.ok(ch.get("response") == want and ch.get("algorithm") == "SHA-256",
         "UA: the retry carries a right SHA-256 Proxy-Authorization", bd.invite.raw)
    t.ok(bd.invite.cseq == (2, "INVITE") and bd.invite.call_id == first.call_id
         and bd.invite.from_tag == first.from_tag, "UA: same Call-ID and From tag, CSeq 2",
         bd.invite.raw)
    bd.reply(bd.invite, 180)
    # a retransmitted INVITE is answered with the last response and not queued again
    a._send(ad.invite_txn.last().raw, (b.ip, b.port))
    time.sleep(0.2)
    t.eq(sum(1 for x in b.trace if x[1] == ">" and x[3].startswith("SIP/2.0 180")), 2,
         "UA: a retransmitted INVITE gets the 180 again")
    t.eq(b.pending(), [], "UA: and is not queued twice")
    bd.reply(bd.invite, 200, body=bd.sdp())
    fin = ad.wait_final(3)
    t.eq(fin and fin.status, 200, "UA: the challenged call is answered")
    t.ok(bd.wait_ack(2) is not None, "UA: the 200 is ACKed")
    # glare: both send a re-INVITE, both answer 491
    ha = ad.request_start("INVITE", body=ad.sdp(mode="sendonly"))
    hb = bd.request_start("INVITE", body=bd.sdp(mode="sendonly"))
    ra, rb = bd.wait_request("INVITE", 3), ad.wait_request("INVITE", 3)
    t.ok(ra is not None and rb is not None and (ra.sdp or {}).get("mode") == "sendonly",
         "UA: glare, both re-INVITEs arrive", diag(a, b))
    if ra and rb:
        bd.reply(ra, 491)
        ad.reply(rb, 491)
    fa, fb = ha.wait_final(3), hb.wait_final(3)
    t.eq((fa and fa.status, fb and fb.status), (491, 491), "UA: glare, 491 both ways")
    t.ok(bd.wait_ack(2) is not None and ad.wait_ack(2) is not None, "UA: both 491s are ACKed")
    # late ACK: the 200 to a re-INVITE is retransmitted until the ACK (with a body) comes
    h = ad.request_start("INVITE", body="", ack=False)
    r = bd.wait_request("INVITE", 3)
    if r:
        bd.reply(r, 200, body=bd.sdp(mode="recvonly"))
    fin = h.wait_final(3)
    time.sleep(1.0)
    n = sum(1 for x in a.trace if x[1] == "<" and x[3].startswith("SIP/2.0 200")
            and ("CSeq: %d INVITE" % h.cseq) in x[3])
    t.ok(fin is not None and fin.status == 200 and n >= 2, "UA: an unACKed 200 is retransmitted (%d)" % n)
    ad.ack(body=ad.sdp())
    ack = bd.wait_ack(2)
    t.ok(ack is not None and ack.sdp is not None and ack.cseq[0] == h.cseq,
         "UA: the late ACK carries the answer", ack and ack.raw)
    # UPDATE answered by the receive thread, session timer echoed
    bd.auto_answer.add("UPDATE")
    r = ad.request("UPDATE", headers=[("Session-Expires", "90;refresher=uac"), ("Supported", "timer")],
                   body=ad.sdp())
    t.ok(r is not None and r.status == 200 and r.session_expires == (90, "uac") and r.sdp,
         "UA: auto-answered UPDATE echoes Session-Expires", r and r.raw)
    h = ad.request_start("BYE")
    bye = bd.wait_request("BYE", 2)
    if bye:
        bd.reply(bye, 200)
    r = h.wait_final(2)
    t.ok(r is not None and r.status == 200 and bd.state == "terminated", "UA: BYE answered")

# 100rel: a reliable 183 is retransmitted until its PRACK
a.supported = ["100rel"]
ad = a.invite_start("sip:bob@%s:%d" % (b.ip, b.port))
bd = b.wait_invite(3)
if t.ok(bd is not None and bd.invite.has_option("Supported", "100rel"), "UA: INVITE with Supported: 100rel"):
    rseq = bd.reply_reliable(bd.invite, 183, body=bd.sdp())
    p = ad.wait_provisional(183, 2)
    time.sleep(0.8)
    n = sum(1 for x in a.trace if x[1] == "<" and x[3].startswith("SIP/2.0 183"))
    t.ok(p is not None and p.reliable and n >= 2 and len(ad.provisionals) == 1,
         "UA: the reliable 183 is retransmitted, kept once (%d seen)" % n)
    h = ad.prack_start(p)
    pr = bd.wait_request("PRACK", 2)
    t.eq(pr and pr.get("RAck"), "%d 1 INVITE" % rseq, "UA: PRACK carries RAck")
    if pr:
        bd.reply(pr, 200)
    r = h.wait_final(2)
    t.eq(r and r.status, 200, "UA: PRACK gets 200")
    bd.reply(bd.invite, 486)
    fin = ad.wait_final(2)
    t.eq(fin and fin.status, 486, "UA: 486 after the PRACK")
    t.ok(bd.wait_ack(2) is not None, "UA: 486 ACKed")
r = a.request("OPTIONS", "sip:%s:%d" % (b.ip, b.port))
t.eq(r and r.status, 200, "UA: out-of-dialog OPTIONS answered by the receive thread")
a.close()
b.close()

time.sleep(0.3)
st, calls = d.http("GET", "/api/v1/calls")
t.eq((st, calls), (200, []), "no live call left")
st, rows = d.http("GET", "/api/v1/cdr?limit=10")
t.eq(len(rows) if st == 200 else None, 5, "five CDR rows")
trunk.close()
pbx.close()
agent.close()
t.eq(d.stop(), 0, "SIGTERM exits 0")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "runtime error:" not in log, "no sanitizer report",
     log[-3000:])
t.diag("took %.1f s" % (time.time() - start))
t.done()
