"""The log toolkit: read appliance mail_logs (ours and real Cisco ESA ones), join them, answer
questions (``mailward logs auth|track|detect|export|follow|stats``).

Parts, each one job:
  sources    inputs (files, rolled ``*.s``, ``.gz``, stdin), the file header (serial keys the
             appliance, ``Time offset`` gives UTC), the year of syslog lines, line counters
  correlate  the streaming join of ICID -> MID -> RID -> DCID, MID families, idle expiry;
             its rules in rules_inbound / rules_message / rules_delivery
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
- ``logs auth`` parses only lines containing ``SMTP`` (every AUTH line and the ICID/DCID lines
  that give their addresses); the rest is counted as skipped. Parsing is most of the run time.
- The cyclic garbage collector is paused while reading (nothing built holds a cycle).

Speed (``python bench/logs.py``: 1,000,000 formatter-written lines, CPU time, this 2-core machine
quiet; under other load the figures drop by up to a third): the grammar's ``parse_line`` alone
~280-300 k lines/s (was ~180-200 k); reader + correlator + AUTH report on every line ~200-215 k
lines/s (was ~160 k); the correlator + AUTH report alone ~0.8-1.1 M lines/s on records parsed
beforehand; ``logs auth`` ~0.7-0.95 M lines/s and ``logs detect`` ~280-330 k lines/s thanks to
their relevance filters; ``logs track --mid`` ~1 M lines/s (id prefilter). The 1 M lines/s target
for parse + correlate of every line is not reached: the correlator alone runs at about that rate,
and the parse still costs ~30k CPU instructions per line (regex match, then one frozen event and
one record built per line). Parsing in worker processes was measured and is slower on 2 cores
(the main process still unpickles, rebuilds and correlates every line). Details and method:
``bench/README.md``.
"""
