"""Queue commands that need the running gateway: ``flush``, ``delete MID``, ``bounce MID``.

Owns only argument parsing and one-line messages; the work is done inside the gateway by
the queue manager, reached through the control socket (``control.py``) in the spool
directory. These are plain ``click.Command``s that ``mailward/cli.py`` mounts under
``mailward queue``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .control import ControlError, call

def _target(fn):
    """--spool (as the read-only queue commands), --config, or --socket: where the running
    gateway's control socket is."""
    fn = click.option("--socket", "socket_path", type=click.Path(path_type=Path),
                      help="The control socket itself (default: <spool>/control.sock).")(fn)
    fn = click.option("--config", "config_path", type=click.Path(path_type=Path),
                      help="The gateway's TOML config: use its spool directory.")(fn)
    return click.option("--spool", "spool", type=click.Path(path_type=Path, file_okay=False),
                        default=Path("var/spool"), show_default=True, help="Spool directory.")(fn)


def _socket(spool: Path, config_path: Path | None, socket_path: Path | None) -> Path:
    if socket_path is not None:
        return socket_path
    if config_path is not None:
        from ..config import ConfigError, load_config

        try:
            spool = load_config(config_path).gateway.spool_dir
        except ConfigError as exc:
            _fail(str(exc))
    return spool / "control.sock"


def _fail(message: str) -> None:
    click.echo(f"mailward: {message}", err=True)
    sys.exit(2)


def _call(spool: Path, config_path: Path | None, socket_path: Path | None, request: dict) -> dict:
    try:
        return call(_socket(spool, config_path, socket_path), request)
    except ControlError as exc:
        _fail(str(exc))
        raise   # unreachable; keeps type checkers calm


@click.command("flush")
@_target
def flush(spool: Path, config_path: Path | None, socket_path: Path | None) -> None:
    """Try every queued message now, ignoring retry times."""
    answer = _call(spool, config_path, socket_path, {"op": "flush"})
    click.echo(f"flush requested: {answer['queued']} message(s) in the queue")


@click.command("delete")
@click.argument("mid", type=int)
@_target
def delete(mid: int, spool: Path, config_path: Path | None, socket_path: Path | None) -> None:
    """Remove message MID from the queue without notifying the sender."""
    _call(spool, config_path, socket_path, {"op": "delete", "mid": mid})
    click.echo(f"MID {mid} deleted")


@click.command("bounce")
@click.argument("mid", type=int)
@_target
def bounce(mid: int, spool: Path, config_path: Path | None, socket_path: Path | None) -> None:
    """Bounce every pending recipient of MID now (a DSN goes to the sender)."""
    answer = _call(spool, config_path, socket_path, {"op": "bounce", "mid": mid})
    dsn = answer.get("dsn_mid")
    click.echo(f"MID {mid} bounced" + (f"; DSN queued as MID {dsn}" if dsn else " (null sender: no DSN)"))
