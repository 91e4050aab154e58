"""A lean SMTP load client for the relay benchmark: one new connection per message, optional AUTH PLAIN.

Owns: sending N messages over C concurrent workers, each message on its own connection
(banner, EHLO, [AUTH PLAIN], MAIL, RCPT, DATA, QUIT), counting the 250s after DATA and the
failures, and printing one JSON result line. It exists because ``smtp-source`` cannot AUTH.
Must not know which server it talks to (mailward or Postfix) nor how delivery is counted.

Why hand-written and not aiosmtplib: client, server and sink share the machine's cores in
the benchmark, so every CPU cycle the client spends is taken from the servers under test. A
plain reply-by-reply dialogue in an asyncio Protocol (uvloop when installed) keeps the client's
share small and identical for both servers. The dialogue is not pipelined, like smtp-source.

Usage: python bench/auth_client.py --port P [--host H] [-m N] [-s C] [-l BYTES]
                                   [--user U --password PW] [--timeout SEC]
Prints: {"sent": ..., "failed": ..., "seconds": ..., "rate": ..., "errors": [...]}
Exit status 0 when every message got its 250 after DATA, 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from dataclasses import asdict, dataclass

MAX_ERROR_SAMPLES = 5  # distinct failure texts kept for the report; the rest are only counted


@dataclass(frozen=True)
class ClientResult:
    sent: int            # messages that got 250 after the end of DATA
    failed: int          # messages abandoned on an unexpected reply, a timeout or a socket error
    seconds: float       # wall time from the first connect to the last worker done
    errors: tuple[str, ...]

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class SmtpFailure(Exception):
    """The server answered something other than what the dialogue expects."""


def build_body(size: int, mail_from: str, rcpt: str) -> bytes:
    """Headers and a body of ``size`` bytes in 76-char lines, dot-stuffed, ending with CRLF.CRLF.

    Like smtp-source's ``-l``: ``size`` counts the body only, not the headers.
    """
    head = (f"From: <{mail_from}>\r\nTo: <{rcpt}>\r\nSubject: relay benchmark\r\n"
            "Message-ID: <bench@auth-client>\r\n\r\n").encode()
    line = b"La de da de da " * 5 + b"0123\r\n"  # 81 bytes: a typical body line
    full, rem = divmod(size, len(line))
    lines = [line] * full
    if rem >= 2:
        lines.append(b"x" * (rem - 2) + b"\r\n")
    elif rem == 1:  # no 1-byte line exists: lengthen the last one (or send an empty line)
        lines[-1:] = [line[:-2] + b"5\r\n"] if lines else [b"\r\n"]
    body = b"".join(lines)
    # No line of this body starts with '.', so no dot-stuffing is needed.
    return head + body + b".\r\n"


def auth_plain_token(user: str, password: str) -> str:
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()


class _Dialogue(asyncio.Protocol):
    """One message on one connection, as a fixed script of (command, expected reply) steps.

    A Protocol rather than streams: each reply costs one callback instead of a task wake-up
    per line, which roughly doubles what one client process can offer on a shared core.
    """

    def __init__(self, steps: list[tuple[bytes, bytes]], done: asyncio.Future):
        # steps[i] = (what to send once step i-1's reply came, reply prefix step i expects);
        # steps[0] has nothing to send: it is the banner.
        self.steps = steps
        self.step = 0
        self.done = done
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # Not pipelined: at most one reply is outstanding, and it is complete when the data
        # ends with a line that is not a continuation ("250-..."). Only that last line is
        # looked at, so a multi-line EHLO reply costs one search, not one slice per line.
        buf = self.buf + data if self.buf else data
        if buf[-2:] != b"\r\n":
            self.buf = buf
            return
        start = buf.rfind(b"\n", 0, -2) + 1
        if buf[start + 3:start + 4] == b"-":
            self.buf = buf
            return
        self.buf = b""
        if not self.done.done():
            self._on_reply(buf[start:-2])

    def _on_reply(self, line: bytes) -> None:
        expect = self.steps[self.step][1]
        if not line.startswith(expect):
            self.done.set_exception(SmtpFailure(line.decode("utf-8", "replace")))
            self.transport.close()
            return
        self.step += 1
        if self.step == len(self.steps):
            self.done.set_result(None)
            self.transport.close()
            return
        self.transport.write(self.steps[self.step][0])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self.step == len(self.steps) - 1 and self.steps[-1][0] == b"QUIT\r\n":
                self.done.set_result(None)  # accepted; a server that drops the line at QUIT is fine
            else:
                self.done.set_exception(exc or SmtpFailure(f"connection closed at step {self.step}"))


def dialogue_steps(*, helo: str, mail_from: str, rcpt: str, body: bytes,
                   auth_token: str | None) -> list[tuple[bytes, bytes]]:
    steps = [(b"", b"220"), (f"EHLO {helo}\r\n".encode(), b"250")]
    if auth_token is not None:
        steps.append((f"AUTH PLAIN {auth_token}\r\n".encode(), b"235"))
    steps += [(f"MAIL FROM:<{mail_from}>\r\n".encode(), b"250"),
              (f"RCPT TO:<{rcpt}>\r\n".encode(), b"25"),
              (b"DATA\r\n", b"354"),
              (body, b"250"),
              (b"QUIT\r\n", b"221")]
    return steps


async def send_one(host: str, port: int, steps: list[tuple[bytes, bytes]], timeout: float) -> None:
    """One message on one new connection; returns after the server's 221 (or its close after QUIT).

    One timer covers the connect and the whole dialogue (``timeout`` in all): no
    ``wait_for`` task per connection.
    """
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    proto = _Dialogue(steps, done)
    task = asyncio.current_task()
    timed_out = False

    def expire() -> None:
        nonlocal timed_out
        timed_out = True
        if proto.transport is None:
            task.cancel()               # still connecting
        elif not done.done():
            done.set_exception(asyncio.TimeoutError(f"no reply within {timeout}s"))
            proto.transport.abort()

    timer = loop.call_later(timeout, expire)
    try:
        try:
            await loop.create_connection(lambda: proto, host, port)
        except asyncio.CancelledError:
            if timed_out:
                raise asyncio.TimeoutError(f"no connection within {timeout}s") from None
            raise
        await done
    finally:
        timer.cancel()
        if proto.transport is not None:
            proto.transport.close()


async def run_load(host: str, port: int, *, messages: int, concurrency: int, size: int,
                   user: str | None = None, password: str | None = None,
                   mail_from: str = "bench@client.test", rcpt: str = "rcpt@sink.test",
                   helo: str = "client.test", timeout: float = 30.0,
                   deadline: float = 600.0) -> ClientResult:
    """Send ``messages`` over ``concurrency`` workers; the whole run is cut off after ``deadline`` s."""
    body = build_body(size, mail_from, rcpt)
    token = auth_plain_token(user, password or "") if user is not None else None
    steps = dialogue_steps(helo=helo, mail_from=mail_from, rcpt=rcpt, body=body, auth_token=token)
    remaining = messages
    sent = failed = 0
    errors: list[str] = []

    async def worker() -> None:
        nonlocal remaining, sent, failed
        while remaining > 0:
            remaining -= 1
            try:
                await send_one(host, port, steps, timeout)
                sent += 1
            except (SmtpFailure, OSError, asyncio.TimeoutError) as exc:
                failed += 1
                text = f"{type(exc).__name__}: {exc}"
                if len(errors) < MAX_ERROR_SAMPLES and text not in errors:
                    errors.append(text)

    start = time.perf_counter()
    tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, messages)))]
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        errors.append(f"run cut off after {deadline}s")
        failed += remaining
    seconds = time.perf_counter() - start
    return ClientResult(sent=sent, failed=failed, seconds=seconds, errors=tuple(errors))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # optional: a cheaper client leaves more CPU to the servers under test

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-m", "--messages", type=int, default=100)
    ap.add_argument("-s", "--concurrency", type=int, default=10)
    ap.add_argument("-l", "--size", type=int, default=1024, help="body bytes (headers not counted)")
    ap.add_argument("--user", help="AUTH PLAIN as this user (no AUTH without it)")
    ap.add_argument("--password", default="")
    ap.add_argument("--mail-from", default="bench@client.test")
    ap.add_argument("--rcpt", default="rcpt@sink.test")
    ap.add_argument("--helo", default="client.test")
    ap.add_argument("--timeout", type=float, default=30.0, help="per message (connect and dialogue)")
    ap.add_argument("--deadline", type=float, default=600.0, help="for the whole run")
    args = ap.parse_args(argv)
    loop = _new_loop()
    try:
        result = loop.run_until_complete(run_load(
            args.host, args.port, messages=args.messages, concurrency=args.concurrency, size=args.size,
            user=args.user, password=args.password, mail_from=args.mail_from, rcpt=args.rcpt,
            helo=args.helo, timeout=args.timeout, deadline=args.deadline))
    finally:
        loop.close()
    out = asdict(result)
    out["errors"] = list(result.errors)
    out["rate"] = round(result.rate, 1)
    print(json.dumps(out), flush=True)
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
