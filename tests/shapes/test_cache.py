"""ShapeCache: one shape per definition under concurrency, publication, invalidation (restart, crashes and eviction:
``test_cache_lifecycle.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pykka
import pytest

import sync.shapes.cache as cache_module
import sync.shapes.cache_relations as relations_module
from sync.offsets import LogOffset
from sync.replication.changes import RelationChanged, SlotRecreated
from sync.replication.pgoutput import PgOutputDecoder
from sync.shapes.cache import (
    CacheSettings,
    CreateShape,
    DeleteShape,
    InvalidateShape,
    ShapeResult,
    get_or_create_shape,
)
from sync.shapes.invalidation import relation_change_reasons
from sync.shapes.shape_supervisor import build_shape
from sync.shapes.waiters import AwaitData, WaitResult
from tests.shapes.cache_harness import ITEMS_SQL, CacheHarness, cache_harness, check, snapshot_done
from tests.shapes.consumer_harness import read_log, wait_for


@pytest.fixture
def h(db_dsn: str, tmp_path: Path) -> Iterator[CacheHarness]:
    yield from cache_harness(db_dsn, tmp_path, ITEMS_SQL)


@pytest.mark.parametrize("path", ["async", "in-inbox"])
def test_concurrent_get_or_create_creates_the_shape_once(h: CacheHarness, path: str) -> None:
    definition = h.definition("items", where="value > 10")
    results: list[ShapeResult] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def ask() -> None:
        start.wait(timeout=10)
        if path == "async":
            result = get_or_create_shape(h.cache, definition, timeout=30)
        else:
            result = h.create(definition)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 16
    assert {r.shape.handle for r in results if r.shape is not None} == {results[0].shape.handle}  # type: ignore[union-attr]
    assert sum(r.created for r in results) == 1
    assert all(r.error is None for r in results)
    assert h.storage.handles() == [results[0].shape.handle]  # type: ignore[union-attr]
    row = h.conn.execute(
        "SELECT c.relreplident, EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = %s AND tablename = 'items')"
        " FROM pg_class c WHERE c.relname = 'items'",
        (h.slot.pub,),
    ).fetchone()
    assert row == ("f", True)  # REPLICA IDENTITY FULL and published before the snapshot


def test_created_shapes_follow_the_log_with_real_where_clauses(h: CacheHarness) -> None:
    shapes = [
        h.live(h.definition("items", where="value > 10 AND value <= $1", params=("20",))),
        h.live(h.definition("items", where="label LIKE 'row 1%'", replica="full")),
        h.live(h.definition("items", columns=["id", "label"])),
    ]
    wait_for(lambda: all(snapshot_done(s) for s in shapes))
    h.conn.execute("UPDATE items SET value = value + 5 WHERE id BETWEEN 5 AND 15")
    h.conn.execute("UPDATE items SET label = 'row 100' WHERE id = 2")
    h.conn.execute("DELETE FROM items WHERE id = 17")
    h.conn.execute("INSERT INTO items VALUES (40, 12, 'row 1x')")
    h.sync_all()
    for s in shapes:
        check(h, s)


def test_invalidation_rotates_the_handle_wakes_waiters_and_removes_the_log(h: CacheHarness) -> None:
    definition = h.definition("items")
    old = h.live(definition)
    wait_for(lambda: snapshot_done(old))
    waiter: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
    old.consumer.tell(AwaitData(LogOffset.SNAPSHOT_END, waiter, time.monotonic() + 10))
    assert h.cache.ask(InvalidateShape(old.handle, "test"), timeout=10) is True
    assert waiter.get(timeout=10).outcome == "rotated"
    assert h.directory.get(old.handle) is None
    assert h.directory.rotation_reason(old.handle) == "test"
    assert h.storage.handles() == []
    new = h.live(definition)
    assert new.handle != old.handle
    assert h.directory.rotated_to(old.handle) == new.handle
    wait_for(lambda: snapshot_done(new))
    assert h.cache.ask(DeleteShape(new.handle), timeout=10) is True
    assert h.cache.ask(DeleteShape(new.handle), timeout=10) is False


def test_a_waiter_woken_by_an_invalidation_never_finds_the_old_handle(h: CacheHarness) -> None:
    # A shape invalidates itself (TRUNCATE reaches its consumer): its waiters learn "rotated" and, like the
    # API, look the definition up again at once; that lookup must not find the handle they must drop.
    definition = h.definition("items")
    for _ in range(3):
        shape = h.live(definition)
        wait_for(lambda s=shape: snapshot_done(s))  # type: ignore[misc]
        waiter: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
        shape.consumer.tell(AwaitData(LogOffset.SNAPSHOT_END, waiter, time.monotonic() + 10))
        h.conn.execute("TRUNCATE items")
        h.feed()
        assert waiter.get(timeout=10).outcome == "rotated"
        found = h.directory.find(definition)
        assert found is None or found.handle != shape.handle
        assert h.directory.get(shape.handle) is None
        assert "truncated" in (h.directory.rotation_reason(shape.handle) or "")
        wait_for(lambda s=shape: s.handle not in h.storage.handles())  # type: ignore[misc]


def test_truncate_and_column_drop_invalidate_exactly_the_affected_shapes(h: CacheHarness) -> None:
    h.conn.execute("CREATE TABLE other (id int PRIMARY KEY, x text)")
    subset = h.live(h.definition("items", columns=["id", "value"]))
    everything = h.live(h.definition("items"))
    unrelated = h.live(h.definition("other"))
    wait_for(lambda: all(snapshot_done(s) for s in (subset, everything, unrelated)))
    h.conn.execute("ALTER TABLE items DROP COLUMN label")
    h.conn.execute("INSERT INTO items VALUES (99, 99)")
    for event in h.slot.decode():
        if isinstance(event, RelationChanged):
            h.cache.tell(event)
        else:
            h.collector.ask(event, timeout=10)
    wait_for(lambda: h.directory.get(everything.handle) is None)
    assert h.directory.get(subset.handle) is not None  # its columns are all still there
    h.conn.execute("TRUNCATE items")
    h.feed()
    wait_for(lambda: h.directory.get(subset.handle) is None)
    assert "truncated" in (h.directory.rotation_reason(subset.handle) or "")
    assert h.directory.get(unrelated.handle) is not None


def test_a_relation_message_is_judged_in_slices_with_one_memo(
    h: CacheHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache judges a Relation message's shapes a slice at a time (a turn of the event loop between
    slices), sharing one verdict memo: the outcome is that of judging them all at once."""
    calls: list[tuple[int, int]] = []  # (shapes in the slice, id of the memo)
    judge = relation_change_reasons  # the one cache_relations imports

    def sliced(shapes: Any, relation: Any, previous: Any, verdicts: Any = None) -> Any:
        shapes = list(shapes)
        calls.append((len(shapes), id(verdicts)))
        return judge(shapes, relation, previous, verdicts)

    monkeypatch.setattr(relations_module, "_RELATION_SLICE", 1)
    monkeypatch.setattr(relations_module, "relation_change_reasons", sliced)
    subset = h.live(h.definition("items", columns=["id", "value"]))
    everything = h.live(h.definition("items"))
    other = h.live(h.definition("items", where="value > 1"))
    wait_for(lambda: all(snapshot_done(s) for s in (subset, everything, other)))
    h.conn.execute("ALTER TABLE items DROP COLUMN label")
    h.conn.execute("INSERT INTO items VALUES (99, 99)")
    # the Relation message alone: no consumer sees the insert (which would make it invalidate itself)
    for event in h.slot.decode():
        if isinstance(event, RelationChanged):
            h.cache.tell(event)
    wait_for(lambda: h.directory.get(everything.handle) is None and h.directory.get(other.handle) is None)
    assert h.directory.get(subset.handle) is not None
    assert len(calls) == 3
    assert all(n == 1 for n, _ in calls)
    assert len({memo for _, memo in calls}) == 1


