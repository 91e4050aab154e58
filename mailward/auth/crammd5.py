"""CRAM-MD5 (RFC 2195) verification from a stored HMAC-MD5 context, the way Dovecot does it.

Owns the 32-byte context (the MD5 chaining state after the key XOR ipad block and after the
key XOR opad block) and computing HMAC-MD5(password, challenge) from it, so the users file
never holds the password itself. Must not know files or SASL framing.

Why hand-written MD5 rounds: hashlib cannot resume from a saved chaining state, and HMAC
needs exactly that to work from a stored context. The compression function below is the
RFC 1321 one; a property test checks every result against ``hmac.new(..., "md5")``.

This is WEAKER than the Argon2id hash beside it, and documented as such: the context is
password-equivalent for CRAM-MD5 (whoever reads it can log in with CRAM-MD5) and it falls to
a fast offline MD5 search for weak passwords. It is stored only for users added with
``--cram``.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import struct

_M = 0xFFFFFFFF
_S = [7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4
_K = [int(abs(math.sin(i + 1)) * 2 ** 32) & _M for i in range(64)]
_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
PREFIX = "{HMAC-MD5}"


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _M


def _compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    a, b, c, d = state
    x = struct.unpack("<16I", block)
    for i in range(64):
        if i < 16:
            f, g = (b & c) | (~b & _M & d), i
        elif i < 32:
            f, g = (d & b) | (~d & _M & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | (~d & _M)), (7 * i) % 16
        f = (f + a + _K[i] + x[g]) & _M
        a, d, c = d, c, b
        b = (b + _rotl(f, _S[i])) & _M
    return ((state[0] + a) & _M, (state[1] + b) & _M, (state[2] + c) & _M, (state[3] + d) & _M)


def _finish(state: tuple[int, int, int, int], done: int, data: bytes) -> bytes:
    """MD5 digest of (``done`` bytes already absorbed into ``state``) + ``data``."""
    total = done + len(data)
    tail = data + b"\x80" + b"\x00" * ((55 - total) % 64) + struct.pack("<Q", (total * 8) & (2 ** 64 - 1))
    for off in range(0, len(tail), 64):
        state = _compress(state, tail[off:off + 64])
    return struct.pack("<4I", *state)


def context(password: str) -> bytes:
    """The 32-byte HMAC-MD5 context of ``password``: inner state, then outer state."""
    key = password.encode("utf-8")
    if len(key) > 64:
        key = hashlib.md5(key).digest()
    key = key.ljust(64, b"\x00")
    inner = _compress(_INIT, bytes(k ^ 0x36 for k in key))
    outer = _compress(_INIT, bytes(k ^ 0x5C for k in key))
    return struct.pack("<4I", *inner) + struct.pack("<4I", *outer)


def hmac_from_context(ctx: bytes, message: bytes) -> str:
    """HMAC-MD5(password, message) in hex, from ``context(password)``."""
    if len(ctx) != 32:
        raise ValueError("HMAC-MD5 context must be 32 bytes")
    inner_state = struct.unpack("<4I", ctx[:16])
    outer_state = struct.unpack("<4I", ctx[16:])
    inner = _finish(inner_state, 64, message)
    return _finish(outer_state, 64, inner).hex()


def verify(ctx: bytes, challenge: bytes, digest: str) -> bool:
    """Constant-time check of the client's hex digest."""
    expected = hmac_from_context(ctx, challenge)
    return hmac.compare_digest(expected.encode(), digest.strip().lower().encode("ascii", "replace"))


def encode(ctx: bytes) -> str:
    return PREFIX + ctx.hex()


def decode(text: str) -> bytes:
    if not text.startswith(PREFIX):
        raise ValueError(f"expected {PREFIX}<64 hex digits>")
    try:
        raw = bytes.fromhex(text[len(PREFIX):])
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"expected {PREFIX}<64 hex digits>")
    return raw
