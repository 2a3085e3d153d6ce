#!/usr/bin/env python3
"""The CRM emulator for the benchmarks: the generic protocol of CONTRACT.md
§4 (the same as t/lib/crm_emulator.py), as a separate process built for
load: one epoll loop, non-blocking sockets, HTTP/1.1 keep-alive, no thread
and no asyncio machinery per request (about 25 us of CPU per request).

  GET  /lookup?phone=..&did=..&call_id=..   Authorization: Bearer SECRET
       200 {"contact":..,"responsible":{"id":..,"extension":EXT}} for every
       caller (--responsible EXT), or 404 with --responsible "".
  POST /events        recorded (raw body, parsed only when asked), 200.

Control (same port, no token):
  POST /_ctl?delay=MS&mode=answer|hang|500&responsible=EXT
       change behaviour at once (hang: read the request, never answer,
       keep the connection open: a CRM that accepts connections and stops
       answering; such requests stay unanswered for good)
  GET  /_stats        JSON: lookups (count, with the right token, by phone
       and DID, first samples), events (count; with ?check=1 the per-call
       analysis: duplicate ids, gaps in seq), connections, CPU.
  POST /_reset        forget lookups and events

  crm_server.py --port P --secret S [--responsible 101] [--delay MS]
Prints "READY port" on stdout once listening. SIGTERM ends it.
"""
import argparse
import errno
import heapq
import json
import os
import select
import signal
import socket
import time
import urllib.parse

RESP_404 = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
RESP_500 = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
RESP_200_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
RESP_401 = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
RESP_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
RESP_405 = b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"


class State:
    def __init__(self, a):
        self.secret = a.secret
        self.auth = b"\r\nauthorization: bearer " + a.secret.lower() + b"\r\n"
        self.delay = a.delay / 1000.0
        self.mode = "answer"
        self.set_responsible(a.responsible)
        self.reset()
        self.conns = 0
        self.conns_total = 0

    def set_responsible(self, ext):
        self.responsible = ext
        if ext:
            body = json.dumps({"contact": {"id": "c-1", "name": "Bench client"},
                               "responsible": {"id": "u-" + ext, "extension": ext}}).encode()
            self.resp_200 = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body)) + body
        else:
            self.resp_200 = RESP_404

    def reset(self):
        self.lookups = 0
        self.lookups_good_auth = 0
        self.lookup_samples = []
        self.lookup_call_ids = set()
        self.phones = {}            # phone -> lookups (at most 20 distinct kept)
        self.dids = {}
        self.events = []            # raw bodies answered 200
        self.events_hung = 0
        self.events_refused = 0
        self.hung = 0
        self.t0 = time.time()


class Conn:
    __slots__ = ("sock", "buf", "out")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.out = b""


