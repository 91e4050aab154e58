"""The spool's parts on their own: record framing and scanning, id counters, file ops,
model serialisation, the read-only queue commands."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from mailward.queue import Envelope, IdCounter, RcptState, Spool
from mailward.queue.cli import queue_group
from mailward.queue.fsops import FileOps
from mailward.queue.records import MAGIC, T_MSG, T_STATE, Scan, json_record, msg_record


# --- records ------------------------------------------------------------------------------------

def test_scan_reads_back_records_and_body_offsets():
    rec1, rel1 = msg_record({"env": {"mid": 1}, "size": 3}, b"abc")
    rec2 = json_record(T_STATE, {"m": 1, "r": 0, "s": 1})
    rec3, _ = msg_record({"env": {"mid": 2}, "size": 99}, None)
    data = MAGIC + rec1 + rec2 + rec3
    scan = Scan(data)
    recs = list(scan)
    assert [r.rtype for r in recs] == [T_MSG, T_STATE, T_MSG]
    flags, meta, off, length = recs[0].msg()
    assert flags == 0 and meta["size"] == 3 and data[off:off + length] == b"abc"
    assert off == len(MAGIC) + rel1
    assert recs[1].json() == {"m": 1, "r": 0, "s": 1}
    assert recs[2].msg()[0] == 1 and recs[2].msg()[3] == 0
    assert scan.end == len(data) and not scan.torn


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=6), st.data())
def test_any_damage_after_a_point_keeps_exactly_the_records_before_it(bodies, data):
    recs = [msg_record({"env": {"mid": i}, "size": len(b)}, b)[0] for i, b in enumerate(bodies)]
    image = MAGIC + b"".join(recs)
    cut = data.draw(st.integers(min_value=len(MAGIC), max_value=len(image)))
    flip = data.draw(st.booleans())
    damaged = bytearray(image[:cut])
    if flip and cut < len(image):
        damaged += bytes([image[cut] ^ 0x5A]) + image[cut + 1:]
    # records wholly before the damage point survive; nothing after it is returned
    ends = []
    pos = len(MAGIC)
    for r in recs:
        pos += len(r)
        ends.append(pos)
    expected = sum(1 for e in ends if e <= cut)
    scan = Scan(bytes(damaged))
    got = list(scan)
    assert len(got) == expected
    assert [r.msg()[1]["env"]["mid"] for r in got] == list(range(expected))
    assert scan.end == (ends[expected - 1] if expected else len(MAGIC))


def test_scan_rejects_foreign_file():
    scan = Scan(b"not a segment at all")
    assert list(scan) == [] and scan.bad_magic and scan.end == 0
    scan = Scan(b"")
    assert list(scan) == [] and not scan.torn


# --- counters -----------------------------------------------------------------------------------

def test_counter_is_monotonic_across_reopen_and_reserves_blocks(tmp_path):
    fs = FileOps()
    path = tmp_path / "mid.counter"
    c = IdCounter(path, block=10, fs=fs)
    syncs = fs.syncs
    first = [c.next() for _ in range(25)]
    assert first == list(range(1, 26))
    assert fs.syncs - syncs == 4            # two more blocks: file fsync + dir fsync each
    c2 = IdCounter(path, block=10)          # a "crash": the rest of the block is skipped
    nxt = c2.next()
    assert nxt > first[-1] and nxt == 31
    assert int(path.read_text()) == 41


def test_counter_start_and_damaged_file(tmp_path):
    c = IdCounter(tmp_path / "a", start=5000, block=3)
    assert [c.next() for _ in range(4)] == [5000, 5001, 5002, 5003]
    bad = tmp_path / "b"
    bad.write_text("garbage")
    with pytest.raises(ValueError, match="damaged"):
        IdCounter(bad)
    with pytest.raises(ValueError):
        IdCounter(tmp_path / "c", block=0)


# --- model --------------------------------------------------------------------------------------

@given(st.builds(
    Envelope, mid=st.integers(1, 2**40), icid=st.integers(0, 2**40), sender=st.text(max_size=30),
    recipients=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=4).map(tuple),
    received_at=st.floats(0, 4e9), listener=st.text(max_size=5), client_ip=st.text(max_size=5),
    helo=st.text(max_size=5), auth_user=st.none() | st.text(max_size=8),
    params=st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=3).map(tuple),
    origin_mid=st.none() | st.integers(1, 2**40)))
def test_envelope_json_round_trip(e):
    assert Envelope.from_json(json.loads(json.dumps(e.to_json()))) == e


# --- read-only CLI ------------------------------------------------------------------------------

def test_queue_commands_read_a_spool_owned_by_a_running_gateway(tmp_path):
    root = tmp_path / "spool"

    async def scenario():
        s = Spool(root)
        await s.open()                      # the "gateway" holds the spool open meanwhile
        for mid, rcpts in ((7, ("a@x", "b@x")), (8, ("c@x",))):
            w = s.writer()
            w.write(b"Subject: hello %d\r\nFrom: s@x\r\n\r\nthe body\r\n" % mid)
            await w.commit(Envelope(mid, 3, "s@x", rcpts, time.time() - 90, listener="in",
                                    client_ip="127.0.0.1", helo="client.example"))
        await s.record(7, 0, RcptState.DELIVERED)
        await s.defer(7, [1], next_attempt=time.time() + 600, error="451 4.4.1 try later")
        runner = CliRunner()
        out = {}
        for name, args in (("list", ["list"]), ("json", ["list", "--json"]), ("show", ["show", "7"]),
                           ("showjson", ["show", "7", "--json"]), ("stats", ["stats", "--json"]),
                           ("missing", ["show", "99"])):
            out[name] = runner.invoke(queue_group, args + ["--spool", str(root)])
        await s.close()
        return out

    out = asyncio.run(scenario())
    assert out["list"].exit_code == 0, out["list"].output
    assert "2 message(s)" in out["list"].output and "b@x" in out["list"].output
    rows = [json.loads(line) for line in out["json"].output.splitlines()]
    assert [r["mid"] for r in rows] == [7, 8]
    assert rows[0]["pending"] == ["b@x"] and rows[0]["attempts"] == 1 and rows[0]["age_seconds"] >= 89
    show = out["show"].output
    assert "RID 0  delivered" in show and "RID 1  deferred" in show and "Subject: hello 7" in show
    assert "451 4.4.1 try later" in show and "the body" not in show
    d = json.loads(out["showjson"].output)
    assert d["recipients"][1]["state"] == "deferred" and d["envelope"]["helo"] == "client.example"
    stats = json.loads(out["stats"].output)
    assert stats["messages"] == 2 and stats["recipients_pending"] == 2 and stats["deferred"] == 1
    assert out["missing"].exit_code == 2 and "not in the queue" in out["missing"].output


def test_queue_commands_on_a_non_spool(tmp_path):
    r = CliRunner().invoke(queue_group, ["list", "--spool", str(tmp_path)])
    assert r.exit_code == 2 and "not a spool directory" in r.output
