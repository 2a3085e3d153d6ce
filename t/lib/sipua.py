"""A small SIP user agent over UDP for black-box tests (Python 3 stdlib).

One UA is one UDP socket (plus one RTP socket whose port goes in its SDP).
It plays a caller, a trunk, a PBX or an agent's phone: it keeps dialog
state (tags, CSeq, remote target, route set), retransmits over UDP as RFC
3261 §17 asks, ACKs finals, answers digest challenges, and lets a test
drive re-INVITE, UPDATE, PRACK, CANCEL and BYE by hand.

A background thread receives everything:
  * responses go to the client transaction that sent the request (matched
    by the top Via branch and the CSeq method); ACK for a non-2xx final of
    an INVITE is sent there and then (same branch), ACK for a 2xx when the
    dialog asks for it (the default), and re-sent when the 2xx is
    retransmitted; a 401/407 is answered once when the request carried
    auth=(user, password);
  * requests are queued for recv()/wait_invite()/Dialog.wait_request();
    a retransmission of a request already seen is not queued again: it is
    answered with the last response sent for it, if any;
  * out-of-dialog OPTIONS are answered 200 unless UA.auto_options is False;
  * an ACK stops the retransmission of our final response to that INVITE,
    a PRACK the retransmission of the reliable provisional it acknowledges.

Nothing here raises on a protocol failure: blocking calls return None on a
timeout, and the test checks what came back.

Beyond the obvious (see each docstring):
  * invite(body=None) offers dialog.sdp(); body="" sends no SDP (late
    offer: invite(..., ack=False), then dialog.ack(body=answer));
    Dialog.request(body=None) sends no body; dialog.ok is final in expect;
    invite(dialog=d) re-sends an initial INVITE in d's Call-ID and From tag
    with the next CSeq (after 422 or 491); prack=True PRACKs reliable
    provisionals from the receive thread (handles in txn.pracks).
  * dialog.sdp() keeps one o= session id per dialog, version +1 per call;
    UA.sdp() does the same per UA. dialog.rtp_port follows the SDP we send.
  * dialog.wait_provisional(status), dialog.answer_cancel(cancel),
    dialog.auto_answer = {"UPDATE", "INVITE", "OPTIONS", ...}: in-dialog
    requests answered 200 by the receive thread (with dialog.answer_body or
    the current SDP, Session-Expires echoed), listed in dialog.auto_answered.
  * Headers are "Name: value" strings or (name, value) pairs; one naming a
    default header (From, To, Contact, Supported, ...) replaces it, a value
    None removes it.
  * UA.supported = ["100rel", "timer"] adds Supported to INVITE/UPDATE and
    their 2xx; UA.request(method, uri) sends out-of-dialog requests,
    UA.reply(msg, status) answers them; UA.trace_text() for diagnostics;
    UA.rtp counts RTP arriving at the UA's RTP port, UA.send_rtp() sends.
  * A server dialog's own CSeq starts at 101.

    ua = UA(server=("127.0.0.1", sip_port))
    d = ua.invite("sip:+74951234567@127.0.0.1:%d" % sip_port)
    if d.final and d.final.status == 200:
        d.bye()
"""
import os
import random
import re
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sipclient import parse_challenge, digest_response  # noqa: E402

T1 = 0.5
T2 = 4.0

COMPACT = {
    "i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
    "l": "content-length", "c": "content-type", "k": "supported",
    "x": "session-expires", "e": "content-encoding", "s": "subject",
    "o": "event", "r": "refer-to", "b": "referred-by", "u": "allow-events",
    "a": "accept-contact", "j": "reject-contact", "d": "request-disposition",
    "y": "identity",
}

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 302: "Moved Temporarily",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 415: "Unsupported Media Type", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 603: "Decline",
}

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO"


def _canon(name):
    n = name.strip().lower()
    return COMPACT.get(n, n)


def _rand(bits=48):
    return "%x" % random.getrandbits(bits)


def split_commas(value):
    """Splits a header value on commas outside quotes and <...>."""
    out, cur, q, ang = [], [], False, 0
    for ch in value:
        if ch == '"':
            q = not q
        elif not q and ch == "<":
            ang += 1
        elif not q and ch == ">":
            ang = max(0, ang - 1)
        if ch == "," and not q and not ang:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def header_params(value):
    """The ;params of a name-addr header (From, To, Contact, Via, ...) as a
    dict (lower-case names; a flag gets ""), ignoring params inside <...>."""
    rest = value.rsplit(">", 1)[1] if ">" in value else value.split(";", 1)[1] if ";" in value else ""
    out = {}
    for p in rest.split(";"):
        p = p.strip()
        if not p:
            continue
        k, _, v = p.partition("=")
        out[k.strip().lower()] = v.strip().strip('"')
    return out


def strip_tag(value):
    """A From/To value without its ;tag= parameter."""
    if ">" in value:
        head, tail = value.rsplit(">", 1)
        tail = re.sub(r";\s*tag\s*=\s*[^;\s]*", "", tail, flags=re.I)
        return head + ">" + tail
    return re.sub(r";\s*tag\s*=\s*[^;\s]*", "", value, flags=re.I)


def addr_uri(value):
    """The URI of a name-addr or addr-spec ('"X" <sip:a@b>;p' -> 'sip:a@b')."""
    if value is None:
        return None
    m = re.search(r"<([^>]*)>", value)
    if m:
        return m.group(1).strip()
    return value.split(";", 1)[0].strip()


