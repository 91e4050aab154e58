"""Outgoing credentials: lazy secret, refused loose files, never shown."""
from __future__ import annotations

import os

import pytest

from mailward.auth.outgoing import OutgoingCredentials, SecretError


def secret(tmp_path, text="s3cr3t-pw\n", mode=0o600):
    p = tmp_path / "out.pw"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_password_from_file_lazily(tmp_path):
    p = secret(tmp_path)
    oc = OutgoingCredentials("OutboundAuthentication", "gateway", password_file=p)
    assert oc.password() == "s3cr3t-pw"
    p.write_text("rotated\n")
    assert oc.password() == "rotated"


def test_refuses_loose_file(tmp_path):
    oc = OutgoingCredentials("O", "gateway", password_file=secret(tmp_path, mode=0o644))
    with pytest.raises(SecretError, match="chmod 600"):
        oc.password()


def test_missing_and_empty(tmp_path):
    with pytest.raises(SecretError):
        OutgoingCredentials("O", "g", password_file=tmp_path / "none").password()
    with pytest.raises(SecretError, match="empty"):
        OutgoingCredentials("O", "g", password_file=secret(tmp_path, text="")).password()


def test_password_from_env(monkeypatch):
    oc = OutgoingCredentials("O", "gateway", password_env="MW_TEST_OUT_PW")
    with pytest.raises(SecretError, match="not set"):
        oc.password()
    monkeypatch.setenv("MW_TEST_OUT_PW", "envpw")
    assert oc.password() == "envpw"


def test_exactly_one_source(tmp_path):
    with pytest.raises(ValueError):
        OutgoingCredentials("O", "g")
    with pytest.raises(ValueError):
        OutgoingCredentials("O", "g", password_file=tmp_path / "x", password_env="X")


def test_secret_never_in_repr_or_str(tmp_path, monkeypatch):
    monkeypatch.setenv("MW_TEST_OUT_PW", "envpw-secret")
    for oc in (OutgoingCredentials("O", "gateway", password_file=secret(tmp_path)),
               OutgoingCredentials("O", "gateway", password_env="MW_TEST_OUT_PW")):
        oc.password()
        assert "s3cr3t" not in repr(oc) and "envpw-secret" not in repr(oc)
        assert "s3cr3t" not in str(oc) and "envpw-secret" not in f"{oc}"


def test_from_config(tmp_path):
    from mailward.config import OutgoingAuth

    p = secret(tmp_path)
    oc = OutgoingCredentials.from_config("OB", OutgoingAuth(username="gw", password_file=p))
    assert (oc.name, oc.username, oc.password()) == ("OB", "gw", "s3cr3t-pw")