def relay(h: CacheHarness, decoder: PgOutputDecoder, events: list[Any]) -> None:
    """Feed the slot's events through one long-lived decoder (as the replication client does): fragments
    to the collector, relation changes to the cache."""
    h.slot.feed(decoder)
    for event in events:
        if isinstance(event, RelationChanged):
            h.cache.tell(event)
        else:
            h.collector.ask(event, timeout=10)
            if event.commit:  # what h.sync_all() then waits for, as after h.feed()
                h.last_commit_lsn = event.commit_lsn
    events.clear()


def test_rename_and_type_change_invalidate_the_shapes_of_that_table(h: CacheHarness) -> None:
    h.conn.execute("CREATE TABLE other (id int PRIMARY KEY, n int)")
    items = h.live(h.definition("items", columns=["id", "value"]))
    other = h.live(h.definition("other"))
    wait_for(lambda: snapshot_done(items) and snapshot_done(other))
    events: list[Any] = []
    decoder = PgOutputDecoder(events.append)
    h.conn.execute("INSERT INTO items VALUES (100, 1, 'x'); INSERT INTO other VALUES (1, 1)")
    relay(h, decoder, events)  # first Relation messages of this decoding session: nothing changed
    assert set(h.directory.handles()) == {items.handle, other.handle}
    h.conn.execute("ALTER TABLE items RENAME TO items2")
    h.conn.execute("ALTER TABLE other ALTER COLUMN n TYPE bigint")
    h.conn.execute("INSERT INTO items2 VALUES (101, 1, 'x'); INSERT INTO other VALUES (2, 2)")
    relay(h, decoder, events)
    wait_for(lambda: h.directory.handles() == [])


