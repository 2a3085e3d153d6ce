"""Shared machinery of bench/run: processes (started here, stopped by PID),
free loopback ports, CPU and memory from /proc, SIPp output parsing, the
CRM emulator process, and the two systems under test (sipcrmd; Kamailio
with or without rtpengine), each started fresh in a folder of its own."""
import json
import math
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import time
import urllib.request

TOP = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BENCH = os.path.join(TOP, "bench")
SCEN = os.path.join(BENCH, "scenarios")
CLK_TCK = os.sysconf("SC_CLK_TCK")
DOMAIN = "bench.local"
SECRET = "bench-secret"
DID = "74951234567"
CALLER = "79161234567"
AGENT = "101"
AGENT_PW = "pw101"
# Media (sipcrmd's [media] ip, rtpengine's --interface) lives on a loopback
# address of its own: the RTP port ranges then never meet the SIP and HTTP
# ports of 127.0.0.1 (rtpengine binds with SO_REUSEADDR, and so does
# Kamailio: on one address they could share a port), nor other programs'.
MEDIA_IP = "127.0.0.2"

procs = []          # every process started here, killed by PID at exit
held = []           # sockets and buffers kept alive (the caller's media port)


def log(msg):
    print(msg, flush=True)


def spawn(args, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(args, **kw)
    procs.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    """Stops one process we started: SIG, then SIGKILL after TIMEOUT s."""
    if p is None or p.poll() is not None:
        return p.returncode if p is not None else None
    try:
        p.send_signal(sig)
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        return None


def cleanup():
    """Stops every process this run started, by its PID: SIGTERM first (a
    Kamailio main process then stops its children; SIGKILL would orphan
    them), SIGKILL what is left after 5 s."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        try:
            p.terminate()
        except Exception:
            pass
    end = time.time() + 5
    for p in live:
        try:
            p.wait(max(0.1, end - time.time()))
        except Exception:
            pass
    for p in live:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass
    for s in held:
        if hasattr(s, "close"):
            try:
                s.close()
            except OSError:
                pass


# ---- ports ------------------------------------------------------------------------
def free_port(tcp_too=False):
    """A port free for UDP (and TCP) on 127.0.0.1."""
    for _ in range(200):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        try:
            if tcp_too:
                t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                finally:
                    t.close()
            return port
        finally:
            u.close()
    raise RuntimeError("no free port")


def free_port_pair():
    """A UDP port P with P+2 free too (SIPp binds -mp and -mp+2)."""
    for _ in range(200):
        p = free_port()
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", p + 2))
            s.close()
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def drop_socket():
    """A UDP port held open whose socket drops everything it receives (a
    BPF filter returning 0): the caller's media port, so the greeting and
    ringback sent to it cost the load generator nothing and draw no ICMP."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        import ctypes
        insn = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET|BPF_K 0
        prog = struct.pack("HL", 1, ctypes.addressof(insn))
        s.setsockopt(socket.SOL_SOCKET, 26, prog)  # SO_ATTACH_FILTER
        held.append(insn)
    except (OSError, ImportError):
        pass
    s.bind(("127.0.0.1", 0))
    held.append(s)
    return s.getsockname()[1]


# ---- /proc ----------------------------------------------------------------------------
def proc_cpu(pid):
    """utime+stime of PID (all its threads) in seconds, None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except (OSError, TypeError):
        return None
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_sum(pids):
    vals = [proc_cpu(p) for p in pids]
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None


def descendants(pid):
    """PID and every process below it (Kamailio forks its workers)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def mem_kib(pid):
    """VmRSS, VmHWM and Pss (smaps_rollup) of PID, in KiB."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "Pss":
                    out["Pss"] = int(v.split()[0])
    except OSError:
        pass
    return out


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def udp_counters():
    try:
        with open("/proc/net/snmp") as f:
            rows = [l.split() for l in f if l.startswith("Udp:")]
        return dict(zip(rows[0][1:], (int(x) for x in rows[1][1:])))
    except (OSError, IndexError, ValueError):
        return {}


def nofile_limit():
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- numbers ----------------------------------------------------------------------------
def pct(sorted_vals, q):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def summary(vals):
    v = sorted(vals)
    if not v:
        return None
    return {"n": len(v), "p50_ms": round(pct(v, 50), 3), "p90_ms": round(pct(v, 90), 3),
            "p99_ms": round(pct(v, 99), 3), "max_ms": round(v[-1], 3),
            "mean_ms": round(statistics.fmean(v), 3)}


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def num(d, key, default=0):
    try:
        return float(d.get(key, default))
    except (TypeError, ValueError):
        return default


def tail(path, n=30, limit=6000):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()[-n:]
    except (OSError, TypeError):
        return ""
    return "\n".join(lines)[-limit:]


def head(path, n=40, limit=6000):
    try:
        with open(path, errors="replace") as f:
            lines = []
            for i, line in enumerate(f):
                if i >= n:
                    break
                lines.append(line.rstrip("\n"))
    except (OSError, TypeError):
        return ""
    return "\n".join(lines)[:limit]


# ---- SIPp output ----------------------------------------------------------------------
def read_stat_csv(path):
    """The last row of a SIPp -trace_stat file, as {column: value}."""
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";")))


def offered_rate(path, created):
    """Calls/s SIPp created while it was still creating them, from the
    per-second rows of its -trace_stat file."""
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip("\n").split(";") for l in f if l.strip()]
        h = lines[0]
        ti, oi = h.index("CurrentTime"), h.index("OutgoingCall(C)")
        pts = [(float(r[ti].split("\t")[-1]), int(r[oi])) for r in lines[1:]]
    except (OSError, ValueError, IndexError):
        return None
    pts = [p for p in pts if 0 < p[1] < created]
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return None
    return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def find_file(folder, suffix):
    try:
        for n in sorted(os.listdir(folder)):
            if n.endswith(suffix):
                return os.path.join(folder, n)
    except OSError:
        pass
    return None


def parse_rtt(folder):
    """SIPp -trace_rtt samples (ms resolution): {rtd name: summary}."""
    path = find_file(folder, "_rtt.csv")
    vals = {}
    if not path:
        return {}
    with open(path, errors="replace") as f:
        for line in f:
            p = line.strip().split(";")
            if len(p) != 3 or p[0] == "Date_ms":
                continue
            try:
                vals.setdefault(p[2], []).append(float(p[1]))
            except ValueError:
                pass
    return {k: summary(v) for k, v in vals.items()}


def parse_call_log(path):
    """The UAC's per-call lines (trunk_uac.xml, -trace_logs): INVITE->183,
    ->200, ->180 in ms (us resolution). Returns three lists."""
    d183, d200, d180 = [], [], []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                p = line.split()
                if len(p) < 8 or p[0] != "T":
                    continue
                try:
                    v = [float(x) for x in p[2:]]
                except ValueError:
                    continue
                t0 = v[0] * 1e3 + v[1] / 1e3
                if v[2] > 0:
                    d183.append(v[2] * 1e3 + v[3] / 1e3 - t0)
                d200.append(v[4] * 1e3 + v[5] / 1e3 - t0)
                if len(v) >= 8 and v[6] > 0:
                    d180.append(v[6] * 1e3 + v[7] / 1e3 - t0)
    except OSError:
        pass
    return d183, d200, d180


def wait_rusage(p, timeout, sig, tick=None):
    """Waits for P (ours) to exit, sending SIG after TIMEOUT s and SIGKILL
    10 s later; returns its user+system CPU seconds from wait4(). Calls
    TICK() every 50 ms meanwhile."""
    end = time.time() + timeout
    sent = None
    while True:
        if tick:
            tick()
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime + ru.ru_stime
        now = time.time()
        if sent is None and now > end:
            p.send_signal(sig)
            sent = now
        elif sent is not None and now > sent + 10:
            p.kill()
        time.sleep(0.05)


def sipp_common():
    return ["-i", "127.0.0.1", "-t", "u1", "-nostdin", "-buff_size", "4194304",
            "-trace_stat", "-fd", "1", "-trace_err", "-trace_screen",
            "-watchdog_major_maxtriggers", "100000", "-watchdog_minor_maxtriggers", "100000"]


def sipp_version():
    try:
        out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"SIPp v(\S+?)\.?\s", out)
        return m.group(1) if m else None
    except Exception:
        return None


# ---- HTTP -----------------------------------------------------------------------------
def http_json(url, method="GET", timeout=5, token=None):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def prom_metrics(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            text = r.read().decode(errors="replace")
    except Exception:
        return {}
    m = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        k, _, v = line.rpartition(" ")
        try:
            m[k] = float(v)
        except ValueError:
            pass
    return m


def sip_options_ok(port, timeout=0.3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    lp = s.getsockname()[1]
    msg = ("OPTIONS sip:ping@127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%x\r\n"
           "Max-Forwards: 70\r\nFrom: <sip:ping@127.0.0.1>;tag=%x\r\nTo: <sip:ping@127.0.0.1>\r\n"
           "Call-ID: %x@bench\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n" % (
               port, lp, random.getrandbits(40), random.getrandbits(32), random.getrandbits(48)))
    try:
        s.sendto(msg.encode(), ("127.0.0.1", port))
        d = s.recv(65535)
        return d.startswith(b"SIP/2.0 ")
    except OSError:
        return False
    finally:
        s.close()


# ---- the CRM emulator -----------------------------------------------------------------
class Crm:
    """bench/lib/crm_server.py in a process of its own, pinned with the
    load generator."""

    def __init__(self, workdir, pin):
        self.port = free_port(tcp_too=True)
        self.log = os.path.join(workdir, "crm.log")
        lf = open(self.log, "ab")
        self.proc = spawn(pin + [sys.executable, os.path.join(BENCH, "lib", "crm_server.py"),
                                 "--port", str(self.port), "--secret", SECRET,
                                 "--responsible", AGENT],
                          stdout=lf, stderr=subprocess.STDOUT)
        lf.close()
        end = time.time() + 10
        while time.time() < end:
            try:
                self.stats()
                return
            except Exception:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("CRM emulator did not start:\n" + tail(self.log))

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def ctl(self, **kw):
        q = "&".join("%s=%s" % (k, v) for k, v in kw.items())
        return http_json(self.url + "/_ctl?" + q, method="POST")

    def reset(self):
        self.ctl(mode="answer", delay=0, responsible=AGENT)
        return http_json(self.url + "/_reset", method="POST")

    def stats(self, check=False):
        return http_json(self.url + "/_stats" + ("?check=1" if check else ""), timeout=60)

    def stop(self):
        stop(self.proc, signal.SIGTERM, 5)


# ---- systems under test -----------------------------------------------------------------
class Sipcrmd:
    kind = "sipcrm"

    def __init__(self, binary, pin, label, cache="0", events=True, greeting=None,
                 lookup_timeout_ms=1500, rtp_ports="20000-59999", media_timeout="60s",
                 agents=None, digest="MD5 SHA-256", log_level="warn", responsible_ring_ms=20000):
        self.binary, self.pin, self.label = binary, pin, label
        self.cache, self.events, self.greeting = cache, events, greeting
        self.lookup_timeout_ms = lookup_timeout_ms
        self.rtp_ports, self.media_timeout = rtp_ports, media_timeout
        self.agents = agents if agents is not None else [(AGENT, AGENT_PW)]
        self.digest, self.log_level = digest, log_level
        self.responsible_ring_ms = responsible_ring_ms
        self.proc = None
        self.logf = None

    def describe(self):
        return {"system": "sipcrmd", "label": self.label, "binary": self.binary,
                "crm_cache": self.cache, "events": self.events,
                "lookup_timeout_ms": self.lookup_timeout_ms, "srtp": "off",
                "skip_busy": "no", "agents": len(self.agents)}

    def start(self, d, crm_url, pbx_port):
        self.dir = d
        self.sip_port = free_port()
        self.api_port = free_port(tcp_too=True)
        conf = os.path.join(d, "sipcrm.conf")
        lines = [
            "[core]", "db = %s/sipcrm.db" % d, "log_level = %s" % self.log_level,
            "[sip]", "listen = udp:127.0.0.1:%d" % self.sip_port, "domain = %s" % DOMAIN,
            "ban_failures = 0", "digest_algorithms = %s" % self.digest,
            "[media]", "ip = %s" % MEDIA_IP, "rtp_ports = %s" % self.rtp_ports, "srtp = off",
            "media_timeout = %s" % self.media_timeout,
        ]
        if self.greeting is not None:
            lines.append("greeting = %s" % self.greeting)
        lines += [
            "[routing]", "mode = bridge", "lookup_timeout = %dms" % self.lookup_timeout_ms,
            "responsible = first", "responsible_ring = %dms" % self.responsible_ring_ms,
            "skip_busy = no",
            "fallback = sip:pbx@127.0.0.1:%d" % pbx_port,
            "[trunk:bench]", "match = 127.0.0.1/32", "uri = sip:127.0.0.1:%d" % free_port(),
        ]
        if crm_url:
            lines += ["[crm]", "type = generic", "lookup_url = %s/lookup" % crm_url,
                      "events_url = %s" % (crm_url + "/events" if self.events else ""),
                      "secret = %s" % SECRET, "cache = %s" % self.cache, "country_code = 7"]
        else:
            lines += ["[crm]", "type = none"]
        lines += ["[api]", "listen = 127.0.0.1:%d" % self.api_port, "token = bench"]
        for ext, pw in self.agents:
            lines += ["[agent:%s]" % ext, "password = %s" % pw]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.logf = os.path.join(d, "sipcrmd.log")
        lf = open(self.logf, "ab")
        self.proc = spawn(self.pin + [self.binary, "-f", "-c", conf], stdout=lf,
                          stderr=subprocess.STDOUT)
        lf.close()
        end = time.time() + 30
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("sipcrmd exited at start:\n" + tail(self.logf))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/health" % self.api_port,
                                            timeout=1) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("sipcrmd did not answer /api/v1/health:\n" + tail(self.logf))

    def pids(self):
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def mem(self):
        m = mem_kib(self.proc.pid) if self.alive() else {}
        return {"rss_kib": m.get("VmRSS"), "hwm_kib": m.get("VmHWM"), "pss_kib": m.get("Pss"),
                "fds": fd_count(self.proc.pid) if self.alive() else None}

    def metrics(self):
        return prom_metrics("http://127.0.0.1:%d/metrics" % self.api_port)

    def stop(self):
        rc = stop(self.proc, signal.SIGTERM, 30)
        return rc

    def log_tail(self, n=40):
        return tail(self.logf, n)


class Kamailio:
    kind = "kamailio"

    def __init__(self, binary, rtpengine, pin, label, media=True, tlsf=True, sha256=False,
                 shm_mb=512, children=4, http_workers=1, lookup_timeout_ms=1500,
                 rtp_ports=(20000, 59999), agents=None, responsible_ring_ms=20000):
        self.binary, self.rtpengine_bin, self.pin, self.label = binary, rtpengine, pin, label
        self.media, self.tlsf, self.sha256 = media, tlsf, sha256
        self.shm_mb, self.children, self.http_workers = shm_mb, children, http_workers
        self.lookup_timeout_ms, self.rtp_ports = lookup_timeout_ms, rtp_ports
        self.agents = agents if agents is not None else [(AGENT, AGENT_PW)]
        self.responsible_ring_ms = responsible_ring_ms
        self.proc = self.rtp = None
        self.logf = self.rtplog = None
        self.kpids = []

    def describe(self):
        return {"system": "kamailio", "label": self.label, "binary": self.binary,
                "rtpengine": self.media, "shm_allocator": "tlsf" if self.tlsf else "default (q_malloc)",
                "shm_mb": self.shm_mb, "children": self.children,
                "http_async_workers": self.http_workers, "auth_algorithm":
                "SHA-256" if self.sha256 else "MD5", "lookup_timeout_ms": self.lookup_timeout_ms,
                "usrloc_db_mode": 2, "agents": len(self.agents)}

    def make_db(self, path, tables, agents=False):
        share = "/usr/share/kamailio/db_sqlite"
        if os.path.exists(path):
            os.unlink(path)
        db = sqlite3.connect(path)
        for f in ["standard-create.sql"] + tables:
            with open(os.path.join(share, f)) as fh:
                db.executescript(fh.read())
        if agents:
            db.executemany("INSERT INTO subscriber (username, domain, password) VALUES (?, ?, ?)",
                           [(ext, DOMAIN, pw) for ext, pw in self.agents])
        db.commit()
        db.close()

    def start(self, d, crm_url, pbx_port):
        self.dir = d
        self.sip_port = free_port()
        self.ng_port = free_port()
        auth_db = os.path.join(d, "kamailio-auth.sqlite")
        ul_db = os.path.join(d, "kamailio-usrloc.sqlite")
        self.make_db(auth_db, ["auth_db-create.sql"], agents=True)
        self.make_db(ul_db, ["usrloc-create.sql"])
        subst = {
            "CHILDREN": str(self.children), "SIP_PORT": str(self.sip_port), "DOMAIN": DOMAIN,
            "MPATH": kamailio_mpath(), "AUTH_DB": auth_db, "UL_DB": ul_db, "UL_DB_MODE": "2",
            "AUTH_SECRET": "%032x" % random.getrandbits(128),
            "HTTP_WORKERS": str(self.http_workers),
            "LOOKUP_TIMEOUT_MS": str(self.lookup_timeout_ms), "NG_PORT": str(self.ng_port),
            "TRUNK_IP": "127.0.0.1", "SECRET": SECRET,
            "LOOKUP_URL": (crm_url or "http://127.0.0.1:9") + "/lookup",
            "RESPONSIBLE_RING_MS": str(self.responsible_ring_ms), "FALLBACK": "sip:pbx@127.0.0.1:%d" % pbx_port,
        }
        with open(os.path.join(BENCH, "kamailio", "kamailio.cfg")) as f:
            cfg = f.read()
        for k, v in subst.items():
            cfg = cfg.replace("@@%s@@" % k, v)
        left = re.findall(r"@@[A-Z_]+@@", cfg)
        if left:
            raise RuntimeError("kamailio.cfg: unreplaced %s" % left)
        cfgf = os.path.join(d, "kamailio.cfg")
        with open(cfgf, "w") as f:
            f.write(cfg)
        if self.media:
            self.rtplog = os.path.join(d, "rtpengine.log")
            lf = open(self.rtplog, "ab")
            self.rtp = spawn(self.pin + [
                self.rtpengine_bin, "--config-file=none", "--table=-1", "--delete-delay=0",
                "--foreground", "--log-stderr", "--log-level=4",
                "--interface=%s" % MEDIA_IP, "--listen-ng=127.0.0.1:%d" % self.ng_port,
                "--port-min=%d" % self.rtp_ports[0], "--port-max=%d" % self.rtp_ports[1],
                "--timeout=60", "--silent-timeout=3600"], stdout=lf, stderr=subprocess.STDOUT)
            lf.close()
            if not ng_ping(self.ng_port, 10, self.rtp):
                raise RuntimeError("rtpengine did not answer ping:\n" + tail(self.rtplog))
        self.logf = os.path.join(d, "kamailio.log")
        rundir = os.path.join(d, "run")
        os.makedirs(rundir, exist_ok=True)
        args = [self.binary, "-f", cfgf, "-DD", "-E", "-m", str(self.shm_mb), "-M", "16",
                "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid")]
        if self.tlsf:
            args += ["-x", "tlsf"]
        if self.media:
            args += ["-A", "WITH_RTPENGINE"]
        if self.sha256:
            args += ["-A", "WITH_SHA256"]
        lf = open(self.logf, "ab")
        self.proc = spawn(self.pin + args, stdout=lf, stderr=subprocess.STDOUT)
        lf.close()
        end = time.time() + 30
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("kamailio exited at start:\n" + tail(self.logf))
            if sip_options_ok(self.sip_port):
                time.sleep(0.2)
                self.kpids = descendants(self.proc.pid)
                return
            time.sleep(0.1)
        raise RuntimeError("kamailio did not answer OPTIONS:\n" + tail(self.logf))

    def alive(self):
        ok = self.proc is not None and self.proc.poll() is None
        if self.media:
            ok = ok and self.rtp is not None and self.rtp.poll() is None
        return ok

    def pids(self):
        out = [p for p in self.kpids if os.path.exists("/proc/%d" % p)]
        if self.rtp is not None and self.rtp.poll() is None:
            out.append(self.rtp.pid)
        return out

    def mem(self):
        """Kamailio is many processes sharing one shm segment: the sum of
        their PSS; plus rtpengine's RSS."""
        pss = rss = 0
        for p in self.kpids:
            m = mem_kib(p)
            pss += m.get("Pss", 0)
            rss = max(rss, m.get("VmRSS", 0))
        out = {"kamailio_pss_kib": pss, "kamailio_max_rss_kib": rss}
        if self.rtp is not None and self.rtp.poll() is None:
            m = mem_kib(self.rtp.pid)
            out["rtpengine_rss_kib"] = m.get("VmRSS")
            out["rtpengine_fds"] = fd_count(self.rtp.pid)
        out["rss_kib"] = pss + (out.get("rtpengine_rss_kib") or 0)
        return out

    def metrics(self):
        return {}

    def stop(self):
        rc = stop(self.proc, signal.SIGTERM, 15)
        if self.rtp is not None:
            stop(self.rtp, signal.SIGTERM, 10)
        # Kamailio's workers die with their parent; make sure
        for p in self.kpids:
            if os.path.exists("/proc/%d" % p):
                try:
                    with open("/proc/%d/stat" % p) as f:
                        st = f.read()
                    if "kamailio" in st[:st.rindex(")")]:
                        os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        return rc

    def log_tail(self, n=40):
        out = tail(self.logf, n)
        if self.rtplog:
            out += "\n--- rtpengine ---\n" + tail(self.rtplog, 15)
        return out


def kamailio_mpath():
    for d in ("/usr/lib/x86_64-linux-gnu/kamailio/modules",
              "/usr/lib/%s/kamailio/modules" % os.uname().machine + "-linux-gnu",
              "/usr/lib64/kamailio/modules", "/usr/lib/kamailio/modules",
              "/usr/local/lib64/kamailio/modules", "/usr/local/lib/kamailio/modules"):
        if os.path.isdir(d):
            return d + "/"
    return "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


def bencode(o):
    if isinstance(o, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(o.items())) + b"e"
    if isinstance(o, str):
        o = o.encode()
    if isinstance(o, bytes):
        return b"%d:%s" % (len(o), o)
    if isinstance(o, int):
        return b"i%de" % o
    raise TypeError(o)


def ng_ping(port, timeout, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.3)
        try:
            s.sendto(b"bench1 " + bencode({"command": "ping"}), ("127.0.0.1", port))
            if b"pong" in s.recv(4096):
                return True
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    return False


def invite_rate(path):
    """INVITEs per second from the UAC's per-call log (first timestamps)."""
    t = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                p = line.split()
                if len(p) >= 4 and p[0] == "T":
                    try:
                        t.append(float(p[2]) + float(p[3]) / 1e6)
                    except ValueError:
                        pass
    except OSError:
        return None
    if len(t) < 3:
        return None
    t.sort()
    return (len(t) - 1) / (t[-1] - t[0]) if t[-1] > t[0] else None


def sipp_errors(path, top=4):
    """SIPp's -trace_err file summarised: the kinds of error with their
    counts (call ids and times taken out), most frequent first."""
    try:
        with open(path, errors="replace") as f:
            text = f.read(4 << 20)
    except (OSError, TypeError):
        return []
    counts = {}
    for e in re.split(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ", text)[1:]:
        k = e.split("received '", 1)
        kind = k[0]
        if len(k) > 1:
            kind += "received '" + k[1].split("\n", 1)[0][:40]
        kind = re.sub(r"([Dd]ead call) \S+", r"\1 <call>", kind)
        kind = re.sub(r"Call-I[dD][: ]+'?[^' ,]+'?|call: \S+|Call-Id \S+", "<call>", kind)
        kind = re.sub(r"\s+", " ", kind).strip()[:220]
        counts[kind] = counts.get(kind, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])[:top]


def sipp_screen_table(path):
    """The message table of SIPp's last -trace_screen dump."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except (OSError, TypeError):
        return ""
    idx = [i for i, l in enumerate(lines) if "Messages  Retrans" in l]
    if not idx:
        return "\n".join(lines[-25:])
    out = []
    for l in lines[idx[-1]:]:
        if l.startswith("----") and out:
            break
        out.append(l.rstrip())
    return "\n".join(out[:40])
