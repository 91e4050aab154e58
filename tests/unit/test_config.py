"""The config schema: defaults, the example, and errors that name the key and the line."""
from pathlib import Path

import pytest

from mailward.config import ConfigError, check_secret_file, default_config_text, dump, parse_config


def test_example_config_is_valid_and_complete():
    cfg = parse_config(default_config_text(), "example.toml", Path("/base"))
    lst = cfg.listener[0]
    assert lst.name == "IncomingMail" and lst.port == 2525
    assert lst.auth_profile == "IncomingAuthentication"
    assert cfg.gateway.spool_dir == Path("/base/var/spool")
    assert cfg.route[0].on_auth_failure == "continue"


def _bad(replace_from: str, replace_to: str) -> str:
    text = default_config_text()
    assert replace_from in text
    with pytest.raises(ConfigError) as exc:
        parse_config(text.replace(replace_from, replace_to, 1), "gw.toml")
    return str(exc.value)


def test_unknown_key_is_fatal_and_names_key_and_line():
    text = default_config_text()
    line = text.splitlines().index("max_recipients = 1000") + 1
    msg = _bad("max_recipients = 1000", "max_recipient = 1000")
    assert f"gw.toml:{line}: listener[0].max_recipient: unknown key" in msg


def test_bad_value_names_key_and_line():
    text = default_config_text()
    line = text.splitlines().index("port = 2525") + 1
    msg = _bad("port = 2525", "port = 70000")
    assert f"gw.toml:{line}: listener[0].port" in msg


def test_bad_policy_in_nested_table():
    msg = _bad('policy = "ACCEPT"', 'policy = "ACEPT"')
    assert "listener[0].hat[1].policy" in msg


def test_bad_hat_matcher():
    msg = _bad('match = ["192.0.2.0/24"]', 'match = ["not an ip!"]')
    assert "listener[0].hat[0].match" in msg


def test_dangling_profile_reference():
    msg = _bad('auth_profile = "IncomingAuthentication"', 'auth_profile = "Nope"')
    assert "auth_profile" in msg and "Nope" in msg


def test_not_toml():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[gateway\n", "x.toml")


def test_show_non_default_lists_only_changes():
    cfg = parse_config('[gateway]\nhostname = "mx.example.test"\n')
    assert dump(cfg, non_default=True) == {"gateway": {"hostname": "mx.example.test"}}
    full = dump(cfg, non_default=False)
    assert full["delivery"]["max_queue_lifetime"] == 259200


def test_secret_file_must_be_private(tmp_path):
    p = tmp_path / "pw"
    p.write_text("s3cret")
    p.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        check_secret_file(p)
    p.chmod(0o600)
    check_secret_file(p)
