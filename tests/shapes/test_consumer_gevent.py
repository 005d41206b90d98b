"""The shape engine under gevent monkey patching, in a subprocess (this process is unpatched): snapshots
stream and transactions are consumed with every actor a greenlet, without stalling the hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_engine_under_gevent(db_dsn: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.shapes.consumer_gevent_scenario", db_dsn, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["gevent"] is True
    assert out["equal"] is True
    assert out["beats"] > 10
    assert out["max_stall_s"] < 0.3, out
