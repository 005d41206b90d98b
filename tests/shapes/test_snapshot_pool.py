"""SnapshotPool: bounded concurrency, values byte-identical to replication, failures reported."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sync.shapes.consumer import ConsumerInfo, GetConsumerInfo
from sync.shapes.snapshot_pool import GetPoolStatus, PoolStatus
from sync.storage import ShapeLogWriter
from tests.shapes.consumer_harness import Harness, ShapeUnderTest, read_log, replay, wait_for


@pytest.fixture
def h(db_dsn: str, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(db_dsn, tmp_path)
    yield harness
    harness.stop()


def status(h: Harness) -> PoolStatus:
    result = h.pool.ask(GetPoolStatus(), timeout=5)
    assert isinstance(result, PoolStatus)
    return result


def snapshot_done(shape: ShapeUnderTest) -> bool:
    assert shape.consumer is not None
    result = shape.consumer.ask(GetConsumerInfo(), timeout=5)
    assert isinstance(result, ConsumerInfo)
    return result.snapshot_complete


def test_at_most_size_snapshots_run_at_once(h: Harness) -> None:
    h.conn.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)")
    h.slot.add_table("t")
    blocker = psycopg.connect(h.dsn)
    blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")  # every snapshot's SELECT waits
    shapes = [h.start_shape(ShapeUnderTest(f"{i}-1", h.definition("t"), None, None)) for i in range(3)]
    wait_for(lambda: status(h).running == 2 and status(h).queued == 1)
    assert not any(snapshot_done(s) for s in shapes)
    blocker.rollback()
    blocker.close()
    wait_for(lambda: all(snapshot_done(s) for s in shapes))
    wait_for(lambda: status(h).running == 0)  # workers report back after completing the snapshot
    final = status(h)
    assert (final.running, final.queued, final.completed) == (0, 0, 3)
    assert final.idle_connections <= 2
    for s in shapes:
        assert s.reader is not None
        assert replay(read_log(s.reader)) == h.expected(s)


def test_a_snapshot_waiting_for_storage_hands_its_slot_to_the_next(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.conn.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)")
    h.slot.add_table("t")
    gate = threading.Event()
    real = ShapeLogWriter.complete_snapshot

    def slow_complete(self: ShapeLogWriter, *args: Any) -> None:  # a slow disk for the first two shapes
        if self.handle in ("0-1", "1-1"):
            assert gate.wait(30)
        real(self, *args)

    monkeypatch.setattr(ShapeLogWriter, "complete_snapshot", slow_complete)
    shapes = [h.start_shape(ShapeUnderTest(f"{i}-1", h.definition("t"), None, None)) for i in range(3)]
    # both slots (size 2) were handed back once their rows were read: the third ran meanwhile
    wait_for(lambda: snapshot_done(shapes[2]))
    assert status(h).finishing == 2
    assert not snapshot_done(shapes[0]) and not snapshot_done(shapes[1])
    gate.set()
    wait_for(lambda: all(snapshot_done(s) for s in shapes))
    wait_for(lambda: status(h).running == 0 and status(h).finishing == 0)
    assert status(h).completed == 3
    for s in shapes:
        assert s.reader is not None
        assert replay(read_log(s.reader)) == h.expected(s)


def test_the_snapshot_mark_is_made_durable_after_the_rows_are_read_and_before_completion(h: Harness) -> None:
    h.conn.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)")
    h.slot.add_table("t")
    gate = threading.Event()
    calls = itertools.count()

    def held_sync() -> None:  # a slow fsync of the marks journal for the first two snapshots
        if next(calls) < 2:
            assert gate.wait(30)

    h.marks.sync = held_sync  # type: ignore[method-assign]
    shapes = [h.start_shape(ShapeUnderTest(f"{i}-1", h.definition("t"), None, None)) for i in range(2)]
    wait_for(lambda: status(h).finishing == 2)  # rows read and connections handed back, marks not yet synced
    assert h.marks.get("0-1") is not None and h.marks.get("1-1") is not None  # recorded before the sync
    third = h.start_shape(ShapeUnderTest("2-1", h.definition("t"), None, None))
    wait_for(lambda: snapshot_done(third))  # the pending syncs hold no slot
    assert not snapshot_done(shapes[0]) and not snapshot_done(shapes[1])  # complete only once synced
    gate.set()
    wait_for(lambda: all(snapshot_done(s) for s in shapes))
    for s in [*shapes, third]:
        assert s.reader is not None
        assert replay(read_log(s.reader)) == h.expected(s)


TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE v (
  id int PRIMARY KEY, b bool, i8 int8, f8 float8, f4 float4, n numeric(10,3), t text, vc varchar(5),
  c char(5), ts timestamp, tz timestamptz, d date, tm time, iv interval, by bytea, j json, jb jsonb,
  u uuid, ia int[], ta text[], m mood, big numeric
);
"""
VALUES = """(%s, true, 9223372036854775807, 1.1, 'NaN', 12.5, 'a"b\\c', 'xy', 'ab',
  '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02', '2024-02-29', '23:59:59.5', '1 day 2 hours',
  '\\x0001fffe', '{"a" : 1}', '{"b": [1, 2], "a": null}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{{1,2},{3,4}}', ARRAY['x', NULL, 'y z'], 'ok', 'Infinity')"""


