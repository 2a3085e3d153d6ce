"""SIP over one TCP or TLS connection for tests: framing by Content-Length,
digest answers, and just enough dialog state for an agent's phone (the
UDP t/lib/sipua.py does the rest). Blocking calls return None on timeout."""
import random
import socket
import ssl
import time

from sipclient import Response, parse_challenge, digest_response


def _rand(bits=48):
    return "%x" % random.getrandbits(bits)


class Msg(Response):
    """A request or a response read from the stream."""

    def __init__(self, raw):
        super().__init__(raw)
        first = raw.split("\r\n", 1)[0]
        self.is_request = not first.startswith("SIP/2.0 ")
        self.method = first.split(" ", 1)[0] if self.is_request else None
        self.body = raw.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in raw else ""

    def cseq_method(self):
        v = self.get("CSeq") or ""
        return v.split()[-1] if v else ""


class StreamUA:
    """One connection to server; tls=True wraps it in TLS (cafile checks
    the server's certificate)."""

    def __init__(self, server, tls=True, cafile=None, user="ua", domain="sipcrm.test",
                 src_ip="127.0.0.1"):
        raw = socket.create_connection(server, timeout=5, source_address=(src_ip, 0))
        if tls:
            ctx = ssl.create_default_context(cafile=cafile)
            raw = ctx.wrap_socket(raw, server_hostname=server[0])
        self.sock = raw
        self.tp = "TLS" if tls else "TCP"
        self.ip, self.port = raw.getsockname()[:2]
        self.server = server
        self.user = user
        self.domain = domain
        self.buf = b""
        self.queue = []
        self.contact = "<sip:%s@%s:%d;transport=%s>" % (user, self.ip, self.port, self.tp.lower())

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, text):
        self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def _read_one(self, timeout):
        end = time.time() + timeout
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = self.buf[:head_end].decode(errors="replace")
                clen = 0
                for line in head.split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() in ("content-length", "l"):
                        clen = int(v.strip() or 0)
                total = head_end + 4 + clen
                if len(self.buf) >= total:
                    raw, self.buf = self.buf[:total], self.buf[total:]
                    return Msg(raw.decode(errors="replace"))
            left = end - time.time()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65535)
            except (socket.timeout, ssl.SSLError, OSError):
                return None
            if not chunk:
                return None
            self.buf += chunk.lstrip(b"\r\n") if not self.buf else chunk

    def recv(self, match, timeout=5.0):
        """The first message for which match(msg) is true; others are queued."""
        for m in self.queue:
            if match(m):
                self.queue.remove(m)
                return m
        end = time.time() + timeout
        while time.time() < end:
            m = self._read_one(end - time.time())
            if m is None:
                return None
            if match(m):
                return m
            self.queue.append(m)
        return None

    def request(self, method, ruri, headers, body="", call_id=None, cseq=1,
                from_tag=None, to=None, auth=None, timeout=5.0):
        """Sends a request and returns its final response (answering one
        401/407 when auth=(user, password))."""
        call_id = call_id or "%s@%s" % (_rand(), self.ip)
        from_tag = from_tag or _rand(32)
        extra = []
        for _ in range(2):
            branch = "z9hG4bK-" + _rand()
            hs = ["Via: SIP/2.0/%s %s:%d;branch=%s;rport" % (self.tp, self.ip, self.port, branch),
                  "Max-Forwards: 70",
                  "From: <sip:%s@%s>;tag=%s" % (self.user, self.domain, from_tag),
                  "To: %s" % (to or "<%s>" % ruri),
                  "Call-ID: %s" % call_id,
                  "CSeq: %d %s" % (cseq, method),
                  "Contact: %s" % self.contact] + list(headers) + extra
            if body:
                hs.append("Content-Type: application/sdp")
            hs.append("Content-Length: %d" % len(body.encode()))
            self.send("%s %s SIP/2.0\r\n%s\r\n\r\n%s" % (method, ruri, "\r\n".join(hs), body))
            r = self.recv(lambda m: not m.is_request and branch in (m.get("Via") or "")
                          and m.status >= 200, timeout)
            if r is None or r.status not in (401, 407) or not auth or extra:
                return r
            if method == "INVITE":
                self.ack(r, ruri, call_id, cseq, from_tag, branch)
            hdr = "WWW-Authenticate" if r.status == 401 else "Proxy-Authenticate"
            ch = parse_challenge(r.get(hdr))
            cnonce = _rand(32)
            resp = digest_response(ch.get("algorithm", "MD5"), auth[0], ch["realm"], auth[1],
                                   method, ruri, ch["nonce"], "00000001", cnonce)
            extra = ['%s: Digest username="%s", realm="%s", nonce="%s", uri="%s", '
                     'response="%s", algorithm=%s, cnonce="%s", qop=auth, nc=00000001'
                     % ("Authorization" if r.status == 401 else "Proxy-Authorization",
                        auth[0], ch["realm"], ch["nonce"], ruri, resp,
                        ch.get("algorithm", "MD5"), cnonce)]
            cseq += 1
        return r

    def ack(self, resp, ruri, call_id, cseq, from_tag, branch=None):
        """ACK for a final response (its own branch for a 2xx)."""
        branch = branch or "z9hG4bK-" + _rand()
        self.send("ACK %s SIP/2.0\r\nVia: SIP/2.0/%s %s:%d;branch=%s;rport\r\n"
                  "Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: %s\r\n"
                  "Call-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n"
                  % (ruri, self.tp, self.ip, self.port, branch, self.user, self.domain,
                     from_tag, resp.get("To"), call_id, cseq))

    def reply(self, req, status, reason, body="", to_tag=None):
        """Answers a request received on this connection."""
        hs = ["Via: %s" % v for v in req.all("Via")]
        to = req.get("To")
        if to_tag and "tag=" not in to:
            to += ";tag=" + to_tag
        hs += ["From: %s" % req.get("From"), "To: %s" % to, "Call-ID: %s" % req.get("Call-ID"),
               "CSeq: %s" % req.get("CSeq"), "Contact: %s" % self.contact]
        if body:
            hs.append("Content-Type: application/sdp")
        hs.append("Content-Length: %d" % len(body.encode()))
        self.send("SIP/2.0 %d %s\r\n%s\r\n\r\n%s" % (status, reason, "\r\n".join(hs), body))
