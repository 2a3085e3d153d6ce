#!/usr/bin/env python3
"""Seed corpora for the t/fuzz harnesses, from the shared test corpus
(SIPCRM_CORPUS, default /work/shared/corpus) and the project's own tests.

    t/fuzz/make_seeds.py OUTDIR            the full set (about 10,000 files)
    t/fuzz/make_seeds.py --small OUTDIR    the small set committed in
                                           t/fuzz/seeds/ (about 250 files)

Writes OUTDIR/{sip,sdp,conf,normalize,digest,crm,rtp,http}/, one input per file, named
by where it came from; identical inputs are written once. The input
formats are the harnesses' (see the comment at the top of each
t/fuzz/fuzz_*.c):

  sip        RFC 4475 messages as published; PROTOS c07-sip INVITEs with
             the placeholders filled, from a trunk source (127.0.0.3:
             inbound calls) and a non-trunk one (127.0.0.2: agents), and
             their CANCELs; REGISTERs with Digest credentials.
  sdp        a control byte (codecs), then each distinct SDP body of those.
  conf       conf/sipcrm.conf, each of its sections alone, and every
             config text of t/conf_parse.c (the error paths).
  normalize  control bytes (country code, out size), then every number of
             t/crm_normalize.c and the From users of the PROTOS cases.
  digest     control bytes, then Authorization values: hand-made ones that
             reach each verdict, and those of the SIP seeds.
  crm        lookups and deliveries answered as the CRM emulators of t/lib/
             answer (found, not found, rate limits, errors, garbage).
  rtp        RTP, RTCP, SRTP (right and forged), RFC 4733 events, ticks,
             holds, from the peer and from strangers.
  http       the API's requests: health, metrics, routes with "*"
             segments, tokens, size limits, chunked bodies, the webhooks.
"""
import hashlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "t", "lib"))
import protos  # noqa: E402

RFC_DIR = os.path.join(protos.CORPUS, "rfc4475")
PORT = 5060
TRUNK_IP, AGENT_IP = "127.0.0.3", "127.0.0.2"

# must match the codes[] list in fuzz_normalize.c
NORMALIZE_CODES = [None, "", "7", "+7", "1", "49", "375", "36", "39", "61", "81", "44",
                   "380", "0", "abc", "1234", "+", "7 ", "07", "998"]


class Out:
    def __init__(self, root):
        self.root = root
        self.seen = {}
        self.count = {}

    def put(self, harness, name, data):
        d = os.path.join(self.root, harness)
        os.makedirs(d, exist_ok=True)
        h = hashlib.sha1(data).hexdigest()
        if h in self.seen.setdefault(harness, set()):
            return
        self.seen[harness].add(h)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        self.count[harness] = self.count.get(harness, 0) + 1


def c_unescape(lit):
    """The bytes of a C string literal's contents."""
    out, i = bytearray(), 0
    b = lit.encode("latin-1")
    simple = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("0"): 0, ord("\\"): 92,
              ord('"'): 34, ord("'"): 39}
    while i < len(b):
        c = b[i]
        if c != 92:
            out.append(c)
            i += 1
            continue
        e = b[i + 1]
        if e == ord("x"):
            m = re.match(rb"[0-9a-fA-F]{1,2}", b[i + 2:])
            out.append(int(m.group(0), 16))
            i += 2 + len(m.group(0))
        elif e in simple:
            out.append(simple[e])
            i += 2
        else:
            out.append(e)
            i += 2
    return bytes(out)


STR = r'"(?:[^"\\]|\\.)*"'


def literal(text):
    """Adjacent C string literals joined: '"a" "b"' -> b"ab"."""
    return b"".join(c_unescape(s[1:-1]) for s in re.findall(STR, text))


def body_of(msg):
    sep = msg.find(b"\r\n\r\n")
    return msg[sep + 4:] if sep >= 0 else b""


def is_sdp(msg):
    head = msg.split(b"\r\n\r\n", 1)[0]
    return re.search(rb"(?im)^(content-type|c)[ \t]*:[ \t]*application/sdp", head) is not None


def auth_values(msg):
    head = msg.split(b"\r\n\r\n", 1)[0]
    return [m.group(1) for m in
            re.finditer(rb"(?im)^(?:proxy-)?authorization[ \t]*:[ \t]*([^\r\n]*)", head)]


