#!/usr/bin/env python3
"""A real softphone: baresip registers as agent 101 and shows up in
/api/v1/agents; on quit it unregisters and the agent goes offline."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon
from baresip import Baresip, available

t = Tap()
if not available():
    t.bail("baresip is not installed (apt-get install baresip-core)")

# baresip 1.0.0 (libre 1.x) refuses any challenge set that holds a
# non-MD5 algorithm, so this agent population is configured MD5-only.
d = Daemon(t)
d.write_conf(d.base_conf().replace("domain = sipcrm.test\n",
                                   "domain = sipcrm.test\ndigest_algorithms = MD5\n")
             + "[agent:101]\npassword = secret101\nname = Ivan Petrov\n")
d.start()

b = Baresip(d.dir, "<sip:101@127.0.0.1:%d;transport=udp>;auth_pass=secret101;regint=120"
            % d.sip_port).start()


def agent():
    st, body = d.http("GET", "/api/v1/agents")
    return body[0] if st == 200 and body else {}


end = time.time() + 10
while time.time() < end and not agent().get("contacts"):
    time.sleep(0.2)
a = agent()
t.eq(a.get("status"), "idle", "baresip registered: agent 101 is idle") or t.diag(b.log()[-2000:])
cs = a.get("contacts", [])
t.eq(len(cs), 1, "one contact")
t.ok(cs and "baresip" in (cs[0].get("user_agent") or ""), "the contact is baresip's", cs)
t.ok(cs and cs[0].get("received") == "sip:127.0.0.1:%d;transport=udp" % b.sip_port,
     "the source address and transport are stored", cs)
t.ok(cs and 100 <= cs[0].get("expires", 0) <= 120, "the requested expiry is honoured", cs)

b.stop()        # baresip unregisters on SIGTERM
end = time.time() + 5
while time.time() < end and agent().get("contacts"):
    time.sleep(0.2)
t.eq(agent().get("status"), "offline", "baresip's un-REGISTER makes the agent offline")
t.eq(d.stop(), 0, "SIGTERM exits 0")
t.done()
