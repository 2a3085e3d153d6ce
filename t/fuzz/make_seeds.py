#!/usr/bin/env python3
"""Seed corpora for the t/fuzz harnesses, from the shared test corpus
(SIPCRM_CORPUS, default /work/shared/corpus) and the project's own tests.

    t/fuzz/make_seeds.py OUTDIR            the full set (about 10,000 files)
    t/fuzz/make_seeds.py --small OUTDIR    the small set committed in
                                           t/fuzz/seeds/ (about 250 files)

Writes OUTDIR/{sip,sdp,conf,normalize,digest}/, one input per file, named
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
    for h in ("sip", "sdp", "conf", "normalize", "digest"):
        print("%-10s %5d seeds in %s" % (h, out.count.get(h, 0), os.path.join(args[0], h)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
