"""The log toolkit: read appliance mail_logs (ours and real Cisco ESA ones), join them, answer
questions (``mailward logs auth|track|detect|export|follow|stats``).

Parts, each one job:
  sources    inputs (files, rolled ``*.s``, ``.gz``, stdin), the file header (serial keys the
             appliance, ``Time offset`` gives UTC), the year of syslog lines, line counters
  correlate  the streaming join of ICID -> MID -> RID -> DCID, MID families, idle expiry;
             its rules in rules_inbound / rules_message / rules_delivery
  scan       picks the lines a report needs out of raw byte blocks, before any parsing
             (``logs auth``: AUTH lines and their connections' open/close lines)
  prefilter  which lines a search by MID/ICID needs (two cheap scans, then parse only those)
  model      the joined facts (connections, deliveries, messages, recipients, AUTH attempts)
  authreport AUTH events and tallies per user / client IP / mechanism / profile
  detect     brute force, spraying, distributed attacks, compromise, new IPs, recipient bursts
  export     one record per message-recipient, native / ECS / Splunk CIM names
  follow     tailing a live file across rotation and truncation
  render     tables, JSON, CSV, progress bar;  pipeline  reader -> correlator wiring
  synth      realistic formatter-written logs for the benchmark and tests;  cli  the commands

Lines are parsed only by ``mailward.maillog.grammar`` (the one grammar the gateway writes with).

Choices worth knowing:
- Appliance key = the serial of the file's ``Version:`` header, else the syslog host, else "".
  Ids restart per appliance, so every id is keyed by it.
- Syslog lines carry no year: ``--year`` if given, else the year of the file's mtime (stdin:
  now), minus one for months after that moment's month. They carry no zone: read as UTC.
- Files are read oldest first (by their first timestamp), whatever order they are named in.
- State of a message ends at ``Message finished``; anything idle for ``--idle`` seconds of log
  time (per appliance) is reported as it stands (``expired``). Memory is bounded by the
  messages in flight within that window, not by the file size.
- ``logs detect`` parses what ``logs auth`` does plus the start, recipient and end lines of
  messages sent on those connections; its findings are a full read's (tests assert it).
- ``logs auth`` parses only the AUTH lines and the opening/closing lines of their connections
  (found by a first scan for the ids the AUTH lines name); ``logs track`` only the lines of
  the stories it can show (ids given, or seeded by a scan for the searched user, IP, address
  or subject text; a search matching over 5 % of a large log reads everything instead). The rest is counted as skipped. Parsing is most of the run time,
  and the report is the same as a full read's (tests assert it).
- The cyclic garbage collector is paused while reading (nothing built holds a cycle).

Speed (``python bench/logs.py``: 1,000,000 formatter-written lines, CPU time, this 2-core machine
quiet): ``logs auth`` (parse + correlate + AUTH report) ~1.05-1.1 M lines/s and ``logs track --mid``
~1.3 M lines/s, thanks to the block scan; a full typed parse of every line ~280-300 k lines/s, and
reader + correlator + AUTH report over every line (what ``export`` and ``track --user`` need)
~210-220 k lines/s. The correlator alone runs at ~0.9-1 M lines/s on parsed records, so a
correlation of *every* line cannot reach 1 M lines/s in CPython however fast the parse; the parse
costs ~30k CPU instructions per line (regex match, then one frozen event and one record).
Parsing in worker processes was measured and is slower on 2 cores. Details and method:
``bench/README.md``.
"""
