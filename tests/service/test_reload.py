"""SIGHUP to the running service (``kill -HUP`` of the gunicorn master, or of ``shapesync serve``, which
forwards it): gunicorn starts a new worker, which reads the TOML file again, and stops the old one; the new
worker's engine reloads every shape from storage and resumes the slot.  A client that follows a shape
carries on from its offset with the same handle: no gap, no duplicate, no 409, even for a write committed
while the two workers hand over.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.parse
from pathlib import Path

import orjson
import psycopg

from tests.fixtures.service import ServiceProcess

SHAPE = "/v1/shape?table=items"


def _follow(svc: ServiceProcess, handle: str, offset: str, want: int) -> tuple[list[dict[str, object]], str]:
    """Changes from ``offset`` (long-polls once caught up) until ``want`` of them arrived; every response
    must be a 200 for ``handle``."""
    changes: list[dict[str, object]] = []
    while len(changes) < want:
        live = "&live=true" if changes or offset != "-1" else ""
        code, headers, body = svc.get(f"{SHAPE}&handle={handle}&offset={urllib.parse.quote(offset)}{live}")
        assert code == 200, (code, body[:300])
        assert headers["electric-handle"] == handle
        changes += [m for m in orjson.loads(body) if "key" in m]
        offset = headers["electric-offset"]
    return changes, offset


def _worker_replaced(svc: ServiceProcess, old: int | None, deadline_s: float = 60.0) -> int:
    """Wait until a worker other than ``old`` runs (another process: nothing to wait on but /proc)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        pid = svc.worker_pid()
        if pid is not None and pid != old:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no new worker {deadline_s}s after SIGHUP:\n{svc.output()[-3000:]}")


def test_sighup_replaces_the_worker_rereads_the_settings_and_clients_carry_on(
    db_dsn: str, tmp_path: Path
) -> None:
    svc = ServiceProcess(db_dsn, tmp_path, {"http": {"cache_max_age_s": 60}}).start()
    try:
        svc.wait_healthy()
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO items VALUES (1, 'before')")
            code, headers, body = svc.get(f"{SHAPE}&offset=-1")
            assert code == 200 and b'"before"' in body
            handle, offset = headers["electric-handle"], headers["electric-offset"]
            code, headers, _ = svc.get(f"{SHAPE}&handle={handle}&offset={offset}")
            assert code == 200 and "electric-up-to-date" in headers
            assert "max-age=60" in headers["cache-control"]
            offset = headers["electric-offset"]

            svc.config.write_text(
                svc.config.read_text().replace("cache_max_age_s = 60", "cache_max_age_s = 7")
            )
            old = svc.worker_pid()
            master = svc.master_pid()
            assert old is not None and master is not None
            os.kill(master, signal.SIGHUP)
            conn.execute("INSERT INTO items VALUES (2, 'during')")  # while the workers hand over
            new = _worker_replaced(svc, old)
            svc.wait_healthy()
            conn.execute("INSERT INTO items VALUES (3, 'after')")

            changes, offset = _follow(svc, handle, offset, want=2)
            assert [(c["headers"]["operation"], c["value"]["v"]) for c in changes] == [  # type: ignore[index]
                ("insert", "during"),
                ("insert", "after"),
            ]
            assert svc.worker_pid() == new
            code, headers, _ = svc.get(f"{SHAPE}&handle={handle}&offset={offset}")  # at the tail: up to date
            assert code == 200 and "electric-up-to-date" in headers
            assert "max-age=7" in headers["cache-control"]  # the new worker read the file again
            rows, _ = _follow(svc, handle, "-1", want=3)  # a new client: the same three rows
            assert sorted(c["value"]["v"] for c in rows) == ["after", "before", "during"]  # type: ignore[index]
    finally:
        svc.stop()
