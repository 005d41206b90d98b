"""Shapes follow one database history: another cluster or another timeline behind the DSN invalidates them.

A point-in-time restore (here: an archive recovery of the data folder, which ends on a new timeline with
the replication slot still there) and a different cluster that has our publication and slot both let the
client reuse the slot, so nothing but ``IDENTIFY_SYSTEM`` tells that the LSNs in our logs now name other
transactions.  Every shape must then be invalidated: clients get 409 with a new handle and reload from the
database as it is now.  Each test runs its own cluster (one is restarted into recovery).
"""

from __future__ import annotations

import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from sync.postgres.cluster import LocalCluster
from tests.fixtures.pg import run_sql
from tests.fixtures.service import ServiceProcess

STREAM = "e2e"


def _one(target: str | psycopg.Connection[Any], query: str, params: tuple[str, ...] = ()) -> Any:
    """The first column of the first row of ``query``, on a connection or a DSN (autocommit)."""
    if isinstance(target, str):
        with psycopg.connect(target, autocommit=True) as conn:
            return _one(conn, query, params)
    row = target.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _get(svc: ServiceProcess, query: str) -> tuple[int, dict[str, str], bytes]:
    end = time.monotonic() + 20
    code, headers, body = svc.get(query)
    while code == 503 and time.monotonic() < end:  # reconnecting after the server restart
        time.sleep(0.1)
        code, headers, body = svc.get(query)
    return code, headers, body


