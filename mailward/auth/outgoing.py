"""Credentials the gateway presents to a next hop (outgoing SMTP AUTH profiles).

Owns reading the secret lazily from a file or an environment variable and keeping it out of
repr/str/logs. Must not know SMTP. A secret file that group or others can access is refused,
as ssh refuses a loose private key.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path


class SecretError(Exception):
    """The secret cannot be read safely (missing, loose permissions, empty)."""


@dataclass(frozen=True)
class OutgoingCredentials:
    name: str
    username: str
    password_file: Path | None = field(default=None)
    password_env: str | None = field(default=None)

    def __post_init__(self) -> None:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError(f"outgoing profile {self.name!r}: set exactly one of password_file or password_env")

    def __repr__(self) -> str:
        where = f"password_file={str(self.password_file)!r}" if self.password_file else \
            f"password_env={self.password_env!r}"
        return f"OutgoingCredentials(name={self.name!r}, username={self.username!r}, {where})"

    __str__ = __repr__

    def password(self) -> str:
        """Read the secret now (so a rotated file is picked up); never cached here."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise SecretError(f"outgoing profile {self.name!r}: environment variable "
                                  f"{self.password_env} is not set")
            return value
        assert self.password_file is not None
        return read_secret_file(self.password_file)

    @classmethod
    def from_config(cls, name: str, cfg: object) -> "OutgoingCredentials":
        """From ``config.OutgoingAuth``."""
        pf = getattr(cfg, "password_file", None)
        return cls(name, getattr(cfg, "username"), Path(pf) if pf else None,
                   getattr(cfg, "password_env", None))


def read_secret_file(path: Path) -> str:
    """The first line of ``path`` (trailing newline dropped); refuses group/other access."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SecretError(f"{path}: cannot read secret: {exc.strerror}") from None
    with os.fdopen(fd, "r", encoding="utf-8") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(f"{path}: secret file must not be accessible by group or others "
                              f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
        text = f.read()
    value = text.splitlines()[0] if text else ""
    if not value:
        raise SecretError(f"{path}: secret file is empty")
    return value
