"""ShapeLogCollector with the real RoutingIndex: rows are built only as far as the table's clauses need.

A table whose shapes have no WHERE routes every change to every shape without asking the index; otherwise
the index sees exactly the columns the clauses read (unchanged TOAST values resolved from the old row), and
that column set follows registrations and unregistrations.  A consumer that stopped before its
UnregisterShape arrived is dropped, it does not crash the collector.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Mapping
from typing import Any

import pykka
import pytest

from supervisors import SupervisedActor
from sync.offsets import LogOffset
from sync.replication.changes import (
    UNCHANGED_TOAST,
    Column,
    Delete,
    Insert,
    Relation,
    TransactionFragment,
    Update,
)
from sync.replication.sink import GetResumePoint
from sync.shapes.collector import (
    RegisterShape,
    ShapeDurable,
    ShapeLogCollector,
    UnregisterShape,
)
from sync.where import RoutingIndex, WhereClause
from sync.where.clause import compile_for_columns
from tests.shapes.consumer_harness import routed_changes

REL = Relation(
    7,
    "public",
    "items",
    "f",
    (Column("id", 20, -1, True), Column("owner", 25, -1, True), Column("doc", 25, -1, True)),
)
TYPES = {"id": "int8", "owner": "text", "doc": "text"}


def where(text: str) -> WhereClause:
    return compile_for_columns(text, TYPES, {}, {})


class RecordingIndex(RoutingIndex):
    """The real index, remembering the column names of every row it was asked about (for inserts routed in
    bulk: the columns it was given to read)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, ...]] = []

    def affected(
        self,
        table_key: Any,
        new_row: Mapping[str, str | None] | None,
        old_row: Mapping[str, str | None] | None = None,
        errors: Any = None,
    ) -> set[Any]:
        for row in (new_row, old_row):
            if row is not None:
                self.seen.append(tuple(sorted(row)))
        return super().affected(table_key, new_row, old_row, errors)

    def route_new_rows(self, table_key: Any, columns: Mapping[str, int], *args: Any, **kw: Any) -> None:
        # inserts are routed in bulk: the index may read only the columns given here
        self.seen.append(tuple(sorted(columns)))
        super().route_new_rows(table_key, columns, *args, **kw)


class Sink(SupervisedActor):
    def __init__(self, inbox: queue.Queue[Any]) -> None:
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message: Any) -> None:
        self.inbox.put(message)


class Setup:
    def __init__(self) -> None:
        self.index = RecordingIndex()
        self.collector = ShapeLogCollector.start(self.index, on_ack=lambda _lsn: None)
        self.sinks: dict[str, queue.Queue[Any]] = {}
        self.refs: list[pykka.ActorRef[Any]] = []

    def register(self, name: str, clause: WhereClause | None) -> None:
        q: queue.Queue[Any] = queue.Queue()
        ref = Sink.start(q)
        self.refs.append(ref)
        self.sinks[name] = q
        self.collector.ask(RegisterShape(name, ("public", "items"), clause, ref), timeout=5)

    def send(self, lsn: int, *changes: Any) -> None:
        fragment = TransactionFragment(lsn, lsn, tuple(changes), begin=True, commit=True, end_lsn=lsn + 8)
        self.collector.ask(fragment, timeout=5)

    def received(self, name: str) -> list[int]:
        """Ops of the changes ``name`` received so far (the collector has handled every message sent)."""
        q = self.sinks[name]
        ops: list[int] = []
        while True:
            try:
                msg = q.get(timeout=0.3)
            except queue.Empty:
                return ops
            ops.extend(c.op for m in routed_changes(msg) for c in m.changes)


@pytest.fixture
def setup() -> Iterator[Setup]:
    s = Setup()
    yield s
    s.collector.stop()
    for ref in s.refs:
        ref.stop()


def test_no_where_routes_everything_without_building_rows(setup: Setup) -> None:
    setup.register("a", None)
    setup.register("b", None)
    setup.send(100, Insert(REL, ("1", "x", "d"), 0), Delete(REL, ("1", "x", "d"), "O", 2))
    assert setup.received("a") == [0, 2]
    assert setup.received("b") == [0, 2]
    assert setup.index.seen == []


