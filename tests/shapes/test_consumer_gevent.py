"""The shape engine under gevent monkey patching, in a subprocess (this process is unpatched): snapshots
stream and transactions are consumed with every actor a greenlet, without stalling the hub."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.scenario import run_scenario


def test_engine_under_gevent(db_dsn: str, tmp_path: Path) -> None:
    out = run_scenario("tests.shapes.consumer_gevent_scenario", db_dsn, str(tmp_path), timeout=120)
    assert out["gevent"] is True
    assert out["equal"] is True
    assert out["beats"] > 10
    assert out["max_stall_s"] < 0.3, out
