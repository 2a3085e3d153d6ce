"""A small generic-protocol CRM for tests (CONTRACT §4): answers lookups
from a table, with a configurable delay, and records what it received.
Runs in a thread of the test process, on a free loopback port."""
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class CrmEmulator:
    # failure modes for lookups: None (answer), "500", "garbage" (200 with a
    # body that is not JSON), "huge" (200 with 2 MiB), "hang" (no answer for
    # 10 s), "drip" (200, then a byte every 0.2 s), "close" (no answer at all)
    MODES = (None, "500", "garbage", "huge", "hang", "drip", "close")

    def __init__(self, secret="crm-secret", delay=0.0):
        self.secret = secret
        self.delay = delay
        self.mode = None
        self.responsible = {}           # phone -> {"id":..., "extension":...}
        self.lookups = []               # (time, query dict, auth header)
        self.events = []
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                emu.lookups.append((time.time(), q, self.headers.get("Authorization")))
                if emu.delay:
                    time.sleep(emu.delay)
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
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return True

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                emu.events.append((self.headers.get("X-Sipcrm-Signature"), self.rfile.read(n)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
