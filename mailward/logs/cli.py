"""``mailward logs``: read appliance mail_logs and answer questions about them.

Owns the command-line surface of the toolkit (options, choice of callbacks, exit codes). The
work is in ``sources`` (reading), ``correlate`` (joining), ``authreport``, ``detect``, ``export``
and ``render``; ``logs_group`` is mounted under the ``mailward`` command.
"""
from __future__ import annotations

import os
import sys
from functools import wraps
from pathlib import Path

import click

from . import export as X
from .authreport import AuthReport
from .detect import Detector, Finding, Thresholds
from .follow import Follower
from .model import Message
from .pipeline import Options, host_filter, run
from .render import progress, story_text, table, write_csv, write_json, write_jsonl
from .scan import auth_scan, detect_scan
from .sources import Reader, iso, open_binary, parse_when


def _fail(msg: str) -> None:
    click.echo(f"mailward logs: {msg}", err=True)
    sys.exit(2)


def common(formats=("table", "json", "csv"), default="table", files=True):
    """--format, --since/--until, --host, --year, --idle on every command."""
    def deco(f):
        @click.option("--format", "fmt", type=click.Choice(formats), default=default, show_default=True)
        @click.option("--since", help="Only events at or after this time (ISO 8601 or ctime, UTC).")
        @click.option("--until", help="Only events at or before this time (ISO 8601 or ctime, UTC).")
        @click.option("--host", "hosts", multiple=True,
                      help="Only this appliance (serial or syslog host; glob; repeatable).")
        @click.option("--year", type=int, help="Year of syslog lines (default: from each file's mtime).")
        @click.option("--idle", type=float, default=3600.0, show_default=True,
                      help="Seconds of log time after which an unfinished message is reported as is.")
        @wraps(f)
        def wrapper(*args, since, until, **kw):
            try:
                kw["since"] = parse_when(since) if since else None
                kw["until"] = parse_when(until) if until else None
            except ValueError as exc:
                _fail(str(exc))
            paths = kw.get("files") or ()
            missing = [p for p in paths if p != "-" and not Path(p).exists()]
            if missing:
                _fail(f"no such file: {missing[0]}")
            try:
                return f(*args, **kw)
            except BrokenPipeError:
                # The reader of our output went away (``| head``): stop quietly, as Unix tools
                # do, without a second error when Python flushes stdout at exit.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(141)
            except OSError as exc:      # unreadable file, full disk for --output...: one line
                _fail(str(exc))
        if files:
            wrapper = click.argument("files", nargs=-1, required=True)(wrapper)
        return wrapper
    return deco


def _note_unparsed(stats) -> None:
    """Lines the grammar did not understand are never silent: one line on stderr."""
    for name in stats.damaged:
        click.echo(f"mailward logs: file ends damaged, read up to there: {name}", err=True)
    if stats.unparsed:
        top = ", ".join(f"{k} ({v})" for k, v in sorted(stats.by_kind.items(), key=lambda kv: -kv[1])[:3])
        click.echo(f"mailward logs: {stats.unparsed} of {stats.lines} line(s) not understood: {top}; "
                   "see `mailward logs stats`", err=True)


def _in_range(ts: float | None, since: float | None, until: float | None) -> bool:
    if ts is None:
        return since is None and until is None
    return (since is None or ts >= since) and (until is None or ts <= until)


def _story_ts(m: Message) -> float | None:
    return m.started if m.started is not None else m.last_seen


@click.group("logs")
def logs_group() -> None:
    """Read appliance mail_logs (file form, syslog, .s, .gz, stdin): auth, tracking, detection."""


# --- auth ----------------------------------------------------------------------------------

AUTH_COLUMNS = ("time", "appliance", "direction", "result", "user", "mechanism", "profile",
                "client_ip", "server_ip", "icid", "dcid", "response")


