"""Scale: 1,000 shapes created concurrently and 10,000 shapes alive at once in the real engine under gevent
(a subprocess, as in the gunicorn worker), each reloaded under its handle after a restart and following the
stream; a transaction reaches exactly the shapes it touches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _phase(phase: str, db_dsn: str, tmp_path: Path, n: int, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.shapes.scale_scenario", phase, db_dsn, str(tmp_path), str(n)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(out)  # the figures, with -s
    assert out["live"] == n
    assert out["untouched_unchanged"] is True
    return out


def _run(db_dsn: str, tmp_path: Path, n: int, timeout: float) -> dict[str, Any]:
    created = _phase("create", db_dsn, tmp_path, n, timeout)
    assert created["distinct_handles"] == n
    reloaded = _phase("reload", db_dsn, tmp_path, n, timeout)  # a restart: a new process
    assert reloaded["reloaded"] == n
    return {**created, **reloaded}


def test_one_thousand_shapes_created_concurrently(db_dsn: str, tmp_path: Path) -> None:
    out = _run(db_dsn, tmp_path, 1_000, timeout=300)
    assert out["create_s"] < 120, out


@pytest.mark.slow
def test_ten_thousand_shapes_alive_at_once(db_dsn: str, tmp_path: Path) -> None:
    _run(db_dsn, tmp_path, 10_000, timeout=900)
