"""The listener shell against real SMTP clients nobody here wrote: swaks and Postfix's
smtp-source. Loopback only."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from mailward.net.tls import server_context
from test_net_server import ServerThread, certs, spec  # noqa: F401  (certs is a fixture)

pytestmark = pytest.mark.e2e

needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")


def swaks(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port), "--helo", "swaks.test",
                           "--from", "a@b.test", "--to", "x@y.test", "--timeout", "10", *args],
                          capture_output=True, text=True, timeout=30)


@needs_swaks
def test_swaks_pipelining_starttls_auth(certs):
    with ServerThread(spec(tls_mode="starttls"), server_context(*certs)) as srv:
        r = swaks(srv.port, "--pipeline", "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                  "--auth-password", "s3cret")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "250 2.0.0 Ok: queued as 1" in r.stdout
        assert srv.wait_for(lambda: srv.closes() == [("close", "quit")])
        assert [e[0] for e in srv.log if e[0] in ("tls", "auth")] == ["tls", "auth"]


@needs_swaks
def test_swaks_implicit_tls_auth_login(certs):
    with ServerThread(spec(tls_mode="implicit"), server_context(*certs)) as srv:
        r = swaks(srv.port, "--tls-on-connect", "--auth", "LOGIN", "--auth-user", "alice",
                  "--auth-password", "s3cret")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "235 2.7.0" in r.stdout


@needs_swaks
def test_swaks_wrong_password_gets_535(certs):
    with ServerThread(spec(tls_mode="starttls"), server_context(*certs)) as srv:
        r = swaks(srv.port, "--tls", "--auth", "CRAM-MD5", "--auth-user", "alice", "--auth-password", "nope")
        assert r.returncode != 0
        assert "535 5.7.8" in r.stdout


@pytest.mark.skipif(shutil.which("smtp-source") is None, reason="postfix smtp-source not installed")
def test_smtp_source_parallel_sessions():
    with ServerThread(spec(max_messages_per_connection=None)) as srv:
        r = subprocess.run(["smtp-source", "-s", "5", "-m", "50", "-l", "2000", "-f", "a@b.test",
                            "-t", "x@y.test", f"127.0.0.1:{srv.port}"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert srv.wait_for(lambda: len(srv.closes()) == 50)
        assert sum(len(h.messages) for h in srv.handlers) == 50
        assert all(m.endswith(b"\r\n") for h in srv.handlers for m in h.messages)