@logs_group.command("auth")
@common()
@click.option("--summary-only", is_flag=True, help="Only the summary (CSV: summary rows).")
def auth_cmd(files, fmt, since, until, hosts, year, idle, summary_only):
    """Every inbound and outbound SMTP AUTH event, and a summary per user, IP, mechanism, profile."""
    report = AuthReport(since=since, until=until, keep_attempts=not summary_only)
    with progress() as prog:
        # Only the AUTH lines and the opening/closing lines of their connections are parsed:
        # the rest of the log is skipped unparsed (most of the run time is parsing).
        only = auth_scan(list(files), open_binary)
        stats, _ = run(files, Options(year, tuple(hosts), idle, only=only), on_auth=report.add,
                       progress=prog)
    _note_unparsed(stats)
    attempts = [a.as_dict() for a in report.attempts]
    if fmt == "json":
        write_json({"attempts": attempts, "summary": report.summary(), "lines": stats.lines})
    elif fmt == "csv":
        if summary_only:
            write_csv(report.summary_rows(), ("dimension", "key", "successes", "failures",
                                              "first_seen", "last_seen"))
        else:
            write_csv(attempts, AUTH_COLUMNS)
    else:
        if not summary_only:
            table(attempts, AUTH_COLUMNS, title=f"SMTP AUTH events ({len(attempts)})")
        table(report.summary_rows(), ("dimension", "key", "successes", "failures", "first_seen",
                                      "last_seen"), title="SMTP AUTH summary")


# --- track ---------------------------------------------------------------------------------

@logs_group.command("track")
@common()
@click.option("--mid", "mids", type=int, multiple=True, help="Message id (repeatable).")
@click.option("--icid", "icids", type=int, multiple=True, help="Inbound connection id.")
@click.option("--user", "users", multiple=True, help="Authenticated user (SMTP AUTH).")
@click.option("--sender", help="Envelope sender (substring, case-insensitive).")
@click.option("--rcpt", help="Recipient (substring, case-insensitive).")
@click.option("--subject", help="Subject (substring, case-insensitive).")
@click.option("--ip", "ips", multiple=True, help="Client or destination IP.")
@click.option("--family/--no-family", default=True, show_default=True,
              help="Also show messages derived from a match (split, bcc, bounce, rewritten).")
@click.option("--limit", type=int, default=1000, show_default=True, help="At most this many stories.")
def track_cmd(files, fmt, since, until, hosts, year, idle, mids, icids, users, sender, rcpt, subject,
              ips, family, limit):
    """The full story of each matching message, inbound connection to final delivery."""
    if not any((mids, icids, users, sender, rcpt, subject, ips)):
        _fail("give at least one of --mid --icid --user --sender --rcpt --subject --ip")
    sender_l = sender.lower() if sender else None
    rcpt_l = rcpt.lower() if rcpt else None
    subject_l = subject.lower() if subject else None
    ipset = set(ips)
    found: list[Message] = []
    matched: set[tuple[str, int]] = set()

    def match(m: Message) -> bool:
        c = m.connection
        if mids and m.mid not in mids:
            return False
        if icids and m.icid not in icids:
            return False
        if users and (c is None or c.auth_user not in users):
            return False
        if sender_l is not None and sender_l not in (m.sender or "").lower():
            return False
        if rcpt_l is not None and not any(rcpt_l in (r.address or "").lower() for r in m.recipients.values()):
            return False
        if subject_l is not None and subject_l not in (m.subject or "").lower():
            return False
        if ipset:
            seen = {c.peer_ip} if c is not None else set()
            seen.update(r.delivery.address for r in m.recipients.values() if r.delivery is not None)
            if not ipset & seen:
                return False
        return _in_range(_story_ts(m), since, until)

    def on_story(m: Message) -> None:
        if len(found) >= limit:
            return
        if match(m) or (family and m.parent is not None and (m.appliance, m.parent) in matched):
            found.append(m)
            matched.add((m.appliance, m.mid))

    only = None
    if "-" not in files:
        # Cheap scans find the lines naming the wanted ids (given, or seeded by a scan for the
        # searched value) and the ids they pull in; only those are parsed. Stdin cannot be
        # read twice, so it is parsed in full. Families are always followed here: a split
        # child inherits its parent's envelope, so either can be needed to tell a match.
        from .prefilter import plan, seeds

        seed = None if (mids or icids) else seeds(list(files), users, ipset, sender, rcpt, subject)
        if mids or icids or seed is not None:
            only = plan(list(files), mids, icids, True, seed)
    with progress() as prog:
        stats, _ = run(files, Options(year, tuple(hosts), idle, keep_lines=True, only=only),
                       on_story=on_story, progress=prog)
    _note_unparsed(stats)
    found.sort(key=lambda m: (_story_ts(m) or 0.0, m.mid))
    stories = [m.as_dict() for m in found]
    if fmt == "json":
        write_json(stories)
    elif fmt == "csv":
        write_csv((r for m in found for r in X.records(m)), X.NATIVE_FIELDS)
    else:
        if not stories:
            click.echo("no matching message")
        for s in stories:
            story_text(s)
    if not stories:
        sys.exit(1)