# ---- sip --------------------------------------------------------------------------
def register(user, extra=b""):
    return (b"REGISTER sip:sipcrm.test SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.2:5062;branch=z9hG4bK-reg1\r\n"
            b"Max-Forwards: 70\r\n"
            b"From: <sip:" + user + b"@sipcrm.test>;tag=r1\r\n"
            b"To: <sip:" + user + b"@sipcrm.test>\r\n"
            b"Call-ID: reg-1@127.0.0.2\r\nCSeq: 2 REGISTER\r\n"
            b"Contact: <sip:" + user + b"@127.0.0.2:5062;transport=udp>;expires=600;"
            b"+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1;q=0.7\r\n"
            b"Path: <sip:edge.example.net;lr>\r\n" + extra +
            b"Content-Length: 0\r\n\r\n")


AUTH_HDRS = [
    b'Digest username="101", realm="sipcrm.test", nonce="AAAA", uri="sip:sipcrm.test", '
    b'response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, '
    b'nc=00000001, cnonce="c1"',
    b'Digest username="102", realm="sipcrm.test", nonce="AAAA", uri="sip:sipcrm.test", '
    b'response="0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", '
    b'algorithm=SHA-256, qop=auth, nc=00000002, cnonce="c2", opaque="o"',
    b'Digest username="nobody", realm="sipcrm.test", nonce="AAAA", uri="sip:sipcrm.test", '
    b'response="0123456789abcdef0123456789abcdef"',
    b'Digest username="101", realm="other", nonce="AAAA", uri="sip:x", '
    b'response="0123456789abcdef0123456789abcdef", algorithm=MD5-sess, qop=auth-int',
    b'Digest username="1\\"0\\\\1", realm="sipcrm.test", nonce="", uri="", response=""',
    b'Basic dXNlcjpwYXNz',
]


def sip_seeds(out, small):
    for f in sorted(os.listdir(RFC_DIR)):
        if f.endswith(".dat"):
            with open(os.path.join(RFC_DIR, f), "rb") as fh:
                out.put("sip", "rfc4475-" + f[:-4], fh.read())
    for i, a in enumerate(AUTH_HDRS):
        out.put("sip", "register-auth-%d" % i, register(b"101", b"Authorization: " + a + b"\r\n"))
        inv = register(b"101", b"Proxy-Authorization: " + a + b"\r\n")
        inv = inv.replace(b"REGISTER sip:sipcrm.test", b"INVITE sip:102@sipcrm.test", 1)
        inv = inv.replace(b"CSeq: 2 REGISTER", b"CSeq: 2 INVITE")
        out.put("sip", "invite-auth-%d" % i, inv)
    out.put("sip", "register-star", register(b"101").replace(
        b"Contact: <sip:101@127.0.0.2:5062;transport=udp>", b"Contact: *", 1))
    if not protos.available():
        return
    names = protos.cases()
    if small:
        # short cases only, every kind of mutation: an even stride
        names = [n for n in protos.sample(names, 400)
                 if os.path.getsize(os.path.join(protos.PROTOS_DIR, n)) < 2000][:60]
    for n in names:
        recs = protos.records(n)
        tp = "tcp" if protos.is_big(recs) else "udp"
        for ip, tag in ((TRUNK_IP, "t"), (AGENT_IP, "n")):
            if small and tag == "n" and int(n) % 3:
                continue
            msg = protos.fill(recs[0], n, ip, 5062, tp, tag, PORT)
            out.put("sip", "protos-%s-%s" % (n, tag), msg)
            if len(recs) > 1 and (n == "0000000" or not small and ip == TRUNK_IP and int(n) % 50 == 0):
                out.put("sip", "protos-%s-%s-cancel" % (n, tag),
                        protos.fill(recs[1], n, ip, 5062, tp, tag, PORT))


# ---- sdp, digest (from the sip seeds) ------------------------------------------------------
def derived_seeds(out):
    d = os.path.join(out.root, "sip")
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), "rb") as fh:
            msg = fh.read()
        body = body_of(msg)
        if body and is_sdp(msg):
            out.put("sdp", f, b"\x03" + body)
        for j, a in enumerate(auth_values(msg)):
            out.put("digest", "%s-%d" % (f, j), b"\x00\x00" + a)


