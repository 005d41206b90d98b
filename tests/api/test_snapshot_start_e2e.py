"""``offset=now`` on a new shape answers only once the shape's snapshot is taken (spec §3, "nothing lost").

The answer's offset (``0_inf`` for a new shape) means "everything after the snapshot".  Answered before the
snapshot was taken, a transaction committed after the answer but before the snapshot would be in the
snapshot only, which a client following from ``0_inf`` never reads: a gap.  The service here has a single
snapshot slot, held by a snapshot blocked on a table lock, so the new shape's snapshot cannot be taken until
the test lets it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.api.e2e_support import SERVICE, Http, Resp, Shape, Tables, running_service
from tests.fixtures.pg import ClusterInfo

ONE_SNAPSHOT_SLOT = {**SERVICE, "database": {"snapshot_pool_size": 1, "snapshot_queue_timeout_s": 60}}


@pytest.fixture(scope="module")
def env(pg_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Http, Tables]]:
    workdir: Path = tmp_path_factory.mktemp("snapshot_start_e2e")
    with running_service(pg_cluster, workdir, "snapshot_start_e2e", ONE_SNAPSHOT_SLOT) as (svc, dsn):
        yield Http(svc.port), Tables(dsn)


class _Request(threading.Thread):
    """One HTTP request in the background; ``done`` is set with its response."""

    def __init__(self, http: Http, query: str) -> None:
        super().__init__(daemon=True)
        self.http, self.query = http, query
        self.response: Resp | None = None
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            self.response = self.http.shape(self.query)
        finally:
            self.done.set()


def _wait_lock_waiter(conn: psycopg.Connection[tuple[object, ...]], table: str) -> None:
    """Until a session waits for a lock on ``table`` (the blocked snapshot): poll pg_locks (no event)."""
    deadline = time.monotonic() + 30
    while True:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass", (table,)
        ).fetchone()
        if row is not None and row[0]:
            return
        assert time.monotonic() < deadline, "the blocking snapshot never started"
        time.sleep(0.02)


def test_offset_now_answers_after_the_snapshot_is_taken(env: tuple[Http, Tables]) -> None:
    http, db = env
    blocker = db.create(rows=1)
    table = db.create(rows=2)
    for t in (blocker, table):  # published with REPLICA IDENTITY FULL: later shapes need no table lock
        Shape(http, f"table={t}").sync()
    with psycopg.connect(db.dsn) as locker, psycopg.connect(db.dsn, autocommit=True) as watcher:
        locker.execute(f"LOCK TABLE {blocker} IN ACCESS EXCLUSIVE MODE")
        holder = _Request(http, f"table={blocker}&where=id%3E0&offset=-1")  # takes the only snapshot slot
        _wait_lock_waiter(watcher, blocker)
        now = _Request(http, f"table={table}&where=id%3E0&offset=now")
        # Its snapshot cannot be taken yet: an answer now would let the next commit fall into the gap.
        assert not now.done.wait(2.0), "offset=now answered before the shape's snapshot was taken"
        db.insert(table, 10)  # committed before the answer: in the snapshot, not in the log
        locker.rollback()  # the slot frees up, the shape's snapshot is taken
        assert now.done.wait(30) and holder.done.wait(30)
    r = now.response
    assert r is not None and r.status == 200 and r.offset == "0_inf", r
    client = Shape(http, f"table={table}&where=id%3E0", r.handle, r.offset)
    db.insert(table, 11)  # committed after the answer: must be in the log
    [change] = client.follow(1)
    assert change["value"]["id"] == "11"
    snapshot = Shape(http, f"table={table}&where=id%3E0")
    ids = sorted(int(m["value"]["id"]) for resp in snapshot.sync() for m in resp.items() if "key" in m)
    assert ids == [1, 2, 10, 11]  # 10 from the snapshot, 11 from the log: nothing lost, nothing twice
