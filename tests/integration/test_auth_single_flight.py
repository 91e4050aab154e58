"""Many connections of one client authenticating at once with a cold cache (a busy client when
its cached entry ran out) cost one Argon2id verification, not one each; wrong passwords are
never shared. Over real loopback sockets."""
from __future__ import annotations

import threading
import time

from tests.integration.test_auth_fast_path import CountingExecutor, Conn, gateway, plain


class SlowExecutor(CountingExecutor):
    """Each verification takes at least 0.3 s, so that the attempts overlap for sure."""

    def submit(self, fn, *args, **kw):
        def slow(*a, **k):
            time.sleep(0.3)
            return fn(*a, **k)
        return super().submit(slow, *args, **kw)


def auth_all(port: int, user: str, password: str, n: int) -> list[bytes]:
    replies: list[bytes] = [b""] * n
    conns = [Conn(port) for _ in range(n)]
    try:
        for c in conns:
            assert c.cmd(b"EHLO client.test\r\n").startswith(b"250")

        def one(i: int) -> None:
            replies[i] = conns[i].cmd(plain(user, password))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    finally:
        for c in conns:
            c.close()
    return replies


def test_a_herd_of_logins_costs_one_verification(tmp_path):
    gw = gateway(tmp_path)
    try:
        store = gw.gateway.authenticator.profiles["IncomingAuthentication"].store
        store._executor = executor = SlowExecutor(store._executor)
        replies = auth_all(gw.port, "alice", "alice-pw", 12)
        assert all(r == b"235 2.7.0 Authentication successful" for r in replies), replies
        assert executor.submitted == 1
        replies = auth_all(gw.port, "bob", "wrong", 4)
        assert all(r.startswith(b"535") for r in replies), replies
        assert executor.submitted == 1 + 4
        bodies = gw.log_bodies()
        assert sum("succeeded for user: alice" in b for b in bodies) == 12
        assert sum("failed for user: bob" in b for b in bodies) == 4
    finally:
        gw.stop()