def digest_seeds(out):
    # every flag combination that matters, on the well-formed headers
    for i, a in enumerate(AUTH_HDRS):
        for fl in (0x00, 0x01, 0x03, 0x07, 0x0b, 0x13, 0x23, 0x33, 0x43, 0x83, 0x53):
            out.put("digest", "auth%d-flags%02x" % (i, fl), bytes([fl, i % 8]) + a)
    # RFC 2069 (no qop), verified twice
    out.put("digest", "rfc2069-twice", b"\x83\x01" + b'Digest username="101", '
            b'realm="sipcrm.test", nonce="x", uri="sip:102@sipcrm.test", response="x"')


# ---- conf -------------------------------------------------------------------------
def conf_seeds(out, small):
    with open(os.path.join(TOP, "conf", "sipcrm.conf"), "rb") as f:
        full = f.read()
    out.put("conf", "sipcrm.conf", full)
    parts = re.split(rb"(?m)^(?=\[)", full)
    for p in parts:
        m = re.match(rb"\[([^\]]*)\]", p)
        if m:
            out.put("conf", "section-" + m.group(1).decode(errors="replace"), p)
    with open(os.path.join(TOP, "t", "conf_parse.c"), encoding="latin-1") as f:
        src = f.read()
    texts = []
    for m in re.finditer(r"\b(?:parse|fails)\s*\(\s*((?:" + STR + r"\s*)+)", src):
        texts.append(literal(m.group(1)))
    for m in re.finditer(r"(?m)^\s*((?:" + STR + r"\s*)+)[,;)]", src):
        t = literal(m.group(1))
        if b"[" in t or b"=" in t:
            texts.append(t)
    for i, t in enumerate(texts):
        if small and i % 3:
            continue
        out.put("conf", "conf_parse-%03d" % i, t)


# ---- normalize ----------------------------------------------------------------------
def normalize_seeds(out, small):
    with open(os.path.join(TOP, "t", "crm_normalize.c"), encoding="latin-1") as f:
        src = f.read()
    pat = r"\b(?:OK|BAD|NOSPC)\s*\(\s*((?:" + STR + r"\s*)+),\s*(NULL|(?:" + STR + r"\s*)+)"
    for i, m in enumerate(re.finditer(pat, src)):
        num = literal(m.group(1))
        cc = None if m.group(2) == "NULL" else literal(m.group(2)).decode("latin-1")
        idx = NORMALIZE_CODES.index(cc) if cc in NORMALIZE_CODES else 2
        out.put("normalize", "t-%03d" % i, bytes([idx, 17]) + num)
        if not small:
            out.put("normalize", "t-%03d-short" % i, bytes([idx, 9]) + num)
    if not protos.available():
        return
    names = protos.cases()
    if small:
        names = protos.sample(names, 300)
    for n in names:
        rec = protos.records(n)[0]
        m = re.search(rb"(?m)^From:[^\r\n]*", rec)
        if m:
            line = m.group(0)[5:].strip().replace(b"<From>", b"79161234567@127.0.0.3")
            if len(line) < 4096:
                out.put("normalize", "protos-from-" + n, b"\x02\x11" + line)


# ---- crm, rtp, http: made here, from the formats in fuzz_crm.c, fuzz_rtp.c and
# fuzz_http.c, after the answers of t/lib/{crm,bitrix24,amocrm}_emulator.py --------

# statuses[] of fuzz_crm.c: the index of each
ST = {200: 0, 404: 4, 401: 5, 429: 6, 500: 7, 400: 8, 204: 9, 201: 10, "timeout": 14}


def crm_input(flags, *resps):
    return bytes([flags]) + b"\xff".join(bytes([ST[st]]) + body for st, body in resps)


B24_FOUND = (b'{"result":[{"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":12,"NAME":"Ivan Petrov",'
             b'"ASSIGNED_BY_ID":42,"ASSIGNED_BY":{"ID":"42","USER_PHONE_INNER":"101",'
             b'"TIMEMAN_STATUS":"%s"}},{"CRM_ENTITY_TYPE":"COMPANY","CRM_ENTITY_ID":"3"}]}')
AMO_CONTACT = (b'{"_embedded":{"contacts":[{"id":7,"name":"Ivan","responsible_user_id":42,'
               b'"custom_fields_values":[{"field_code":"PHONE","values":[{"value":"%s",'
               b'"enum_code":"WORK"}]}]}]}}')


