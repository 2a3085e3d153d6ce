"""baresip as a real softphone in tests: headless, its own config folder
under the test's temp folder, a tone as microphone, started and stopped by
its PID. ctrl_tcp is loaded so tests can send it commands."""
import json
import os
import shutil
import socket
import subprocess
import time

from sipcrm_test import spawn, free_port


def available():
    return shutil.which("baresip") is not None


def sip_port_pair():
    """A SIP port P whose P+1 is free too: baresip's SIP/TLS transport binds
    TCP P+1 and gives up entirely when it cannot (seen in make -j2 check)."""
    for _ in range(50):
        p = free_port()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
        finally:
            s.close()
    return free_port()


class Baresip:
    def __init__(self, workdir, account, extra_modules=()):
        self.dir = os.path.join(workdir, "baresip-%d" % free_port(udp_too=False))
        os.makedirs(self.dir)
        self.sip_port = sip_port_pair()
        self.ctrl_port = free_port(udp_too=False)
        mods = ["g711.so", "ausine.so", "aufile.so"] + list(extra_modules)
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write("poll_method\tepoll\n"
                    "sip_listen\t127.0.0.1:%d\n"
                    "audio_player\taufile,%s/play.wav\n"
                    "audio_source\tausine,440\n"
                    "audio_alert\taufile,%s/alert.wav\n"
                    "module_path\t/usr/lib/baresip/modules\n"
                    "%s"
                    "module_app\taccount.so\n"
                    "module_app\tctrl_tcp.so\n"
                    "module_app\tmenu.so\n"
                    "ctrl_tcp_listen\t127.0.0.1:%d\n"
                    % (self.sip_port, self.dir, self.dir,
                       "".join("module\t%s\n" % m for m in mods), self.ctrl_port))
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write(account + "\n")
        self.log_path = os.path.join(self.dir, "baresip.log")
        self.proc = None

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.proc = spawn(["baresip", "-f", self.dir], stdout=self.logf,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def command(self, cmd, params=None, timeout=3.0):
        """Sends one ctrl_tcp command (netstring JSON); returns the reply dict."""
        payload = json.dumps({"command": cmd, "params": params or "", "token": "t"}).encode()
        s = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=timeout)
        try:
            s.sendall(b"%d:%s," % (len(payload), payload))
            buf = b""
            end = time.time() + timeout
            while time.time() < end:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b":" in buf:
                    n, rest = buf.split(b":", 1)
                    if not n.isdigit() or len(rest) < int(n) + 1:
                        break
                    msg = json.loads(rest[:int(n)])
                    buf = rest[int(n) + 1:]
                    if msg.get("response"):
                        return msg
            return None
        finally:
            s.close()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
