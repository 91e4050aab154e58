"""The `mailward` command's own sub-commands: config, tls, run argument errors."""
import json
import os
import stat

from click.testing import CliRunner

from mailward.cli import main
from mailward.config import default_config_text


def test_config_example_is_complete_and_valid(tmp_path):
    r = CliRunner().invoke(main, ["config", "example"])
    assert r.exit_code == 0
    assert r.output == default_config_text()
    f = tmp_path / "gw.toml"
    f.write_text(r.output)
    ok = CliRunner().invoke(main, ["config", "check", str(f)])
    assert ok.exit_code == 0 and "OK (1 listener(s), 1 auth profile(s), 1 route(s))" in ok.output


def test_config_check_names_key_and_line(tmp_path):
    f = tmp_path / "gw.toml"
    f.write_text('[gateway]\nhostname = "x"\nhostnme = "y"\n\n[[listener]]\nname = "A"\nport = "many"\nauth = "off"\n')
    r = CliRunner().invoke(main, ["config", "check", str(f)])
    assert r.exit_code == 2
    assert f"{f}:3: gateway.hostnme: unknown key" in r.output
    assert f"{f}:7: listener[0].port" in r.output
    assert "Traceback" not in r.output


def test_config_check_missing_file(tmp_path):
    r = CliRunner().invoke(main, ["config", "check", str(tmp_path / "nope.toml")])
    assert r.exit_code == 2 and "cannot read" in r.output


def test_config_show_defaults_and_non_default(tmp_path):
    f = tmp_path / "gw.toml"
    f.write_text('[gateway]\nhostname = "mx.example.test"\n')
    nd = CliRunner().invoke(main, ["config", "show", "--config", str(f), "--non-default"])
    assert json.loads(nd.output) == {"gateway": {"hostname": "mx.example.test"}}
    d = CliRunner().invoke(main, ["config", "show", "--defaults"])
    full = json.loads(d.output)
    assert full["delivery"]["max_retries"] == 100 and full["auth_guard"]["lockout_failures"] == 10


def test_tls_selfsigned_key_is_private(tmp_path):
    r = CliRunner().invoke(main, ["tls", "selfsigned", "--cn", "gw.test", "--cert", str(tmp_path / "c.pem"),
                                  "--key", str(tmp_path / "k.pem")])
    assert r.exit_code == 0, r.output
    assert b"BEGIN CERTIFICATE" in (tmp_path / "c.pem").read_bytes()
    assert stat.S_IMODE(os.stat(tmp_path / "k.pem").st_mode) == 0o600


def test_run_needs_exactly_one_config_source():
    r = CliRunner().invoke(main, ["run"])
    assert r.exit_code == 2 and "exactly one of --config FILE or --demo" in r.output
