"""Scale: 1,000 shapes created concurrently and 10,000 shapes alive at once in the real engine under gevent
(a subprocess, as in the gunicorn worker), each reloaded under its handle after a restart and following the
stream; a transaction reaches exactly the shapes it touches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.scenario import run_scenario


def _phase(phase: str, db_dsn: str, tmp_path: Path, n: int, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = run_scenario(
        "tests.shapes.scale_scenario", phase, db_dsn, str(tmp_path), str(n), timeout=timeout
    )
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


def test_ten_thousand_shapes_alive_at_once(db_dsn: str, tmp_path: Path) -> None:
    _run(db_dsn, tmp_path, 10_000, timeout=900)