def uri_hostport(uri, default_port=5060):
    """(host, port) to send to for a SIP URI (maddr honoured)."""
    u = re.sub(r"^sips?:", "", uri.strip(), flags=re.I)
    params = ""
    if ";" in u:
        u, params = u.split(";", 1)
    u = u.split("?", 1)[0]
    if "@" in u:
        u = u.rsplit("@", 1)[1]
    m = re.search(r"(?:^|;)maddr=([^;]+)", params)
    if u.startswith("["):
        host, _, rest = u[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    else:
        host, _, p = u.partition(":")
        port = int(p) if p.isdigit() else default_port
    if m:
        host = m.group(1)
    return host, port


class Msg:
    """A parsed SIP request or response."""

    def __init__(self, raw, src=None):
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        self.raw = raw
        self.src = src
        self.time = time.time()
        head, sep, body = raw.partition("\r\n\r\n")
        if not sep:
            head, sep, body = raw.partition("\n\n")
        lines = re.split(r"\r?\n", head)
        first = lines[0] if lines else ""
        self.is_request = not first.startswith("SIP/")
        self.method = self.uri = None
        self.status = 0
        self.reason = ""
        if self.is_request:
            parts = first.split(" ")
            self.method = parts[0].upper() if parts else ""
            self.uri = parts[1] if len(parts) > 1 else ""
        else:
            parts = first.split(" ", 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.reason = parts[2] if len(parts) > 2 else ""
        self.headers = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.headers:
                k, v = self.headers[-1]
                self.headers[-1] = (k, v + " " + line.strip())
            elif ":" in line:
                k, v = line.split(":", 1)
                self.headers.append((k.strip(), v.strip()))
        cl = self.get("Content-Length")
        if cl is not None and cl.strip().isdigit():
            b = body.encode("utf-8", errors="replace")[:int(cl)]
            body = b.decode("utf-8", errors="replace")
        self.body = body

    # headers
    def all(self, name):
        n = _canon(name)
        return [v for k, v in self.headers if _canon(k) == n]

    def all_split(self, name):
        out = []
        for v in self.all(name):
            out += split_commas(v)
        return out

    def get(self, name):
        vals = self.all(name)
        return vals[0] if vals else None

    def has_option(self, name, option):
        """True when a Supported/Require-like header lists option."""
        return option.lower() in [x.lower() for x in self.all_split(name)]

    @property
    def cseq(self):
        v = self.get("CSeq") or ""
        p = v.split()
        if len(p) >= 2 and p[0].isdigit():
            return int(p[0]), p[1].upper()
        return 0, ""

    @property
    def call_id(self):
        return self.get("Call-ID")

    @property
    def from_tag(self):
        v = self.get("From")
        return header_params(v).get("tag") if v else None

    @property
    def to_tag(self):
        v = self.get("To")
        return header_params(v).get("tag") if v else None

    @property
    def branch(self):
        vias = self.all_split("Via")
        return header_params(vias[0]).get("branch") if vias else None

    @property
    def contact_uri(self):
        c = self.all_split("Contact")
        return addr_uri(c[0]) if c else None

    @property
    def rseq(self):
        v = self.get("RSeq")
        return int(v) if v and v.strip().isdigit() else None

    @property
    def reliable(self):
        """A reliable provisional (RFC 3262)."""
        return (not self.is_request and 100 < self.status < 200 and self.rseq is not None
                and self.has_option("Require", "100rel"))

    @property
    def session_expires(self):
        """(seconds, refresher or None) from Session-Expires, or None."""
        v = self.get("Session-Expires")
        if not v:
            return None
        num = v.split(";", 1)[0].strip()
        if not num.isdigit():
            return None
        return int(num), header_params(";" + v.split(";", 1)[1]).get("refresher") if ";" in v else None

    @property
    def sdp(self):
        ct = (self.get("Content-Type") or "").lower()
        if not self.body.strip() or (ct and "sdp" not in ct):
            return None
        return parse_sdp(self.body)

    def __repr__(self):
        if self.is_request:
            return "<%s %s cseq=%s>" % (self.method, self.uri, self.get("CSeq"))
        return "<%d %s cseq=%s>" % (self.status, self.reason, self.get("CSeq"))


def parse_sdp(text):
    """The first audio stream of an SDP body: ip, port, pts, mode, o= id and
    version, plus the raw media-level attributes."""
    out = {"ip": None, "port": None, "pts": [], "mode": "sendrecv", "o_version": None,
           "o_id": None, "attrs": [], "raw": text}
    sess_mode = None
    med_mode = None
    in_media = False
    seen_audio = False
    for line in re.split(r"\r?\n", text):
        if len(line) < 2 or line[1] != "=":
            continue
        k, v = line[0], line[2:].strip()
        if k == "o":
            p = v.split()
            if len(p) >= 3:
                out["o_id"] = int(p[1]) if p[1].isdigit() else p[1]
                out["o_version"] = int(p[2]) if p[2].isdigit() else p[2]
        elif k == "m":
            if seen_audio:
                break
            in_media = True
            p = v.split()
            if p and p[0] == "audio":
                seen_audio = True
                out["port"] = int(p[1].split("/")[0]) if len(p) > 1 and p[1].split("/")[0].isdigit() else None
                out["proto"] = p[2] if len(p) > 2 else None
                out["pts"] = [int(x) for x in p[3:] if x.isdigit()]
        elif k == "c":
            p = v.split()
            if len(p) >= 3 and (in_media or out["ip"] is None):
                out["ip"] = p[2].split("/")[0]
        elif k == "a":
            if v in ("sendrecv", "sendonly", "recvonly", "inactive"):
                if in_media:
                    med_mode = v
                else:
                    sess_mode = v
            if in_media:
                out["attrs"].append(v)
    out["mode"] = med_mode or sess_mode or "sendrecv"
    if out["ip"] is None and out["port"] is None:
        return None
    return out


def _hdr_list(headers):
    """headers given as "Name: value" strings or (name, value) tuples."""
    out = []
    for h in headers or ():
        if isinstance(h, (tuple, list)):
            out.append((h[0], h[1]))
        else:
            k, _, v = h.partition(":")
            out.append((k.strip(), v.strip()))
    return out


def _merge(defaults, extra):
    """Extra headers replace the defaults of the same name (the first one
    in place, in the same position); a value None removes the default;
    other extra headers are appended."""
    out = list(defaults)
    replaced = set()
    for k, v in _hdr_list(extra):
        n = _canon(k)
        idx = [i for i, (dk, _) in enumerate(out) if _canon(dk) == n]
        if idx and n not in replaced and any(_canon(dk) == n for dk, _ in defaults):
            replaced.add(n)
            for i in reversed(idx[1:]):
                del out[i]
            if v is None:
                del out[idx[0]]
            else:
                out[idx[0]] = (k, v)
        elif v is not None:
            out.append((k, v))
    return out


def _build(first, headers, body):
    body = body or ""
    hs = [(k, v) for k, v in headers if _canon(k) != "content-length"]
    if body and not any(_canon(k) == "content-type" for k, _ in hs):
        hs.append(("Content-Type", "application/sdp" if body.lstrip().startswith("v=") else "text/plain"))
    hs.append(("Content-Length", str(len(body.encode()))))
    return "%s\r\n%s\r\n\r\n%s" % (first, "\r\n".join("%s: %s" % kv for kv in hs), body)


class ClientTxn:
    """One request we sent and what came back for it. wait_final() follows
    an automatic retry after 401/407."""

    def __init__(self, ua, dialog, method, uri, branch, cseq, dest):
        self.ua = ua
        self.dialog = dialog
        self.method = method
        self.uri = uri
        self.branch = branch
        self.cseq = cseq
        self.dest = dest
        self.raw = None
        self.headers = []        # as sent, for the ACK of a non-2xx
        self.responses = []
        self.provisionals = []
        self.final = None
        self.retry = None        # the re-sent request after a challenge
        self.auth = None
        self.builder = None      # callable(extra_headers, cseq) -> ClientTxn, for the auth retry
        self.auto_ack = True
        self.acked = False
        self.ack_raw = None
        self.ack_dest = None
        self.rseqs = set()
        self.auto_prack = False
        self.pracks = []

    def last(self):
        t = self
        while t.retry is not None:
            t = t.retry
        return t

    def wait_final(self, timeout=5.0):
        end = time.time() + timeout
        with self.ua._cond:
            while True:
                t = self.last()
                if t.final is not None and t.retry is None:
                    break
                left = end - time.time()
                if left <= 0:
                    break
                self.ua._cond.wait(min(left, 0.2))
            return self.last().final

    @property
    def all_provisionals(self):
        out = []
        t = self
        while t is not None:
            out += t.provisionals
            t = t.retry
        return out


class _NoTxn:
    """Stands in for a request that could not be sent."""
    final = None
    responses = provisionals = pracks = ()

    def wait_final(self, timeout=0):
        return None

    def last(self):
        return self


class Dialog:
    """A dialog (or the attempt at one): client side from UA.invite, server
    side from UA.wait_invite."""

    def __init__(self, ua, server=False):
        self.ua = ua
        self.server = server
        self.call_id = None
        self.local_tag = _rand(32)
        self.remote_tag = None
        self.local_uri = None     # From (client) / To (server) value without tag
        self.remote_uri = None
        self.local_cseq = 0
        self.remote_cseq = None
        self.remote_target = None
        self.route_set = []
        self.dest = None          # override where in-dialog requests go
        self.state = "init"       # init, early, confirmed, terminated
        self.final = None
        self.provisionals = []
        self.invite = None        # server side: the initial INVITE
        self.invite_txn = None    # client side: the initial INVITE transaction
        self.request_uri = None
        self.expect = (200,)
        self.rtp_port = ua.rtp_port
        self.sess_id = random.randint(1000, 2 ** 31)
        self.sdp_version = 0
        self.sdp_mode = None
        self.rseq = 0
        self.auto_ack = True
        self.auto_answer = set()  # in-dialog methods answered 200 by the receive thread
        self.auto_answered = []   # the requests answered that way
        self.auto_answer_headers = []   # extra headers for those answers
        self.answer_body = None   # SDP for auto-answered INVITE/UPDATE with an offer
        self.last_invite_cseq = None   # server side: CSeq of the last INVITE answered finally
        self._pending_ack = None  # client: (cseq, txn) whose 2xx is not ACKed yet
        self._auto_acks = set()   # CSeqs of auto-answered re-INVITEs: their ACK is not queued

    # ---- SDP -------------------------------------------------------------------
    def sdp(self, port=None, mode="sendrecv", pts=(8, 0), version=None, ip=None):
        """An SDP body for this dialog: o= session id fixed, version +1 per
        call unless given (give the current one to repeat it)."""
        if version is None:
            self.sdp_version += 1
        else:
            self.sdp_version = version
        self.sdp_mode = mode
        return self.ua._sdp(port if port is not None else self.rtp_port, mode, pts,
                            self.sdp_version, ip, self.sess_id)

    def _auto_sdp(self, offer):
        """Our SDP for an auto-answered offer: the direction mirrored, the
        version unchanged unless the direction changes."""
        mode = {"sendonly": "recvonly", "recvonly": "sendonly",
                "inactive": "inactive"}.get((offer or {}).get("mode"), "sendrecv")
        same = self.sdp_version and mode == self.sdp_mode
        return self.sdp(mode=mode, version=self.sdp_version if same else None)

    def _note_body(self, body):
        """Remembers the RTP port of an SDP we send (dialog.rtp_port)."""
        if body and body.lstrip().startswith("v="):
            sdp = parse_sdp(body)
            if sdp and sdp.get("port") is not None:
                self.rtp_port = sdp["port"]

    @property
    def ok(self):
        return self.final is not None and self.final.status in self.expect

    # ---- request building --------------------------------------------------------
    def _next_hop(self):
        if self.dest:
            return self.dest
        if self.route_set:
            return uri_hostport(addr_uri(self.route_set[0]))
        if self.remote_target:
            return uri_hostport(self.remote_target)
        return self.ua.server

    def _in_dialog_headers(self, method, cseq, branch):
        ua = self.ua
        hs = [("Via", "SIP/2.0/UDP %s:%d;branch=%s;rport" % (ua.ip, ua.port, branch)),
              ("Max-Forwards", "70")]
        for r in self.route_set:
            hs.append(("Route", r))
        hs += [("From", "%s;tag=%s" % (self.local_uri, self.local_tag)),
               ("To", "%s;tag=%s" % (self.remote_uri, self.remote_tag) if self.remote_tag
                else self.remote_uri),
               ("Call-ID", self.call_id),
               ("CSeq", "%d %s" % (cseq, method))]
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER", "NOTIFY"):
            hs.append(("Contact", "<%s>" % ua.uri))
        if method in ("INVITE", "UPDATE"):
            hs.append(("Allow", ALLOW))
            if ua.supported:
                hs.append(("Supported", ", ".join(ua.supported)))
        if ua.user_agent:
            hs.append(("User-Agent", ua.user_agent))
        return hs

    def request_start(self, method, headers=(), body=None, auth=None, ack=True, cseq=None):
        """Sends an in-dialog request and returns its transaction handle
        (handle.wait_final(timeout) -> final Msg or None). body None sends
        none. A 2xx to a re-INVITE is ACKed unless ack=False (then
        dialog.ack(body))."""
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise ValueError("use dialog.ack() or dialog.cancel() for %s" % method)
        with self.ua._cond:
            if cseq is None:
                self.local_cseq += 1
                cseq = self.local_cseq
            uri = self.remote_target or self.request_uri
            return self._send_txn(method, uri, headers, body, auth, ack, cseq,
                                  self._next_hop())

    def _send_txn(self, method, uri, headers, body, auth, ack, cseq, dest, extra_auth=(), start=True):
        ua = self.ua
        branch = "z9hG4bK-" + _rand()
        hs = _merge(self._in_dialog_headers(method, cseq, branch), list(headers) + list(extra_auth))
        txn = ClientTxn(ua, self, method, uri, branch, cseq, dest)
        self._note_body(body)
        txn.headers = hs
        txn.raw = _build("%s %s SIP/2.0" % (method, uri), hs, body)
        txn.auth = auth
        txn.auto_ack = ack

        def retry(auth_hdr):
            with ua._cond:
                self.local_cseq += 1
                return self._send_txn(method, uri, headers, body, None, ack,
                                      self.local_cseq, dest, extra_auth=[auth_hdr], start=False)
        txn.builder = retry
        if start:
            ua._start_txn(txn)
        return txn

    def request(self, method, headers=(), body=None, timeout=5.0, auth=None, ack=True):
        """An in-dialog request; returns the final response or None."""
        return self.request_start(method, headers, body, auth=auth, ack=ack).wait_final(timeout)

    def bye(self, timeout=5.0, headers=()):
        r = self.request("BYE", headers=headers, timeout=timeout)
        if r is not None and r.status < 300:
            self.state = "terminated"
        return r

    def prack_start(self, provisional, headers=(), body=None):
        if provisional is None:
            provisional = next((p for p in self.provisionals if p.reliable), None)
            if provisional is None:
                return _NoTxn()
        rack = "%d %d %s" % (provisional.rseq or 0, provisional.cseq[0], provisional.cseq[1])
        with self.ua._cond:
            if provisional.to_tag and self.remote_tag is None:
                self._learn_remote(provisional, early=True)
        return self.request_start("PRACK", headers=[("RAck", rack)] + list(headers), body=body)

    def prack(self, provisional, headers=(), body=None, timeout=5.0):
        """PRACK for a reliable provisional (RAck: RSeq CSeq-num method); None
        PRACKs the first reliable provisional received."""
        return self.prack_start(provisional, headers, body).wait_final(timeout)

    def ack(self, body=None, headers=()):
        """ACK for the last 2xx to an INVITE that was not ACKed yet (invite
        or request with ack=False), with an optional body (late offer)."""
        with self.ua._cond:
            if self._pending_ack is None:
                return None
            cseq, txn = self._pending_ack
            self._pending_ack = None
            self._send_ack_2xx(txn, body, headers)
            return True

    def _send_ack_2xx(self, txn, body=None, headers=()):
        ua = self.ua
        branch = "z9hG4bK-" + _rand()
        hs = self._in_dialog_headers("ACK", txn.cseq, branch)
        hs = [(k, v) for k, v in hs if _canon(k) not in ("allow", "supported")]
        hs = _merge(hs, headers)
        raw = _build("ACK %s SIP/2.0" % (self.remote_target or txn.uri), hs, body)
        self._note_body(body)
        txn.ack_raw = raw
        txn.ack_dest = self._next_hop()
        txn.acked = True
        ua._send(raw, txn.ack_dest)

    def cancel(self, timeout=5.0, headers=()):
        """CANCEL for the pending initial INVITE (its branch, Request-URI
        and CSeq number); returns the response to the CANCEL."""
        with self.ua._cond:
            inv = self.invite_txn.last() if self.invite_txn else None
            if inv is None:
                return None
            hs = []
            for k, v in inv.headers:
                n = _canon(k)
                if n in ("via", "route", "from", "to", "call-id", "max-forwards"):
                    hs.append((k, v))
                elif n == "cseq":
                    hs.append((k, "%d CANCEL" % inv.cseq))
            if self.ua.user_agent:
                hs.append(("User-Agent", self.ua.user_agent))
            hs = _merge(hs, headers)
            txn = ClientTxn(self.ua, self, "CANCEL", inv.uri, inv.branch, inv.cseq, inv.dest)
            txn.headers = hs
            txn.raw = _build("CANCEL %s SIP/2.0" % inv.uri, hs, None)
            self.ua._start_txn(txn)
        return txn.wait_final(timeout)

    def wait_final(self, timeout=5.0):
        """Client side: the final response to the initial INVITE (after an
        automatic auth retry), or None."""
        if self.invite_txn is None:
            return None
        self.invite_txn.wait_final(timeout)
        with self.ua._cond:
            self.final = self.invite_txn.last().final
            return self.final

    def wait_provisional(self, status=None, timeout=2.0):
        """Client side: the first provisional to the initial INVITE with that
        status (any above 100 when None), waiting for it if need be."""
        end = time.time() + timeout
        with self.ua._cond:
            while True:
                for p in self.provisionals:
                    if (status is None and p.status > 100) or p.status == status:
                        return p
                left = end - time.time()
                if left <= 0 or (self.final is not None and status is not None):
                    return None
                self.ua._cond.wait(min(left, 0.2))

    # ---- server side --------------------------------------------------------------
    def reply(self, msg, status, reason=None, headers=(), body=None):
        """Answers a request of this dialog (or its initial INVITE). A final
        answer to an INVITE is retransmitted until its ACK arrives (or 64*T1)."""
        self._note_body(body)
        return self.ua._reply(msg, status, reason, headers, body, dialog=self)

    def reply_reliable(self, msg, status, reason=None, headers=(), body=None):
        """A reliable provisional (Require: 100rel, RSeq), retransmitted until
        its PRACK arrives; returns the RSeq (None when msg is None)."""
        if msg is None:
            return None
        with self.ua._cond:
            if self.rseq == 0:
                self.rseq = random.randint(1, 1000)
            else:
                self.rseq += 1
            rseq = self.rseq
        hs = [("Require", "100rel"), ("RSeq", str(rseq))] + _hdr_list(headers)
        self._note_body(body)
        self.ua._reply(msg, status, reason, hs, body, dialog=self, reliable=rseq)
        return rseq

    def answer_cancel(self, cancel, timeout=2.0):
        """200 to a CANCEL, 487 to the INVITE, and waits for the ACK."""
        self.reply(cancel, 200)
        self.reply(self.invite, 487)
        return self.wait_ack(timeout)

    def wait_ack(self, timeout=2.0, cseq=None):
        """The ACK for our final answer to the last INVITE (or to CSeq cseq)."""
        want = cseq if cseq is not None else self.last_invite_cseq

        def match(m):
            return (m.is_request and m.method == "ACK" and m.call_id == self.call_id
                    and (want is None or m.cseq[0] == want))
        return self.ua.recv(timeout, match)

    def is_mine(self, m):
        """A request sent within this dialog (or for its initial INVITE)."""
        if not m.is_request or m.call_id != self.call_id:
            return False
        if self.remote_tag is not None and m.from_tag != self.remote_tag:
            return False
        return m.to_tag is None or m.to_tag == self.local_tag

    def wait_request(self, method=None, timeout=5.0):
        """The next request of this dialog (ACKs only when method is ACK)."""
        method = method.upper() if method else None

        def match(m):
            if not self.is_mine(m):
                return False
            if method is None:
                return m.method != "ACK"
            return m.method == method
        return self.ua.recv(timeout, match)

    # ---- state ------------------------------------------------------------------
    def _learn_remote(self, resp, early=False):
        """Client side: takes the remote tag, target and route set from a
        2xx (or a provisional with a tag)."""
        if self.state == "confirmed" and early:
            return
        if resp.to_tag:
            self.remote_tag = resp.to_tag
        c = resp.contact_uri
        if c:
            self.remote_target = c
        if self.state != "confirmed":
            self.route_set = list(reversed(resp.all_split("Record-Route")))
        self.state = "early" if early else "confirmed"

    def __repr__(self):
        return "<Dialog %s %s local=%s remote=%s>" % (self.call_id, self.state,
                                                       self.local_tag, self.remote_tag)


class UA:
    def __init__(self, ip="127.0.0.1", port=0, user="ua", domain="sipcrm.test",
                 server=("127.0.0.1", 5060), rtp_port=0, user_agent="sipua-test"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((ip, port))
        self.ip, self.port = self.sock.getsockname()
        self.rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp_sock.bind((ip, rtp_port))
        self.rtp_port = self.rtp_sock.getsockname()[1]
        self.user = user
        self.domain = domain
        self.server = tuple(server)
        self.uri = "sip:%s@%s:%d" % (user, self.ip, self.port)
        self.user_agent = user_agent
        self.supported = []       # e.g. ["100rel", "timer"] for INVITE/UPDATE
        self.auto_options = True  # answer out-of-dialog OPTIONS 200
        self.t1 = T1
        self.t2 = T2
        self.trace = []           # (time, "<" or ">", (ip, port), raw)
        self.debug = bool(os.environ.get("SIPUA_DEBUG"))
        # RTP received: count, last source and payload type, packets per
        # payload type, and the last 50 packets themselves
        self.rtp = {"packets": 0, "src": None, "pt": None, "last": None, "pts": {},
                    "raw": []}
        self._sess_id = random.randint(1000, 2 ** 31)
        self._sdp_version = 0
        self._cond = threading.Condition(threading.RLock())
        self._queue = []
        self._txns = {}           # (branch, method) -> ClientTxn
        self._seen = set()        # (branch, method, cseq) of requests received
        self._resp_cache = {}     # (branch, method, cseq) -> (raw, addr)
        self._jobs = {}           # key -> [next, interval, cap, end, raw, addr]
        self._dialogs = []
        self._regs = {}
        self._oo_tags = {}        # To tags of answers outside any dialog
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="sipua-%d" % self.port)
        self._thread.start()

    # ---- lifetime -----------------------------------------------------------------
    def close(self):
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._thread.join(2)
        self.sock.close()
        self.rtp_sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def trace_text(self, last=20):
        """The last messages sent and received, for a TAP diagnostic."""
        out = []
        for t, d, addr, raw in self.trace[-last:]:
            out.append("%s %.3f %s:%d\n%s" % (d, t, addr[0], addr[1], raw.split("\r\n\r\n")[0]))
        return "\n\n".join(out)

    # ---- SDP and RTP ---------------------------------------------------------------
    def _sdp(self, port, mode, pts, version, ip, sess_id):
        ip = ip or self.ip
        lines = ["v=0", "o=sipua %d %d IN IP4 %s" % (sess_id, version, ip), "s=-",
                 "c=IN IP4 %s" % ip, "t=0 0",
                 "m=audio %d RTP/AVP %s" % (port, " ".join(str(p) for p in pts))]
        names = {0: "PCMU/8000", 8: "PCMA/8000", 9: "G722/8000", 18: "G729/8000",
                 101: "telephone-event/8000"}
        for p in pts:
            if p in names:
                lines.append("a=rtpmap:%d %s" % (p, names[p]))
        if 101 in pts:
            lines.append("a=fmtp:101 0-16")
        lines.append("a=%s" % mode)
        return "\r\n".join(lines) + "\r\n"

    def sdp(self, port=None, mode="sendrecv", pts=(8, 0), version=None, ip=None):
        """An SDP body; the RTP port defaults to this UA's RTP socket; the
        o= version goes up by one per call unless given."""
        if version is None:
            self._sdp_version += 1
            version = self._sdp_version
        return self._sdp(port if port is not None else self.rtp_port, mode, pts, version, ip,
                         self._sess_id)

    def send_rtp(self, addr, count=1, pt=8, ssrc=0x1234, seq=1, ts=0, payload=b"\xd5" * 160,
                 interval=0.0):
        """Sends count RTP packets from the RTP socket to addr."""
        for i in range(count):
            hdr = struct.pack("!BBHII", 0x80, pt & 0x7f, (seq + i) & 0xffff,
                              (ts + 160 * i) & 0xffffffff, ssrc)
            self.rtp_sock.sendto(hdr + payload, addr)
            if interval:
                time.sleep(interval)

    # ---- transport --------------------------------------------------------------------
    def _send(self, raw, addr):
        if self._closed:
            return
        self.trace.append((time.time(), ">", tuple(addr), raw))
        if self.debug:
            sys.stderr.write("# >>> %s:%d\n%s\n" % (addr[0], addr[1], raw))
        try:
            self.sock.sendto(raw.encode(), tuple(addr))
        except OSError:
            pass

    def _job(self, key, raw, addr, interval, cap, total):
        now = time.time()
        self._jobs[key] = [now + interval, interval, cap, now + total, raw, addr]

    def _run(self):
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.time()
                nxt = min([j[0] for j in self._jobs.values()] + [now + 0.1])
            try:
                r, _, _ = select.select([self.sock, self.rtp_sock], [], [], max(0.0, nxt - now))
            except (OSError, ValueError):
                return
            for s in r:
                try:
                    data, addr = s.recvfrom(65535)
                except OSError:
                    continue
                if s is self.rtp_sock:
                    with self._cond:
                        self.rtp["packets"] += 1
                        self.rtp["src"] = addr
                        self.rtp["pt"] = data[1] & 0x7f if len(data) > 1 else None
                        self.rtp["last"] = time.time()
                        self.rtp["pts"][self.rtp["pt"]] = self.rtp["pts"].get(self.rtp["pt"], 0) + 1
                        self.rtp["raw"] = self.rtp["raw"][-49:] + [data]
                    continue
                if not data.strip():
                    continue      # CRLF keepalive
                try:
                    m = Msg(data, addr)
                except Exception:
                    continue
                with self._cond:
                    self.trace.append((time.time(), "<", addr, m.raw))
                    if self.debug:
                        sys.stderr.write("# <<< %s:%d\n%s\n" % (addr[0], addr[1], m.raw))
                    try:
                        if m.is_request:
                            self._on_request(m, addr)
                        else:
                            self._on_response(m, addr)
                    except Exception as e:  # keep receiving whatever a test sends
                        sys.stderr.write("# sipua: %r while handling %r\n" % (e, m))
                    self._cond.notify_all()
            with self._cond:
                now = time.time()
                for key, j in list(self._jobs.items()):
                    if j[3] <= now:
                        del self._jobs[key]
                    elif j[0] <= now:
                        self._send(j[4], j[5])
                        j[1] = min(j[1] * 2, j[2]) if j[2] else j[1] * 2
                        j[0] = now + j[1]

    # ---- client transactions -----------------------------------------------------------
    def _start_txn(self, txn):
        self._txns[(txn.branch, txn.method)] = txn
        self._send(txn.raw, txn.dest)
        if txn.method == "INVITE":
            self._job(("txn", txn.branch, txn.method), txn.raw, txn.dest, self.t1, None, 64 * self.t1)
        else:
            self._job(("txn", txn.branch, txn.method), txn.raw, txn.dest, self.t1, self.t2, 64 * self.t1)

    def _auth_header(self, resp, auth, method, uri):
        user, password = auth
        hname = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        chals = resp.all(hname)
        if not chals:
            return None
        ch = parse_challenge(chals[0])
        alg = ch.get("algorithm", "MD5")
        qop = None
        if "qop" in ch:
            qops = [q.strip() for q in ch["qop"].split(",")]
            qop = "auth" if "auth" in qops else None
        cnonce = _rand(32)
        nc = "00000001"
        resp_hash = digest_response(alg, user, ch.get("realm", ""), password, method, uri,
                                    ch.get("nonce", ""), nc, cnonce, qop)
        parts = ['username="%s"' % user, 'realm="%s"' % ch.get("realm", ""),
                 'nonce="%s"' % ch.get("nonce", ""), 'uri="%s"' % uri,
                 'response="%s"' % resp_hash]
        if "algorithm" in ch:
            parts.append("algorithm=%s" % alg)
        if "opaque" in ch:
            parts.append('opaque="%s"' % ch["opaque"])
        if qop:
            parts += ['cnonce="%s"' % cnonce, "qop=%s" % qop, "nc=%s" % nc]
        name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        return (name, "Digest " + ", ".join(parts))

    def _on_response(self, m, addr):
        cseq, method = m.cseq
        txn = self._txns.get((m.branch, method))
        if txn is None:
            self._queue.append(m)
            return
        txn.responses.append(m)
        d = txn.dialog
        initial = d is not None and d.invite_txn is not None and txn is d.invite_txn.last()
        if method == "INVITE":
            self._jobs.pop(("txn", txn.branch, "INVITE"), None)
            if m.status < 200:
                if m.reliable:
                    if m.rseq in txn.rseqs:
                        return         # retransmission of a reliable provisional
                    txn.rseqs.add(m.rseq)
                if txn.final is not None:
                    return
                txn.provisionals.append(m)
                if initial:
                    d.provisionals.append(m)
                    if m.to_tag and m.status > 100 and d.state in ("init", "early"):
                        d._learn_remote(m, early=True)
                if m.reliable and d is not None and (txn.auto_prack or
                                                     (d.invite_txn and d.invite_txn.auto_prack)):
                    txn.pracks.append(d.prack_start(m))
            elif m.status < 300:
                if txn.final is None:
                    txn.final = m
                    if d is not None:
                        if initial:
                            d.final = m
                            d._learn_remote(m)
                            d.local_cseq = max(d.local_cseq, txn.cseq)
                        elif m.contact_uri:
                            d.remote_target = m.contact_uri
                        if txn.auto_ack:
                            d._send_ack_2xx(txn)
                        else:
                            d._pending_ack = (txn.cseq, txn)
                elif txn.acked and txn.ack_raw:
                    self._send(txn.ack_raw, txn.ack_dest)   # 2xx retransmitted
            else:
                self._ack_non2xx(txn, m)
                if txn.final is None:
                    txn.final = m
                    self._maybe_retry(txn, m)
                    if initial and txn.retry is None:
                        d.final = m
                        d.state = "terminated" if d.state != "confirmed" else d.state
        else:
            if m.status < 200:
                txn.provisionals.append(m)
                return
            self._jobs.pop(("txn", txn.branch, method), None)
            if txn.final is None:
                txn.final = m
                self._maybe_retry(txn, m)
                if method == "SUBSCRIBE" and initial and txn.retry is None:
                    d.final = m
                    if m.status < 300:
                        d._learn_remote(m)
                        d.local_cseq = max(d.local_cseq, txn.cseq)

    def _maybe_retry(self, txn, m):
        if m.status not in (401, 407) or not txn.auth or txn.builder is None:
            return
        h = self._auth_header(m, txn.auth, txn.method, txn.uri)
        if h is None:
            return
        txn.retry = txn.builder(h)   # last() follows to the new transaction
        self._start_txn(txn.retry)

    def _ack_non2xx(self, txn, resp):
        """ACK for a non-2xx final answer of an INVITE: same branch, same
        Request-URI and Route, To from the response (RFC 3261 §17.1.1.3)."""
        hs = []
        for k, v in txn.headers:
            n = _canon(k)
            if n in ("via", "route", "from", "call-id", "max-forwards"):
                hs.append((k, v))
            elif n == "to":
                hs.append((k, resp.get("To")))
            elif n == "cseq":
                hs.append((k, "%d ACK" % txn.cseq))
        self._send(_build("ACK %s SIP/2.0" % txn.uri, hs, None), txn.dest)

    # ---- server side ----------------------------------------------------------------------
    def _req_key(self, m):
        b = m.branch
        if not b or not b.startswith("z9hG4bK"):
            b = "%s|%s|%s" % (m.call_id, m.from_tag, b)
        return (b, m.method, m.cseq[0])

    def _find_dialog(self, m):
        for d in self._dialogs:
            if d.call_id == m.call_id and m.to_tag == d.local_tag and \
                    (d.remote_tag is None or m.from_tag == d.remote_tag):
                return d
        return None

    def _on_request(self, m, addr):
        key = self._req_key(m)
        if key in self._seen:
            cached = self._resp_cache.get(key)
            if cached is not None:
                self._send(*cached)
            return
        self._seen.add(key)
        if m.method == "ACK":
            self._jobs.pop(("final", m.call_id, m.cseq[0]), None)
            d = self._find_dialog(m)
            if d is not None and m.cseq[0] in d._auto_acks:
                return
        elif m.method == "PRACK":
            rack = (m.get("RAck") or "").split()
            if rack and rack[0].isdigit():
                self._jobs.pop(("rel", m.call_id, int(rack[0])), None)
        d = self._find_dialog(m) if m.to_tag else None
        if d is not None:
            d.remote_cseq = m.cseq[0]
            if m.method in d.auto_answer:
                body = None
                hs = []
                if m.method in ("INVITE", "UPDATE"):
                    if m.sdp is not None or m.method == "INVITE":
                        body = d.answer_body or d._auto_sdp(m.sdp)
                    se = m.get("Session-Expires")
                    if se:
                        if "refresher" not in se.lower():
                            se += ";refresher=uac"
                        hs.append(("Session-Expires", se))
                        if m.has_option("Supported", "timer"):
                            hs.append(("Require", "timer"))
                self._reply(m, 200, None, hs + list(d.auto_answer_headers), body, dialog=d)
                d.auto_answered.append(m)
                if m.method == "INVITE":
                    d._auto_acks.add(m.cseq[0])
                return
        if m.method == "OPTIONS" and not m.to_tag and self.auto_options:
            self._reply(m, 200, None, [("Allow", ALLOW), ("Accept", "application/sdp")], None)
            return
        self._queue.append(m)

    def reply(self, msg, status, reason=None, headers=(), body=None, to_tag=None):
        """Answers a request outside any dialog."""
        return self._reply(msg, status, reason, headers, body, to_tag=to_tag)

    def _reply(self, msg, status, reason, headers, body, dialog=None, reliable=None, to_tag=None):
        if msg is None:
            return None           # the request never came: the test already failed on that
        reason = reason or REASONS.get(status, "Unknown")
        hs = []
        first_via = True
        for k, v in msg.headers:
            n = _canon(k)
            if n == "via":
                if first_via and msg.src:
                    vias = split_commas(v)
                    top = vias[0]
                    p = header_params(top)
                    if "received" not in p:
                        top += ";received=%s" % msg.src[0]
                    if "rport" in p and not p["rport"]:
                        top = re.sub(r";rport(?=;|$)", ";rport=%d" % msg.src[1], top)
                    v = ", ".join([top] + vias[1:])
                    first_via = False
                hs.append(("Via", v))
            elif n in ("from", "call-id", "cseq"):
                hs.append((k, v))
            elif n == "to":
                tag = dialog.local_tag if dialog is not None else to_tag
                if tag is None and status > 100:
                    # one tag per request outside a dialog, whatever is answered
                    tag = self._oo_tags.setdefault(self._req_key(msg), _rand(32))
                if header_params(v).get("tag") is None and tag and status > 100:
                    v = "%s;tag=%s" % (v, tag)
                hs.append((k, v))
            elif n == "record-route" and msg.method == "INVITE" and 100 < status < 300 \
                    and not msg.to_tag:
                hs.append((k, v))
        if msg.method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER") and 100 < status < 300:
            hs.append(("Contact", "<%s>" % self.uri))
        if msg.method in ("INVITE", "UPDATE") and 100 < status < 300:
            hs.append(("Allow", ALLOW))
            if self.supported and 200 <= status:
                hs.append(("Supported", ", ".join(self.supported)))
        if self.user_agent:
            hs.append(("Server", self.user_agent))
        hs = _merge(hs, headers)
        raw = _build("SIP/2.0 %d %s" % (status, reason), hs, body)
        dest = msg.src or self._via_dest(msg)
        with self._cond:
            key = self._req_key(msg)
            self._seen.add(key)
            self._resp_cache[key] = (raw, dest)
            self._send(raw, dest)
            if dialog is not None:
                if msg.method == "INVITE" and not msg.to_tag and 100 < status < 300:
                    if dialog.state in ("init", "early"):
                        dialog.state = "confirmed" if status >= 200 else "early"
                elif msg.method == "INVITE" and not msg.to_tag and status >= 300:
                    dialog.state = "terminated"
                if msg.method == "BYE" and status < 300:
                    dialog.state = "terminated"
            if msg.method == "INVITE" and status >= 200:
                if dialog is not None:
                    dialog.last_invite_cseq = msg.cseq[0]
                cap = self.t2
                self._job(("final", msg.call_id, msg.cseq[0]), raw, dest, self.t1, cap, 64 * self.t1)
            if reliable is not None:
                self._job(("rel", msg.call_id, reliable), raw, dest, self.t1, None, 64 * self.t1)
            if msg.method == "INVITE" and status >= 200:
                # a final answer ends the reliable provisionals' retransmission
                for k in [k for k in self._jobs if k[0] == "rel" and k[1] == msg.call_id]:
                    del self._jobs[k]
        return raw

    def _via_dest(self, msg):
        vias = msg.all_split("Via")
        if not vias:
            return self.server
        p = header_params(vias[0])
        sent_by = vias[0].split(";", 1)[0].split()[-1]
        host, _, port = sent_by.partition(":")
        return (p.get("received") or host, int(p["rport"]) if p.get("rport", "").isdigit()
                else int(port) if port.isdigit() else 5060)

    # ---- the receive queue -------------------------------------------------------------
    def recv(self, timeout=2.0, match=None):
        """The next queued message satisfying match(msg) (any message when
        None); the others stay queued."""
        end = time.time() + timeout
        with self._cond:
            while True:
                for i, m in enumerate(self._queue):
                    if match is None or match(m):
                        del self._queue[i]
                        return m
                left = end - time.time()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    def recv_request(self, method=None, timeout=2.0):
        method = method.upper() if method else None
        return self.recv(timeout, lambda m: m.is_request and (method is None or m.method == method))

    def pending(self):
        """A copy of what is queued, for diagnostics."""
        with self._cond:
            return list(self._queue)

    def wait_invite(self, timeout=5.0):
        """Waits for an initial INVITE (no To tag) and returns a server
        Dialog for it (None on timeout)."""
        m = self.recv(timeout, lambda m: m.is_request and m.method == "INVITE" and not m.to_tag)
        if m is None:
            return None
        d = Dialog(self, server=True)
        d.invite = m
        d.call_id = m.call_id
        d.remote_tag = m.from_tag
        d.remote_uri = strip_tag(m.get("From") or "")
        d.local_uri = strip_tag(m.get("To") or "")
        d.remote_target = m.contact_uri
        d.route_set = m.all_split("Record-Route")
        d.remote_cseq = m.cseq[0]
        d.request_uri = m.uri
        d.local_cseq = 100
        d.state = "init"
        with self._cond:
            self._dialogs.append(d)
        return d

    # ---- client side ------------------------------------------------------------------------
    def subscribe_start(self, uri, event="dialog", expires=600, headers=(), auth=None):
        """Sends an initial SUBSCRIBE and returns its Dialog at once (finish
        with dialog.wait_final); NOTIFYs in it are answered 200 and kept
        in dialog.auto_answered."""
        d = self.invite_start(uri, body="", auth=auth, ack=False, method="SUBSCRIBE",
                              headers=[("Event", event), ("Expires", str(expires)),
                                       ("Accept", "application/dialog-info+xml")] +
                              list(headers))
        d.auto_answer = {"NOTIFY"}
        return d

    def invite_start(self, uri, body=None, headers=(), to=None, from_user=None, auth=None,
                     expect=(200,), dialog=None, ack=True, prack=False, method="INVITE"):
        """Sends an initial INVITE and returns its Dialog at once (finish
        with dialog.wait_final). body None offers dialog.sdp(); "" sends no
        body. dialog: reuse that dialog's Call-ID and From tag with the next
        CSeq (e.g. after 422 or 491). prack: PRACK reliable provisionals
        automatically."""
        with self._cond:
            d = dialog
            if d is None:
                d = Dialog(self)
                d.call_id = "%s@%s" % (_rand(64), self.ip)
                d.local_uri = "<sip:%s@%s>" % (from_user or self.user, self.domain)
                if to is None:
                    d.remote_uri = "<%s>" % uri
                elif "<" in to:
                    d.remote_uri = to
                else:
                    d.remote_uri = "<%s>" % to
                d.local_cseq = 0
                self._dialogs.append(d)
            else:
                d.remote_tag = None
                d.state = "init"
                d.final = None
            d.request_uri = uri
            d.expect = expect
            d.auto_ack = ack
            if body is None:
                body = d.sdp()
            d.local_cseq += 1
            txn = self._invite_txn(d, uri, headers, body, auth, ack, d.local_cseq, (),
                                   method=method)
            txn.auto_prack = prack
            d.invite_txn = txn
            return d

    def _invite_txn(self, d, uri, headers, body, auth, ack, cseq, extra_auth, start=True,
                    method="INVITE"):
        branch = "z9hG4bK-" + _rand()
        hs = [("Via", "SIP/2.0/UDP %s:%d;branch=%s;rport" % (self.ip, self.port, branch)),
              ("Max-Forwards", "70"),
              ("From", "%s;tag=%s" % (d.local_uri, d.local_tag)),
              ("To", d.remote_uri),
              ("Call-ID", d.call_id),
              ("CSeq", "%d %s" % (cseq, method)),
              ("Contact", "<%s>" % self.uri),
              ("Allow", ALLOW)]
        if self.supported:
            hs.append(("Supported", ", ".join(self.supported)))
        if self.user_agent:
            hs.append(("User-Agent", self.user_agent))
        hs = _merge(hs, list(headers) + list(extra_auth))
        txn = ClientTxn(self, d, method, uri, branch, cseq, d.dest or self.server)
        d._note_body(body)
        txn.headers = hs
        txn.raw = _build("%s %s SIP/2.0" % (method, uri), hs, body)
        txn.auth = auth
        txn.auto_ack = ack

        def retry(auth_hdr):
            with self._cond:
                d.local_cseq += 1
                t = self._invite_txn(d, uri, headers, body, None, ack, d.local_cseq, [auth_hdr],
                                     start=False, method=method)
                t.auto_prack = txn.auto_prack
                return t
        txn.builder = retry
        if start:
            self._start_txn(txn)
        return txn

    def invite(self, uri, body=None, headers=(), to=None, from_user=None, auth=None, timeout=5.0,
               expect=(200,), dialog=None, ack=True, prack=False):
        """Sends an initial INVITE and waits for its final answer (dialog.final,
        None on timeout); dialog.ok tells whether it is in expect."""
        d = self.invite_start(uri, body, headers, to, from_user, auth, expect, dialog, ack, prack)
        d.wait_final(timeout)
        return d

    def request(self, method, uri, headers=(), body=None, auth=None, timeout=5.0, dest=None,
                to=None, from_user=None, call_id=None, cseq=1):
        """An out-of-dialog request (OPTIONS, MESSAGE, ...); returns the final
        answer or None."""
        return self.request_start(method, uri, headers, body, auth, dest, to, from_user,
                                  call_id, cseq).wait_final(timeout)

    def request_start(self, method, uri, headers=(), body=None, auth=None, dest=None, to=None,
                      from_user=None, call_id=None, cseq=1):
        d = Dialog(self)
        d.call_id = call_id or "%s@%s" % (_rand(64), self.ip)
        d.local_uri = "<sip:%s@%s>" % (from_user or self.user, self.domain)
        d.remote_uri = to if to and "<" in to else "<%s>" % (to or uri)
        d.local_cseq = cseq
        with self._cond:
            return d._send_txn(method.upper(), uri, headers, body, auth, True, cseq,
                               dest or self.server)

    def register(self, user, password, expires=300, domain=None, headers=(), contact=None,
                 timeout=5.0):
        """REGISTER this UA's contact as user (digest MD5 or SHA-256, the
        first challenge); refreshes reuse the Call-ID with a higher CSeq.
        Returns the final answer or None."""
        domain = domain or self.domain
        with self._cond:
            d = self._regs.get((user, domain))
            if d is None:
                d = Dialog(self)
                d.call_id = "reg-%s@%s" % (_rand(64), self.ip)
                d.local_uri = "<sip:%s@%s>" % (user, domain)
                d.remote_uri = d.local_uri
                self._regs[(user, domain)] = d
            d.local_cseq += 1
            hs = [("Contact", contact or "<sip:%s@%s:%d>" % (user, self.ip, self.port)),
                  ("Expires", str(expires))] + _hdr_list(headers)
            txn = d._send_txn("REGISTER", "sip:%s" % domain, hs, None, (user, password), True,
                              d.local_cseq, self.server)
        return txn.wait_final(timeout)
