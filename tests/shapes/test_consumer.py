"""Consumer: the shape's log, replayed, equals SELECT of the shape; the snapshot join has no gap and no
duplicate; replay after a restart is byte-identical; waiters wake on data and on rotation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
from psycopg import sql

from sync.offsets import LogOffset
from sync.shapes.collector import ShapeLogCollector
from sync.shapes.consumer import (
    ConsumerInfo,
    GetConsumerInfo,
    RotateShape,
    StoredShape,
)
from sync.shapes.shape_supervisor import ShapeSupervisor
from sync.shapes.snapshot_messages import PrepareSnapshot
from sync.shapes.waiters import AwaitData, CancelWait, WaitResult
from sync.shapes.xid import PgSnapshot
from sync.storage.errors import ShapeGone
from tests.shapes.consumer_harness import Harness, ShapeUnderTest, read_log, replay, wait_for

SETUP = """
CREATE TABLE items (id int PRIMARY KEY, value int NOT NULL, label text);
ALTER TABLE items REPLICA IDENTITY FULL;
INSERT INTO items SELECT g, g, 'row ' || g FROM generate_series(1, 40) g;
"""


@pytest.fixture
def h(db_dsn: str, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(db_dsn, tmp_path)
    harness.conn.execute(SETUP)
    harness.slot.add_table("items")
    yield harness
    harness.stop()


def even_shape(h: Harness, handle: str = "1-1", replica: str = "default") -> ShapeUnderTest:
    return ShapeUnderTest(
        handle,
        h.definition("items", replica=replica),
        lambda row: row["value"] is not None and int(row["value"]) % 2 == 0,
        sql.SQL("value %% 2 = 0"),  # executed with a params tuple: % is doubled, as the WHERE package does
    )


def whole_shape(h: Harness, handle: str = "2-1") -> ShapeUnderTest:
    return ShapeUnderTest(handle, h.definition("items"), None, None)


def info(shape: ShapeUnderTest) -> ConsumerInfo:
    assert shape.consumer is not None
    result = shape.consumer.ask(GetConsumerInfo(), timeout=5)
    assert isinstance(result, ConsumerInfo)
    return result


def workload(h: Harness) -> None:
    ex = h.conn.execute
    ex("UPDATE items SET value = value + 1 WHERE id <= 6")  # rows move in and out of the even shape
    ex("DELETE FROM items WHERE id IN (10, 11)")
    ex("UPDATE items SET id = 1000 WHERE id = 12")  # PK change
    ex("UPDATE items SET label = label WHERE id = 14")  # no-op update
    with h.conn.transaction():
        ex("INSERT INTO items VALUES (2000, 2, 'x'), (2001, 3, 'y')")
        ex("UPDATE items SET label = 'z' WHERE id = 2000")
        ex("DELETE FROM items WHERE id = 2001")
    ex("UPDATE items SET label = NULL WHERE value % 2 = 0 AND id < 30")


@pytest.mark.parametrize("replica", ["default", "full"])
def test_log_equals_select_with_writes_racing_the_snapshot(h: Harness, replica: str) -> None:
    h.hold_snapshots = True
    # Committed before the snapshot: routed to the shape, held, then dropped as already visible.
    with h.conn.transaction():
        h.conn.execute("UPDATE items SET label = 'before' WHERE id <= 20")
        h.conn.execute("INSERT INTO items VALUES (600, 600, 'committed before')")
        h.conn.execute("DELETE FROM items WHERE id = 8")
    # In progress during the snapshot (in xip): invisible to it, must come through the log.
    other = h.slot.conn.__class__.connect(h.dsn, autocommit=True)
    other.execute("BEGIN")
    other.execute("INSERT INTO items VALUES (500, 500, 'in flight')")
    other.execute("UPDATE items SET value = 100, label = 'moved' WHERE id = 3")
    shapes = [h.start_shape(even_shape(h, "1-1", replica)), h.start_shape(whole_shape(h, "2-1"))]
    for s in shapes:  # registered, as the snapshot worker has them do right before the snapshot
        assert s.consumer is not None
        s.consumer.ask(PrepareSnapshot(), timeout=5)
    h.feed()  # the 'before' transaction reaches both consumers before their snapshots exist
    assert all(info(s).held_transactions == 1 for s in shapes)
    h.release_snapshot()
    h.release_snapshot()
    wait_for(lambda: all(info(s).snapshot_complete for s in shapes))
    other.execute("COMMIT")
    other.close()
    workload(h)
    h.sync_all()
    for s in shapes:
        assert s.reader is not None
        assert replay(read_log(s.reader)) == h.expected(s)
        assert info(s).held_transactions == 0
    assert h.invalidated.empty()


def test_replay_after_restart_is_byte_identical(h: Harness, db_dsn: str, tmp_path: Path) -> None:
    shape = h.start_shape(even_shape(h))
    wait_for(lambda: info(shape).snapshot_complete)
    workload(h)
    frags = h.feed()
    h.wait_acked(h.last_commit_lsn)
    assert shape.reader is not None
    before = read_log(shape.reader)
    latest = shape.reader.latest_offset()
    h.shapes_sup.stop(timeout=10)
    h.collector.stop(timeout=10)
    # A fresh engine: new collector, the shape reopened from disk, every transaction sent again.
    h.collector = ShapeLogCollector.start(h.index, on_ack=h.on_ack)
    h.shapes_sup = ShapeSupervisor.start(name="shapes2")
    writer = h.storage.open(shape.handle)
    meta = writer.metadata
    writer.close()
    wal_lsn = h.marks.get(shape.handle)
    assert wal_lsn is not None
    stored = StoredShape(
        PgSnapshot(int(meta["xmin"]), int(meta["xmax"]), frozenset(meta["xip_list"])),  # type: ignore[call-overload]
        wal_lsn,
        latest.tx,
    )
    again = h.start_shape(
        ShapeUnderTest(shape.handle, shape.definition, shape.predicate, shape.where_sql), stored=stored
    )
    for f in frags:
        h.collector.ask(f, timeout=10)
    h.wait_acked(h.last_commit_lsn)
    assert again.reader is not None
    assert read_log(again.reader) == before
    h.conn.execute("INSERT INTO items VALUES (3000, 8, 'after restart')")
    h.sync_all()
    assert replay(read_log(again.reader)) == h.expected(again)


def test_waiter_woken_by_new_data_then_by_rotation(h: Harness) -> None:
    shape = h.start_shape(even_shape(h))
    assert shape.consumer is not None and shape.reader is not None
    early: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
    shape.consumer.tell(AwaitData(LogOffset.BEFORE_ALL, early, time.monotonic() + 10))
    assert early.get(timeout=10).outcome == "data"  # the snapshot completing wakes it
    latest = shape.reader.latest_offset()
    assert latest == LogOffset.SNAPSHOT_END

    waiting: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
    shape.consumer.tell(AwaitData(latest, waiting, time.monotonic() + 10))
    irrelevant: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
    shape.consumer.tell(AwaitData(latest, irrelevant, time.monotonic() + 10))
    shape.consumer.tell(CancelWait(irrelevant))
    wait_for(lambda: info(shape).waiters == 1)
    h.conn.execute("UPDATE items SET value = 1 WHERE id = 1")  # not in the shape: no wake-up
    h.sync_all()
    with pytest.raises(pykka.Timeout):
        waiting.get(timeout=0.2)
    h.conn.execute("INSERT INTO items VALUES (100, 100, 'new')")
    h.feed()
    result = waiting.get(timeout=10)
    assert result.outcome == "data"
    assert result.latest is not None and result.latest > latest
    assert shape.reader.latest_offset() >= result.latest  # readable when woken

    # Expired waiters are pruned when the next one arrives.
    stale: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
    shape.consumer.tell(AwaitData(shape.reader.latest_offset(), stale, time.monotonic() - 1))
    parked: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
    shape.consumer.tell(AwaitData(shape.reader.latest_offset(), parked, time.monotonic() + 10))
    wait_for(lambda: info(shape).waiters == 1)

    shape.consumer.ask(RotateShape("deleted by test"), timeout=5)
    rotated = parked.get(timeout=5)
    assert rotated.outcome == "rotated"
    with pytest.raises(ShapeGone):
        shape.reader.latest_offset()
    late: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
    shape.consumer.tell(AwaitData(LogOffset.SNAPSHOT_END, late, time.monotonic() + 10))
    assert late.get(timeout=5).outcome == "rotated"


def test_holding_past_the_limit_fails_the_shape(h: Harness) -> None:
    h.hold_snapshots = True
    h.max_held = 2
    shape = h.start_shape(whole_shape(h))
    assert shape.consumer is not None
    # Queued for a snapshot worker: not registered yet, so it holds nothing and pins no acknowledgement.
    for i in range(3):
        h.conn.execute("UPDATE items SET label = %s WHERE id = 2", (f"w{i}",))
    h.sync_all()
    assert info(shape).held_transactions == 0
    shape.consumer.ask(PrepareSnapshot(), timeout=5)  # the worker is about to take the snapshot
    for i in range(3):
        h.conn.execute("UPDATE items SET label = %s WHERE id = 1", (f"v{i}",))
    h.feed()
    handle, reason = h.invalidated.get(timeout=5)
    assert handle == shape.handle
    assert "more than 2 transactions" in reason
    # A failed shape does not pin the acknowledgement.
    h.wait_acked(h.last_commit_lsn)


def test_truncate_invalidates_and_dropped_transactions_do_not_pin_the_ack(h: Harness) -> None:
    shape = h.start_shape(even_shape(h))
    wait_for(lambda: info(shape).snapshot_complete)
    h.conn.execute("UPDATE items SET label = 'x' WHERE id = 1")  # routed (old or new row odd): no items
    h.sync_all()
    assert h.invalidated.empty()
    h.conn.execute("TRUNCATE items")
    h.feed()
    handle, reason = h.invalidated.get(timeout=5)
    assert handle == shape.handle
    assert "truncated" in reason


def test_a_waiter_at_minus_one_wakes_when_the_first_snapshot_chunk_closes(h: Harness) -> None:
    h.conn.execute("INSERT INTO items SELECT g, g, repeat('y', 100) FROM generate_series(100, 5000) g")
    h.hold_snapshots = True
    shape = h.start_shape(whole_shape(h))
    assert shape.consumer is not None
    early: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
    shape.consumer.tell(AwaitData(LogOffset.BEFORE_ALL, early, time.monotonic() + 30))
    wait_for(lambda: info(shape).waiters == 1)
    h.release_snapshot()
    result = early.get(timeout=30)
    assert result.outcome == "data"
    assert result.latest is not None
    assert result.latest.is_snapshot
    assert result.latest != LogOffset.SNAPSHOT_END  # a closed chunk, long before the snapshot's end
    wait_for(lambda: info(shape).snapshot_complete, timeout=30)
