#!/usr/bin/env python3
"""A registered device stays reachable across a restart: agent 101
registers from a port, sipcrmd restarts, and an inbound call whose caller
the CRM assigns to 101 rings that device, which answers. Also: Contact: *
with Expires: 0 removes every contact."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from sipcrm_test import Tap, Daemon, SCENARIOS, spawn, free_port, sipp
from sipclient import SipClient
from crm_emulator import CrmEmulator

t = Tap()
crm = CrmEmulator()
crm.responsible["+79161234567"] = {"id": "42", "name": "Ivan Petrov"}
d = Daemon(t)
pbx = free_port()
d.write_conf(d.base_conf().replace("domain = sipcrm.test\n",
                                   "domain = sipcrm.test\ndigest_algorithms = MD5\n") +
             "[routing]\nfallback = sip:pbx@127.0.0.1:%d\nresponsible_ring = 10s\n"
             "[trunk:carrier]\nmatch = 127.0.0.1/32\n"
             "[agent:101]\npassword = secret101\ncrm_user = 42\n"
             "[crm]\ntype = generic\nlookup_url = %s/lookup\nevents_url = %s/events\n"
             "secret = s\n" % (pbx, crm.url, crm.url))
d.start()

dev = free_port()
csv = os.path.join(d.dir, "reg.csv")
with open(csv, "w") as f:
    f.write("SEQUENTIAL\n101;x;600;dev\n")
rc, out = sipp(["-sf", os.path.join(SCENARIOS, "register.xml"), "-inf", csv, "-au", "101",
                "-ap", "secret101", "-m", "1", "-i", "127.0.0.1", "-p", str(dev), "-nostdin",
                "-timeout", "10s", "127.0.0.1:%d" % d.sip_port], timeout=20, cwd=d.dir)
t.eq(rc, 0, "agent 101 registers from port %d" % dev) or t.diag(out[-800:])
t.eq(d.stop(), 0, "SIGTERM")
d.start()
st, agents = d.http("GET", "/api/v1/agents")
t.ok(st == 200 and agents and agents[0]["contacts"], "the contact is listed after the restart", agents)

wd = os.path.join(d.dir, "agent")
os.makedirs(wd)
uas = spawn(["sipp", "-sf", os.path.join(SCENARIOS, "pbx_uas.xml"), "-i", "127.0.0.1", "-p", str(dev),
             "-m", "1", "-nostdin", "-d", "200", "-mp", str(free_port()), "-timeout", "30s",
             "-timeout_error", "-trace_err"], cwd=wd, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
time.sleep(0.3)
rc, out = sipp(["-sf", os.path.join(SCENARIOS, "trunk_uac.xml"), "-s", "74951234567", "-i", "127.0.0.1",
                "-p", str(free_port()), "-m", "1", "-nostdin", "-d", "500", "-key", "rtp_port",
                str(free_port()), "-key", "caller", "79161234567", "-timeout", "30s",
                "-timeout_error", "127.0.0.1:%d" % d.sip_port], timeout=40, cwd=d.dir)
t.eq(rc, 0, "the inbound call is answered") or t.diag(out[-1500:])
try:
    t.eq(uas.wait(30), 0, "the restored device of responsible agent 101 rang and answered")
except subprocess.TimeoutExpired:
    t.ok(False, "the restored device of responsible agent 101 rang and answered")
st, rows = d.http("GET", "/api/v1/cdr?limit=1")
r = rows[0] if st == 200 and rows else {}
t.eq(r.get("first_agent"), "101", "CDR first_agent is the responsible agent")
t.eq(r.get("last_agent"), "101", "CDR last_agent too")
t.ok(r.get("legs") and ("127.0.0.1:%d" % dev) in r["legs"][0]["target"],
     "the leg went to the registered contact", r.get("legs"))
t.eq(crm.lookups[-1][1].get("did") if crm.lookups else None, "+74951234567",
     "lookup carried the DID (E.164)")

# Contact: * removes everything
c = SipClient(d.sip_port)
r, _ = c.register("101", "secret101", "sipcrm.test", expires=0, contact="*")
t.eq(r and r.status, 200, "Contact: * with Expires: 0 accepted")
st, agents = d.http("GET", "/api/v1/agents")
t.eq(agents[0]["contacts"] if st == 200 else None, [], "no contact left")
t.eq(agents[0]["status"] if st == 200 else None, "offline", "agent offline")
c.close()
t.eq(d.stop(), 0, "SIGTERM exits 0")
t.ok("ERROR: AddressSanitizer" not in d.log(), "no sanitizer report", d.log()[-3000:])
crm.stop()
t.done()
