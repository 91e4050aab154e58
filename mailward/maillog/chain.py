"""Hash-chained mail_logs: detect a deleted, inserted or edited line.

Owns: the key file (random, created mode 0600), the running HMAC-SHA256 over the lines of
one log file (kept in a side file, one hex digest per line) and ``verify``. Each digest is
``HMAC(key, previous digest || line)``, starting from ``HMAC(key, SEED)``; without the key
nobody can write a digest that verifies. It knows nothing of events, templates or rotation
(the writer tells it which file it is on).

Limit: cutting the same number of lines off the *end* of both files goes unseen by the files
alone; keep the last digest somewhere else (e.g. the syslog push) to catch that.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

SEED = b"mailward mail_logs chain v1"


def load_or_create_key(path: Path) -> bytes:
    """The chain key at ``path``; a new random key is created 0600 when it is absent."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key


def start(key: bytes) -> bytes:
    return hmac.new(key, SEED, hashlib.sha256).digest()


def step(key: bytes, previous: bytes, line: str) -> bytes:
    """The digest after ``line`` (without its newline)."""
    return hmac.new(key, previous + line.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()


class Chain:
    """Running state for one file: ``add(line)`` returns the hex digest to store."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.last = start(key)

    def add(self, line: str) -> str:
        self.last = step(self.key, self.last, line)
        return self.last.hex()


@dataclass(frozen=True)
class Problem:
    line: int           # 1-based line number in the log file (for "deleted": the line after the gap)
    kind: str           # "edited" | "inserted" | "deleted" | "bad-digest"
    detail: str


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        return [line.rstrip("\n") for line in fh]


def verify(log_file: Path, chain_file: Path, key: bytes) -> list[Problem]:
    """Compare a log file with its chain; an empty list means every line is as written."""
    lines = _read_lines(Path(log_file))
    digests: list[bytes | None] = []
    problems: list[Problem] = []
    for n, text in enumerate(_read_lines(Path(chain_file)), 1):
        try:
            digests.append(bytes.fromhex(text.strip()))
        except ValueError:
            digests.append(None)
            problems.append(Problem(n, "bad-digest", "chain line %d is not a hex digest" % n))
    first = start(key)

    def prev(j: int) -> bytes:
        d = digests[j - 1] if j > 0 else first
        return d if d is not None else b""

    def ok(j: int, i: int) -> bool:
        d = digests[j] if j < len(digests) else None
        return d is not None and i < len(lines) and hmac.compare_digest(step(key, prev(j), lines[i]), d)

    i = j = 0
    while i < len(lines) and j < len(digests):
        if ok(j, i):
            i += 1
            j += 1
        elif j + 1 < len(digests) and digests[j] is not None and ok(j + 1, i):
            problems.append(Problem(i + 1, "deleted", "a line is missing before line %d" % (i + 1)))
            j += 1
        elif i + 1 < len(lines) and ok(j, i + 1):
            problems.append(Problem(i + 1, "inserted", "line %d was not written by the gateway" % (i + 1)))
            i += 1
        else:
            problems.append(Problem(i + 1, "edited", "line %d does not match its digest" % (i + 1)))
            i += 1
            j += 1
    for k in range(i, len(lines)):
        problems.append(Problem(k + 1, "inserted", "line %d has no digest" % (k + 1)))
    if j < len(digests):
        problems.append(Problem(len(lines) + 1, "deleted",
                                "%d line(s) missing at the end" % (len(digests) - j)))
    return problems
