"""A fallback PBX for robustness tests: a UDP thread that answers whatever
sipcrmd sends it, with no dialog state beyond what a CANCEL needs.

  INVITE   180 Ringing, then 486 Busy Here after `busy_after` seconds,
           unless a CANCEL came first (200 to the CANCEL, 487 to the INVITE)
  BYE, OPTIONS   200
  ACK      nothing
  other    405

    pbx = FakePbx(); pbx.start()
    conf += "[routing]\\nfallback = sip:pbx@127.0.0.1:%d\\n" % pbx.port
    ...
    pbx.stop()

(t/corpus_replay.py has its own copy of this; it can use this one.)
"""
import re
import select
import socket
import threading
import time

_KEEP = re.compile(r"(?i)(via|v|from|f|call-id|i|cseq)\s*:")
_TO = re.compile(r"(?i)(to|t)\s*:")
_BRANCH = re.compile(r"(?im)^(?:via|v)\s*:[^\r\n]*;\s*branch=([^;,\s]+)")


class FakePbx(threading.Thread):
    def __init__(self, ip="127.0.0.1", busy_after=0.5):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.port = self.sock.getsockname()[1]
        self.busy_after = busy_after
        self.pending = {}       # Via branch -> (when, INVITE head, peer)
        self.counts = {}        # method -> requests received
        self.stopping = False

    @staticmethod
    def answer(head, status, reason, tag=True):
        lines = head.split("\r\n")[1:]
        keep = [x for x in lines if _KEEP.match(x)]
        to = [x for x in lines if _TO.match(x)]
        to = to[0] if to else "To: <sip:pbx@127.0.0.1>"
        if tag and ";tag=" not in to:
            to += ";tag=pbx1"
        return ("SIP/2.0 %d %s\r\n%s\r\n%s\r\nContent-Length: 0\r\n\r\n"
                % (status, reason, "\r\n".join(keep), to)).encode()

    @staticmethod
    def branch(head):
        m = _BRANCH.search(head)
        return m.group(1) if m else ""

    def _expire(self, now):
        for b, (when, head, peer) in list(self.pending.items()):
            if now >= when:
                del self.pending[b]
                self.sock.sendto(self.answer(head, 486, "Busy Here"), peer)

    def _handle(self, data, peer, now):
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        method = head.split(" ", 1)[0]
        if method.startswith("SIP/"):
            return
        self.counts[method] = self.counts.get(method, 0) + 1
        if method == "INVITE":
            self.sock.sendto(self.answer(head, 180, "Ringing"), peer)
            self.pending.setdefault(self.branch(head), (now + self.busy_after, head, peer))
        elif method == "CANCEL":
            self.sock.sendto(self.answer(head, 200, "OK", tag=False), peer)
            inv = self.pending.pop(self.branch(head), None)
            if inv:
                self.sock.sendto(self.answer(inv[1], 487, "Request Terminated"), peer)
        elif method in ("BYE", "OPTIONS"):
            self.sock.sendto(self.answer(head, 200, "OK"), peer)
        elif method != "ACK":
            self.sock.sendto(self.answer(head, 405, "Method Not Allowed"), peer)

    def run(self):
        while not self.stopping:
            now = time.time()
            self._expire(now)
            try:
                if not select.select([self.sock], [], [], 0.05)[0]:
                    continue
                data, peer = self.sock.recvfrom(70000)
            except (OSError, ValueError):
                return
            self._handle(data, peer, now)

    def stop(self):
        self.stopping = True
        self.join(2)
        self.sock.close()