class Server:
    def __init__(self, st, port):
        self.st = st
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(4096)
        self.ls.setblocking(False)
        self.ep = select.epoll()
        self.ep.register(self.ls.fileno(), select.EPOLLIN)
        self.conns = {}
        self.timers = []            # (when, seq, fd, sock, response)
        self.seq = 0
        self.running = True

    # ---- I/O ------------------------------------------------------------------------
    def run(self):
        lfd = self.ls.fileno()
        while self.running:
            timeout = -1
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            try:
                events = self.ep.poll(timeout)
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd == lfd:
                    self.accept()
                    continue
                c = self.conns.get(fd)
                if c is None:
                    continue
                if ev & select.EPOLLIN:
                    self.readable(fd, c)
                if ev & select.EPOLLOUT and fd in self.conns:
                    self.flush(fd, c)
                if ev & (select.EPOLLHUP | select.EPOLLERR) and fd in self.conns and not ev & select.EPOLLIN:
                    self.close(fd)
            if self.timers:
                now = time.monotonic()
                while self.timers and self.timers[0][0] <= now:
                    _, _, fd, sock, resp = heapq.heappop(self.timers)
                    c = self.conns.get(fd)
                    if c is not None and c.sock is sock:
                        self.send(fd, c, resp)

    def accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    return
                raise
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns[s.fileno()] = Conn(s)
            self.ep.register(s.fileno(), select.EPOLLIN)
            self.st.conns += 1
            self.st.conns_total += 1

    def close(self, fd):
        c = self.conns.pop(fd, None)
        if c is None:
            return
        try:
            self.ep.unregister(fd)
        except OSError:
            pass
        c.sock.close()
        self.st.conns -= 1

    def readable(self, fd, c):
        try:
            data = c.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(fd)
            return
        if not data:
            self.close(fd)
            return
        buf = c.buf + data if c.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            clen = 0
            i = head.find(b"\r\nContent-Length:")
            if i < 0:
                i = head.lower().find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                try:
                    clen = int(head[i + 17:j if j > 0 else len(head)].strip() or b"0")
                except ValueError:
                    clen = 0
            total = end + 4 + clen
            if len(buf) < total:
                break
            body = buf[end + 4:total]
            buf = buf[total:]
            self.request(fd, c, head, body)
            if fd not in self.conns:
                return
        c.buf = buf

    def send(self, fd, c, resp):
        if c.out:
            c.out += resp
            return
        try:
            n = c.sock.send(resp)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close(fd)
            return
        if n < len(resp):
            c.out = resp[n:]
            self.ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)

    def flush(self, fd, c):
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(fd)
            return
        c.out = c.out[n:]
        if not c.out:
            self.ep.modify(fd, select.EPOLLIN)

    def later(self, fd, c, resp):
        if self.st.delay > 0:
            self.seq += 1
            heapq.heappush(self.timers, (time.monotonic() + self.st.delay, self.seq, fd, c.sock, resp))
        else:
            self.send(fd, c, resp)

    # ---- HTTP ---------------------------------------------------------------------------
    def request(self, fd, c, head, body):
        st = self.st
        sp1 = head.find(b" ")
        sp2 = head.find(b" ", sp1 + 1)
        if sp1 <= 0 or sp2 <= 0:
            return self.send(fd, c, RESP_400)
        method, target = head[:sp1], head[sp1 + 1:sp2]
        path, _, query = target.partition(b"?")
        if path.startswith(b"/_"):
            return self.control(fd, c, path, query)
        mode = st.mode
        if method == b"GET":
            st.lookups += 1
            good = st.auth in head.lower() + b"\r\n"
            if good:
                st.lookups_good_auth += 1
            if len(st.lookup_samples) < 5:
                st.lookup_samples.append({"target": target.decode(errors="replace"), "auth_ok": good})
            q = dict(urllib.parse.parse_qsl(query.decode(errors="replace")))
            if "call_id" in q:
                st.lookup_call_ids.add(q["call_id"])
            for key, tab in (("phone", st.phones), ("did", st.dids)):
                v = q.get(key, "")
                if v in tab or len(tab) < 20:
                    tab[v] = tab.get(v, 0) + 1
            if mode == "hang":
                st.hung += 1
                return
            if mode == "500":
                return self.later(fd, c, RESP_500)
            if not good:
                return self.later(fd, c, RESP_401)
            return self.later(fd, c, st.resp_200)
        if method == b"POST":
            if mode == "hang":
                st.events_hung += 1
                st.hung += 1
                return
            if mode == "500":
                st.events_refused += 1
                return self.send(fd, c, RESP_500)
            st.events.append(body)
            return self.send(fd, c, RESP_200_EMPTY)
        self.send(fd, c, RESP_405)

    def control(self, fd, c, path, query):
        st = self.st
        q = dict(urllib.parse.parse_qsl(query.decode(errors="replace"), keep_blank_values=True))
        if path == b"/_ctl":
            if "delay" in q:
                st.delay = float(q["delay"]) / 1000.0
            if "mode" in q:
                st.mode = q["mode"]
            if "responsible" in q:
                st.set_responsible(q["responsible"])
            out = {"mode": st.mode, "delay_ms": st.delay * 1000, "responsible": st.responsible}
        elif path == b"/_reset":
            st.reset()
            out = {"reset": True}
        elif path == b"/_stats":
            out = stats(st, q.get("check") == "1")
        else:
            out = {"error": "unknown control path"}
        body = json.dumps(out).encode()
        self.send(fd, c, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)


def stats(st, check):
    ru = os.times()
    out = {"mode": st.mode, "delay_ms": st.delay * 1000, "lookups": st.lookups,
           "lookups_good_auth": st.lookups_good_auth, "lookup_samples": st.lookup_samples,
           "lookup_call_ids": len(st.lookup_call_ids), "phones": st.phones, "dids": st.dids,
           "events": len(st.events), "events_hung": st.events_hung,
           "events_refused": st.events_refused, "connections_open": st.conns,
           "connections_total": st.conns_total, "requests_hung": st.hung,
           "cpu_s": round(ru.user + ru.system, 3), "since_reset_s": round(time.time() - st.t0, 3)}
    if check:
        ids = {}
        calls = {}
        types = {}
        bad = 0
        for raw in st.events:
            try:
                e = json.loads(raw)
            except ValueError:
                bad += 1
                continue
            eid = e.get("id")
            ids[eid] = ids.get(eid, 0) + 1
            types[e.get("type")] = types.get(e.get("type"), 0) + 1
            cid = e.get("call_id")
            if cid is not None and e.get("seq") is not None:
                calls.setdefault(cid, []).append(e.get("seq"))
        dup_ids = sum(n - 1 for n in ids.values() if n > 1)
        gaps = disorder = dup_seq = 0
        for seqs in calls.values():
            s = sorted(set(seqs))
            dup_seq += len(seqs) - len(s)
            if s and (s[0] != 1 or s[-1] != len(s)):
                gaps += 1
            if seqs != sorted(seqs):
                disorder += 1
        out.update({"events_unparsable": bad, "event_types": types, "event_ids": len(ids),
                    "duplicate_ids": dup_ids, "calls_with_events": len(calls),
                    "calls_with_seq_gap": gaps, "calls_out_of_order": disorder,
                    "duplicate_seq": dup_seq})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", default="bench-secret")
    ap.add_argument("--responsible", default="101")
    ap.add_argument("--delay", type=float, default=0.0, help="lookup delay, ms")
    a = ap.parse_args()
    a.secret = a.secret.encode()
    srv = Server(State(a), a.port)

    def end(*_):
        srv.running = False
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    print("READY %d" % a.port, flush=True)
    srv.run()


if __name__ == "__main__":
    main()
