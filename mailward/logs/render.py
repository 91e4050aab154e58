"""Output of the log commands: tables (rich), JSON, JSON lines and CSV; the progress bar.

Owns presentation only: it receives rows (dicts) or story dicts and writes them. A progress bar
is shown only when stderr is a terminal, so piped and scripted runs stay quiet.
"""
from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager
from typing import IO, Iterable, Iterator, Sequence

from rich.console import Console
from rich.table import Table


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v)
    return str(v)


def console(out: IO[str] | None = None, soft_wrap: bool = False) -> Console:
    out = out or sys.stdout
    # Width fixed when not a terminal so that piped tables do not wrap at 80 columns;
    # soft_wrap keeps evidence lines whole (one log line, one output line).
    return Console(file=out, width=None if out.isatty() else 200, highlight=False,
                   soft_wrap=soft_wrap)


def table(rows: Sequence[dict], columns: Sequence[str] | None = None, title: str | None = None,
          out: IO[str] | None = None) -> None:
    cols = list(columns or (rows[0].keys() if rows else ()))
    t = Table(title=title, show_lines=False)
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(_cell(r.get(c)) for c in cols))
    console(out).print(t)


def write_csv(rows: Iterable[dict], columns: Sequence[str] | None = None,
              out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    w = None
    for r in rows:
        if w is None:
            w = csv.DictWriter(out, fieldnames=list(columns or r.keys()), extrasaction="ignore")
            w.writeheader()
        w.writerow({k: _cell(v) for k, v in r.items()})
    if w is None and columns:
        csv.DictWriter(out, fieldnames=list(columns)).writeheader()


def write_json(obj, out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    json.dump(obj, out, indent=2, default=str, ensure_ascii=True)
    out.write("\n")


def write_jsonl(rows: Iterable[dict], out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    for r in rows:
        out.write(json.dumps(r, default=str, ensure_ascii=True))
        out.write("\n")


def story_text(s: dict, out: IO[str] | None = None) -> None:
    """A readable story: the joined facts first, then the evidence lines in log order."""
    con = console(out, soft_wrap=True)
    c = s.get("connection") or {}
    head = f"[bold]MID {s['mid']}[/bold]"
    if s.get("appliance"):
        head += f"  appliance {s['appliance']}"
    con.print(head)
    fam = []
    if s.get("parent_mid") is not None:
        fam.append(f"{s['relation']} from MID {s['parent_mid']}")
    for ch in s.get("children", []):
        fam.append(f"{ch['relation']} -> MID {ch['mid']}")
    facts = [
        ("from", s.get("sender")), ("subject", s.get("subject")), ("message-id", s.get("message_id")),
        ("size", s.get("size")), ("policy", f"{s.get('policy')} ({s.get('direction')})" if s.get("policy") else None),
        ("icid", s.get("icid")),
        ("client", " ".join(x for x in (c.get("peer_ip"), f"[{c['rdns']}]" if c.get("rdns") else None) if x) or None),
        ("listener", f"{c.get('interface')} ({c.get('interface_ip')})" if c.get("interface") else None),
        ("HAT", f"{c.get('policy')} SG {c.get('sender_group')} SBRS {c.get('sbrs')}" if c.get("policy") else None),
        ("TLS in", f"{c.get('tls_protocol')} {c.get('tls_cipher') or ''}" if c.get("tls_protocol") else None),
        ("auth", f"{c['auth_user']} ({c.get('auth_mechanism')}, {c.get('auth_profile')})" if c.get("auth_user") else None),
        ("auth failures", ", ".join(c.get("auth_failures") or []) or None),
        ("family", "; ".join(fam) or None),
        ("status", s.get("status") or ("unfinished (no Message finished line)" if s.get("expired") else None)),
        ("aborted", s.get("abort_reason")),
    ]
    for k, v in facts:
        if v not in (None, ""):
            con.print(f"  {k:<13} {v}", markup=False)
    for r in s.get("recipients", []):
        d = r.get("delivery") or {}
        where = ""
        if d:
            where = f" via DCID {d.get('dcid')} {d.get('address') or ''}:{d.get('port') or ''}"
            if d.get("auth_profile"):
                where += f" auth {d['auth_profile']} {'ok' if d.get('auth_succeeded') else 'FAILED'}"
            if d.get("tls_protocol"):
                where += f" TLS {d['tls_protocol']}"
        resp = f" — {r['response']}" if r.get("response") else ""
        con.print(f"  RID {r['rid']} <{r.get('address') or '?'}> {r['outcome']}{where}{resp}", markup=False)
    for ln in s.get("lines", []):
        con.print(f"    | {ln}", markup=False)
    con.print("")


@contextmanager
def progress(enabled: bool | None = None) -> Iterator:
    """Yields a ``(done, total)`` callback, or None when not on a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                  console=Console(file=sys.stderr)) as p:
        task = p.add_task("reading", total=None)

        def update(done: int, total: int) -> None:
            p.update(task, completed=done, total=total or None)

        yield update