def crm_seeds(out):
    put = lambda name, data: out.put("crm", name, data)  # noqa: E731
    put("generic-known", crm_input(0, (200, b'{"contact":{"id":"c1","name":"Ivan Petrov",'
        b'"url":"https://crm.test/c/1"},"responsible":{"id":"42","name":"Maria",'
        b'"extension":"101"}}')))
    put("generic-user-only", crm_input(0, (200, b'{"contact":{"id":17},"responsible":{"id":43}}')))
    put("generic-unknown", crm_input(0, (200, b'{"contact":null}')))
    put("generic-404", crm_input(0, (404, b"")))
    put("generic-garbage", crm_input(0, (200, b"<html>oops</html>")))
    put("generic-500", crm_input(0, (500, b'{"error":"x"}')))
    put("generic-timeout", crm_input(0, ("timeout", b"")))
    put("b24-found", crm_input(1, (200, B24_FOUND % b"OPENED")))
    put("b24-closed-timeman", crm_input(5, (200, B24_FOUND % b"CLOSED")))
    put("b24-none", crm_input(1, (200, b'{"result":[]}')))
    put("b24-limit", crm_input(1, (200, b'{"error":"QUERY_LIMIT_EXCEEDED","error_description":'
        b'"Too many requests"}'), (200, b'{"result":[]}')))
    put("b24-expired", crm_input(1, (401, b'{"error":"expired_token","error_description":"x"}')))
    put("b24-503", crm_input(1, (500, b"Service Unavailable")))
    put("amo-found", crm_input(2, (200, AMO_CONTACT % b"8 (495) 123-45-67")))
    put("amo-company", crm_input(2, (200, AMO_CONTACT % b"+7 916 000-00-00"),
        (200, b'{"_embedded":{"companies":[{"id":"9","name":"ACME","responsible_user_id":"43",'
         b'"custom_fields_values":[{"field_code":"PHONE","values":[{"value":"+74951234567"}]}]}]}}')))
    put("amo-none", crm_input(2, (204, b""), (204, b"")))
    put("amo-429", crm_input(2, (429, b'{"title":"Too Many Requests"}')))
    put("amo-401", crm_input(2, (401, b'{"title":"Unauthorized"}')))
    put("generic-deliver", crm_input(8, (200, b""), (500, b"busy")))
    put("b24-deliver", crm_input(9, (200, b'{"result":{"CALL_ID":"externalCall.abc",'
        b'"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":"12","CRM_CREATED_LEAD":null}}'),
        (200, b'{"result":true}'), (200, b'{"result":true}'),
        (200, b'{"result":{"CALL_ID":"externalCall.abc"}}'), (200, b'{"result":{"FILE_ID":1}}'),
        (200, b'{"result":55}'), (200, b'{"result":56}'), (200, b'{"result":{"task":{"id":99}}}')))
    put("amo-deliver", crm_input(10, (200, b'{"_embedded":{"contacts":[]}}'), (204, b""),
        (200, b'{"_embedded":{"contacts":[{"id":5}]}}'), (200, b'{"_embedded":{"leads":[{"id":6}]}}'),
        (200, b'{"_embedded":{"calls":[{"id":1}]}}'), (200, b'{"_embedded":{"tasks":[{"id":2}]}}')))
    put("amo-deliver-unsorted", crm_input(10, (200, AMO_CONTACT % b"+74951234567"),
        (400, b'{"title":"Bad Request"}'), (200, b'{"_embedded":{"unsorted":[{"uid":"u1",'
         b'"_embedded":{"leads":[{"id":6}],"contacts":[{"id":5}]}}]}}')))


def rtp_packet(pt, seq, ts, ssrc, payload, marker=False):
    return bytes([0x80, (0x80 if marker else 0) | pt]) + seq.to_bytes(2, "big") + \
        ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big") + payload


def rtp_rec(op, data):
    return bytes([op, len(data)]) + data


