#!/usr/bin/env python3
"""REGISTER load with digest authentication, MD5 or SHA-256 (RFC 8760),
from distinct agents, at a fixed rate: bench/run B4's SHA-256 figure
(SIPp 3.6 answers MD5 challenges only).

Each registration: REGISTER -> 401 (the WWW-Authenticate naming the wanted
algorithm is chosen among those offered) -> REGISTER with Authorization
(qop=auth, nc=00000001) -> 200. UDP, one socket, retransmission after
500 ms doubling (RFC 3261 timer E), a registration failing after 8 s
without a final answer, or on any final answer other than 401-then-200.

  regload.py --target 127.0.0.1:5060 --domain D --first 10001 --users 10000
             --password-prefix pw --rate 3000 --seconds 30
             --algorithm SHA-256 [--json FILE]

Prints (and writes with --json) one JSON object: attempted, ok, failed,
timeouts, retransmissions, achieved rate, CPU seconds of this generator,
and p50/p99 of the registration time (first REGISTER to 200).
"""
import argparse
import hashlib
import json
import os
import random
import re
import select
import signal
import socket
import time

AUTH_RE = re.compile(r'(\w+)=("([^"]*)"|[^,\s]+)')


def parse_challenges(msg):
    out = []
    for line in msg.split("\r\n"):
        name, _, val = line.partition(":")
        if name.strip().lower() != "www-authenticate":
            continue
        val = val.strip()
        if not val.lower().startswith("digest"):
            continue
        params = {}
        for m in AUTH_RE.finditer(val[6:]):
            params[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
        out.append(params)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--first", type=int, default=10001)
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--password-prefix", default="pw")
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--algorithm", default="SHA-256", choices=("MD5", "SHA-256"))
    ap.add_argument("--expires", type=int, default=3600)
    ap.add_argument("--json")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    dst = (host, int(port))
    hfun = hashlib.sha256 if a.algorithm == "SHA-256" else hashlib.md5

    def H(s):
        return hfun(s.encode()).hexdigest()

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    lport = sock.getsockname()[1]
    tag = "%08x" % random.getrandbits(32)
    pending = {}        # call-id -> [user, state, t_start, t_sent, next_retx, interval, cseq, msg]
    n_total = int(a.rate * a.seconds)
    stats = dict(attempted=0, ok=0, failed=0, timeouts=0, retransmissions=0,
                 unexpected=0, challenges_without_algorithm=0)
    times = []
    uri = "sip:%s" % a.domain

    def request(user, callid, cseq, auth=None):
        branch = "z9hG4bK%s%d" % (callid[:10], cseq)
        return ("REGISTER %s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=%s\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\n"
                "Call-ID: %s\r\nCSeq: %d REGISTER\r\n"
                "Contact: <sip:%s@127.0.0.1:%d>\r\nExpires: %d\r\n%s"
                "Content-Length: 0\r\n\r\n" % (
                    uri, lport, branch, user, a.domain, tag, user, a.domain, callid, cseq,
                    user, lport, a.expires, ("Authorization: %s\r\n" % auth) if auth else "")
                ).encode()

    stopping = []
    signal.signal(signal.SIGTERM, lambda *x: stopping.append(1))
    t0 = time.time()
    cpu0 = os.times()
    interval = 1.0 / a.rate
    next_send = t0
    last_send = t0
    sent = 0
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    deadline = t0 + a.seconds + 15
    while True:
        now = time.time()
        # new registrations due
        while sent < n_total and next_send <= now:
            user = str(a.first + (sent % a.users))
            callid = "%x-%d@regload" % (random.getrandbits(48), sent)
            msg = request(user, callid, 1)
            pending[callid] = [user, 1, now, now, now + 0.5, 0.5, 1, msg]
            try:
                sock.sendto(msg, dst)
            except BlockingIOError:
                pass
            sent += 1
            stats["attempted"] += 1
            next_send += interval
            last_send = now
        # answers
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                break
            txt = data.decode(errors="replace")
            if not txt.startswith("SIP/2.0 "):
                continue
            code = int(txt[8:11])
            if code < 200:
                continue
            m = re.search(r"\r\nCall-ID:\s*(\S+)", txt, re.I)
            if not m or m.group(1) not in pending:
                continue
            callid = m.group(1)
            p = pending[callid]
            cs = re.search(r"\r\nCSeq:\s*(\d+)", txt, re.I)
            if cs and int(cs.group(1)) != p[6]:
                continue                    # an answer to a retransmitted earlier request
            if p[1] == 1 and code == 401:
                ch = [c for c in parse_challenges(txt)
                      if c.get("algorithm", "MD5").upper() == a.algorithm]
                if not ch:
                    stats["challenges_without_algorithm"] += 1
                    stats["failed"] += 1
                    del pending[callid]
                    continue
                c = ch[0]
                realm, nonce = c.get("realm", ""), c.get("nonce", "")
                cnonce = "%08x" % random.getrandbits(32)
                ha1 = H("%s:%s:%s%s" % (p[0], realm, a.password_prefix, p[0]))
                ha2 = H("REGISTER:%s" % uri)
                qop = "auth" if "auth" in c.get("qop", "").split(",") else None
                if qop:
                    resp = H("%s:%s:00000001:%s:auth:%s" % (ha1, nonce, cnonce, ha2))
                else:
                    resp = H("%s:%s:%s" % (ha1, nonce, ha2))
                auth = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", '
                        'response="%s", algorithm=%s' % (p[0], realm, nonce, uri, resp,
                                                         a.algorithm))
                if qop:
                    auth += ', qop=auth, nc=00000001, cnonce="%s"' % cnonce
                if "opaque" in c:
                    auth += ', opaque="%s"' % c["opaque"]
                p[1], p[6] = 2, 2
                p[7] = request(p[0], callid, 2, auth)
                p[3], p[4], p[5] = now, now + 0.5, 0.5
                try:
                    sock.sendto(p[7], dst)
                except BlockingIOError:
                    pass
            elif p[1] == 2 and code == 200:
                stats["ok"] += 1
                times.append(now - p[2])
                del pending[callid]
            else:
                stats["unexpected"] += 1
                stats["failed"] += 1
                del pending[callid]
        # retransmissions and timeouts
        if pending:
            for callid in [c for c, p in pending.items() if p[4] <= now]:
                p = pending[callid]
                if now - p[3] > 8.0:
                    stats["timeouts"] += 1
                    stats["failed"] += 1
                    del pending[callid]
                    continue
                p[5] = min(p[5] * 2, 4.0)
                p[4] = now + p[5]
                stats["retransmissions"] += 1
                try:
                    sock.sendto(p[7], dst)
                except BlockingIOError:
                    pass
        if sent >= n_total and not pending:
            break
        if now > deadline or stopping:
            stats["timeouts"] += len(pending)
            stats["failed"] += len(pending)
            break
        wait = 0.05
        if sent < n_total:
            wait = max(0.0, min(wait, next_send - time.time()))
        ep.poll(wait)
    t1 = time.time()
    cpu1 = os.times()
    times.sort()

    def pct(q):
        if not times:
            return None
        return round(1000 * times[min(len(times) - 1, max(0, int(q / 100.0 * len(times) + 0.999) - 1))], 3)
    out = dict(stats)
    out.update(algorithm=a.algorithm, rate=a.rate, seconds=a.seconds, users=a.users,
               wall_s=round(t1 - t0, 3), send_span_s=round(last_send - t0, 3),
               achieved_rate=round(max(0, stats["attempted"] - 1) / max(1e-3, last_send - t0), 1),
               cpu_s=round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 3),
               p50_ms=pct(50), p99_ms=pct(99), max_ms=round(1000 * times[-1], 3) if times else None)
    txt = json.dumps(out)
    if a.json:
        with open(a.json, "w") as f:
            f.write(txt)
    print(txt)


if __name__ == "__main__":
    main()
