"""Crash safety of the whole gateway: SIGKILL under concurrent load loses no acknowledged mail.

A gateway process relays ~1,000 messages from concurrent clients to a recording destination
while it is SIGKILLed and restarted on the same spool several times (and the destination is
dropped mid-delivery once). Every Message-ID that got a 250 must arrive at least once; the
duplicates (messages in flight at a kill) are counted and reported, not forbidden.
The long version (>= 5,000 messages) is `bench/reliability.py`.
"""
from __future__ import annotations

import pytest

from tests.reliability.support import crash_scenario


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_under_load_loses_no_acknowledged_message(tmp_path):
    report = crash_scenario(tmp_path, total=1000, clients=8, gateway_kills=3, destination_kills=1,
                            seed=5, drain_timeout=40, load_timeout=45)
    print("\ncrash safety:\n" + report.table())
    assert report.gateway_kills == 3
    assert report.acknowledged >= 900, report.table()      # the load really went through
    assert report.lost == 0, f"lost acknowledged messages: {report.lost_ids}"
    assert report.drained, report.table()
    # only messages in flight at a kill may repeat: a handful per fault, never a replay of the queue
    assert report.duplicated <= 4 * 50, report.table()
