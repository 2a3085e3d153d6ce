"""A small generic-protocol CRM for tests (CONTRACT §4): answers lookups
from a table, with a configurable delay, and records what it received.
Runs in a thread of the test process, on a free loopback port.

Events: every POST is kept in .events as (signature header, raw body), and
parsed in .received as dicts with "_sig_ok" (the X-Sipcrm-Signature is the
HMAC-SHA256 of the raw body with the secret). .events_status is the status
answered to POSTs (200; set 500 to refuse them), after .events_delay s. stop() and start() take it
down and bring it back on the same port.

Run as a program (for bench/): crm_emulator.py --port N [--secret S]
[--delay SECONDS] [--responsible PHONE=EXT ...]; it prints its URL and
serves until killed."""
import hashlib
import hmac
import json
import select
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CrmEmulator:
    # failure modes for lookups (.mode) and events (.events_mode): None
    # (answer), "500", "garbage" (200 with a body that is not JSON), "huge"
    # (200 with 2 MiB), "huge50" (200 with 50 MiB), "hang" (no answer for
    # 10 s), "drip" (200, then a byte every 0.2 s), "close" (no answer at
    # all), "midbody" (200 announcing 1000 bytes, 100 sent, then closed).
    # An event POST in a mode other than "500" and "close" is recorded as
    # received (the CRM took it; its answer failed), so it may come again.
    MODES = (None, "500", "garbage", "huge", "huge50", "hang", "drip", "close",
             "midbody")

    def __init__(self, secret="crm-secret", delay=0.0, port=0):
        self.secret = secret
        self.delay = delay
        self.mode = None
        self.responsible = {}           # phone -> {"id":..., "extension":...}
        self.lookups = []               # (time, query dict, auth header)
        self.events = []                # (signature header, raw body)
        self.received = []              # parsed events, with "_sig_ok"
        self.aborted = []               # call_id of lookups the client gave up
        self.events_status = 200
        self.events_delay = 0.0         # seconds before answering a POST
        self.events_mode = None         # a failure mode for POSTs
        self.requests = 0               # HTTP requests of any kind
        self.port = port
        self.server = None
        self.start()

    def verify(self, sig, raw):
        want = "sha256=" + hmac.new(self.secret.encode(), raw,
                                    hashlib.sha256).hexdigest()
        return sig is not None and hmac.compare_digest(sig, want)

    def start(self):
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                emu.requests += 1
                u = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                emu.lookups.append((time.time(), q, self.headers.get("Authorization")))
                if emu.delay and self.client_gone(emu.delay):
                    emu.aborted.append(q.get("call_id"))
                    return
                if emu.mode and self.failure(emu.mode):
                    return
                r = emu.responsible.get(q.get("phone", ""))
                if r is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"contact": {"id": "c-1", "name": "Client"},
                                   "responsible": r}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def client_gone(self, delay):
                """Sleeps delay s; True as soon as the client closes."""
                end = time.time() + delay
                while time.time() < end:
                    r, _, _ = select.select([self.connection], [], [],
                                            min(0.02, max(0, end - time.time())))
                    if r:
                        try:
                            if not self.connection.recv(1, socket.MSG_PEEK):
                                return True
                        except OSError:
                            return True
                        time.sleep(0.02)
                return False

            def failure(self, mode):
                try:
                    if mode == "close":
                        self.close_connection = True
                        return True
                    if mode == "hang":
                        time.sleep(10)
                        return True
                    if mode == "500":
                        self.send_response(500)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return True
                    if mode == "huge50":
                        n = 50 << 20
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(n))
                        self.end_headers()
                        chunk = b"[" + b" " * ((1 << 20) - 1)
                        for _ in range(n // len(chunk)):
                            self.wfile.write(chunk)
                        return True
                    if mode == "midbody":
                        self.close_connection = True
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", "1000")
                        self.end_headers()
                        self.wfile.write(b'{"contact": {"id": "c-1", ' + b" " * 74)
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return True
                    body = {"garbage": b"{not json", "huge": b"x" * (2 << 20),
                            "drip": b"{" + b" " * 100}.get(mode)
                    if body is None:
                        return False
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if mode == "drip":
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(0.2)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True
                return True

            def do_POST(self):
                emu.requests += 1
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                sig = self.headers.get("X-Sipcrm-Signature")
                if emu.events_delay:
                    time.sleep(emu.events_delay)
                mode = emu.events_mode
                if mode:
                    if mode not in ("500", "close"):
                        emu.events.append((sig, raw))
                        emu.record(sig, raw)
                    self.failure(mode)
                    return
                status = emu.events_status
                if status == 200:
                    emu.events.append((sig, raw))
                    emu.record(sig, raw)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def record(self, sig, raw):
        try:
            ev = json.loads(raw)
            if isinstance(ev, dict):
                ev["_sig_ok"] = self.verify(sig, raw)
                self.received.append(ev)
        except ValueError:
            pass

    def of_call(self, call_id):
        """The events received for one call, de-duplicated by id, in arrival order."""
        seen, out = set(), []
        for ev in list(self.received):
            if ev.get("call_id") == call_id and ev["id"] not in seen:
                seen.add(ev["id"])
                out.append(ev)
        return out

    def wait_for(self, pred, timeout=5.0):
        """Waits until pred() is true; returns its last value."""
        end = time.time() + timeout
        while True:
            v = pred()
            if v or time.time() > end:
                return v
            time.sleep(0.02)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--secret", default="crm-secret")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--responsible", action="append", default=[],
                    metavar="PHONE=EXT")
    a = ap.parse_args()
    emu = CrmEmulator(secret=a.secret, delay=a.delay, port=a.port)
    for r in a.responsible:
        phone, ext = r.split("=", 1)
        emu.responsible[phone] = {"id": ext, "extension": ext}
    print(emu.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emu.stop()


if __name__ == "__main__":
    main()
