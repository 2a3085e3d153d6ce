#!/usr/bin/env python3
"""One signalling loop that never blocks: while a CRM lookup waits 300 ms
for its HTTP answer, SIP OPTIONS are still answered at once, and the loop's
own lag probe (sipcrm_loop_lag_seconds) never saw it 250 ms late."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, options
from sipclient import SipClient
from crm_emulator import CrmEmulator

t = Tap()
crm = CrmEmulator(delay=0.3)
d = Daemon(t)
d.write_conf(d.base_conf() +
             "[routing]\nlookup_timeout = 2s\n"
             "[trunk:carrier]\nmatch = 127.0.0.1/32\n"
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = crm-secret\n" % (crm.url, crm.url))
d.start()

c = SipClient(d.sip_port)
sdp = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n"
c.request("INVITE", "sip:74951234567@127.0.0.1",
          ["From: <sip:79161234567@127.0.0.1>;tag=l1", "To: <sip:74951234567@127.0.0.1>",
           "Contact: <sip:79161234567@127.0.0.1:%d>" % c.port, "Content-Type: application/sdp"],
          body=sdp, timeout=0.05)
end = time.time() + 2
while time.time() < end and not crm.lookups:
    time.sleep(0.005)
t.ok(crm.lookups, "the call started a CRM lookup")
started = crm.lookups[0][0] if crm.lookups else time.time()
rtts = []
while time.time() < started + 0.25:
    t0 = time.time()
    rep = options(d.sip_port, timeout=1.0)
    rtts.append((time.time() - t0, rep is not None and "SIP/2.0 200" in rep))
t.ok(len(rtts) >= 3, "several OPTIONS sent while the lookup waited (%d)" % len(rtts))
t.ok(all(ok for _, ok in rtts), "every OPTIONS answered 200")
worst = max(r for r, _ in rtts) if rtts else 9
t.ok(worst < 0.1, "no OPTIONS delayed by the pending lookup: worst %.1f ms" % (worst * 1000))
q = crm.lookups[0][1] if crm.lookups else {}
t.eq(q.get("phone"), "+79161234567", "lookup carries the caller's number in E.164")
t.eq(crm.lookups[0][2] if crm.lookups else None, "Bearer crm-secret", "lookup carries the Bearer token")


def lag_buckets():
    st, text = d.http("GET", "/metrics", auth=False, raw=True)
    b = {}
    for line in (text if st == 200 else "").splitlines():
        if line.startswith("sipcrm_loop_lag_seconds_bucket{"):
            b[line.split('le="')[1].split('"')[0]] = int(float(line.split()[-1]))
    return b


time.sleep(0.6)
lag = lag_buckets()
t.ok(lag.get("+Inf", 0) >= 5, "the loop lag probe ran (sipcrm_loop_lag_seconds)", lag)
t.eq(lag.get("0.25"), lag.get("+Inf"),
     "and the loop was never 250 ms late, the lookup's 300 ms wait included")
c.close()
t.eq(d.stop(), 0, "SIGTERM exits 0")
crm.stop()
t.done()
