"""The PROTOS c07-sip test material (see the corpus README): reading a case's
records, substituting the placeholders, and choosing a fixed sample.

Used by t/protos_replay.py (against the daemon) and t/fuzz/make_seeds.py
(fuzzer seeds). t/corpus_replay.py has its own copy of the two first
functions; it can import them from here instead.
"""
import os
import re

CORPUS = os.environ.get("SIPCRM_CORPUS", "/work/shared/corpus")
PROTOS_DIR = os.path.join(CORPUS, "protos-c07-sip", "cases")
UDP_MAX = 65000     # larger messages go over TCP only

_REC = re.compile(rb"(\d+) ")


def available():
    return os.path.isdir(PROTOS_DIR)


def cases():
    """Every case name, in order ("0000000" ... "0004526")."""
    return sorted(os.listdir(PROTOS_DIR))


def records(case):
    """A case's records: the INVITE, then its teardown (CANCEL or BYE).
    Each is "LENGTH MESSAGE"; the length holds before substitution."""
    path = case if os.sep in case else os.path.join(PROTOS_DIR, case)
    with open(path, "rb") as f:
        b = f.read()
    recs, i = [], 0
    while i < len(b):
        m = _REC.match(b, i)
        if not m:
            break
        n = int(m.group(1))
        recs.append(b[m.end():m.end() + n])
        i = m.end() + n
    return recs


def fill(rec, case, ip, lport, tp, tag, port, to_user=b"74951234567",
         from_user=b"79161234567", teardown=b"CANCEL"):
    """The README's placeholders; Content-Length counts the substituted
    body. ip/lport are the sender's, port the daemon's; tag keeps the
    Call-ID and branch of one run apart from another's."""
    if isinstance(case, str):
        case = case.encode()
    if isinstance(tag, str):
        tag = tag.encode()
    if isinstance(ip, str):
        ip = ip.encode()
    if tp == "tcp":
        rec = rec.replace(b"SIP/2.0/UDP <From-Address>", b"SIP/2.0/TCP <From-Address>")
    subs = {b"<To>": to_user + b"@127.0.0.1:%d" % port,
            b"<From>": from_user + b"@" + ip,
            b"<From-Address>": ip,
            b"<From-IP>": ip,
            b"<Local-Port>": b"%d" % lport,
            b"<Branch-ID>": case + tag,
            b"<Call-ID>": b"protos-" + case + b"-" + tag,
            b"<CSeq>": b"1",
            b"<Teardown-Method>": teardown}
    for k, v in subs.items():
        rec = rec.replace(k, v)
    if b"<Content-Length>" in rec:
        sep = rec.find(b"\r\n\r\n")
        body = rec[sep + 4:] if sep >= 0 else b""
        rec = rec.replace(b"<Content-Length>", b"%d" % len(body))
    return rec


def is_big(recs):
    """Too big for one datagram: must go over TCP."""
    return max(len(r) for r in recs) > UDP_MAX


def sample(names, n):
    """n cases spread evenly over the whole list, the first and the last
    included: the suite is ordered by mutation (each header and SDP field
    in turn, each kind of overflow, format string, integer and separator),
    so an even stride meets every kind. Deterministic: the same list and n
    give the same cases."""
    if n >= len(names):
        return list(names)
    if n <= 1:
        return list(names[:n])
    step = (len(names) - 1) / (n - 1)
    return [names[round(i * step)] for i in range(n)]
