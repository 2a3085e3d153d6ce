"""A small SIP UAC over UDP for tests: REGISTER with MD5 or SHA-256 digest,
raw requests, response parsing. SIPp cannot do SHA-256 digest, choose a
source address per request, or compare two responses byte by byte."""
import hashlib
import os
import random
import re
import socket
import time


class Response:
    def __init__(self, raw):
        self.raw = raw
        head = raw.split("\r\n\r\n", 1)[0]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers = []
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers.append((k.strip(), v.strip()))

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name):
        vals = self.all(name)
        return vals[0] if vals else None

    def __repr__(self):
        return "<%d %s>" % (self.status, self.reason)


def parse_challenge(value):
    """'Digest realm="r", nonce="n", algorithm=SHA-256' -> dict."""
    value = re.sub(r"^\s*Digest\s+", "", value)
    out = {}
    for m in re.finditer(r'(\w[\w-]*)\s*=\s*("([^"]*)"|[^,\s]+)', value):
        out[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return out


def digest_response(alg, user, realm, password, method, uri, nonce, nc, cnonce, qop="auth"):
    h = (lambda s: hashlib.sha256(s.encode()).hexdigest()) if alg.upper() == "SHA-256" \
        else (lambda s: hashlib.md5(s.encode()).hexdigest())
    ha1 = h("%s:%s:%s" % (user, realm, password))
    ha2 = h("%s:%s" % (method, uri))
    if qop:
        return h("%s:%s:%s:%s:%s:%s" % (ha1, nonce, nc, cnonce, qop, ha2))
    return h("%s:%s:%s" % (ha1, nonce, ha2))


class SipClient:
    """One UDP socket bound to src_ip; sends requests and waits for finals."""

    def __init__(self, server_port, src_ip="127.0.0.1", server_ip="127.0.0.1", user_agent="sipcrm-test"):
        self.server = (server_ip, server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((src_ip, 0))
        self.ip, self.port = self.sock.getsockname()
        self.call_id = "%x@%s" % (random.getrandbits(64), self.ip)
        self.cseq = 0
        self.tag = "%x" % random.getrandbits(32)
        self.user_agent = user_agent

    def close(self):
        self.sock.close()

    def request(self, method, uri, headers, body="", timeout=2.0, want_final=True):
        """Sends one request (retransmitting over UDP) and returns the final
        Response, or None when nothing came back."""
        self.cseq += 1
        branch = "z9hG4bK-%x" % random.getrandbits(48)
        hdrs = ["Via: SIP/2.0/UDP %s:%d;branch=%s;rport" % (self.ip, self.port, branch),
                "Max-Forwards: 70",
                "Call-ID: %s" % self.call_id,
                "CSeq: %d %s" % (self.cseq, method)]
        if self.user_agent:
            hdrs.append("User-Agent: %s" % self.user_agent)
        hdrs += headers
        hdrs.append("Content-Length: %d" % len(body.encode()))
        msg = "%s %s SIP/2.0\r\n%s\r\n\r\n%s" % (method, uri, "\r\n".join(hdrs), body)
        return self.send_raw(msg, timeout, branch)

    def send_raw(self, msg, timeout=2.0, branch=None):
        end = time.time() + timeout
        resend = 0.5
        next_send = 0
        while time.time() < end:
            if time.time() >= next_send:
                self.sock.sendto(msg.encode(), self.server)
                next_send = time.time() + resend
                resend = min(resend * 2, 2.0)
            self.sock.settimeout(max(0.01, min(next_send, end) - time.time()))
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            r = Response(data.decode(errors="replace"))
            if branch and branch not in (r.get("Via") or ""):
                continue
            if r.status >= 200:
                return r
        return None

    def register(self, user, password, domain, expires=300, contact_user=None,
                 alg=None, realm=None, extra=None, nc=1, to_user=None, timeout=2.0,
                 contact=None):
        """REGISTER with digest. alg: None answers the first challenge the
        server offers, "MD5" or "SHA-256" picks that one. Returns
        (final response, challenge dict or None)."""
        uri = "sip:%s" % domain
        contact = contact or "<sip:%s@%s:%d>" % (contact_user or user, self.ip, self.port)
        base = ["From: <sip:%s@%s>;tag=%s" % (user, domain, self.tag),
                "To: <sip:%s@%s>" % (to_user or user, domain),
                "Contact: %s" % contact,
                "Expires: %d" % expires] + (extra or [])
        r = self.request("REGISTER", uri, base, timeout=timeout)
        if r is None or r.status != 401:
            return r, None
        ch = None
        for v in r.all("WWW-Authenticate"):
            c = parse_challenge(v)
            if alg is None or c.get("algorithm", "MD5").upper() == alg.upper():
                ch = c
                break
        if ch is None:
            return r, None
        cnonce = "%x" % random.getrandbits(32)
        ncs = "%08x" % nc
        resp = digest_response(ch.get("algorithm", "MD5"), user, realm or ch["realm"], password,
                               "REGISTER", uri, ch["nonce"], ncs, cnonce)
        auth = ('Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", '
                'response="%s", algorithm=%s, cnonce="%s", qop=auth, nc=%s'
                % (user, realm or ch["realm"], ch["nonce"], uri, resp,
                   ch.get("algorithm", "MD5"), cnonce, ncs))
        return self.request("REGISTER", uri, base + [auth], timeout=timeout), ch