def test_rows_hold_only_the_columns_clauses_read(setup: Setup) -> None:
    setup.register("all", None)
    setup.register("alice", where("owner = 'alice'"))
    setup.send(
        100,
        Insert(REL, ("1", "alice", "d"), 0),
        Insert(REL, ("2", "bob", "d"), 2),
        # owner unchanged and TOASTed in the new image: resolved from the old row, so still alice's
        Update(REL, ("1", UNCHANGED_TOAST, "e"), ("1", "alice", "d"), "O", 4),
        Update(REL, ("2", "alice", "e"), ("2", "bob", "d"), "O", 6),  # moves into alice's shape
    )
    assert setup.received("alice") == [0, 4, 6]
    assert setup.received("all") == [0, 2, 4, 6]
    assert set(setup.index.seen) == {("owner",)}


def test_column_set_follows_registrations(setup: Setup) -> None:
    setup.register("alice", where("owner = 'alice'"))
    setup.register("big", where("id > 5"))
    setup.send(100, Insert(REL, ("9", "bob", "d"), 0))
    assert setup.received("big") == [0]
    assert setup.received("alice") == []
    assert set(setup.index.seen) == {("id", "owner")}

    setup.index.seen.clear()
    setup.collector.ask(UnregisterShape("big"), timeout=5)
    setup.send(200, Insert(REL, ("1", "alice", "d"), 0))
    assert setup.received("alice") == [0]
    assert set(setup.index.seen) == {("owner",)}

    setup.index.seen.clear()
    setup.collector.ask(UnregisterShape("alice"), timeout=5)
    setup.register("any", None)
    setup.send(300, Insert(REL, ("1", "alice", "d"), 0))
    assert setup.received("any") == [0]
    assert setup.index.seen == []


def test_a_stopped_consumer_is_dropped_not_fatal() -> None:
    acks: list[int] = []
    collector = ShapeLogCollector.start(RoutingIndex(), on_ack=acks.append)
    try:
        live_q: queue.Queue[Any] = queue.Queue()
        live = Sink.start(live_q)
        gone = Sink.start(queue.Queue())
        collector.ask(RegisterShape("live", ("public", "items"), None, live), timeout=5)
        collector.ask(RegisterShape("gone", ("public", "items"), None, gone), timeout=5)
        gone.stop()  # crashed, say: its UnregisterShape has not arrived
        fragment = TransactionFragment(1, 100, (Insert(REL, ("1", "x", "d"), 0),), True, True, 108)
        collector.ask(fragment, timeout=5)
        assert routed_changes(live_q.get(timeout=5))[0].changes[0].op == 0
        # the collector is alive and only the live shape holds the acknowledgement back
        collector.tell(ShapeDurable("live", LogOffset(100, 0)))
        collector.ask(GetResumePoint(), timeout=5)
        assert acks and acks[-1] == 100
        live.stop()
    finally:
        collector.stop()


def test_messages_say_when_every_insert_matched_exactly(setup: Setup) -> None:
    setup.register("id1", where("id = 1"))  # the whole clause is the indexed equality: exact
    setup.register("id1-alice", where("id = 1 AND owner = 'alice'"))  # evaluated by the index: not exact
    setup.register("all", None)  # no WHERE: exact
    setup.send(100, Insert(REL, ("1", "alice", "d"), 0), Insert(REL, ("2", "bob", "d"), 2))
    flags = {name: _messages(setup, name) for name in ("id1", "id1-alice", "all")}
    assert flags == {"id1": [([0], True)], "id1-alice": [([0], False)], "all": [([0, 2], True)]}
    # an update in the same message leaves the flag about inserts alone (updates are always evaluated)
    setup.send(
        200, Insert(REL, ("1", "bob", "d"), 0), Update(REL, ("1", "x", "e"), ("1", "bob", "d"), "O", 2)
    )
    assert _messages(setup, "id1") == [([0, 2], True)]
    assert _messages(setup, "id1-alice") == []


def _messages(setup: Setup, name: str) -> list[tuple[list[int], bool]]:
    """(ops, exact) of every message ``name`` received so far."""
    q = setup.sinks[name]
    out: list[tuple[list[int], bool]] = []
    while True:
        try:
            msg = q.get(timeout=0.3)
        except queue.Empty:
            return out
        out.extend(([c.op for c in m.changes], m.exact) for m in routed_changes(msg))