def rtp_seeds(out):
    put = lambda name, data: out.put("rtp", name, data)  # noqa: E731
    ssrc = 0x11223344
    audio = lambda op, n, pt=0, seq=1000: b"".join(rtp_rec(op, rtp_packet(pt, seq + i, 160 * (seq + i), ssrc,  # noqa: E731
                                                                       bytes([0xff - i]) * 160)) for i in range(n))
    te = b"".join(rtp_rec(0, rtp_packet(101, 1010 + i, 1600, ssrc, bytes([5, 0x0a | (0x80 if i > 2 else 0), 0, 160 * (i + 1) % 256]),
                                        marker=i == 0)) for i in range(5))
    sr = bytes([0x80, 200, 0, 6]) + ssrc.to_bytes(4, "big") + bytes(20)
    rr = bytes([0x81, 201, 0, 7]) + ssrc.to_bytes(4, "big") + bytes(24)
    put("plain-bridged", bytes([0x18, 0x01]) + audio(0, 4) + te + rtp_rec(1, sr) + audio(2, 3, 8) + rtp_rec(3, rr))
    put("plain-transcode", bytes([0x58, 0x01]) + audio(0, 3) + audio(0, 2, 8) + rtp_rec(0, rtp_packet(13, 1, 1, ssrc, b"\x40")))
    put("unbridged", bytes([0x00, 0x00]) + audio(0, 2) + rtp_rec(1, sr))
    put("srtp-both", bytes([0x1b, 0x01]) + audio(0x08, 4) + rtp_rec(0x09, sr) + audio(0x0a, 2))
    # forged: new sequence numbers, so that it is the authentication that fails
    put("srtp-forged", bytes([0x1b, 0x01]) + audio(0x08, 2) + audio(0x18, 2, seq=1002) +
        audio(0x38, 1, seq=1004) + rtp_rec(0x19, sr) + audio(0x08, 1, seq=1005))
    put("srtp-replayed", bytes([0x1b, 0x01]) + audio(0x08, 3) + audio(0x08, 2, seq=1001))
    put("srtp32-to-rtp", bytes([0x05, 0x01]) + audio(0x08, 3) + audio(0x00, 1, seq=1003))
    put("stranger", bytes([0x18, 0x01]) + audio(0x20, 1) + audio(0, 2) + audio(0x20, 1) + audio(0x40, 1))
    put("dtmf-inject", bytes([0x18, 0x01]) + rtp_rec(5, b"\x05\x19") + rtp_rec(4, b"") * 8 + audio(0, 2) +
        rtp_rec(4, b"") * 8 + rtp_rec(6, b"\x0b\x0a") + rtp_rec(4, b"") * 6)
    put("hold", bytes([0x18, 0x01]) + audio(0, 2) + rtp_rec(7, b"") + audio(0, 2) + rtp_rec(7, b"") + audio(0, 1))
    ext = bytes([0x90, 0, 0, 1, 0, 0, 0, 1]) + ssrc.to_bytes(4, "big") + b"\xbe\xde\x00\x01" + bytes(4) + bytes(160)
    pad = bytes([0xa0, 0, 0, 2, 0, 0, 0, 2]) + ssrc.to_bytes(4, "big") + bytes(160) + b"\x00\x00\x03"
    put("ext-pad", bytes([0x18, 0x01]) + rtp_rec(0, ext) + rtp_rec(0, pad) + rtp_rec(0x08, ext))


def http_input(method, flags, chunk, path, query=b"", body=b""):
    return bytes([method, flags, chunk]) + path + b"\n" + query + b"\n" + body


GET, POST, PUT, DELETE, HEAD = 0, 1, 2, 3, 4
AUTH, WRONG, CL_LIE, CHUNKED, HUGE = 1, 2, 4, 8, 16
GENERIC, B24, AMO = 0x20, 0x40, 0x60