# --- detect --------------------------------------------------------------------------------

def threshold_options(f):
    d = Thresholds()
    opts = [
        click.option("--window", type=float, default=d.window, show_default=True,
                     help="Seconds over which failures are counted."),
        click.option("--brute-failures", type=int, default=d.brute_failures, show_default=True,
                     help="Failures from one IP that make a brute-force finding."),
        click.option("--spray-users", type=int, default=d.spray_users, show_default=True,
                     help="Distinct users failing from one IP that make a spraying finding."),
        click.option("--distributed-ips", type=int, default=d.distributed_ips, show_default=True,
                     help="Distinct IPs failing for one user that make a distributed-attack finding."),
        click.option("--compromise-failures", type=int, default=d.compromise_failures, show_default=True,
                     help="Failures before a success that make a likely-compromise finding."),
        click.option("--learn-seconds", type=float, default=d.learn_seconds, show_default=True,
                     help="Learning period before a never-seen IP for a user is reported."),
        click.option("--burst-recipients", type=int, default=d.burst_recipients, show_default=True,
                     help="Recipients from one authenticated user that make a burst finding."),
        click.option("--burst-window", type=float, default=d.burst_window, show_default=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _thresholds(kw: dict) -> Thresholds:
    names = ("window", "brute_failures", "spray_users", "distributed_ips", "compromise_failures",
             "learn_seconds", "burst_recipients", "burst_window")
    return Thresholds(**{n: kw.pop(n) for n in names})


FINDING_COLUMNS = ("severity", "kind", "key", "count", "first", "last", "appliance", "summary")


@logs_group.command("detect")
@common()
@threshold_options
@click.option("--evidence/--no-evidence", default=True, show_default=True,
              help="Show the evidence lines under each finding (table format).")
def detect_cmd(files, fmt, since, until, hosts, year, idle, evidence, **kw):
    """Brute force, password spraying, distributed attacks, compromise, new IPs, recipient bursts."""
    findings: list[Finding] = []
    det = Detector(findings.append, _thresholds(kw))

    def on_auth(a):
        if _in_range(a.ts, since, until):
            det.on_auth(a)

    def on_story(m):
        if _in_range(_story_ts(m), since, until):
            det.on_story(m)

    with progress() as prog:
        # Only the lines the rules need are parsed (``scan.detect_scan``); the findings are
        # those of a full read.
        only = detect_scan(list(files), open_binary)
        stats, _ = run(files, Options(year, tuple(hosts), idle, keep_lines=True, only=only),
                       on_story=on_story, on_auth=on_auth, progress=prog)
    det.flush()
    _note_unparsed(stats)
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    findings.sort(key=lambda f: (order.get(f.severity, 9), f.first or 0.0, f.kind, f.key))
    rows = [f.as_dict() for f in findings]
    if fmt == "json":
        write_json(rows)
    elif fmt == "csv":
        write_csv(rows, FINDING_COLUMNS + ("users", "ips", "evidence"))
    else:
        if rows:
            table(rows, FINDING_COLUMNS, title=f"Findings ({len(rows)})")
        else:
            click.echo("no findings")
        if evidence:
            for f in rows:
                click.echo(f"\n[{f['severity']}] {f['kind']} {f['key']}: {f['summary']}")
                for ln in f["evidence"]:
                    click.echo(f"    | {ln}")


# --- export --------------------------------------------------------------------------------

@logs_group.command("export")
@common(formats=("jsonl", "csv", "ecs", "json", "table"), default="jsonl")
@click.option("--names", type=click.Choice(["native", "ecs", "cim"]), default=None,
              help="Field names: ours (default), ECS (default for --format ecs), Splunk CIM.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here instead of stdout.")
def export_cmd(files, fmt, since, until, hosts, year, idle, names, output):
    """One record per message-recipient with the joined ICID/MID/DCID fields."""
    names = names or ("ecs" if fmt == "ecs" else "native")
    out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    convert = {"native": lambda r: r, "ecs": X.to_ecs, "cim": X.to_cim}[names]
    flat = (lambda d: X.flatten(d)) if names == "ecs" else (lambda d: d)
    collected: list[dict] = []          # only for --format table
    count = 0
    # Every format but table streams: stories are written as they finish, never all held.
    csv_writer = None
    if fmt == "csv":
        import csv as _csv

        csv_writer = _csv.DictWriter(out, fieldnames=X.columns(names), extrasaction="ignore")
        csv_writer.writeheader()
    if fmt == "json":
        out.write("[")

    def on_story(m: Message) -> None:
        nonlocal count
        if not _in_range(_story_ts(m), since, until):
            return
        for r in X.records(m):
            doc = convert(r)
            if fmt in ("jsonl", "ecs"):
                write_jsonl([doc], out)
            elif fmt == "json":
                out.write(("," if count else "") + "\n" + _json_dumps(doc))
            elif csv_writer is not None:
                csv_writer.writerow({k: _csv_cell(v) for k, v in flat(doc).items()})
            else:
                collected.append(flat(doc))
            count += 1

    try:
        with progress() as prog:
            stats, _ = run(files, Options(year, tuple(hosts), idle), on_story=on_story, progress=prog)
        if fmt == "json":
            out.write("\n]\n")
        elif fmt == "table":
            # a terminal cannot show 40 columns: the essentials (use csv/jsonl for the rest)
            cols = X.TABLE_FIELDS if names == "native" else X.columns(names)
            table(collected, cols, out=out)
    finally:
        if output:
            out.close()
    _note_unparsed(stats)
    if output:
        click.echo(f"wrote {count} record(s) to {output}", err=True)


def _json_dumps(doc: dict) -> str:
    import json

    return json.dumps(doc, default=str, ensure_ascii=True)


def _csv_cell(v):
    from .render import _cell

    return _cell(v)


# --- follow --------------------------------------------------------------------------------

@logs_group.command("follow")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="table: one line per finding; json: one JSON object per line.")
@click.option("--host", "hosts", multiple=True)
@click.option("--year", type=int)
@click.option("--idle", type=float, default=3600.0, show_default=True)
@click.option("--from-start", is_flag=True, help="Read what the file already holds first.")
@click.option("--auth-events", is_flag=True, help="Also print every SMTP AUTH event.")
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds.")
@click.option("--poll", type=float, default=0.2, show_default=True)
@threshold_options
def follow_cmd(file, fmt, hosts, year, idle, from_start, auth_events, max_seconds, poll, **kw):
    """Tail a live mail.current (across rotation) and print findings as they happen."""
    import csv as _csv
    import json as _json

    writer = _csv.writer(sys.stdout) if fmt == "csv" else None
    if writer:
        writer.writerow(("kind", "severity", "key", "count", "first", "last", "summary"))

    def show(f: Finding) -> None:
        if fmt == "json":
            click.echo(_json.dumps(f.as_dict(), default=str))
        elif writer:
            writer.writerow((f.kind, f.severity, f.key, f.count, iso(f.first), iso(f.last), f.summary))
            sys.stdout.flush()
        else:
            click.echo(f"{iso(f.last) or '-'} [{f.severity}] {f.kind} {f.key}: {f.summary}")

    def show_auth(a) -> None:
        if fmt == "json":
            click.echo(_json.dumps({"auth": a.as_dict()}, default=str))
        elif fmt == "table":
            who = a.user if a.direction == "inbound" else a.profile
            click.echo(f"{iso(a.ts) or '-'} auth {a.direction} {'ok' if a.succeeded else 'FAILED'} "
                       f"{who} {a.client_ip or ''} -> {a.server_ip or ''}")

    det = Detector(show, _thresholds(kw), live=True)

    def on_auth(a):
        if auth_events:
            show_auth(a)
        det.on_auth(a)

    from .correlate import Correlator

    corr = Correlator(on_story=det.on_story, on_auth=on_auth, idle=idle, keep_lines=True,
                      sweep_every=1000)
    reader = Reader(year=year)
    follower = Follower(file, from_start=from_start, poll=poll)
    reader.read_lines(follower.lines(max_seconds=max_seconds), host_filter(tuple(hosts), corr.feed),
                      lookahead=False)
    click.echo(f"followed {reader.stats.lines} line(s), {follower.rotations} rotation(s), "
               f"{follower.truncations} truncation(s)", err=True)


# --- stats ---------------------------------------------------------------------------------

@logs_group.command("stats")
@common()
def stats_cmd(files, fmt, since, until, hosts, year, idle):
    """Lines read, parsed and unparsed (by kind), per appliance; correlation counters."""
    with progress() as prog:
        stats, corr = run(files, Options(year, tuple(hosts), idle, since=since, until=until),
                          progress=prog)
    d = stats.as_dict()
    d["correlation"] = corr.counters.as_dict()
    d["examples"] = dict(stats.examples)
    if fmt == "json":
        write_json(d)
    elif fmt == "csv":
        rows = [{"what": "lines", "key": "", "count": stats.lines},
                {"what": "parsed", "key": "", "count": stats.parsed},
                {"what": "unparsed", "key": "", "count": stats.unparsed}]
        rows += [{"what": "unparsed_kind", "key": k, "count": v} for k, v in d["unparsed_by_kind"].items()]
        rows += [{"what": "appliance_lines", "key": k, "count": v["lines"]} for k, v in d["appliances"].items()]
        write_csv(rows, ("what", "key", "count"))
    else:
        table([{"lines": stats.lines, "parsed": stats.parsed, "unparsed": stats.unparsed,
                "files": len(stats.files), **corr.counters.as_dict()}], title="mail_logs")
        table([{"appliance": k, **v} for k, v in d["appliances"].items()], title="per appliance")
        if d["unparsed_by_kind"]:
            table([{"kind": k, "lines": v, "example": stats.examples.get(k, "")}
                   for k, v in d["unparsed_by_kind"].items()], title="unparsed lines by kind")


@logs_group.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The chain key (<log_dir>/chain.key of the gateway that wrote the log).")
def verify_cmd(files, key_file):
    """Check hash-chained logs: report deleted, inserted or edited lines.

    Each FILE (mail.current or a rolled mail.@….s) is checked against FILE.chain. Exit 0 when
    every line is as the gateway wrote it, 1 when something was changed.
    """
    from ..maillog.chain import verify

    key = bytes.fromhex(key_file.read_text().strip())
    bad = 0
    for path in files:
        chain = path.with_name(path.name + ".chain")
        if not chain.exists():
            _fail(f"{path}: no chain file {chain.name} beside it (was hash_chain on?)")
        problems = verify(path, chain, key)
        for p in problems:
            click.echo(f"{path}:{p.line}: {p.kind}: {p.detail}")
        bad += len(problems)
        if not problems:
            click.echo(f"{path}: OK")
    if bad:
        sys.exit(1)
