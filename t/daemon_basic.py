#!/usr/bin/env python3
"""Foundation black-box test: the real sipcrmd, SIPp OPTIONS, the HTTP API,
/metrics, the token check, SIGHUP with a broken and a good config, SIGTERM."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import (Tap, Daemon, SIPCRMD, SIPCRMCTL, sipp_client, options,
                         udp_request)

t = Tap()

# --check-config
d = Daemon(t)
r = subprocess.run([SIPCRMD, "--check-config", "-c", d.conf_path],
                   capture_output=True, text=True, timeout=20)
t.eq(r.returncode, 0, "--check-config accepts a good file")
bad = os.path.join(d.dir, "bad.conf")
with open(bad, "w") as f:
    f.write("[core]\ndb = x.db\n\n[sip]\nlisten = udp:127.0.0.1:5060\nbogus = 1\n")
r = subprocess.run([SIPCRMD, "--check-config", "-c", bad],
                   capture_output=True, text=True, timeout=20)
t.eq(r.returncode, 1, "--check-config rejects an unknown key")
t.like(r.stderr, "bad.conf:6: unknown key 'bogus' in [sip]", "error names file:line")
r = subprocess.run([SIPCRMD, "-f", "-c", bad], capture_output=True, text=True, timeout=20)
t.eq(r.returncode, 1, "sipcrmd refuses to start on a bad file")
r = subprocess.run([SIPCRMD, "--check-config", "-c",
                    os.path.join(os.environ.get("top_srcdir", "."), "conf", "sipcrm.conf")],
                   capture_output=True, text=True, timeout=20)
t.eq(r.returncode, 0, "the shipped conf/sipcrm.conf is valid")

d.start()
t.ok(d.proc.poll() is None, "daemon running")

# SIP OPTIONS with SIPp over UDP and TCP
rc, out = sipp_client(t, d, "options.xml", "u1", calls=3)
t.eq(rc, 0, "SIPp OPTIONS over UDP: 200 with Allow and Accept") or t.diag(out[-1500:])
rc, out = sipp_client(t, d, "options.xml", "t1", calls=2)
t.eq(rc, 0, "SIPp OPTIONS over TCP: 200") or t.diag(out[-1500:])

# unknown and unsupported methods
msg = ("FOO sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP {lip}:{lport};branch=z9hG4bK-foo1\r\n"
       "Max-Forwards: 70\r\nFrom: <sip:a@{lip}>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
       "Call-ID: foo-1@t\r\nCSeq: 1 FOO\r\nContent-Length: 0\r\n\r\n") % d.sip_port
rep = udp_request(d.sip_port, msg)
t.like(rep, "SIP/2.0 501", "unknown method gets 501")
msg = msg.replace("FOO", "PUBLISH").replace("foo1", "pub1").replace("foo-1", "pub-1")
rep = udp_request(d.sip_port, msg)
t.like(rep, "SIP/2.0 405", "unsupported method gets 405")
t.like(rep, "Allow:", "405 carries Allow")

# HTTP API: health without a token, 401 elsewhere
st, body = d.http("GET", "/api/v1/health", auth=False)
t.eq(st, 200, "health answers 200 without a token")
t.ok(isinstance(body, dict) and body.get("status") == "ok" and "version" in body
     and "uptime" in body, "health body has status, version, uptime", body)
st, body = d.http("GET", "/api/v1/agents", auth=False)
t.eq(st, 401, "an /api/ path without a token gets 401")
t.ok(isinstance(body, dict) and "error" in body, "401 body is a JSON error", body)
st, _ = d.http("GET", "/api/v1/agents", token="wrong")
t.eq(st, 401, "a wrong token gets 401")
st, _ = d.http("GET", "/api/v1/nonexistent")
t.eq(st, 404, "an unknown path with the token gets 404")

# metrics
st, text = d.http("GET", "/metrics", auth=False, raw=True)
t.eq(st, 200, "/metrics answers 200")
t.like(text, 'sipcrm_sip_requests_total{method="OPTIONS"}', "metrics count OPTIONS")
t.like(text, 'sipcrm_sip_responses_total{class="2xx"}', "metrics count 2xx responses")
t.like(text, "sipcrm_uptime_seconds", "metrics have the uptime")
t.like(text, "# TYPE sipcrm_sip_requests_total counter", "metrics carry TYPE lines")

# sipcrmctl status
env = dict(os.environ, SIPCRM_URL="http://127.0.0.1:%d" % d.api_port, SIPCRM_TOKEN=d.token)
r = subprocess.run([SIPCRMCTL, "status"], capture_output=True, text=True, timeout=20, env=env)
t.eq(r.returncode, 0, "sipcrmctl status exits 0")
t.like(r.stdout, "ok", "sipcrmctl status prints ok")

# SIGHUP with a broken config: old config kept, daemon still answers
good = open(d.conf_path).read()
d.write_conf(good + "\n[media]\nnope = 1\n")
d.signal(signal.SIGHUP)
time.sleep(0.5)
t.ok(d.proc.poll() is None, "daemon survives SIGHUP with a broken config")
t.like(options(d.sip_port), "SIP/2.0 200", "OPTIONS still answered after the failed reload")
t.like(d.log(), "reload failed, keeping the current configuration", "failed reload is logged")
t.like(d.log(), "unknown key 'nope' in [media]", "the reload error names the key")
st, _ = d.http("GET", "/api/v1/health", auth=False)
t.eq(st, 200, "API still answers after the failed reload")

# SIGHUP with a good config that changes the token
d.token = "new-token"
d.write_conf(good.replace("token = test-token", "token = new-token"))
d.signal(signal.SIGHUP)
time.sleep(0.5)
st, _ = d.http("GET", "/api/v1/nonexistent", token="test-token")
t.eq(st, 401, "old token refused after the reload")
st, _ = d.http("GET", "/api/v1/nonexistent", token="new-token")
t.eq(st, 404, "new token accepted after the reload")
st, text = d.http("GET", "/metrics", auth=False, raw=True)
t.like(text, 'sipcrm_config_reloads_total{result="ok"} 1', "one good reload counted")
t.like(text, 'sipcrm_config_reloads_total{result="error"} 1', "one failed reload counted")

# SIGTERM: clean exit 0 (and no sanitizer report, which would change the status)
rc = d.stop()
t.eq(rc, 0, "SIGTERM: exit status 0")
t.ok("ERROR: AddressSanitizer" not in d.log() and "runtime error:" not in d.log(),
     "no sanitizer report", d.log()[-3000:])
t.done()
