"""The real service (gunicorn + gevent) killed with SIGKILL at random moments under a write workload.

Several shapes of one table are followed by HTTP clients, each from its last offset across the restarts
(same storage folder, database and port).  Each client applies the log to its own copy: an insert of a key
it already holds is a duplicate, an update or delete of a key it lacks is a gap; both fail the test.  A 409
makes the client start again from the new handle.  At the end every client's copy equals ``SELECT`` of its
shape.
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

SHAPES = {
    # params -> the SELECT the shape must equal (id, then the selected columns as text)
    "table=items": "SELECT id::text, grp::text, v FROM items",
    "table=items&where=grp%20%3D%201": "SELECT id::text, grp::text, v FROM items WHERE grp = 1",
    "table=items&where=grp%20%3C%3E%201&columns=id,v": "SELECT id::text, NULL, v FROM items WHERE grp <> 1",
    "table=items&where=id%20%3C%2040&replica=full": "SELECT id::text, grp::text, v FROM items WHERE id < 40",
}
KILLS = 3
RUN_S = (2.0, 4.0)  # random run time before each kill


class Client(threading.Thread):
    """Follows one shape from its last offset, across restarts and 409s, keeping a copy of the rows."""

    def __init__(self, svc: ServiceProcess, params: str) -> None:
        super().__init__(daemon=True, name=f"client {params}")
        self.svc = svc
        self.params = params
        self.rows: dict[str, dict[str, Any]] = {}
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
        key, op = item["key"], h["operation"]
        self.applied += "lsn" in h
        if op == "insert":
            if key in self.rows:
                self.errors.append(f"duplicate insert of {key} at {self.offset}")
            self.rows[key] = dict(item["value"])
        elif op == "update":
            if key not in self.rows:
                self.errors.append(f"update of missing {key} at {self.offset}")
            self.rows.setdefault(key, {}).update(item["value"])
        elif op == "delete" and self.rows.pop(key, None) is None:
            self.errors.append(f"delete of missing {key} at {self.offset}")

    def view(self) -> dict[str, tuple[str | None, ...]]:
        return {v["id"]: (v["id"], v.get("grp"), v["v"]) for v in list(self.rows.values()) if "id" in v}


def _writer(dsn: str, stop: threading.Event, rng: random.Random, errors: list[str]) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                with conn.transaction():
                    for _ in range(rng.randint(1, 4)):
                        n += 1
                        i = rng.randrange(60)
                        op = rng.random()
                        if op < 0.45:
                            conn.execute(
                                "INSERT INTO items VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE"
                                " SET grp = excluded.grp, v = excluded.v",
                                (i, rng.randrange(3), f"v{n}"),
                            )
                        elif op < 0.8:
                            conn.execute("UPDATE items SET v = %s WHERE id = %s", (f"u{n}", i))
                        elif op < 0.9:
                            conn.execute("UPDATE items SET grp = (grp + 1) %% 3 WHERE id = %s", (i,))
                        else:
                            conn.execute("DELETE FROM items WHERE id = %s", (i,))
                time.sleep(rng.random() * 0.01)
    except Exception as exc:
        errors.append(f"writer: {exc!r}")


def _expected(dsn: str, query: str) -> dict[str, tuple[str | None, ...]]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: (r[0], r[1], r[2]) for r in conn.execute(query).fetchall()}


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(db_dsn: str, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, v text)")
        conn.execute("INSERT INTO items SELECT g, g % 3, 'init' FROM generate_series(0, 29) g")
    svc = ServiceProcess(
        db_dsn, tmp_path, {"http": {"long_poll_timeout_ms": 500}, "storage": {"chunk_bytes_threshold": 4000}}
    ).start()
    stop_writer = threading.Event()
    writer_errors: list[str] = []
    clients: list[Client] = []
    try:
        svc.wait_healthy()
        clients = [Client(svc, p) for p in SHAPES]
        for c in clients:
            c.start()
        writer = threading.Thread(target=_writer, args=(db_dsn, stop_writer, rng, writer_errors), daemon=True)
        writer.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(*RUN_S))  # the random moment of the kill
            svc.stop(sig=signal.SIGKILL)
            time.sleep(rng.uniform(0.0, 0.5))
            svc.start()
            svc.wait_healthy()
        time.sleep(rng.uniform(*RUN_S))
        stop_writer.set()
        writer.join(10)
        assert not writer_errors, writer_errors
        expected = {p: _expected(db_dsn, q) for p, q in SHAPES.items()}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(c.view() == expected[c.params] for c in clients):
                break
            time.sleep(0.1)  # poll-with-deadline: the clients converge on their own
        for c in clients:
            assert not c.errors, (seed, c.params, c.errors[:5])
            assert c.view() == expected[c.params], (seed, c.params, c.refetches)
            assert c.applied > 0, c.params  # the client did follow the log, not only snapshots
    finally:
        stop_writer.set()
        for c in clients:
            c.stop.set()
        svc.stop()
        for c in clients:
            c.join(15)
    if any(c.is_alive() for c in clients):
        pytest.fail("a client thread did not stop")
