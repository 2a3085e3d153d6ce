#!/usr/bin/env python3
"""The CRM emulator for the benchmarks: the generic protocol of CONTRACT.md
§4 (the same as t/lib/crm_emulator.py), as a separate process built for
load: asyncio, HTTP/1.1 keep-alive, no thread per request.

  GET  /lookup?phone=..&did=..&call_id=..   Authorization: Bearer SECRET
       200 {"contact":..,"responsible":{"id":..,"extension":EXT}} for every
       caller (--responsible EXT), or 404 with --responsible "".
  POST /events        recorded (raw body, parsed only when asked), 200.

Control (same port, no token):
  POST /_ctl?delay=MS&mode=answer|hang|500   change behaviour at once
       (hang: read the request, never answer, keep the connection open:
        a CRM that accepts connections and stops answering)
  GET  /_stats        JSON: lookups (count, with a good token, first
       samples), events (count, and with ?check=1 the per-call analysis:
       duplicate ids, gaps in seq), connections, CPU.
  POST /_reset        forget lookups and events

  crm_server.py --port P --secret S [--responsible 101] [--delay MS]
Prints "READY port" on stdout once listening. SIGTERM ends it.
"""
import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.parse

RESP_404 = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
RESP_500 = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
RESP_200_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
RESP_401 = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"


class State:
    def __init__(self, a):
        self.secret = a.secret
        self.delay = a.delay / 1000.0
        self.mode = "answer"
        self.set_responsible(a.responsible)
        self.reset()
        self.conns = 0
        self.conns_total = 0
        self.hung = 0

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
        self.t0 = time.time()


ST = None


class Http(asyncio.Protocol):
    __slots__ = ("tr", "buf", "closed")

    def connection_made(self, tr):
        self.tr = tr
        self.buf = b""
        self.closed = False
        ST.conns += 1
        ST.conns_total += 1

    def connection_lost(self, exc):
        self.closed = True
        ST.conns -= 1

    def data_received(self, data):
        self.buf = self.buf + data if self.buf else data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            clen = 0
            i = head.find(b"\r\nContent-Length:")
            if i < 0:
                i = head.lower().find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                clen = int(head[i + 17:j if j > 0 else len(head)].strip() or b"0")
            total = end + 4 + clen
            if len(self.buf) < total:
                return
            body = self.buf[end + 4:total]
            self.buf = self.buf[total:]
            self.request(head, body)

    def send(self, resp):
        if not self.closed:
            self.tr.write(resp)

    def request(self, head, body):
        line_end = head.find(b"\r\n")
        reqline = head[:line_end if line_end >= 0 else len(head)]
        try:
            method, target, _ = reqline.split(b" ", 2)
        except ValueError:
            self.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        path, _, query = target.partition(b"?")
        if path.startswith(b"/_"):
            return self.control(method, path, query)
        mode = ST.mode
        if method == b"GET":
            ST.lookups += 1
            good = (b"\r\nAuthorization: Bearer " + ST.secret + b"\r\n") in (head + b"\r\n") or \
                   (b"\r\nauthorization: Bearer " + ST.secret + b"\r\n") in (head + b"\r\n")
            if good:
                ST.lookups_good_auth += 1
            if len(ST.lookup_samples) < 5 or ST.lookups % 1000 == 0:
                if len(ST.lookup_samples) < 20:
                    ST.lookup_samples.append({"target": target.decode(errors="replace"),
                                              "auth_ok": good})
            q = dict(urllib.parse.parse_qsl(query.decode(errors="replace")))
            if "call_id" in q:
                ST.lookup_call_ids.add(q["call_id"])
            for key, tab in (("phone", ST.phones), ("did", ST.dids)):
                v = q.get(key, "")
                if v in tab or len(tab) < 20:
                    tab[v] = tab.get(v, 0) + 1
            if mode == "hang":
                ST.hung += 1
                return
            if mode == "500":
                return self.later(RESP_500)
            if not good:
                return self.later(RESP_401)
            return self.later(ST.resp_200)
        if method == b"POST":
            if mode == "hang":
                ST.events_hung += 1
                ST.hung += 1
                return
            if mode == "500":
                ST.events_refused += 1
                return self.send(RESP_500)
            ST.events.append(body)
            return self.send(RESP_200_EMPTY)
        self.send(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")

    def later(self, resp):
        if ST.delay > 0:
            asyncio.get_running_loop().call_later(ST.delay, self.send, resp)
        else:
            self.send(resp)

    def control(self, method, path, query):
        q = dict(urllib.parse.parse_qsl(query.decode(errors="replace")))
        if path == b"/_ctl":
            if "delay" in q:
                ST.delay = float(q["delay"]) / 1000.0
            if "mode" in q:
                ST.mode = q["mode"]
            if "responsible" in q:
                ST.set_responsible(q["responsible"])
            out = {"mode": ST.mode, "delay_ms": ST.delay * 1000, "responsible": ST.responsible}
        elif path == b"/_reset":
            ST.reset()
            out = {"reset": True}
        elif path == b"/_stats":
            out = stats(q.get("check") == "1")
        else:
            out = {"error": "unknown control path"}
        body = json.dumps(out).encode()
        self.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)


def stats(check):
    ru = os.times()
    out = {"mode": ST.mode, "delay_ms": ST.delay * 1000, "lookups": ST.lookups,
           "lookups_good_auth": ST.lookups_good_auth, "lookup_samples": ST.lookup_samples,
           "lookup_call_ids": len(ST.lookup_call_ids), "phones": ST.phones, "dids": ST.dids,
           "events": len(ST.events), "events_hung": ST.events_hung,
           "events_refused": ST.events_refused, "connections_open": ST.conns,
           "connections_total": ST.conns_total, "requests_hung": ST.hung,
           "cpu_s": round(ru.user + ru.system, 3), "since_reset_s": round(time.time() - ST.t0, 3)}
    if check:
        ids = {}
        calls = {}
        types = {}
        bad = 0
        for raw in ST.events:
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
        gaps = 0
        disorder = 0
        dup_seq = 0
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
    global ST
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", default="bench-secret")
    ap.add_argument("--responsible", default="101")
    ap.add_argument("--delay", type=float, default=0.0, help="lookup delay, ms")
    a = ap.parse_args()
    a.secret = a.secret.encode()
    ST = State(a)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    srv = loop.run_until_complete(loop.create_server(Http, "127.0.0.1", a.port, backlog=4096,
                                                      reuse_address=True))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    print("READY %d" % a.port, flush=True)
    try:
        loop.run_forever()
    finally:
        srv.close()


if __name__ == "__main__":
    main()
