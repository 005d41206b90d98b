"""Shapes deleted and re-created under their clients, while rows change: clients following them from their
offsets (live and not) get no 5xx, and each copy, once caught up, equals the shape as Postgres has it.

Races between ``DELETE /v1/shape``, shape creation, live waits and the log of a shape being removed are
where an engine answers 500 or leaves a client with a copy that no longer matches (a gap or a duplicate
across the 409).  Twelve clients, each on one of four shapes of one table, and a writer run at once.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests.api.e2e_support import Http, Tables, running_service
from tests.fixtures.pg import ClusterInfo
from tests.shapes.consumer_harness import apply_item

EXTRA: dict[str, dict[str, Any]] = {"http": {"allow_shape_deletion": True, "long_poll_timeout_ms": 300}}
SHAPES = {  # query -> the rows of its shape (id -> n), as SQL
    "table=t": "SELECT id::text, n::text FROM t",
    "table=t&where=n%20%3D%201": "SELECT id::text, n::text FROM t WHERE n = 1",
    "table=t&where=n%20%3E%202": "SELECT id::text, n::text FROM t WHERE n > 2",
    "table=t&columns=id": "SELECT id::text, NULL FROM t",
}
RUN_S = 8.0


@pytest.fixture(scope="module")
def env(pg_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Http, str]]:
    workdir: Path = tmp_path_factory.mktemp("churn_e2e")
    with running_service(pg_cluster, workdir, "churn_e2e", EXTRA) as (svc, dsn):
        Tables(dsn).sql(
            "CREATE TABLE t (id int PRIMARY KEY, n int)",
            "INSERT INTO t SELECT g, g % 5 FROM generate_series(1, 200) g",
        )
        yield Http(svc.port), dsn


class Client(threading.Thread):
    """Follows one shape, applying its log to a copy; deletes the shape now and then (every client of it
    then gets 409 and starts again)."""

    def __init__(self, http: Http, query: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.http, self.query, self.rng = http, query, random.Random(seed)
        self.rows: dict[str, dict[str, str | None]] = {}
        self.handle: str | None = None
        self.offset = "-1"
        self.errors: list[str] = []
        self.deleting = threading.Event()  # cleared at the end: only follow
        self.deleting.set()
        self.stop = threading.Event()

    def view(self) -> dict[str, str | None]:
        """The copy as key -> ``n`` (None where the shape does not select it)."""
        return {key: values.get("n") for key, values in list(self.rows.items())}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._step()
            except Exception as exc:  # reported by the test
                self.errors.append(repr(exc))
                return

    def _step(self) -> None:
        if self.deleting.is_set() and self.rng.random() < 0.1:
            r = self.http.request("DELETE", f"/v1/shape?{self.query}", timeout=15)
            if r.status not in (202, 404):
                self.errors.append(f"DELETE {r.status} {r.body[:200]!r}")
            return
        url = f"/v1/shape?{self.query}&offset={self.offset}"
        if self.handle is not None and self.offset != "-1":
            url += f"&handle={urllib.parse.quote(self.handle)}" + (
                "&live=true" if self.rng.random() < 0.5 else ""
            )
        r = self.http.request("GET", url, timeout=15)
        if r.status == 409:
            self.rows.clear()
            self.handle, self.offset = r.headers.get("electric-handle"), "-1"
            return
        if r.status != 200:
            self.errors.append(f"GET {r.status} {r.body[:200]!r}")
            return
        for item in orjson.loads(r.body):
            error = apply_item(self.rows, item)
            if error is not None:
                self.errors.append(error)
        self.handle, self.offset = r.headers["electric-handle"], r.headers["electric-offset"]


def _expected(dsn: str, sql: str) -> dict[str, str | None]:
    with psycopg.connect(dsn) as conn:
        return {f'"public"."t"/"{i}"': n for i, n in conn.execute(sql).fetchall()}


def test_clients_of_shapes_deleted_under_them_stay_consistent(env: tuple[Http, str]) -> None:
    http, dsn = env
    clients = [Client(http, q, seed) for seed, q in enumerate(list(SHAPES) * 3)]
    stop_writer = threading.Event()

    def writer() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            i = 1000
            while not stop_writer.is_set():
                i += 1
                conn.execute("INSERT INTO t VALUES (%s, %s)", (i, i % 5))
                conn.execute("UPDATE t SET n = (n + 1) %% 5 WHERE id = %s", (i % 200 + 1,))
                conn.execute("DELETE FROM t WHERE id = %s", (i - 50,))
                time.sleep(0.005)  # pacing, not synchronisation

    write = threading.Thread(target=writer, daemon=True)
    for t in [*clients, write]:
        t.start()
    time.sleep(RUN_S)  # the churn runs for a while: no event ends it
    stop_writer.set()
    write.join(10)
    for c in clients:
        c.deleting.clear()
    expected = {q: _expected(dsn, sql) for q, sql in SHAPES.items()}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(c.view() == expected[c.query] for c in clients):
        time.sleep(0.1)  # poll-with-deadline: the clients converge on their own
    for c in clients:
        c.stop.set()
    for c in clients:
        c.join(20)
    for c in clients:
        assert not c.errors, (c.query, c.errors[:5])
        assert c.view() == expected[c.query], c.query
    assert orjson.loads(http.request("GET", "/v1/health").body) == {"status": "active"}
