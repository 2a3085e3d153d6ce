#!/usr/bin/env python3
"""Floods and malformed framing (issue 10): sipcrmd stays up, its memory
stays bounded, idle and truncated TCP connections are closed in time, and a
normal call placed meanwhile completes.

  * oversized messages: a 65,000-byte UDP datagram, a 1 MiB request over TCP;
  * a header flood: 3,000 headers over UDP, 40,000 over TCP;
  * 10,000 Via headers (TCP) and 1,000 (UDP);
  * a multipart body nested 900 deep (62 kB) in INVITEs from the trunk;
  * invalid UTF-8 and NUL bytes in the Request-URI, From, To, Call-ID
    and other headers of INVITEs from the trunk and OPTIONS from anyone;
  * a truncated TCP stream: Content-Length 5,000 with 100 bytes sent, then
    idle: closed after [sip] tcp_timeout;
  * 1,000 TCP connections that send nothing: all accepted (no descriptor
    exhaustion: sipcrmd, started with a soft limit of 1,024, raises it),
    all closed after [sip] tcp_idle, while a trunk call is placed,
    answered by the PBX and hung up.
After each step an OPTIONS over UDP must be answered; at the end the API
lists no stray call, VmRSS growth is bounded and SIGTERM exits 0 with no
sanitizer report.
"""
import os
import random
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port, options  # noqa: E402
from sipua import UA  # noqa: E402

TCP_IDLE = 5.0
TCP_TIMEOUT = 2.0
t = Tap()
TRUNK_IP = "127.0.0.50"
pbx_port = free_port()
d = Daemon(t)
d.write_conf(d.base_conf().replace(
    "domain = sipcrm.test\n",
    "domain = sipcrm.test\ntcp_idle = %dms\ntcp_timeout = %dms\n"
    % (TCP_IDLE * 1000, TCP_TIMEOUT * 1000)) +
    "[routing]\nfallback = sip:pbx@127.0.0.1:%d\n" % pbx_port +
    "[trunk:provider]\nmatch = %s/32\nuri = sip:127.0.0.1:%d\n" % (TRUNK_IP, pbx_port))
# started with the common soft limit of 1,024 descriptors, which the
# 1,000 connections below would exhaust unless sipcrmd raises it
lim = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, lim[1]), lim[1]))
try:
    d.start()
finally:
    resource.setrlimit(resource.RLIMIT_NOFILE, lim)
SIP = ("127.0.0.1", d.sip_port)
pid = d.proc.pid
with open("/proc/%d/limits" % pid) as f:
    soft = next((ln.split()[3] for ln in f if ln.startswith("Max open files")), "?")
want = str(65536 if lim[1] == resource.RLIM_INFINITY else min(lim[1], 65536))
t.eq(soft, want if lim[1] > 1024 else soft,
     "started with a soft limit of 1,024 descriptors, sipcrmd raised it to %s (hard %s)"
     % (soft, lim[1]))


