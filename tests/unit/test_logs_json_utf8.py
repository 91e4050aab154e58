"""JSON output stays valid UTF-8 even when a logged value held undecodable bytes."""
import datetime
import json

from click.testing import CliRunner

from mailward.cli import main
from mailward.maillog import events as ev
from mailward.maillog.grammar import format_file_line


def test_track_json_is_strict_utf8_and_round_trips(tmp_path):
    when = datetime.datetime(2026, 11, 26, 10, 0, 0)
    subject = "caf\u00e9 \udcff\udc80 end"          # invalid UTF-8 bytes, decoded with surrogateescape
    lines = [ev.StartMid(7, 3), ev.MailFrom(7, 3, "a@x.test"), ev.RcptTo(7, 3, 0, "b@y.test"),
             ev.SubjectHeader(7, subject), ev.MessageFinished(7, "done")]
    log = tmp_path / "mail.current"
    log.write_text("".join(format_file_line(e, when) + "\n" for e in lines), encoding="utf-8")
    r = CliRunner().invoke(main, ["logs", "track", "--mid", "7", "--format", "json", str(log)])
    assert r.exit_code == 0, r.output
    r.stdout_bytes.decode("utf-8")                  # strict: raises on raw surrogates
    assert subject in json.dumps(json.loads(r.stdout_bytes), ensure_ascii=False)
