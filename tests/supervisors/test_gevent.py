"""The supervision library under gevent monkey patching, in a subprocess (this process is unpatched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gevent_runtime_scenario() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.supervisors.gevent_scenario"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
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