def status(key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def nfds():
    return len(os.listdir("/proc/%d/fd" % pid))


def alive(what):
    r = options(d.sip_port, timeout=3)
    return t.ok(d.proc.poll() is None and r is not None and r.startswith("SIP/2.0 200"),
                "%s: sipcrmd still answers OPTIONS" % what,
                "exit %s, reply %r\n%s" % (d.proc.poll(), (r or "")[:200], d.log()[-2000:]))


def head(method, ruri, transport, src, lport, extra=(), body=b"", ctype=None, clen=None):
    branch = "z9hG4bK-%x" % random.getrandbits(48)
    hs = ["Via: SIP/2.0/%s %s:%d;branch=%s;rport" % (transport, src, lport, branch),
          "Max-Forwards: 70",
          "From: <sip:+79161234567@%s>;tag=%x" % (src, random.getrandbits(32)),
          "To: <%s>" % ruri,
          "Call-ID: %x@abuse" % random.getrandbits(64),
          "CSeq: 1 %s" % method,
          "Contact: <sip:a@%s:%d>" % (src, lport)]
    hs = [h.encode() for h in hs] + [h if isinstance(h, bytes) else h.encode() for h in extra]
    if ctype:
        hs.append(b"Content-Type: " + ctype.encode())
    hs.append(b"Content-Length: %d" % (len(body) if clen is None else clen))
    return b"%s %s SIP/2.0\r\n" % (method.encode(), ruri.encode()) + b"\r\n".join(hs) + \
        b"\r\n\r\n" + body


def udp(msg, src="127.0.0.1", timeout=1.0):
    """Sends one datagram; returns the status of the first final answer
    (None: none), after ACKing nothing (answers to INVITEs retransmit a
    few times and stop)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    msg = msg(s.getsockname()[1]) if callable(msg) else msg
    try:
        s.sendto(msg, SIP)
    except OSError as e:
        s.close()
        return "send: %s" % e.strerror
    end = time.time() + timeout
    st = None
    while time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            data = s.recv(70000)
        except socket.timeout:
            break
        if data.startswith(b"SIP/2.0 ") and int(data[8:11]) >= 200:
            st = int(data[8:11])
            break
    s.close()
    return st


def tcp(msg, src="127.0.0.1", timeout=5.0, wait_close=True):
    """Sends msg over a new TCP connection; returns (final status or None,
    whether the server closed the connection, seconds until then)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(SIP)
    msg = msg(s.getsockname()[1]) if callable(msg) else msg
    t0 = time.time()
    st, closed = None, False
    try:
        s.sendall(msg)
        buf = b""
        end = t0 + timeout
        while time.time() < end:
            s.settimeout(max(0.01, end - time.time()))
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            buf += chunk
            finals = [int(ln[8:11]) for ln in buf.split(b"\r\n")
                      if ln.startswith(b"SIP/2.0 ") and ln[8:11].isdigit() and int(ln[8:11]) >= 200]
            if st is None and finals:
                st = finals[0]
                if not wait_close:
                    break
    except socket.timeout:
        pass
    except OSError:
        closed = True       # reset
    s.close()
    return st, closed, time.time() - t0


RURI = "sip:+74951234567@127.0.0.1:%d" % d.sip_port
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.50\r\ns=-\r\nc=IN IP4 127.0.0.50\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")
rss0 = status("VmRSS")
fd0 = nfds()
t.diag("start: VmRSS %d kB, %d descriptors" % (rss0, fd0))

# --- oversized --------------------------------------------------------------------------------
big = "X-Big: " + "a" * 64900
st = udp(lambda p: head("OPTIONS", RURI, "UDP", "127.0.0.1", p, [big]))
t.ok(st in (None, 200, 400, 413, 513), "a 65,000-byte UDP OPTIONS (the most UDP carries): %s" % st)
alive("oversized UDP")
st, closed, secs = tcp(lambda p: head("OPTIONS", RURI, "TCP", "127.0.0.1", p,
                                      ["X-Big: " + "b" * (1 << 20)]), timeout=8)
t.ok(st in (None, 400, 413, 513) and (closed or st), "a 1 MiB request over TCP: %s, %s after %.1f s"
     % (st, "closed" if closed else "open", secs))
alive("oversized TCP")

# --- header floods ------------------------------------------------------------------------------
st = udp(lambda p: head("OPTIONS", RURI, "UDP", "127.0.0.1", p,
                        ["X-H%d: v" % i for i in range(3000)]), timeout=3)
t.ok(st in (None, 200, 400, 413, 513), "3,000 headers over UDP: %s" % st)
st, closed, secs = tcp(lambda p: head("OPTIONS", RURI, "TCP", "127.0.0.1", p,
                                      ["X-H%d: v" % i for i in range(40000)]), timeout=8)
t.ok(st in (None, 400, 413, 513), "40,000 headers over TCP: %s, %s after %.1f s"
     % (st, "closed" if closed else "open", secs))
alive("header floods")
vias = ["Via: SIP/2.0/TCP 10.%d.%d.%d:5060;branch=z9hG4bK-v%d" % (i >> 16 & 255, i >> 8 & 255,
                                                                 i & 255, i) for i in range(10000)]
st, closed, secs = tcp(lambda p: head("OPTIONS", RURI, "TCP", "127.0.0.1", p, vias), timeout=8)
t.ok(st in (None, 200, 400, 413, 513), "10,000 Via headers over TCP: %s, %s after %.1f s"
     % (st, "closed" if closed else "open", secs))
st = udp(lambda p: head("OPTIONS", RURI, "UDP", "127.0.0.1", p, vias[:1000]), timeout=3)
t.ok(st in (None, 200, 400, 413, 513), "1,000 Via headers over UDP: %s" % st)
alive("Via floods")

# --- deep multipart -------------------------------------------------------------------------------
depth = 900          # 62 kB: under the 64 KiB message limit, so it is parsed
body = b""
for i in range(depth):
    body += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
body += b"--b%d\r\nContent-Type: application/sdp\r\n\r\n" % depth + SDP + b"\r\n--b%d--\r\n" % depth
for i in range(depth - 1, -1, -1):
    body += b"--b%d--\r\n" % i
st = udp(lambda p: head("INVITE", RURI, "UDP", TRUNK_IP, p, body=body,
                        ctype="multipart/mixed; boundary=b0"), src=TRUNK_IP, timeout=2)
t.ok(st is None or 400 <= st < 500, "multipart nested %d deep (%d bytes) from the trunk over UDP: %s"
     % (depth, len(body), st))
st2, closed, secs = tcp(lambda p: head("INVITE", RURI, "TCP", TRUNK_IP, p, body=body * 1,
                                       ctype="multipart/mixed; boundary=b0"), src=TRUNK_IP,
                        timeout=3, wait_close=False)
t.ok(st2 is None or 400 <= st2 < 500, "the same over TCP: %s" % st2)
alive("multipart nested %d deep" % depth)

# --- invalid UTF-8 and NUL bytes --------------------------------------------------------------------
bad = [b"\xff\xfe\xc0\xaf", b"\xed\xa0\x80", b"a\x00b", b"\xc3", b"\x00"]
n_sent = 0
for i, junk in enumerate(bad):
    for where in ("ruri", "from", "to", "callid", "hdr", "name"):
        def mk(p, junk=junk, where=where):
            m = head("INVITE", RURI, "UDP", TRUNK_IP, p, ["Subject: s"], body=SDP,
                     ctype="application/sdp")
            if where == "ruri":
                m = m.replace(b"+74951234567@", b"+7495" + junk + b"@", 1)
            elif where == "from":
                m = m.replace(b"From: <sip:+79161234567", b"From: \"" + junk + b"\" <sip:+7916" + junk, 1)
            elif where == "to":
                m = m.replace(b"To: <sip:+74951234567", b"To: <sip:" + junk, 1)
            elif where == "callid":
                m = m.replace(b"@abuse", junk + b"@abuse", 1)
            elif where == "hdr":
                m = m.replace(b"Subject: s", b"Subject: " + junk, 1)
            else:
                m = m.replace(b"Subject: s", b"Sub" + junk + b"ject: s", 1)
            return m
        st = udp(mk, src=TRUNK_IP, timeout=0.5)
        n_sent += 1
        r = options(d.sip_port, timeout=2)
        if r is None or d.proc.poll() is not None:
            t.ok(False, "invalid bytes %r in %s: sipcrmd stopped answering" % (junk, where))
            t.bail(d.log()[-3000:])
time.sleep(1)
t.ok(True, "%d INVITEs from the trunk with invalid UTF-8 or NUL bytes in the Request-URI, From, "
     "To, Call-ID, a header value and a header name: each followed by an answered OPTIONS" % n_sent)
st, calls = d.http("GET", "/api/v1/calls")
t.eq(st, 200, "GET /api/v1/calls still works (%d calls up)" % (len(calls) if st == 200 else -1))
st, cdr = d.http("GET", "/api/v1/cdr?limit=50")
t.eq(st, 200, "GET /api/v1/cdr still works with those calls in it")
alive("invalid UTF-8 and NUL bytes")

# --- a truncated TCP stream --------------------------------------------------------------------------
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect(SIP)
msg = head("INVITE", RURI, "TCP", "127.0.0.1", s.getsockname()[1], body=b"v" * 100,
           ctype="application/sdp", clen=5000)
s.sendall(msg)
t0 = time.time()
s.settimeout(TCP_TIMEOUT + TCP_IDLE + 10)
got = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
except socket.timeout:
    pass
except OSError:
    pass
secs = time.time() - t0
s.close()
t.ok(secs < TCP_TIMEOUT + 3, "Content-Length 5,000 with 100 bytes sent, then idle: closed after "
     "%.1f s (tcp_timeout %.0f s)" % (secs, TCP_TIMEOUT), "got %r" % got[:200])
alive("truncated TCP stream")

# --- 1,000 silent TCP connections, and a call meanwhile -------------------------------------------
rss1 = status("VmRSS")
fd1 = nfds()                # a descriptor or two come and go (sqlite, the API)
conns = []
t0 = time.time()
refused = 0
for i in range(1000):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setblocking(False)
    try:
        c.connect_ex(SIP)
    except OSError:
        refused += 1
    conns.append(c)
end = time.time() + 3
while nfds() - fd1 < 1000 and time.time() < end:
    time.sleep(0.1)
fds = nfds()
t.ok(fds - fd1 >= 995, "1,000 silent TCP connections opened in %.1f s: sipcrmd holds %d more "
     "descriptors" % (time.time() - t0, fds - fd1))

pbx = UA(ip="127.0.0.1", port=pbx_port, user="pbx", server=SIP)
caller = UA(ip=TRUNK_IP, user="+79161234567", server=SIP)
dlg = caller.invite_start(RURI)
leg = pbx.wait_invite(timeout=5)
ok = leg is not None
if ok:
    leg.reply(leg.invite, 200, body=leg.sdp())
    leg.wait_ack(3)
fin = dlg.wait_final(5)
t.ok(ok and fin is not None and fin.status == 200,
     "meanwhile a trunk call reaches the PBX and is answered",
     "final %r\n%s" % (fin, d.log()[-2000:]))
r = dlg.bye() if fin is not None and fin.status == 200 else None
t.eq(r.status if r else None, 200, "and the caller's BYE ends it")

# every connection is closed by sipcrmd after tcp_idle
end = time.time() + TCP_IDLE + 15
open_conns = set(range(len(conns)))
while open_conns and time.time() < end:
    for i in list(open_conns):
        try:
            data = conns[i].recv(1)
            if data == b"":
                open_conns.discard(i)
        except BlockingIOError:
            pass
        except OSError:
            open_conns.discard(i)
    time.sleep(0.2)
secs = time.time() - t0
t.eq(len(open_conns), 0, "all 1,000 closed by sipcrmd within %.1f s of opening (tcp_idle %.0f s)"
     % (secs, TCP_IDLE))
for c in conns:
    c.close()
time.sleep(0.5)
fds2 = nfds()
t.ok(fds2 <= fd0 + 5, "sipcrmd's descriptors back to %d (started with %d)" % (fds2, fd0))
rss2 = status("VmRSS")
t.diag("VmRSS: %d kB at the start, %d kB before the 1,000 connections, %d kB after"
       % (rss0, rss1, rss2))
t.ok(rss2 - rss0 < 100 * 1024, "VmRSS grew by %d kB over all of it (bound: 100 MB, ASan build)"
     % (rss2 - rss0))
alive("1,000 silent connections")

st, calls = d.http("GET", "/api/v1/calls")
t.ok(st == 200, "%d calls still up at the end (the malformed INVITEs that became calls)"
     % (len(calls) if st == 200 else -1))
t.eq(d.stop(), 0, "SIGTERM exits 0")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "runtime error:" not in log,
     "no sanitizer report", log[-3000:])
pbx.close()
caller.close()
t.done()
