"""The `mailward queue` commands that only read the spool: list, show, stats.

Owns: presenting the queue to an operator. It reads the spool files read-only with
``recovery.snapshot`` and never takes the spool's lock, so it works while the gateway runs.
Consistency: what it shows is the queue at some moment during the command; a commit that
is being written at that very moment may be missing (it shows up on the next call). It must
not change the spool: commands that do (flush, delete, bounce) talk to the running daemon
and are added to this group by the delivery part.
"""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from .index import Location
from .model import QueuedMessage, RcptState
from .recovery import LARGE, SegmentVanished, seg_path, snapshot

_HEADER_LIMIT = 64 << 10   # show at most this much of the header block


def _out(text: str) -> None:
    # Addresses may hold undecodable bytes (kept as lone surrogates): show them escaped
    # instead of failing to print.
    click.echo(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _fail(message: str) -> None:
    click.echo(f"mailward: {message}", err=True)
    sys.exit(2)


def _load(spool: Path):
    if not (spool / "segments").is_dir():
        _fail(f"{spool}: not a spool directory (no segments/)")
    try:
        return snapshot(spool)
    except SegmentVanished:
        _fail(f"{spool}: the spool kept changing while being read; try again")
    except OSError as exc:
        _fail(f"{spool}: {exc.strerror or exc}")


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _summary(msg: QueuedMessage, now: float) -> dict:
    env = msg.envelope
    return {
        "mid": env.mid,
        "age_seconds": round(now - env.received_at, 3),
        "size": msg.size,
        "sender": env.sender,
        "pending": [env.recipients[i] for i in msg.pending_rids()],
        "attempts": msg.attempts,
        "next_attempt": msg.next_attempt or None,
        "last_error": msg.last_error,
    }


spool_option = click.option("--spool", "spool", type=click.Path(path_type=Path, file_okay=False),
                            default=Path("var/spool"), show_default=True, help="Spool directory.")


@click.group("queue")
def queue_group() -> None:
    """Inspect the mail queue (read-only; safe while the gateway runs)."""


@queue_group.command("list")
@spool_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
def list_cmd(spool: Path, as_json: bool) -> None:
    """List live messages: MID, age, size, sender, pending recipients, next attempt."""
    rep = _load(spool)
    now = time.time()
    msgs = sorted(rep.index.messages.values(), key=lambda m: m.mid)
    if as_json:
        for m in msgs:
            _out(json.dumps(_summary(m, now), ensure_ascii=False))
        return
    if not msgs:
        _out("queue is empty")
        return
    _out(f"{'MID':>10}  {'AGE':>5}  {'SIZE':>9}  {'SENDER':<30}  {'PENDING':>7}  NEXT ATTEMPT")
    for m in msgs:
        env = m.envelope
        pend = m.pending_rids()
        first = env.recipients[pend[0]] if pend else "-"
        nxt = _when(m.next_attempt) if m.attempts else "now"
        _out(f"{env.mid:>10}  {_age(now - env.received_at):>5}  {m.size:>9}  "
                   f"{(env.sender or '<>')[:30]:<30}  {len(pend):>7}  {nxt}")
        _out(f"{'':>10}  to: {first}" + (f" (+{len(pend) - 1} more)" if len(pend) > 1 else ""))
    _out(f"-- {len(msgs)} message(s), {sum(m.size for m in msgs)} bytes")


def _headers(spool: Path, mid: int, loc: Location) -> str:
    try:
        if loc.large:
            with open(spool / LARGE / str(mid), "rb") as f:
                data = f.read(_HEADER_LIMIT)
        else:
            fd = os.open(seg_path(spool, loc.seg), os.O_RDONLY)
            try:
                data = os.pread(fd, min(loc.body_len, _HEADER_LIMIT), loc.body_offset)
            finally:
                os.close(fd)
    except FileNotFoundError:
        return "(body no longer on disk: the message was just finished or moved)"
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    head = data if end < 0 else data[:end]
    return head.decode("utf-8", "replace").replace("\r\n", "\n")


@queue_group.command("show")
@spool_option
@click.option("--json", "as_json", is_flag=True)
@click.argument("mid", type=int)
def show_cmd(spool: Path, as_json: bool, mid: int) -> None:
    """Show one message: envelope, per-recipient state, headers."""
    rep = _load(spool)
    msg = rep.index.messages.get(mid)
    if msg is None:
        _fail(f"MID {mid} is not in the queue")
    env = msg.envelope
    headers = _headers(spool, mid, rep.index.loc[mid])
    rcpts = []
    for rid, addr in enumerate(env.recipients):
        state = msg.states[rid]
        label = state.name.lower()
        if state == RcptState.PENDING and msg.attempts and rid in msg.rcpt_errors:
            label = "deferred"
        rcpts.append({"rid": rid, "address": addr, "state": label, "error": msg.rcpt_errors.get(rid)})
    if as_json:
        d = {"envelope": env.to_json(), "size": msg.size, "attempts": msg.attempts,
             "next_attempt": msg.next_attempt or None, "first_attempt_at": msg.first_attempt_at,
             "last_error": msg.last_error, "recipients": rcpts, "headers": headers}
        _out(json.dumps(d, ensure_ascii=False, indent=2))
        return
    _out(f"MID {env.mid}  ICID {env.icid}  size {msg.size}")
    _out(f"received  {_when(env.received_at)} on listener {env.listener or '-'} "
               f"from {env.client_ip or '-'} (helo {env.helo or '-'})")
    if env.auth_user is not None:
        _out(f"auth user {env.auth_user}")
    if env.origin_mid is not None:
        _out(f"bounce of MID {env.origin_mid}")
    _out(f"sender    <{env.sender}>")
    if env.params:
        _out("params    " + " ".join(f"{k}={v}" if v else k for k, v in env.params))
    _out(f"attempts  {msg.attempts}; first {_when(msg.first_attempt_at)}; "
               f"next {_when(msg.next_attempt) if msg.attempts else 'now'}")
    for r in rcpts:
        line = f"  RID {r['rid']}  {r['state']:<9}  {r['address']}"
        if r["error"]:
            line += f"  ({r['error']})"
        _out(line)
    _out("headers:")
    _out(headers)


@queue_group.command("stats")
@spool_option
@click.option("--json", "as_json", is_flag=True)
def stats_cmd(spool: Path, as_json: bool) -> None:
    """Counts, bytes, oldest message, segments."""
    rep = _load(spool)
    msgs = list(rep.index.messages.values())
    oldest = min((m.envelope.received_at for m in msgs), default=None)
    d = {
        "messages": len(msgs),
        "recipients_pending": sum(len(m.pending_rids()) for m in msgs),
        "deferred": sum(1 for m in msgs if m.attempts),
        "bytes": sum(m.size for m in msgs),
        "oldest": oldest,
        "oldest_age_seconds": round(time.time() - oldest, 3) if oldest else None,
        "segments": len(rep.seg_sizes),
        "segment_bytes": sum(rep.seg_sizes.values()),
        "large_bodies": sum(1 for loc in rep.index.loc.values() if loc.large),
    }
    if as_json:
        _out(json.dumps(d))
        return
    for k, v in d.items():
        if k == "oldest":
            v = _when(v)
        _out(f"{k:<20} {v if v is not None else '-'}")
