#!/usr/bin/env python3
"""SIP over TLS and HTTPS for the API (issue 10), with a test certificate
made by the openssl CLI:

  * agents 101 and 102 REGISTER over TLS (digest), 101 calls 102: the
    INVITE, 200, ACK and BYE all go over TLS in both directions (sipcrmd
    reaches 102 on the connection it registered over) and RTP flows;
  * plaintext SIP on the TLS port gets no SIP answer and the connection
    is closed; a TLS client that does not trust the certificate fails;
  * the API over HTTPS works with the token (401 without), also through
    sipcrmctl --cacert, and plain HTTP on that port gets no HTTP answer;
  * a missing, bad or mismatched certificate or key is refused at startup
    with a clear file:line message, for [sip] and for [api].
"""
import http.client
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, free_port, SIPCRMD, SIPCRMCTL  # noqa: E402
from sip_stream import StreamUA  # noqa: E402

t = Tap()
d = Daemon(t)
cert = os.path.join(d.dir, "cert.pem")
key = os.path.join(d.dir, "key.pem")
r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
if r.returncode:
    t.bail("openssl cannot make a certificate: %s" % r.stdout.decode(errors="replace"))
tls_port = free_port()


def conf(sip_cert=cert, sip_key=key, api_cert=cert, api_key=key):
    return d.base_conf().replace(
        "listen = udp:127.0.0.1:%d tcp:127.0.0.1:%d\n" % (d.sip_port, d.sip_port),
        "listen = udp:127.0.0.1:%d tls:127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n"
        % (d.sip_port, tls_port, sip_cert, sip_key)).replace(
        "token = %s\n" % d.token,
        "token = %s\ntls_cert = %s\ntls_key = %s\n" % (d.token, api_cert, api_key)) + \
        "[agent:101]\npassword = secret101\n[agent:102]\npassword = secret102\n"


# --- bad certificates: refused at startup ----------------------------------------------------
bad = os.path.join(d.dir, "bad.pem")
with open(bad, "w") as f:
    f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
other = os.path.join(d.dir, "other.pem")
subprocess.run(["openssl", "genrsa", "-out", other, "2048"], stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL, timeout=60)
missing = os.path.join(d.dir, "missing.pem")
cases = [("[sip] missing certificate", dict(sip_cert=missing), "cannot read"),
         ("[sip] bad certificate", dict(sip_cert=bad), "no PEM certificate"),
         ("[sip] key not matching", dict(sip_key=other), "does not match"),
         ("[sip] certificate as the key", dict(sip_key=cert), "no PEM private key"),
         ("[api] bad certificate", dict(api_cert=bad), "[api] tls_cert"),
         ("[api] key not matching", dict(api_key=other), "[api] tls_key"),
         ("[api] key without certificate", dict(api_cert=""), "go together")]
