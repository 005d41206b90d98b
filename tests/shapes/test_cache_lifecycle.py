"""ShapeCache lifecycle: shapes reload after a restart (or are dropped when they cannot resume), LRU eviction,
and a crashed consumer or storage invalidating its shape."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pykka
import pytest

from supervisors import StartError, crash
from sync.offsets import LogOffset
from sync.shapes.cache import CacheSettings
from sync.shapes.collector import ShapeLogCollector
from sync.shapes.shape_supervisor import ShapeSupervisor
from sync.shapes.snapshot_marks import SnapshotMarks
from sync.shapes.waiters import AwaitData, WaitResult
from sync.storage.storage_actor import StorageActor
from tests.shapes.cache_harness import ITEMS_SQL, CacheHarness, cache_harness, check, snapshot_done
from tests.shapes.consumer_harness import read_log, wait_for


@pytest.fixture
def h(db_dsn: str, tmp_path: Path) -> Iterator[CacheHarness]:
    yield from cache_harness(db_dsn, tmp_path, ITEMS_SQL)


def test_shapes_reload_after_a_restart(h: CacheHarness) -> None:
    shape = h.live(h.definition("items", where="value > 20"))
    wait_for(lambda: snapshot_done(shape))
    h.conn.execute("UPDATE items SET value = 25 WHERE id = 3")
    frags = h.feed()
    h.wait_acked(h.last_commit_lsn)
    before = read_log(shape.reader)
    # Restart everything but the database and the files.
    h.stop_cache()
    h.shapes_sup.stop(timeout=10)
    h.collector.stop(timeout=10)
    h.collector = ShapeLogCollector.start(h.index, on_ack=h.on_ack)
    h.shapes_sup = ShapeSupervisor.start()
    h.start_cache()
    again = h.directory.get(shape.handle)
    assert again is not None
    assert read_log(again.reader) == before
    for f in frags:  # Postgres resends from the acknowledged LSN: nothing is duplicated
        h.collector.ask(f, timeout=10)
    h.conn.execute("UPDATE items SET value = 1 WHERE id = 25")
    h.sync_all()
    check(h, again)
    assert h.live(shape.definition).handle == shape.handle  # found, not re-created
    new = h.live(h.definition("items"))
    assert int(new.handle.split("-")[1]) > int(shape.handle.split("-")[1])


def test_a_shape_that_cannot_resume_is_dropped_on_reload(h: CacheHarness) -> None:
    h.hold_snapshots = True
    shape = h.live(h.definition("items"))  # its snapshot never runs
    h.stop_cache()
    h.shapes_sup.stop(timeout=10)
    h.shapes_sup = ShapeSupervisor.start()
    h.start_cache()
    assert h.directory.get(shape.handle) is None
    assert h.storage.handles() == []


def test_least_recently_used_shape_is_evicted(h: CacheHarness) -> None:
    h.stop_cache()
    h.start_cache(CacheSettings(max_shapes=2, flush_interval=0.01, ask_timeout=10))
    a = h.live(h.definition("items", where="value = 1"))
    b = h.live(h.definition("items", where="value = 2"))
    time.sleep(0.01)  # distinct monotonic use times
    h.directory.touch(a.handle)
    c = h.live(h.definition("items", where="value = 3"))
    assert h.directory.get(b.handle) is None
    assert {a.handle, c.handle} == set(h.directory.handles())
    assert sorted(h.storage.handles()) == sorted([a.handle, c.handle])


def test_a_crashed_consumer_invalidates_its_shape(h: CacheHarness) -> None:
    definition = h.definition("items")
    shape = h.live(definition)
    wait_for(lambda: snapshot_done(shape))
    waiter: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
    shape.consumer.tell(AwaitData(LogOffset.SNAPSHOT_END, waiter, time.monotonic() + 10))
    crash(shape.consumer, RuntimeError("injected failure"))
    assert waiter.get(timeout=10).outcome == "stopped"
    wait_for(lambda: h.directory.get(shape.handle) is None)
    wait_for(lambda: h.storage.handles() == [])
    # The collector no longer routes to it (and it does not pin the acknowledgement).
    h.conn.execute("UPDATE items SET label = 'after crash' WHERE id = 1")
    h.sync_all()
    fresh = h.live(definition)
    assert fresh.handle != shape.handle
    wait_for(lambda: snapshot_done(fresh))
    check(h, fresh)


def test_a_shape_without_snapshot_mark_is_dropped_on_reload(h: CacheHarness) -> None:
    kept = h.live(h.definition("items", where="value > 5"))
    lost = h.live(h.definition("items", where="value > 6"))
    wait_for(lambda: snapshot_done(kept) and snapshot_done(lost))
    h.stop_cache()
    h.shapes_sup.stop(timeout=10)
    marks_file = h.storage.shapes_dir.parent / "snapshot_marks"
    marks = SnapshotMarks(marks_file)
    assert set(marks.load()) == {kept.handle, lost.handle}
    marks.forget(lost.handle)  # a log whose WAL position is unknown cannot be filtered exactly
    marks.close()
    h.shapes_sup = ShapeSupervisor.start()
    h.start_cache()
    assert h.directory.handles() == [kept.handle]
    assert h.storage.handles() == [kept.handle]


def test_a_crashed_storage_takes_its_shape_down_and_invalidates_it(h: CacheHarness) -> None:
    shape = h.live(h.definition("items"))
    wait_for(lambda: snapshot_done(shape))
    (storage,) = pykka.ActorRegistry.get_by_class(StorageActor)
    crash(storage, OSError("disk failure injected"))
    wait_for(lambda: h.directory.get(shape.handle) is None)
    wait_for(lambda: h.storage.handles() == [])
    assert not shape.consumer.is_alive()


def test_a_reload_that_cannot_publish_for_want_of_a_connection_keeps_every_log(h: CacheHarness) -> None:
    """Postgres stopping between the reload's wait for it and a shape's publish step used to delete that
    shape's log (any publish error did): its clients had to refetch for a database that was back a moment
    later.  A connection error now fails the cache's start with every log kept, as the catalog's does."""
    shape = h.live(h.definition("items", where="value > 20"))
    wait_for(lambda: snapshot_done(shape))
    before = read_log(shape.reader)
    h.stop_cache()
    h.shapes_sup.stop(timeout=10)
    h.shapes_sup = ShapeSupervisor.start()
    with socket.socket() as s:  # a port nothing listens on: the publication manager cannot connect
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nowhere = psycopg.conninfo.make_conninfo(h.dsn, host="127.0.0.1", port=port, connect_timeout=5)
    with pytest.raises(StartError, match="cannot be published now"):
        h.start_cache(publication_dsn=nowhere)
    h.publications.stop(timeout=10)
    assert h.storage.handles() == [shape.handle]
    h.shapes_sup.stop(timeout=10)
    h.shapes_sup = ShapeSupervisor.start()
    h.start_cache()
    again = h.directory.get(shape.handle)
    assert again is not None
    assert read_log(again.reader) == before
