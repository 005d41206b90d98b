"""The supervision library under gevent monkey patching, in a subprocess (this process is unpatched)."""

from __future__ import annotations

from tests.fixtures.scenario import run_scenario


def test_gevent_runtime_scenario() -> None:
    out = run_scenario("tests.supervisors.gevent_scenario", timeout=60)
    assert out["ordered_start"] == ["a", "b", "hang"]
    assert out["os_threads"] == 1  # every actor is a greenlet
    assert out["ask_error"] == "b exploded"
    assert out["restarts"] == {"a": 0, "b": 1, "hang": 1, "dyn": 1}
    assert out["slow_started_before_gate"] is False
    assert out["slow_started"] is True
    assert out["dyn_children"] == 201
    assert out["snapshot_read"] is True
    assert out["stopped"] is True
    assert 0.2 <= out["stop_s"] < 5
    assert out["left"] == 0
    assert out["escalated"] is True
    assert out["left_end"] == 0
