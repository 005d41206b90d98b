"""Tests that need their own process: failover on SIGKILL, memory bound, gevent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from sync.replication.connection import ConnectionConfig
from tests.replication.support import RecordingSink, running_connection, stream_id_for, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _probe(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.replication.probe", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def test_second_instance_waits_and_takes_over_when_first_is_killed(db_dsn: str) -> None:
    stream = stream_id_for(db_dsn)
    first = _probe("instance", db_dsn, stream)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "active"
        config = ConnectionConfig(dsn=db_dsn, stream_id=stream, status_interval=0.5)
        sink = RecordingSink()
        with (
            psycopg.connect(db_dsn, autocommit=True) as conn,
            running_connection(config, sink) as (_sup, handles),
        ):
            wait_until(lambda: handles.state() == "waiting")
            assert handles.health()["status"] == "waiting"
            conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
            conn.execute(f"ALTER PUBLICATION {config.publication} ADD TABLE items")
            conn.execute("INSERT INTO items VALUES (1)")
            assert handles.state() == "waiting" and sink.fragments() == []
            os.kill(first.pid, signal.SIGKILL)
            t0 = time.monotonic()
            wait_until(lambda: handles.state() == "active", timeout=15)
            takeover = time.monotonic() - t0
            conn.execute("INSERT INTO items VALUES (2)")
            sink.wait_for(lambda: "2" in sink.inserted())
            assert takeover < 5.0, takeover
            assert sink.violations == []
    finally:
        first.kill()
        first.wait(10)


@pytest.mark.parametrize(
    ("rows", "bound_mb"),
    [
        pytest.param(200_000, 16, id="200k"),
        pytest.param(2_000_000, 16, id="2M", marks=pytest.mark.slow),
    ],
)
def test_huge_transaction_streams_in_bounded_memory(db_dsn: str, rows: int, bound_mb: int) -> None:
    result = _result(_probe("memory", db_dsn, stream_id_for(db_dsn), str(rows), "100"), timeout=900)
    assert result["ok"] is True and result["changes"] == rows
    grown_mb = (int(result["peak_kb"]) - int(result["base_kb"])) / 1024  # type: ignore[call-overload]
    assert grown_mb < bound_mb, result


def test_pipeline_under_gevent_is_cooperative(db_dsn: str) -> None:
    result = _result(_probe("gevent", db_dsn, stream_id_for(db_dsn), "50000"), timeout=300)
    assert result["gevent"] is True
    assert result["ok"] is True and result["changes"] == 50_000
    # the hub never ran our code for long without letting the heartbeat greenlet in (CPU time, so a
    # machine busy with other work does not count against us)
    assert float(result["max_busy_stall_s"]) < 0.1, result  # type: ignore[arg-type]