class Client:
    """Follows the shape of table ``items`` up to date: its handle, offset and rows (by id)."""

    def __init__(self, svc: ServiceProcess) -> None:
        code, headers, body = _get(svc, "/v1/shape?table=items&offset=-1")
        assert code == 200, (code, body)
        self.handle = headers["electric-handle"]
        self.offset = headers["electric-offset"]
        self.rows: dict[str, str] = {}
        self._apply(body)
        self.catch_up(svc)

    def _query(self) -> str:
        return f"/v1/shape?table=items&offset={self.offset}&handle={urllib.parse.quote(self.handle)}"

    def _apply(self, body: bytes) -> bool:
        up_to_date = False
        for item in orjson.loads(body):
            if "key" in item:
                if item["headers"]["operation"] == "delete":
                    self.rows.pop(item["key"], None)
                else:
                    self.rows[item["key"]] = item["value"]["v"]
            up_to_date = up_to_date or item["headers"].get("control") == "up-to-date"
        return up_to_date

    def values(self) -> list[str]:
        return sorted(self.rows.values())

    def catch_up(self, svc: ServiceProcess) -> None:
        while True:
            code, headers, body = _get(svc, self._query())
            assert code == 200, (code, body)
            self.offset = headers["electric-offset"]
            if self._apply(body):
                return

    def poll_until_gone(self, svc: ServiceProcess, deadline_s: float = 30.0) -> tuple[int, str | None]:
        """Poll until the handle is no longer served (no event crosses the process boundary)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            code, headers, _ = svc.get(self._query())
            if code not in (200, 503):  # 503: the service is reconnecting
                return code, headers.get("electric-handle")
            time.sleep(0.1)
        pytest.fail(f"shape {self.handle} still served after {deadline_s}s")


@pytest.fixture
def clusters() -> Iterator[Callable[[], LocalCluster]]:
    """Fresh private clusters, removed at teardown."""
    made: list[LocalCluster] = []

    def make() -> LocalCluster:
        pg = LocalCluster.temporary(fsync=False)
        made.append(pg)
        return pg.start()

    try:
        yield make
    finally:
        for pg in made:
            pg.remove()


def _items(dsn: str, *values: str) -> None:
    run_sql(dsn, "CREATE TABLE items (id int PRIMARY KEY, v text)")
    for i, v in enumerate(values):
        run_sql(dsn, f"INSERT INTO items VALUES ({i}, '{v}')")


def test_a_new_timeline_invalidates_every_shape(clusters: Callable[[], LocalCluster], tmp_path: Path) -> None:
    cluster = clusters()
    dsn = cluster.dsn()
    _items(dsn, "a", "b")
    svc = ServiceProcess(dsn, tmp_path, {"replication": {"backoff_max_s": 1.0}}, stream_id=STREAM).start()
    try:
        svc.wait_healthy()
        before = Client(svc)
        assert before.values() == ["a", "b"]
        with psycopg.connect(dsn + " replication=database", autocommit=True) as conn:
            assert conn.execute("IDENTIFY_SYSTEM").fetchone()[1] == 1  # type: ignore[index]
        cluster.restore_to_new_timeline()  # the slot survives; the service reconnects to it
        code, handle = before.poll_until_gone(svc)
        assert code == 409 and handle is not None and handle != before.handle
        after = Client(svc)
        assert after.handle == handle and after.values() == ["a", "b"]
        run_sql(dsn, "INSERT INTO items VALUES (9, 'c')")  # and the new shape follows the new timeline
        end = time.monotonic() + 20
        while time.monotonic() < end and after.values() != ["a", "b", "c"]:
            time.sleep(0.1)
            after.catch_up(svc)
        assert after.values() == ["a", "b", "c"]
    finally:
        svc.stop()


def test_another_cluster_with_our_slot_invalidates_every_shape(
    clusters: Callable[[], LocalCluster], tmp_path: Path
) -> None:
    # Two clusters set up alike (same DDL in the same order, so the table has the same OID in both, as
    # with staging and production built by the same migrations): only the system identifier differs.
    first, second = clusters().dsn(), clusters().dsn()
    _items(first, "first", "cluster")
    _items(second, "second")
    svc = ServiceProcess(first, tmp_path, stream_id=STREAM).start()
    try:
        svc.wait_healthy()
        before = Client(svc)
        assert before.values() == ["cluster", "first"]
    finally:
        assert svc.stop() == 0
    # The second cluster already has our publication and slot (e.g. restored from a file-system
    # snapshot), so the slot is reused: nothing else tells that the LSNs in our logs mean nothing there.
    run_sql(second, f"CREATE PUBLICATION shapesync_pub_{STREAM} FOR TABLE items")
    run_sql(second, f"SELECT pg_create_logical_replication_slot('shapesync_slot_{STREAM}', 'pgoutput')")
    svc = ServiceProcess(second, tmp_path, stream_id=STREAM).start()  # the same storage folder
    try:
        svc.wait_healthy()
        code, handle = before.poll_until_gone(svc)
        assert code == 409 and handle is not None and handle != before.handle
        after = Client(svc)
        assert after.handle == handle and after.values() == ["second"]
    finally:
        svc.stop()


def test_storage_older_than_the_slot_invalidates_every_shape(db_dsn: str, tmp_path: Path) -> None:
    _items(db_dsn, "a")
    svc = ServiceProcess(db_dsn, tmp_path, stream_id=STREAM).start()
    try:
        svc.wait_healthy()
        before = Client(svc)
    finally:
        assert svc.stop() == 0
    shutil.copytree(tmp_path / "storage", tmp_path / "backup")  # the copy we will be restored from
    svc.start()
    try:
        svc.wait_healthy()
        client = Client(svc)
        assert client.handle == before.handle
        with psycopg.connect(db_dsn) as conn:  # one transaction: its commit record follows ``mark``
            conn.execute("INSERT INTO items VALUES (7, 'b')")
            mark = _one(conn, "SELECT pg_current_wal_insert_lsn()::text")
        end = time.monotonic() + 20
        while client.values() != ["a", "b"] and time.monotonic() < end:
            time.sleep(0.1)
            client.catch_up(svc)
        assert client.values() == ["a", "b"]
        # Served is not yet confirmed: a stop in between leaves the insert to be replayed at the next start,
        # which then finds nothing missing.  The premise below is that Postgres has the insert confirmed.
        slot = f"shapesync_slot_{STREAM}"
        confirmed = "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s"
        end = time.monotonic() + 20
        while not _one(db_dsn, confirmed, (mark, slot)) and time.monotonic() < end:
            time.sleep(0.1)
        assert _one(db_dsn, confirmed, (mark, slot))
    finally:
        assert svc.stop() == 0
    shutil.rmtree(tmp_path / "storage")
    shutil.copytree(tmp_path / "backup", tmp_path / "storage")  # lost: the insert is in no log now
    svc.start()
    try:
        svc.wait_healthy()
        code, handle = before.poll_until_gone(svc, deadline_s=10)
        assert code == 409 and handle is not None and handle != before.handle
        assert Client(svc).values() == ["a", "b"]
    finally:
        svc.stop()
