"""Black-box test harness: TAP output, free ports, the real sipcrmd, SIPp.

Every process started here is recorded and killed by its PID when the test
ends, whether it passes, fails or raises.
"""
import atexit
import json
import os
import signal
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOP_SRCDIR = os.environ.get("top_srcdir", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
TOP_BUILDDIR = os.environ.get("top_builddir", TOP_SRCDIR)
SIPCRMD = os.environ.get("SIPCRMD", os.path.join(TOP_BUILDDIR, "sipcrmd"))
SIPCRMCTL = os.environ.get("SIPCRMCTL", os.path.join(TOP_BUILDDIR, "sipcrmctl"))
SCENARIOS = os.path.join(TOP_SRCDIR, "t", "scenarios")

_procs = []


def _cleanup():
    for p in _procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))


def spawn(args, **kw):
    """Starts a process that the harness will kill at exit."""
    p = subprocess.Popen(args, **kw)
    _procs.append(p)
    return p


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, diag=None):
        self.n += 1
        print("%sok %d - %s" % ("" if cond else "not ", self.n, name), flush=True)
        if not cond:
            self.failed += 1
            if diag:
                for line in str(diag).splitlines():
                    print("#   " + line, flush=True)
        return cond

    def eq(self, got, want, name):
        return self.ok(got == want, name, "expected %r, got %r" % (want, got))

    def like(self, got, sub, name):
        return self.ok(got is not None and sub in got, name,
                       "expected to contain %r, got %r" % (sub, (got or "")[-2000:]))

    def diag(self, msg):
        for line in str(msg).splitlines():
            print("# " + line, flush=True)

    def done(self):
        print("1..%d" % self.n, flush=True)
        _cleanup()
        sys.exit(1 if self.failed else 0)

    def bail(self, msg):
        print("Bail out! %s" % msg, flush=True)
        _cleanup()
        sys.exit(1)


def free_port(udp_too=True):
    """A port free for TCP (and UDP) on 127.0.0.1."""
    for _ in range(200):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        if not udp_too:
            t.close()
            return port
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


def free_rtp_range(count=100):
    """An even-aligned range of UDP ports nobody uses right now, below the
    kernel's ephemeral range: free_port() picks from that range, so a port a
    test chose for a UA is never inside some daemon's RTP range (the daemon
    binds its RTP ports only as calls come, long after the choice)."""
    lo = 20000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        eph = 32768
    hi = max(lo + count, eph) - count
    for _ in range(50):
        base = random.randrange(lo, hi) & ~1
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", base))
            return base, base + count - 1
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free RTP range")


class Daemon:
    """The real sipcrmd on free loopback ports, in a temporary folder."""

    def __init__(self, tap, extra="", name="sipcrmd", token="test-token", sections=None):
        self.tap = tap
        self.dir = tempfile.mkdtemp(prefix="sipcrm-t-")
        self.sip_port = free_port()
        self.api_port = free_port(udp_too=False)
        self.token = token
        self.conf_path = os.path.join(self.dir, "sipcrm.conf")
        self.log_path = os.path.join(self.dir, "sipcrmd.log")
        self.proc = None
        self.extra = extra
        self.write_conf()

    def base_conf(self):
        rtp_lo, rtp_hi = free_rtp_range()
        return (
            "[core]\ndb = sipcrm.db\nlog_level = debug\n"
            "[sip]\nlisten = udp:127.0.0.1:%d tcp:127.0.0.1:%d\ndomain = sipcrm.test\n"
            "[media]\nip = 127.0.0.1\nrtp_ports = %d-%d\ngreeting =\n"
            "[api]\nlisten = 127.0.0.1:%d\ntoken = %s\n"
            % (self.sip_port, self.sip_port, rtp_lo, rtp_hi, self.api_port, self.token))

    def write_conf(self, text=None):
        with open(self.conf_path, "w") as f:
            f.write(text if text is not None else self.base_conf() + self.extra)

    def start(self, wait=True):
        self.logf = open(self.log_path, "ab")
        self.proc = spawn([SIPCRMD, "-f", "-c", self.conf_path],
                          stdout=self.logf, stderr=subprocess.STDOUT)
        if wait and not self.wait_ready():
            self.tap.bail("sipcrmd did not start:\n" + self.log())
        return self

    def wait_ready(self, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                return False
            try:
                st, _ = self.http("GET", "/api/v1/health", auth=False, timeout=1)
                if st == 200:
                    return True
            except Exception:
                pass
            time.sleep(0.05)
        return False

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def http(self, method, path, body=None, auth=True, token=None, timeout=5, raw=False):
        url = "http://127.0.0.1:%d%s" % (self.api_port, path)
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = "Bearer " + (token if token is not None else self.token)
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode(errors="replace")
                return r.status, (text if raw else _json_or_text(text))
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            return e.code, (text if raw else _json_or_text(text))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        """SIGTERM; returns the exit status (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None


def _json_or_text(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def sipp(args, timeout=30, cwd=None):
    """Runs SIPp to completion; returns (exit code, output)."""
    p = spawn(["sipp"] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
              stdin=subprocess.DEVNULL, cwd=cwd)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return -1, out.decode(errors="replace")
    return p.returncode, out.decode(errors="replace")


def sipp_client(tap, daemon, scenario, transport="u1", calls=1, extra=None, timeout=30):
    """Runs a UAC scenario from t/scenarios against the daemon."""
    wd = tempfile.mkdtemp(prefix="sipp-", dir=daemon.dir)
    args = ["-sf", os.path.join(SCENARIOS, scenario), "-t", transport,
            "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(calls),
            "-timeout", str(timeout - 5) + "s", "-timeout_error", "-nostdin",
            "-trace_err", "127.0.0.1:%d" % daemon.sip_port]
    if extra:
        args = args[:-1] + extra + args[-1:]
    return sipp(args, timeout=timeout, cwd=wd)


def udp_request(port, text, timeout=2.0, src_ip="127.0.0.1"):
    """Sends one raw SIP message over UDP and returns the first reply (or None)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src_ip, 0))
    s.settimeout(timeout)
    lport = s.getsockname()[1]
    data = text.replace("{lport}", str(lport)).replace("{lip}", src_ip)
    s.sendto(data.encode(), ("127.0.0.1", port))
    try:
        reply, _ = s.recvfrom(65535)
        return reply.decode(errors="replace")
    except socket.timeout:
        return None
    finally:
        s.close()


def options(port, call_id=None, src_ip="127.0.0.1", timeout=2.0):
    call_id = call_id or "opt-%f@t" % time.time()
    msg = ("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"
           "Via: SIP/2.0/UDP {lip}:{lport};branch=z9hG4bK-%s\r\n"
           "Max-Forwards: 70\r\n"
           "From: <sip:probe@{lip}>;tag=t1\r\n"
           "To: <sip:127.0.0.1:%d>\r\n"
           "Call-ID: %s\r\n"
           "CSeq: 1 OPTIONS\r\n"
           "Content-Length: 0\r\n\r\n") % (port, call_id.replace("@", "-"), port, call_id)
    return udp_request(port, msg, timeout=timeout, src_ip=src_ip)