for name, kw, want in cases:
    d.write_conf(conf(**kw))
    p = subprocess.run([SIPCRMD, "-f", "-c", d.conf_path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    out = p.stdout.decode(errors="replace")
    t.ok(p.returncode != 0 and want in out and d.conf_path + ":" in out,
         "%s: sipcrmd exits %d with \"%s\"" % (name, p.returncode, out.strip()[-160:]),
         "wanted a non-zero exit and %r in:\n%s" % (want, out[-1500:]))

# fresh ports: others may have taken the first ones meanwhile
old_port = d.sip_port
d.sip_port, tls_port, d.api_port = free_port(), free_port(), free_port(udp_too=False)
base = d.base_conf
d.base_conf = lambda: base().replace(":%d" % old_port, ":%d" % d.sip_port)
d.write_conf(conf())
# sofia-sip's TLS transport leaks each connection's SSL object (see the file)
os.environ["LSAN_OPTIONS"] = "suppressions=%s" % os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "lsan-sofia-tls.supp")
d.start(wait=False)


def https(method, path, token=None, ctx=None):
    ctx = ctx or ssl.create_default_context(cafile=cert)
    c = http.client.HTTPSConnection("127.0.0.1", d.api_port, context=ctx, timeout=5)
    hs = {"Authorization": "Bearer " + token} if token else {}
    c.request(method, path, headers=hs)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


end = time.time() + 20
st = None
while time.time() < end and st != 200 and d.proc.poll() is None:
    try:
        st, _ = https("GET", "/api/v1/health")
    except (OSError, ssl.SSLError, http.client.HTTPException):
        time.sleep(0.1)
if st != 200:
    t.bail("sipcrmd with TLS did not come up:\n" + d.log()[-3000:])
t.like(d.log(), "listening on sips:127.0.0.1:%d;transport=tls" % tls_port, "SIP TLS listener up")

# --- HTTPS API ---------------------------------------------------------------------------------
st, body = https("GET", "/api/v1/agents", token=d.token)
t.ok(st == 200 and b"101" in body, "GET /api/v1/agents over HTTPS with the token: 200",
     "got %s %r" % (st, body[:200]))
st, _ = https("GET", "/api/v1/agents")
t.eq(st, 401, "over HTTPS without the token: 401")
st, _ = https("GET", "/api/v1/agents", token="wrong")
t.eq(st, 401, "over HTTPS with a wrong token: 401")
try:
    https("GET", "/api/v1/health", ctx=ssl.create_default_context())
    verified = "accepted"
except ssl.SSLCertVerificationError:
    verified = "refused"
t.eq(verified, "refused", "a client that does not trust the test certificate refuses it "
     "(the API really presents it)")
try:
    st, _ = d.http("GET", "/api/v1/agents", timeout=3)
    plain = "HTTP %s" % st
except Exception as e:       # noqa: BLE001: any failure is the point
    plain = "failed (%s)" % type(e).__name__
t.ok(plain.startswith("failed"), "plain HTTP on the HTTPS port gets no HTTP answer: %s" % plain)

# sipcrmctl over HTTPS: checked against the test certificate, refused without it
env = dict(os.environ, SIPCRM_TOKEN=d.token)
url = "https://127.0.0.1:%d" % d.api_port
p = subprocess.run([SIPCRMCTL, "-u", url, "--cacert", cert, "agents"], env=env,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
t.ok(p.returncode == 0 and b"101" in p.stdout, "sipcrmctl --cacert CERT -u https://... agents works",
     p.stdout.decode(errors="replace")[-500:])
p = subprocess.run([SIPCRMCTL, "-u", url, "agents"], env=env, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, timeout=20)
t.ok(p.returncode != 0, "sipcrmctl without the certificate refuses the self-signed API (exit %d)"
     % p.returncode, p.stdout.decode(errors="replace")[-500:])

# --- plaintext SIP on the TLS port ---------------------------------------------------------------
s = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
s.sendall(("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:%d;branch=z9hG4bK-p\r\n"
           "Max-Forwards: 70\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
           "Call-ID: plain@t\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
           % (tls_port, s.getsockname()[1])).encode())
t0 = time.time()
got = b""
try:
    while True:
        chunk = s.recv(65535)
        if not chunk:
            break
        got += chunk
except (socket.timeout, ConnectionResetError):
    pass
closed_after = time.time() - t0
s.close()
t.ok(b"SIP/2.0" not in got and closed_after < 4.5,
     "plaintext OPTIONS on the TLS port: no SIP answer, closed after %.2f s" % closed_after,
     "got %r" % got[:200])
s = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
try:
    ssl.create_default_context().wrap_socket(s, server_hostname="127.0.0.1")
    untrusted = "accepted"
except ssl.SSLCertVerificationError:
    untrusted = "refused"
s.close()
t.eq(untrusted, "refused", "a TLS client that does not trust the certificate refuses it")

# --- agents over TLS -------------------------------------------------------------------------------
SERVER = ("127.0.0.1", tls_port)
a101 = StreamUA(SERVER, cafile=cert, user="101")
a102 = StreamUA(SERVER, cafile=cert, user="102")
t.eq((a101.sock.version() or "")[:4], "TLSv", "the agents' connections are TLS (%s)" % a101.sock.version())
for ua, pw in ((a101, "secret101"), (a102, "secret102")):
    r = ua.request("REGISTER", "sip:sipcrm.test", ["Expires: 300"],
                   to="<sip:%s@sipcrm.test>" % ua.user, auth=(ua.user, pw))
    t.eq(r.status if r else None, 200, "agent %s REGISTERs over TLS (digest)" % ua.user)
st, body = https("GET", "/api/v1/agents", token=d.token)
t.ok(b"transport=tls" in body, "the API lists their TLS contacts", body[:400])

rtp101 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rtp101.bind(("127.0.0.1", 0))
rtp102 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rtp102.bind(("127.0.0.1", 0))
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio %d RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
ruri = "sip:102@127.0.0.1:%d;transport=tls" % tls_port
cid = "tls-call@t"
ftag = "f101"
result = {}


def caller():
    result["final"] = a101.request("INVITE", ruri, [], body=SDP % rtp101.getsockname()[1],
                                   call_id=cid, from_tag=ftag, auth=("101", "secret101"),
                                   timeout=10)


th = threading.Thread(target=caller, daemon=True)
th.start()
inv = a102.recv(lambda m: m.is_request and m.method == "INVITE", timeout=8)
t.ok(inv is not None, "agent 102 gets the INVITE over its TLS connection",
     d.log()[-3000:] if inv is None else None)
if inv is None:
    t.bail("no INVITE over TLS")
t.like(inv.get("Via"), "SIP/2.0/TLS", "sipcrmd's Via says TLS")
a102.reply(inv, 180, "Ringing", to_tag="t102")
a102.reply(inv, 200, "OK", body=SDP % rtp102.getsockname()[1], to_tag="t102")
th.join(12)
fin = result.get("final")
t.eq(fin.status if fin else None, 200, "agent 101's call over TLS is answered")
ack = a102.recv(lambda m: m.is_request and m.method == "ACK", timeout=5)
t.ok(ack is not None, "102 gets the ACK over TLS")
if fin is not None and fin.status == 200:
    a101.ack(fin, ruri, cid, int(fin.get("CSeq").split()[0]), ftag)
    # RTP both ways through the relay
    relay_port = int([ln for ln in fin.raw.split("\r\n") if ln.startswith("m=audio")][0].split()[1])
    pkt = b"\x80\x08" + b"\x00\x01" + b"\x00" * 8 + b"\xd5" * 160
    for i in range(20):
        rtp101.sendto(pkt, ("127.0.0.1", relay_port))
        time.sleep(0.01)
    rtp102.settimeout(1.0)
    n = 0
    try:
        while True:
            rtp102.recvfrom(2048)
            n += 1
            rtp102.settimeout(0.2)
    except socket.timeout:
        pass
    t.ok(n >= 15, "RTP from 101 reaches 102 through the relay (%d of 20)" % n)
    r = a101.request("BYE", ruri if not fin.get("Contact") else
                     fin.get("Contact").strip("<>").split(">")[0], [],
                     call_id=cid, from_tag=ftag, cseq=10, to=fin.get("To"))
    t.eq(r.status if r else None, 200, "101 hangs up over TLS: 200")
    bye = a102.recv(lambda m: m.is_request and m.method == "BYE", timeout=5)
    t.ok(bye is not None, "102 gets the BYE over TLS")
    if bye is not None:
        a102.reply(bye, 200, "OK")
time.sleep(0.5)
st, body = https("GET", "/api/v1/cdr?limit=1", token=d.token)
t.ok(b'"answered"' in body and b'"101"' in body, "the CDR has the answered call", body[:400])

for ua in (a101, a102):
    ua.close()
rtp101.close()
rtp102.close()
t.eq(d.stop(), 0, "SIGTERM exits 0")
log = d.log()
t.ok("ERROR: AddressSanitizer" not in log and "runtime error:" not in log,
     "no sanitizer report", log[-3000:])
t.done()
