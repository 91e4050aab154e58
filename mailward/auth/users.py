"""The local users file: names and Argon2id hashes, read, written and watched.

Owns the file format, its permissions, atomic rewrites and reloading when another process
(``mailward users ...``) changed it. Must not know about SMTP, SASL or the cache; callers
learn which users changed through ``on_change`` listeners.

Format: one user per line, ``name:$argon2id$v=19$m=...,t=...,p=...$salt$hash``, optionally
followed by ``:{HMAC-MD5}<64 hex>`` for a user added with ``--cram`` (CRAM-MD5 support,
weaker than Argon2id: see ``crammd5.py``); ``#`` lines and blank lines are ignored. Names are UTF-8 without ``:``, whitespace or control characters.
The file is created 0600 and a file that others can read or anyone but the owner can write
is refused (the way ssh refuses a loose private key): even Argon2id hashes are an offline
attack target.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from . import crammd5


class UserStoreError(Exception):
    """The users file cannot be used (permissions, syntax, unknown user for passwd/del)."""


def default_hasher() -> PasswordHasher:
    """Argon2id with RFC 9106's second recommended option (64 MiB, t=3, p=4).

    About 40-60 ms per verification on a current core: slow enough to make offline guessing
    expensive, fast enough because the credential cache absorbs repeated logins.
    """
    return PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, hash_len=32,
                          salt_len=16, type=Type.ID)


def _check_name(name: str) -> str:
    if not name or len(name) > 256:
        raise UserStoreError("user name must be 1..256 characters")
    if any(c == ":" or c.isspace() or ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserStoreError(f"user name {name!r} must not contain ':', whitespace or control characters")
    return name


@dataclass(frozen=True)
class _Entry:
    hash: str
    cram: bytes | None = None       # HMAC-MD5 context, only for users added with --cram

    def line(self, name: str) -> str:
        return f"{name}:{self.hash}" + (f":{crammd5.encode(self.cram)}" if self.cram else "")


# What tells a changed users file: (inode, size, mtime_ns, ctime_ns, mode). ctime because a
# chmod changes only ctime, and a loosened mode must be noticed.
_Stamp = tuple[int, int, int, int, int]


class UserStore:
    """A users file with Argon2id hashes.

    ``verify`` always runs one Argon2 verification, against a dummy hash for an unknown user,
    so that an unknown name and a wrong password cost the same time. Verification runs in a
    bounded thread pool (argon2-cffi releases the GIL) so the event loop never blocks and the
    memory cost of concurrent Argon2 runs stays bounded.
    """

    def __init__(self, path: Path | str, *, hasher: PasswordHasher | None = None,
                 executor: Executor | None = None, create: bool = False):
        self.path = Path(path)
        self._fspath = str(self.path)
        self.hasher = hasher or default_hasher()
        self._executor = executor or ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="argon2")
        # Same parameters as real hashes: the dummy check must cost what a real one costs.
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(24))
        self._dummy_cram = crammd5.context(secrets.token_urlsafe(24))
        self._lock = threading.Lock()
        self._users: dict[str, _Entry] = {}
        self._has_cram = False              # any user with a CRAM-MD5 context (kept by _load)
        self._stamp: _Stamp | None = None
        self._checked_at = float("-inf")    # time.monotonic() of the last stat (see refresh)
        self._listeners: list[Callable[[frozenset[str]], None]] = []
        if create and not self.path.exists():
            self._write({})
        self._load()

    # -- reading --

    def on_change(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call ``listener(names)`` with the users added, changed or removed by a reload."""
        self._listeners.append(listener)

    def names(self) -> list[str]:
        self.refresh()
        with self._lock:
            return sorted(self._users)

    def __contains__(self, name: object) -> bool:
        self.refresh()
        with self._lock:
            return name in self._users

    def refresh(self, max_age: float = 0.0) -> frozenset[str]:
        """Reload if the file changed on disk; returns the names whose entry changed.

        ``max_age`` > 0 skips the ``stat`` when the file was checked less than that many
        seconds ago: for callers that only want an up-to-date view, not a security decision
        (what to advertise in EHLO). Password checks always look (``max_age=0``).
        """
        if max_age > 0 and time.monotonic() - self._checked_at < max_age:
            return frozenset()
        try:
            stamp = self._stat()
        except FileNotFoundError:
            raise UserStoreError(f"{self.path}: users file does not exist") from None
        self._checked_at = time.monotonic()
        if stamp == self._stamp:
            return frozenset()
        return self._load()

    def _stat(self) -> _Stamp:
        # Every password check calls this: a plain tuple compares faster than a dataclass.
        st = os.stat(self._fspath)
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)

    def _load(self) -> frozenset[str]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise UserStoreError(f"{self.path}: users file does not exist") from None
        except OSError as exc:
            raise UserStoreError(f"{self.path}: cannot open: {exc.strerror}") from None
        with os.fdopen(fd, "r", encoding="utf-8") as f:
            st = os.fstat(f.fileno())
            _check_mode(self.path, st.st_mode)
            text = f.read()
        users = _parse(self.path, text)
        with self._lock:
            old = self._users
            self._users = users
            self._has_cram = any(e.cram is not None for e in users.values())
            self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        changed = frozenset(n for n in set(old) | set(users) if old.get(n) != users.get(n))
        if changed and old is not users:
            for listener in self._listeners:
                listener(changed)
        return changed

    # -- verifying --

    def has_cram(self) -> bool:
        """True when at least one user can log in with CRAM-MD5 (known since the last load:
        asked at every EHLO, it must not scan the users)."""
        return self._has_cram

    def verify_cram(self, name: str, challenge: bytes, digest: str) -> bool:
        """CRAM-MD5 check; unknown users and users without a context cost the same HMAC."""
        with self._lock:
            entry = self._users.get(name)
        ctx = entry.cram if entry is not None and entry.cram is not None else self._dummy_cram
        ok = crammd5.verify(ctx, challenge, digest)
        return ok and entry is not None and entry.cram is not None

    def verify_sync(self, name: str, password: str) -> bool:
        """Blocking check; costs one Argon2 verification whether or not the user exists."""
        with self._lock:
            entry = self._users.get(name)
        stored = entry.hash if entry is not None else None
        target = stored if stored is not None else self._dummy_hash
        try:
            ok = self.hasher.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        return ok and stored is not None

    async def verify(self, name: str, password: str) -> bool:
        self.refresh()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.verify_sync, name, password)

    # -- changing (the CLI) --

    def add(self, name: str, password: str, *, cram: bool = False) -> None:
        """Add a user; ``cram=True`` also stores the (weaker) CRAM-MD5 context."""
        _check_name(name)
        _check_password(password)
        with self._locked_file():
            users = self._reread()
            if name in users:
                raise UserStoreError(f"user {name!r} already exists (use passwd)")
            users[name] = _Entry(self.hasher.hash(password), crammd5.context(password) if cram else None)
            self._write(users)
        self._load()

    def passwd(self, name: str, password: str, *, cram: bool | None = None) -> None:
        """Set a new password; ``cram=None`` keeps the user's CRAM-MD5 setting as it was."""
        _check_password(password)
        with self._locked_file():
            users = self._reread()
            if name not in users:
                raise UserStoreError(f"no user {name!r}")
            keep = users[name].cram is not None if cram is None else cram
            users[name] = _Entry(self.hasher.hash(password), crammd5.context(password) if keep else None)
            self._write(users)
        self._load()

    def delete(self, name: str) -> None:
        with self._locked_file():
            users = self._reread()
            if name not in users:
                raise UserStoreError(f"no user {name!r}")
            del users[name]
            self._write(users)
        self._load()

    def _reread(self) -> dict[str, _Entry]:
        if not self.path.exists():
            return {}
        _check_mode(self.path, os.stat(self.path).st_mode)
        return _parse(self.path, self.path.read_text(encoding="utf-8"))

    @contextmanager
    def _locked_file(self) -> Iterator[None]:
        # Two `mailward users` commands at once must not lose each other's change.
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, users: dict[str, _Entry]) -> None:
        """Atomic rewrite: temp file 0600 in the same dir, fsync, rename, fsync the dir."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        body = "".join(e.line(n) + "\n" for n, e in sorted(users.items()))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("# mailward users: name:argon2id-hash[:cram-md5-context] (managed by `mailward users`)\n")
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _check_password(password: str) -> None:
    if not password:
        raise UserStoreError("empty password")
    if "\x00" in password:
        raise UserStoreError("password must not contain NUL (SASL PLAIN cannot carry it)")


def _check_mode(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise UserStoreError(f"{path}: not a regular file")
    # The same rule as every other secret file (config.check_secret_file): hashes are secrets.
    if mode & (stat.S_IRWXO | stat.S_IRWXG):
        raise UserStoreError(f"{path}: users file must not be accessible by group or others "
                             f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")


def _parse(path: Path, text: str) -> dict[str, _Entry]:
    users: dict[str, _Entry] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.strip().split(":")
        if len(fields) not in (2, 3) or not fields[1].startswith("$argon2"):
            raise UserStoreError(f"{path}:{lineno}: expected name:$argon2id$...[:{{HMAC-MD5}}...]")
        cram = None
        if len(fields) == 3:
            try:
                cram = crammd5.decode(fields[2])
            except ValueError as exc:
                raise UserStoreError(f"{path}:{lineno}: {exc}") from None
        users[fields[0]] = _Entry(fields[1], cram)
    return users