def test_a_changes_only_shape_has_an_empty_snapshot_then_follows_the_log(h: CacheHarness) -> None:
    shape = h.live(h.definition("items", where="value > 10", log_mode="changes_only"))
    wait_for(lambda: snapshot_done(shape))
    h.conn.execute("UPDATE items SET label = 'changed' WHERE id IN (5, 15)")
    h.sync_all()
    items = read_log(shape.reader)
    assert items[0]["headers"]["control"] == "snapshot-end"
    assert [(i["key"], i["headers"]["operation"]) for i in items[1:]] == [('"public"."items"/"15"', "update")]


def test_many_shapes_are_built_at_once_and_an_early_invalidation_is_not_lost(
    h: CacheHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    built = threading.Semaphore(0)
    real_build = build_shape

    def slow_build(*args: Any, **kwargs: Any) -> Any:
        outcome = real_build(*args, **kwargs)
        built.release()
        gate.wait(timeout=30)
        return outcome

    monkeypatch.setattr(cache_module, "build_shape", slow_build)
    definitions = [h.definition("items", where=f"value = {k}") for k in range(4)]
    futures = [h.cache.ask(CreateShape(d), timeout=10) for d in definitions]
    for _ in definitions:  # all four are built while none has reported back: they run in parallel
        assert built.acquire(timeout=30)
    assert h.directory.handles() == []
    doomed = sorted(h.storage.handles())[0]
    assert h.cache.ask(InvalidateShape(doomed, "dropped while being built"), timeout=10) is False
    gate.set()
    results = [f.get(timeout=30) for f in futures]
    assert all(r.shape is not None and r.created for r in results)
    wait_for(lambda: len(h.directory.handles()) == 3)
    assert doomed not in h.directory.handles()
    assert h.directory.rotation_reason(doomed) == "dropped while being built"
    wait_for(lambda: doomed not in h.storage.handles())


def test_parallel_builds_are_bounded(h: CacheHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.stop_cache()
    h.start_cache(CacheSettings(max_parallel_builds=2, flush_interval=0.01, ask_timeout=10))
    gate = threading.Event()
    started = threading.Semaphore(0)

    def gated_build(*args: Any, **kwargs: Any) -> Any:
        started.release()
        gate.wait(timeout=30)
        return build_shape(*args, **kwargs)

    monkeypatch.setattr(cache_module, "build_shape", gated_build)
    futures = [
        h.cache.ask(CreateShape(h.definition("items", where=f"value = {k}")), timeout=10) for k in range(5)
    ]
    assert started.acquire(timeout=10) and started.acquire(timeout=10)
    assert not started.acquire(timeout=0.2)  # the other three wait for a free slot
    gate.set()
    assert all(f.get(timeout=30).shape is not None for f in futures)
    assert len(h.directory.handles()) == 5


def test_a_recreated_slot_invalidates_every_shape(h: CacheHarness) -> None:
    shapes = [h.live(h.definition("items", where=f"value > {k}")) for k in range(3)]
    wait_for(lambda: all(snapshot_done(s) for s in shapes))
    h.cache.tell(SlotRecreated("t_slot", "dropped from outside"))
    wait_for(lambda: h.directory.handles() == [])
    assert all("re-created" in (h.directory.rotation_reason(s.handle) or "") for s in shapes)
    wait_for(lambda: h.storage.handles() == [])


def test_replica_identity_no_longer_full_invalidates_the_shapes_of_that_table(h: CacheHarness) -> None:
    """Without the old row an update that moves a row out of ``value = 5`` is routed to ``value = 6`` only:
    the first shape would keep the row for ever.  The Relation message that precedes the table's next change
    carries the new identity, and every shape of the table is invalidated by it; another table's shape is
    not.  A new shape of the table makes it FULL again."""
    h.conn.execute("CREATE TABLE other (id int PRIMARY KEY, n int)")
    five = h.live(h.definition("items", where="value = 5"))
    whole = h.live(h.definition("items"))
    other = h.live(h.definition("other"))
    wait_for(lambda: all(snapshot_done(s) for s in (five, whole, other)))
    events: list[Any] = []
    decoder = PgOutputDecoder(events.append)
    h.conn.execute("INSERT INTO items VALUES (100, 1, 'x'); INSERT INTO other VALUES (1, 1)")
    relay(h, decoder, events)  # first Relation messages of this decoding session: nothing changed
    h.conn.execute("ALTER TABLE items REPLICA IDENTITY DEFAULT")
    h.conn.execute("UPDATE items SET value = 6 WHERE id = 5; INSERT INTO other VALUES (2, 2)")
    relay(h, decoder, events)
    wait_for(lambda: h.directory.handles() == [other.handle])
    assert "REPLICA IDENTITY" in (h.directory.rotation_reason(five.handle) or "")
    again = h.live(h.definition("items", where="value = 5"))
    assert again.handle != five.handle
    ident = h.conn.execute("SELECT relreplident FROM pg_class WHERE relname = 'items'").fetchone()
    assert ident == ("f",)


def test_a_snapshot_uses_the_built_in_operators_whatever_the_search_path_offers(h: CacheHarness) -> None:
    """An operator created in ``public`` that matches a varchar comparison better than the built-in one
    (CVE-2018-1058's pattern) must not decide a snapshot's rows: the log's side evaluates Postgres' own
    operator, and a function of anyone with CREATE on ``public`` would run as the engine's user."""
    h.conn.execute("CREATE TABLE tags (id int PRIMARY KEY, v varchar(10))")
    h.conn.execute("INSERT INTO tags VALUES (1, 'a'), (2, 'b')")
    h.conn.execute("CREATE FUNCTION public.always(varchar, text) RETURNS bool LANGUAGE sql AS 'SELECT true'")
    h.conn.execute("CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = text, FUNCTION = public.always)")
    shape = h.live(h.definition("tags", where="v = 'a'"))
    wait_for(lambda: snapshot_done(shape))
    assert [i["value"]["id"] for i in read_log(shape.reader) if "key" in i] == ["1"]


def test_a_write_in_flight_while_the_table_is_published_again_is_not_lost(h: CacheHarness) -> None:
    """The table's last shape went away, so it left the publication.  A transaction writes to it, and is still
    open while a new shape adds the table back and takes its snapshot.  Its change was made while the table
    was not published, so pgoutput never sends it: were the shape's snapshot taken before it commits, the
    row would be in neither the snapshot nor the log.  Publishing must wait for such writers (and hold new
    ones back until it commits), so that the snapshot sees them."""
    first = h.live(h.definition("items", where="value > 10"))
    wait_for(lambda: snapshot_done(first))
    assert h.cache.ask(DeleteShape(first.handle), timeout=10) is True
    published = "SELECT count(*) FROM pg_publication_tables WHERE pubname = %s AND tablename = 'items'"
    wait_for(lambda: h.conn.execute(published, (h.slot.pub,)).fetchone() == (0,))
    created: list[ShapeResult] = []
    with psycopg.connect(h.dsn) as writer:
        writer.execute("INSERT INTO items VALUES (99, 99, 'in flight')")
        creating = threading.Thread(
            target=lambda: created.append(h.create(h.definition("items", where="value > 10")))
        )
        creating.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'items'::regclass"
        wait_for(lambda: bool(created) or h.conn.execute(waiting).fetchone() != (0,))
        writer.commit()
    creating.join(timeout=30)
    assert created and created[0].shape is not None, created
    shape = created[0].shape
    wait_for(lambda: snapshot_done(shape))
    h.sync_all()
    ids = {
        i["value"]["id"]
        for i in read_log(shape.reader)
        if "key" in i and i["headers"]["operation"] == "insert"
    }
    assert "99" in ids, sorted(ids, key=int)


def test_a_dropped_column_that_only_a_where_reads_invalidates_without_crashing_the_router(
    h: CacheHarness,
) -> None:
    """``label`` is not selected but the WHERE reads it.  The Relation message after the drop invalidates
    the shape; the row after it has no label, and reaches the router before the invalidation does: it must
    not crash the collector (which every shape depends on), and the shape that does not read label lives."""
    reads_label = h.live(h.definition("items", columns=["id", "value"], where="label LIKE 'row 1%'"))
    other = h.live(h.definition("items", columns=["id", "value"]))
    wait_for(lambda: snapshot_done(reads_label) and snapshot_done(other))
    events: list[Any] = []
    decoder = PgOutputDecoder(events.append)
    h.conn.execute("INSERT INTO items VALUES (100, 1, 'row 100')")
    relay(h, decoder, events)
    h.conn.execute("ALTER TABLE items DROP COLUMN label")
    h.conn.execute("INSERT INTO items VALUES (101, 1)")
    relay(h, decoder, events)
    wait_for(lambda: h.directory.get(reads_label.handle) is None)
    assert "label" in (h.directory.rotation_reason(reads_label.handle) or "")
    assert h.collector.is_alive()
    h.conn.execute("INSERT INTO items VALUES (102, 2)")
    relay(h, decoder, events)
    h.sync_all()
    assert h.directory.handles() == [other.handle]
    assert {i["value"]["id"] for i in read_log(other.reader) if "key" in i} >= {"100", "101", "102"}
