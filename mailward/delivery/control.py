"""The control channel of a running gateway: a Unix socket in the spool directory that
takes one JSON object per line and answers one per line.

Owns: the socket's life (stale file removed at start, mode 0600 so only the gateway's user
and root can drive it), the request grammar (``{"op": "flush"}``, ``{"op": "delete", "mid":
N}``, ``{"op": "bounce", "mid": N}``), bounded reads, and a blocking client for the CLI.
Must not hold any queue policy: every operation is the queue manager's.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

MAX_LINE = 4096
MAX_REQUESTS = 100      # per connection: a stuck script cannot hold the channel forever


class ControlError(Exception):
    """The gateway answered with an error, or could not be reached."""


class ControlServer:
    def __init__(self, path: Path | str, manager) -> None:
        self.path = Path(path)
        self.manager = manager
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.unlink()          # left over from a process that died
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(MAX_REQUESTS):
                try:
                    raw = await asyncio.wait_for(reader.readline(), 30)
                except (asyncio.LimitOverrunError, ValueError):
                    await self._reply(writer, {"ok": False, "error": "request too long"})
                    return
                if not raw:
                    return
                await self._reply(writer, await self.dispatch(raw))
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, answer: dict) -> None:
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()

    async def dispatch(self, raw: bytes) -> dict:
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("a request is a JSON object")
            op = req.get("op")
            if op == "flush":
                return {"ok": True, "queued": await self.manager.flush()}
            if op in ("delete", "bounce"):
                mid = req.get("mid")
                if not isinstance(mid, int) or isinstance(mid, bool):
                    raise ValueError("mid must be an integer")
                if op == "delete":
                    await self.manager.delete(mid)
                    return {"ok": True, "mid": mid}
                return {"ok": True, "mid": mid, "dsn_mid": await self.manager.bounce(mid)}
            raise ValueError(f"unknown op {op!r}")
        except KeyError as exc:
            return {"ok": False, "error": str(exc.args[0]) if exc.args else "not found"}
        except Exception as exc:   # every error goes back to the operator, none kills the channel
            return {"ok": False, "error": str(exc) or type(exc).__name__}


def call(path: Path | str, request: dict, timeout: float = 10.0) -> dict:
    """Send one request to the running gateway and return its answer (blocking).
    Raises ControlError when the gateway is not running or says no."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n") and len(data) < MAX_LINE * 4:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise ControlError(f"{path}: no control socket (is the gateway running?)") from None
    except OSError as exc:
        raise ControlError(f"{path}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError("the gateway sent an unreadable answer") from None
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "refused"))
    return answer
