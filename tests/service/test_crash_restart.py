"""The real service (gunicorn + gevent) killed with SIGKILL at random moments under a write workload.

The 50 assorted shapes of :mod:`tests.shapes.workload_oracle` are followed by HTTP clients, each from its
last offset across the restarts (same storage folder, database and port).  Each client applies the log to
its own copy: an insert of a key it already holds is a duplicate, an update or delete of a key it lacks is a
gap; at the end of every transaction (its ``last`` item) the copy must equal the shape as Postgres evaluates
it after that transaction, and no transaction that changed the shape may be skipped.  A 409 makes the client
start again from the new handle.  At the end every client's copy equals ``SELECT`` of its shape.
"""

from __future__ import annotations

import http.client
import random
import signal
import threading
import time
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests.fixtures.service import ServiceProcess
from tests.fixtures.sessions import SESSION_OPTIONS
from tests.shapes.consumer_harness import apply_item
from tests.shapes.workload_oracle import TABLES_SQL, Oracle, shape_specs, statement

KILLS = 4
RUN_S = (1.5, 3.0)  # random run time before each kill


class Client(threading.Thread):
    """Follows one shape from its last offset, across restarts and 409s, keeping a copy of the rows."""

    def __init__(self, svc: ServiceProcess, oracle: Oracle, index: int) -> None:
        super().__init__(daemon=True, name=f"client {index}")
        self.svc = svc
        self.oracle = oracle
        self.index = index
        self.params = oracle.specs[index].query()
        self.rows: dict[str, dict[str, str | None]] = {}
        self.logged: list[int] = []  # the transactions followed since the last snapshot, in turn
        self.handle: str | None = None
        self.offset = "-1"
        self.errors: list[str] = []
        self.refetches = 0
        self.applied = 0  # changes (not snapshot rows) applied
        self.up_to_date = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self._step()
        except Exception as exc:  # reported by the test
            self.errors.append(f"client crashed: {exc!r}")

    def _step(self) -> None:
        q = f"/v1/shape?{self.params}&offset={self.offset}"
        if self.handle is not None:
            q += f"&handle={urllib.parse.quote(self.handle)}"
            if self.up_to_date.is_set():
                q += "&live=true"
        try:
            code, headers, body = self.svc.get(q, timeout=10)
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            time.sleep(0.05)  # the service is down: retry (no event crosses the process boundary)
            return
        if code == 409:
            self.refetches += 1
            self.rows.clear()
            self.logged.clear()
            self.handle, self.offset = headers.get("electric-handle"), "-1"
            self.up_to_date.clear()
            return
        if code != 200:
            time.sleep(0.05)  # 503 while the engine starts
            return
        self.up_to_date.clear()
        for item in orjson.loads(body):
            self._apply(item)
        self.handle, self.offset = headers["electric-handle"], headers["electric-offset"]

    def _apply(self, item: dict[str, Any]) -> None:
        h = item["headers"]
        if "control" in h:
            if h["control"] == "up-to-date":
                self.up_to_date.set()
            return
        self.applied += "lsn" in h
        error = apply_item(self.rows, item)
        if error is not None:
            self.errors.append(f"{error} at {self.offset}")
        if h.get("last"):
            (xid,) = h["txids"]
            self.logged.append(xid)
            try:
                self.oracle.check_state(self.index, self.rows, xid)
            except AssertionError as exc:
                self.errors.append(f"at {self.offset}: {exc}")

    def final_errors(self) -> list[str]:
        """What is wrong with the copy now: the client's errors, a skipped transaction, a wrong end state."""
        errors = list(self.errors)
        try:
            self.oracle.check_no_skip(self.index, self.logged)
            assert self.rows == self.oracle.expected(self.oracle.states[self.oracle.order[-1]], self.index)
        except AssertionError as exc:
            errors.append(str(exc))
        return errors


class Writer(threading.Thread):
    """Commits the random workload, paced, recording each transaction in the oracle; on request one burst: a
    transaction that changes every row of ``items``, so that the engine has work in flight for a while."""

    def __init__(self, dsn: str, oracle: Oracle, rng: random.Random) -> None:
        super().__init__(daemon=True, name="writer")
        self.dsn, self.oracle, self.rng = dsn, oracle, rng
        self.stop = threading.Event()
        self.burst_wanted, self.burst_done = threading.Event(), threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        rng = self.rng
        try:
            with psycopg.connect(self.dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
                next_id = [2000]
                while not self.stop.is_set():
                    burst = self.burst_wanted.is_set()
                    with conn.transaction():
                        if burst:
                            conn.execute("UPDATE items SET value = (value + 1) % 100, ts = now()")
                        for _ in range(rng.randint(1, 4)):
                            conn.execute(*statement(rng, next_id))
                        self.oracle.record(conn)
                    if burst:
                        self.burst_wanted.clear()
                        self.burst_done.set()
                    time.sleep(rng.random() * 0.02)  # pacing, not synchronisation
        except Exception as exc:
            self.errors.append(f"writer: {exc!r}")
        finally:
            self.burst_done.set()

    def burst(self) -> None:
        """Commit a burst now; returns once it is committed."""
        self.burst_done.clear()
        self.burst_wanted.set()
        assert self.burst_done.wait(30) and not self.errors, ("no burst", self.errors)


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(db_dsn: str, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(TABLES_SQL)
    oracle = Oracle(shape_specs())
    svc = ServiceProcess(
        db_dsn, tmp_path, {"http": {"long_poll_timeout_ms": 500}, "storage": {"chunk_bytes_threshold": 4000}}
    ).start()
    writer = Writer(db_dsn, oracle, rng)
    clients: list[Client] = []
    try:
        svc.wait_healthy()
        clients = [Client(svc, oracle, i) for i in range(len(oracle.specs))]
        for c in clients:
            c.start()
        writer.start()
        for kill in range(KILLS):
            # The random moment of the kill: the first one while the shapes are still being created, then
            # after a while, or while the engine writes a burst to many logs (what it acknowledged must be on
            # disk).
            time.sleep(rng.uniform(0.05, 0.4) if kill == 0 else rng.uniform(*RUN_S))
            if kill % 2:
                writer.burst()
                time.sleep(rng.uniform(0.0, 0.03))
            svc.stop(sig=signal.SIGKILL)
            time.sleep(rng.uniform(0.0, 0.5))
            svc.start()
            svc.wait_healthy()
        time.sleep(rng.uniform(*RUN_S))
        writer.stop.set()
        writer.join(10)
        assert not writer.errors, writer.errors
        with psycopg.connect(db_dsn, options=SESSION_OPTIONS) as conn:
            now = oracle.snapshot(conn)
        expected = [oracle.expected(now, i) for i in range(len(clients))]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(c.rows == expected[c.index] for c in clients):
                break
            time.sleep(0.1)  # poll-with-deadline: the clients converge on their own
        for c in clients:
            assert not c.final_errors(), (seed, c.index, oracle.specs[c.index], c.final_errors()[:5])
            assert c.rows == expected[c.index], (seed, oracle.specs[c.index], c.refetches)
        assert sum(c.applied > 0 for c in clients) > len(clients) // 2  # clients followed logs, not snapshots
    finally:
        writer.stop.set()
        for c in clients:
            c.stop.set()
        svc.stop()
        for c in clients:
            c.join(15)
    if any(c.is_alive() for c in clients):
        pytest.fail("a client thread did not stop")