def http_seeds(out):
    put = lambda name, data: out.put("http", name, data)  # noqa: E731
    put("health", http_input(GET, 0, 0, b"/api/v1/health"))
    put("metrics", http_input(GET, 0, 0, b"/metrics"))
    put("head-health", http_input(HEAD, 0, 0, b"/api/v1/health"))
    put("call", http_input(GET, AUTH, 0, b"/api/v1/calls/c-1234"))
    put("call-no-token", http_input(GET, 0, 0, b"/api/v1/calls/c-1234"))
    put("call-wrong-token", http_input(GET, WRONG, 0, b"/api/v1/calls/c-1234"))
    put("call-bearer-spaces", http_input(GET, AUTH | WRONG, 0, b"/api/v1/calls/c-1234"))
    put("transfer", http_input(POST, AUTH, 0, b"/api/v1/calls/c-1234/transfer", b"", b'{"to":"102"}'))
    put("transfer-chunked", http_input(POST, AUTH | CHUNKED, 5, b"/api/v1/calls/c-1234/transfer", b"",
        b'{"to":"102","blind":true,"x":[1,2,{"y":null}]}'))
    put("sessions-405", http_input(DELETE, AUTH, 0, b"/api/v1/agents/101/sessions/s1"))
    put("not-found", http_input(GET, AUTH, 0, b"/api/v1/nothing/here"))
    put("deep", http_input(GET, AUTH, 0, b"/api" + b"/a" * 20))
    put("open-query", http_input(GET, 0, 0, b"/open/a/b/x", b"q=hello%20world&q=2&z"))
    put("echo-error", http_input(POST, AUTH, 0, b"/api/v1/echo", b"", b'{"error":"bad \xff\xfe utf-8"}'))
    put("echo-no-reply", http_input(POST, AUTH, 0, b"/api/v1/echo", b"", b'{"no_reply":true}'))
    put("echo-dup-keys", http_input(POST, AUTH, 0, b"/api/v1/echo", b"", b'{"a":1,"a":2}'))
    put("echo-too-large", http_input(POST, AUTH | HUGE, 64, b"/api/v1/echo", b"", b'{"a":1}'))
    put("echo-length-lie", http_input(POST, AUTH | CL_LIE, 0, b"/api/v1/echo", b"", b'{"a":1}'))
    put("generic-invalidate", http_input(POST, AUTH | GENERIC, 0, b"/api/v1/crm/generic", b"",
        b'{"invalidate":["+74951234567","8 495 123 45 67"]}'))
    put("generic-invalidate-all", http_input(POST, AUTH | GENERIC, 0, b"/api/v1/crm/generic", b"",
        b'{"invalidate_all":true}'))
    put("generic-wrong-type", http_input(POST, AUTH | AMO, 0, b"/api/v1/crm/generic", b"", b"{}"))
    put("b24-form", http_input(POST, B24, 0, b"/api/v1/crm/bitrix24", b"",
        b"event=ONCRMCONTACTUPDATE&data%5BFIELDS%5D%5BID%5D=12&auth%5Bapplication_token%5D=app-tok"))
    put("b24-json", http_input(POST, B24, 0, b"/api/v1/crm/bitrix24", b"",
        b'{"event":"ONEXTERNALCALLSTART","data":{"USER_ID":"42","PHONE_NUMBER":"84951234567",'
        b'"CALL_ID":"externalCall.x","CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":"12"},'
        b'"auth":{"application_token":"app-tok"},"ts":"1700000000"}'))
    put("b24-bad-token", http_input(POST, B24, 0, b"/api/v1/crm/bitrix24", b"",
        b"event=ONCRMLEADDELETE&auth%5Bapplication_token%5D=nope"))
    put("amo-form", http_input(POST, AMO, 3, b"/api/v1/crm/amocrm", b"token=amo-tok",
        b"contacts%5Bupdate%5D%5B0%5D%5Bid%5D=7&contacts%5Bupdate%5D%5B0%5D%5Bcustom_fields%5D"
        b"%5B0%5D%5Bvalues%5D%5B0%5D%5Bvalue%5D=%2B74951234567&leads%5Bdelete%5D%5B0%5D%5Bid%5D=1"))
    put("amo-no-token", http_input(POST, AMO, 0, b"/api/v1/crm/amocrm", b"", b"contacts[delete][0][id]=7"))


def main():
    args = sys.argv[1:]
    small = "--small" in args
    args = [a for a in args if a != "--small"]
    if len(args) != 1:
        print(__doc__)
        return 2
    if not os.path.isdir(RFC_DIR):
        print("corpus not found in %s (set SIPCRM_CORPUS)" % protos.CORPUS, file=sys.stderr)
        return 1
    out = Out(args[0])
    sip_seeds(out, small)
    derived_seeds(out)
    digest_seeds(out)
    conf_seeds(out, small)
    normalize_seeds(out, small)
    crm_seeds(out)
    rtp_seeds(out)
    http_seeds(out)
    for h in ("sip", "sdp", "conf", "normalize", "digest", "crm", "rtp", "http"):
        print("%-10s %5d seeds in %s" % (h, out.count.get(h, 0), os.path.join(args[0], h)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
