#!/usr/bin/env python3
"""Writes man/sipcrm.conf.5 from the commented conf/sipcrm.conf, so the man
page and the shipped file describe the same keys with the same words.
Run from the top of the tree after changing conf/sipcrm.conf."""
import re

src = open("conf/sipcrm.conf").read().splitlines()
out = ['.TH SIPCRM.CONF 5 "2026" "sipcrm 0.1.0" "File Formats"',
       '.SH NAME\nsipcrm.conf \\- configuration of sipcrmd',
       '''.SH SYNTAX
An INI file. \\fB[section]\\fR and \\fB[section:name]\\fR headers, \\fIkey\\fR = \\fIvalue\\fR lines.
A line starting with \\fB#\\fR or \\fB;\\fR is a comment; so is the rest of a line after white space
followed by \\fB#\\fR or \\fB;\\fR (so \\fIsip:a@b;transport=tcp\\fR keeps its parameter).
A value in double quotes is taken literally, comment characters included.
.PP
Durations carry a unit: \\fBms\\fR, \\fBs\\fR, \\fBmin\\fR or \\fBh\\fR (a bare \\fB0\\fR is allowed).
Booleans are yes/no, on/off, true/false, 1/0.
Relative paths are resolved against the folder of the configuration file.
.PP
Unknown sections, unknown keys, a key set twice in a section and bad values are errors,
reported as \\fIfile\\fR:\\fIline\\fR: \\fImessage\\fR; \\fBsipcrmd\\fR then refuses to start
(or, on SIGHUP, keeps the running configuration).
.PP
\\fBsipcrmd \\-\\-help\\-config\\fR lists every key with its default.''',
       '.SH SECTIONS AND KEYS']
seen = set()
skip = False
for line in src:
    m = re.match(r'^\[(.*?)\]\s*(?:;\s*(.*))?$', line)
    if m:
        name = re.sub(r':.*', lambda x: {':provider': ':NAME'}.get(x.group(0), ':NAME'), m.group(1))
        name = name.replace('did:NAME', 'did:NUMBER').replace('agent:NAME', 'agent:EXT')
        name = name.replace('rule:NAME', 'rule:TYPE[:DID]')
        skip = name in seen
        seen.add(name)
        if not skip:
            out.append('.SS [%s]' % name)
            if m.group(2):
                out.append(m.group(2))
        continue
    if skip:
        continue
    m = re.match(r'^(\w+)\s*=\s*(.*?)\s*;\s*(.*)$', line)
    if m:
        out.append('.TP\n.B %s\n%s' % (m.group(1), m.group(3).replace('\\', '\\\\')))
        if m.group(2):
            out.append('.br\nIn the shipped file: \\fI%s\\fR' % m.group(2))
out.append('''.SH NAMED SECTIONS
\\fB[agent:EXT]\\fR defines an agent (extension EXT): it may register and place calls after digest
authentication. \\fB[did:NUMBER]\\fR overrides greeting, ringback, fallback, responsible,
responsible_ring, greeting_min and mode for calls to that company number; keys not set are
inherited from [media] and [routing]. \\fB[trunk:NAME]\\fR defines a carrier or PBX trunk: INVITEs
from its \\fBmatch\\fR addresses are inbound trunk calls, and agents' calls to numbers go to its
\\fBuri\\fR. \\fB[rule:TYPE]\\fR says what the bitrix24 and amocrm adapters create when a call of
that TYPE ends; \\fB[rule:TYPE:NUMBER]\\fR does the same for calls to that DID and replaces
\\fB[rule:TYPE]\\fR for them (keys are not inherited from it).
.SH SEE ALSO
.BR sipcrmd (8),
.BR sipcrmctl (1)''')
open("man/sipcrm.conf.5", "w").write("\n".join(out) + "\n")
