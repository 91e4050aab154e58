"""`mailward users ...` and `mailward auth test` through click's runner (stdin, never argv)."""
from __future__ import annotations

import os
import stat

import pytest
from argon2 import PasswordHasher, Type
from click.testing import CliRunner

from mailward.auth import cli as auth_cli
from mailward.auth.cli import auth_group, users_group


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    # Production parameters cost ~0.1-0.3 s a hash; the commands' logic is what is tested here.
    monkeypatch.setattr("mailward.auth.users.default_hasher",
                        lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID))


def test_users_add_list_passwd_del(tmp_path):
    f = tmp_path / "users.db"
    r = CliRunner()
    res = r.invoke(users_group, ["-f", str(f), "add", "alice"], input="wonderland\n")
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert "wonderland" not in f.read_text()
    r.invoke(users_group, ["-f", str(f), "add", "bob"], input="builder\n")
    res = r.invoke(users_group, ["-f", str(f), "list"])
    assert res.output.split() == ["alice", "bob"]
    res = r.invoke(users_group, ["-f", str(f), "add", "alice"], input="x\n")
    assert res.exit_code == 2 and "already exists" in res.output
    res = r.invoke(users_group, ["-f", str(f), "passwd", "alice"], input="looking-glass\n")
    assert res.exit_code == 0
    from mailward.auth.users import UserStore

    assert UserStore(f).verify_sync("alice", "looking-glass")
    res = r.invoke(users_group, ["-f", str(f), "del", "bob"])
    assert res.exit_code == 0
    assert r.invoke(users_group, ["-f", str(f), "list"]).output.split() == ["alice"]
    res = r.invoke(users_group, ["-f", str(f), "passwd", "nobody"], input="x\n")
    assert res.exit_code == 2 and "no user" in res.output


def test_empty_stdin_password_refused(tmp_path):
    res = CliRunner().invoke(users_group, ["-f", str(tmp_path / "u.db"), "add", "alice"], input="")
    assert res.exit_code == 2 and "no password" in res.output


def test_users_file_from_config(tmp_path):
    cfg = tmp_path / "mw.toml"
    cfg.write_text('[auth_profiles.Local]\ntype = "local"\nusers_file = "users.db"\n')
    res = CliRunner().invoke(users_group, ["--config", str(cfg), "add", "carol"], input="pw\n")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "users.db").exists()


def test_auth_test_command(tmp_path, monkeypatch):
    f = tmp_path / "users.db"
    CliRunner().invoke(users_group, ["-f", str(f), "add", "alice"], input="wonderland\n")
    cfg = tmp_path / "mw.toml"
    cfg.write_text(f'[auth_profiles.Local]\ntype = "local"\nusers_file = "{f.name}"\n'
                   '[auth_profiles.Chain]\ntype = "chain"\nmembers = ["Local"]\n')
    r = CliRunner()
    res = r.invoke(auth_group, ["test", "--config", str(cfg), "Local", "alice"], input="wonderland\n")
    assert res.exit_code == 0 and "OK for user alice by profile Local" in res.output
    res = r.invoke(auth_group, ["test", "--config", str(cfg), "Chain", "alice"], input="nope\n")
    assert res.exit_code == 1 and "FAIL" in res.output
    res = r.invoke(auth_group, ["test", "--config", str(cfg), "Nope", "alice"], input="x\n")
    assert res.exit_code == 2 and "no auth profile" in res.output
    # The loader is a hook the gateway may replace.
    seen = []
    monkeypatch.setattr(auth_cli, "load_profiles", lambda p: seen.append(p) or {})
    r.invoke(auth_group, ["test", "--config", str(cfg), "Local", "alice"], input="x\n")
    assert seen == [cfg]


def test_file_option_after_the_subcommand(tmp_path):
    # The form the demo start-up message prints: `mailward users passwd demo --file F`.
    f = tmp_path / "users.db"
    r = CliRunner()
    assert r.invoke(users_group, ["add", "demo", "--file", str(f)], input="pw1\n").exit_code == 0
    res = r.invoke(users_group, ["passwd", "demo", "--file", str(f)], input="pw2\n")
    assert res.exit_code == 0, res.output
    assert r.invoke(users_group, ["list", "-f", str(f)]).output.split() == ["demo"]
    res = r.invoke(users_group, ["list"])
    assert res.exit_code == 2 and "--file" in res.output


def test_users_add_with_cram(tmp_path):
    f = tmp_path / "users.db"
    r = CliRunner()
    assert r.invoke(users_group, ["add", "carol", "--cram", "-f", str(f)], input="pw\n").exit_code == 0
    assert ":{HMAC-MD5}" in f.read_text()
    assert r.invoke(users_group, ["passwd", "carol", "--no-cram", "-f", str(f)], input="pw2\n").exit_code == 0
    assert "{HMAC-MD5}" not in f.read_text()
    assert "--cram" in r.invoke(users_group, ["add", "--help"]).output