def test_snapshot_values_are_identical_to_replicated_values(h: Harness) -> None:
    h.conn.execute(TYPES)
    h.conn.execute("ALTER TABLE v REPLICA IDENTITY FULL")
    h.slot.add_table("v")
    h.conn.execute("INSERT INTO v VALUES " + VALUES, (1,))
    shape = h.start_shape(ShapeUnderTest("1-1", h.definition("v"), None, None))
    wait_for(lambda: snapshot_done(shape))
    h.conn.execute("INSERT INTO v VALUES " + VALUES, (2,))
    h.sync_all()
    assert shape.reader is not None
    items = [i for i in read_log(shape.reader) if "key" in i]
    assert [i["headers"]["operation"] for i in items] == ["insert", "insert"]
    snap, live = (dict(i["value"]) for i in items)
    assert "lsn" not in items[0]["headers"]
    assert "lsn" in items[1]["headers"]
    assert snap.pop("id") == "1"
    assert live.pop("id") == "2"
    assert snap == live
    assert snap["b"] == "t"  # the same text as pgoutput for booleans too
    assert snap["by"] == "\\x0001fffe"
    assert snap["c"] == "ab   "


def test_a_failed_snapshot_invalidates_the_shape(h: Harness) -> None:
    h.conn.execute("CREATE TABLE gone (id int PRIMARY KEY)")
    h.slot.add_table("gone")
    h.hold_snapshots = True
    shape = h.start_shape(ShapeUnderTest("1-1", h.definition("gone"), None, None))
    h.conn.execute("DROP TABLE gone")
    h.release_snapshot()
    handle, reason = h.invalidated.get(timeout=10)
    assert handle == shape.handle
    assert "snapshot failed" in reason
    assert "gone" in reason
    wait_for(lambda: status(h).running == 0)
    # The pool keeps working after a failure.
    h.conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    h.hold_snapshots = False
    other = h.start_shape(ShapeUnderTest("2-1", h.definition("t"), None, None))
    wait_for(lambda: snapshot_done(other))


def test_an_idle_connection_cut_by_the_server_is_replaced(h: Harness) -> None:
    h.conn.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    first = h.start_shape(ShapeUnderTest("1-1", h.definition("t"), None, None))
    wait_for(lambda: snapshot_done(first))
    wait_for(lambda: status(h).idle_connections >= 1)
    killed = h.conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state = 'idle' AND query = 'ROLLBACK'"
    ).fetchone()
    assert killed is not None and killed[0] >= 1
    second = h.start_shape(ShapeUnderTest("2-1", h.definition("t"), None, None))
    wait_for(lambda: snapshot_done(second))
    assert h.invalidated.empty()


def test_a_large_table_is_read_by_two_connections_in_one_snapshot(h: Harness) -> None:
    """The harness's pool reads one heap page per query, so this table takes many ranges over two lanes; the
    table changes all along: one snapshot for both connections, joined with the log without gap or
    duplicate."""
    h.conn.execute("CREATE TABLE big (id int PRIMARY KEY, v text, n int)")
    h.conn.execute("INSERT INTO big SELECT g, repeat('x', 40) || g, g FROM generate_series(1, 4000) g")
    h.slot.add_table("big")
    shape = h.start_shape(ShapeUnderTest("1-1", h.definition("big"), None, None))
    step = 0
    while not snapshot_done(shape):
        step += 1
        h.conn.execute("UPDATE big SET n = n + 1 WHERE id %% 97 = %s", (step % 97,))
        h.conn.execute("DELETE FROM big WHERE id = %s", (4000 - step,))
        h.conn.execute("INSERT INTO big VALUES (%s, 'new', 0)", (10_000 + step,))
    h.conn.execute("UPDATE big SET v = 'after' WHERE id < 50")
    h.sync_all()
    assert shape.reader is not None
    assert replay(read_log(shape.reader)) == h.expected(shape)
    assert step > 0
