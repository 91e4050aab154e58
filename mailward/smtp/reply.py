"""SMTP replies as values: a three-digit code and its text, and their wire form.

Owns the one `Reply` value every layer passes around and its serialisation to CRLF lines
(multi-line replies use the `code-text` continuation form of RFC 5321 §4.2.1). Knows
nothing of sessions, sockets or policy. Text is sanitised on the way out, so a value that
came from a client (a name, an address) can never inject a line break into the stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..values import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply. ``text`` carries the enhanced status code when there is one
    (``Reply(250, "2.1.0 Ok")``); a ``\\n`` in ``text`` makes a multi-line reply."""

    code: int
    text: str = ""

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code out of range: {self.code}")

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    def lines(self) -> list[str]:
        parts = self.text.split("\n") if self.text else [""]
        return [_clean(p) for p in parts]

    def to_bytes(self) -> bytes:
        return _encode(self.code, self.text)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@lru_cache(maxsize=1024)
def _encode(code: int, text: str) -> bytes:
    # Most replies are the same few texts ("250 2.1.5 Ok"): encode each once.
    parts = [_clean(p) for p in text.split("\n")] if text else [""]
    last = len(parts) - 1
    out = []
    for i, p in enumerate(parts):
        sep = " " if i == last else "-"
        out.append(f"{code}{sep}{p}\r\n")      # "334 " keeps its space (RFC 4954)
    return "".join(out).encode("utf-8", "replace")


def _clean(text: str) -> str:
    # Replies may quote client input (addresses, HELO names): strip anything that could end
    # the line early or confuse a terminal, keep printable text and UTF-8.
    return "".join(ch if (ch >= " " and ch != "\x7f") else "?" for ch in text.replace("\r", ""))
