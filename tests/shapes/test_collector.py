"""ShapeLogCollector: each shape gets exactly its changes, and the ack waits for every affected shape."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pykka
import pytest

from supervisors import SupervisedActor
from sync.offsets import LogOffset
from sync.replication.changes import (
    UNCHANGED_TOAST,
    Column,
    Insert,
    Relation,
    SlotRecreated,
    TransactionFragment,
    Truncate,
    Update,
)
from sync.replication.sink import GetResumePoint, ResumePoint
from sync.shapes.collector import (
    RegisterShape,
    ShapeChanges,
    ShapeDurable,
    ShapeLogCollector,
    UnregisterShape,
)
from sync.shapes.collector_messages import ForgetVisible
from sync.shapes.xid import PgSnapshot
from tests.shapes.consumer_harness import BruteIndex, routed_changes

Row = Mapping[str, str | None]
REL = Relation(
    1,
    "public",
    "items",
    "f",
    (Column("id", 20, -1, True), Column("owner", 25, -1, True), Column("doc", 25, -1, True)),
)
OTHER = Relation(2, "public", "other", "f", (Column("id", 20, -1, True),))


class Sink(SupervisedActor):
    def __init__(self, inbox: queue.Queue[Any]) -> None:
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message: Any) -> None:
        self.inbox.put(message)


@pytest.fixture
def setup() -> Iterator[tuple[pykka.ActorRef[Any], dict[str, queue.Queue[Any]], list[int]]]:
    acks: list[int] = []
    lock = threading.Lock()

    def on_ack(lsn: int) -> None:
        with lock:
            acks.append(lsn)

    collector = ShapeLogCollector.start(BruteIndex(), on_ack=on_ack)
    sinks: dict[str, queue.Queue[Any]] = {}
    refs = []
    for name, clause in [
        ("alice", lambda r: r["owner"] == "alice"),
        ("bob", lambda r: r["owner"] == "bob"),
        ("all", None),
    ]:
        q: queue.Queue[Any] = queue.Queue()
        ref = Sink.start(q)
        refs.append(ref)
        sinks[name] = q
        collector.ask(RegisterShape(name, ("public", "items"), clause, ref), timeout=5)
    yield collector, sinks, acks
    collector.stop()
    for ref in refs:
        ref.stop()


def frag(xid: int, lsn: int, *changes: Any, begin: bool = True, commit: bool = True) -> TransactionFragment:
    end_lsn = lsn + 8 if commit else None
    return TransactionFragment(xid, lsn, tuple(changes), begin=begin, commit=commit, end_lsn=end_lsn)


def drain(q: queue.Queue[Any]) -> list[ShapeChanges]:
    out: list[ShapeChanges] = []
    while True:
        try:
            out.extend(routed_changes(q.get(timeout=0.5 if not out else 0.05)))
        except queue.Empty:
            return out


def test_routes_by_new_and_old_row_and_moves(setup: Any) -> None:
    collector, sinks, _ = setup
    ins = Insert(REL, ("1", "alice", "x"), 0)
    move = Update(REL, ("1", "bob", UNCHANGED_TOAST), ("1", "alice", "x"), "O", 2)
    other = Insert(OTHER, ("9",), 4)
    collector.ask(frag(500, 1000, ins, move, other), timeout=5)
    alice = drain(sinks["alice"])
    bob = drain(sinks["bob"])
    everything = drain(sinks["all"])
    assert [tuple(c.changes) for c in alice] == [(ins, move)]  # the move out of alice's shape reaches alice
    assert [tuple(c.changes) for c in bob] == [
        (move,)
    ]  # and the move in reaches bob (TOAST filled from old row)
    assert [tuple(c.changes) for c in everything] == [(ins, move)]  # the other table is not routed
    assert all(c.begin and c.commit and c.xid == 500 and c.commit_lsn == 1000 for c in alice + bob)


def test_fragments_tell_earlier_recipients_where_the_transaction_ends(setup: Any) -> None:
    collector, sinks, _ = setup
    collector.ask(frag(7, 2000, Insert(REL, ("1", "alice", "x"), 0), commit=False), timeout=5)
    collector.ask(frag(7, 2000, Insert(REL, ("2", "bob", "y"), 2), begin=False), timeout=5)
    alice = drain(sinks["alice"])
    assert [(c.begin, c.commit, len(c.changes)) for c in alice] == [(True, False, 1), (False, True, 0)]
    bob = drain(sinks["bob"])
    assert [(c.begin, c.commit, len(c.changes)) for c in bob] == [(True, True, 1)]


def test_truncate_reaches_every_shape_of_the_table(setup: Any) -> None:
    collector, sinks, _ = setup
    collector.ask(frag(8, 3000, Truncate((REL,), cascade=False, restart_identity=False, op=0)), timeout=5)
    for name in ("alice", "bob", "all"):
        assert len(drain(sinks[name])) == 1


def test_ack_waits_for_all_affected_shapes_and_replays_are_skipped(setup: Any) -> None:
    collector, sinks, acks = setup
    collector.ask(frag(9, 4000, Insert(REL, ("1", "alice", "x"), 0)), timeout=5)
    collector.ask(frag(10, 5000, Insert(OTHER, ("1",), 0)), timeout=5)  # touches nobody
    assert acks == []
    collector.ask(ShapeDurable("alice", LogOffset(4000, 0)), timeout=5)
    assert acks == []  # "all" has not made it durable yet
    collector.ask(ShapeDurable("all", LogOffset(4000, 0)), timeout=5)
    assert acks[-1] == 5000  # and the untouched transaction after it is durable too
    assert collector.ask(GetResumePoint(), timeout=5) == ResumePoint(processed_lsn=5000, durable_lsn=5000)
    drain(sinks["alice"])
    collector.ask(frag(9, 4000, Insert(REL, ("1", "alice", "x"), 0)), timeout=5)  # replay after reconnect
    assert drain(sinks["alice"]) == []


def test_unregistered_shape_gets_nothing_and_stops_pinning(setup: Any) -> None:
    collector, sinks, acks = setup
    collector.ask(frag(11, 6000, Insert(REL, ("1", "bob", "x"), 0)), timeout=5)
    collector.ask(ShapeDurable("bob", LogOffset(6000, 0)), timeout=5)
    collector.ask(UnregisterShape("all"), timeout=5)
    assert acks[-1] == 6000
    drain(sinks["all"])
    collector.ask(frag(12, 7000, Insert(REL, ("2", "carol", "x"), 0)), timeout=5)
    assert drain(sinks["all"]) == []


def test_a_recreated_slot_starts_positions_afresh(setup: Any) -> None:
    """Another history (another cluster, a new timeline) may number its transactions lower than the old one:
    they are routed, not taken for replays, and acknowledged as soon as they are durable."""
    collector, sinks, acks = setup
    collector.ask(frag(20, 9000, Insert(REL, ("1", "alice", "x"), 0)), timeout=5)
    for name in ("alice", "all"):
        collector.ask(ShapeDurable(name, LogOffset(9000, 0)), timeout=5)
    assert acks[-1] == 9000
    drain(sinks["alice"])
    collector.ask(SlotRecreated("t_slot", "another history"), timeout=5)
    collector.ask(frag(3, 100, Insert(REL, ("2", "alice", "y"), 0)), timeout=5)
    assert [c.commit_lsn for c in drain(sinks["alice"])] == [100]
    for name in ("alice", "all"):
        collector.ask(ShapeDurable(name, LogOffset(100, 0)), timeout=5)
    assert acks[-1] == 100
    assert collector.ask(GetResumePoint(), timeout=5) == ResumePoint(processed_lsn=100, durable_lsn=100)


def test_a_registration_names_the_transactions_routed_before_until_a_snapshot_sees_them(setup: Any) -> None:
    """What a new shape's snapshot must see (sync.shapes.routed_history): every transaction routed before it
    registered, the one being routed included, whatever shapes it reached; forgotten once a snapshot sees
    them, oldest first up to the first it does not see."""
    collector, _, _ = setup
    late = Sink.start(queue.Queue())
    try:
        collector.ask(frag(30, 1000, Insert(REL, ("1", "alice", "x"), 0)), timeout=5)
        collector.ask(frag(31, 1100, Insert(OTHER, ("9",), 0)), timeout=5)  # reaches no shape
        collector.ask(frag(33, 1200, Insert(REL, ("2", "bob", "y"), 0)), timeout=5)
        collector.ask(frag(32, 1300, Insert(REL, ("3", "bob", "z"), 0), commit=False), timeout=5)  # open
        answer = collector.ask(RegisterShape("late", ("public", "items"), None, late), timeout=5)
        assert answer.routed == (30, 31, 33, 32)
        collector.tell(ForgetVisible(PgSnapshot(31, 34, frozenset({31, 32}))))  # sees 30 and 33, not 31
        again = collector.ask(RegisterShape("later", ("public", "items"), None, late), timeout=5)
        assert again.routed == (31, 33, 32)  # 33 stays behind 31
        collector.tell(ForgetVisible(PgSnapshot(33, 33, frozenset())))  # sees 31, not 32 (>= xmax) nor 33
        assert collector.ask(RegisterShape("last", ("public", "items"), None, late), timeout=5).routed == (
            33,
            32,
        )
        reloaded = RegisterShape("reloaded", ("public", "items"), None, late, snapshot=False)
        assert collector.ask(reloaded, timeout=5).routed == ()  # takes no snapshot
        collector.ask(SlotRecreated("t_slot", "another history"), timeout=5)
        assert collector.ask(RegisterShape("new", ("public", "items"), None, late), timeout=5).routed == ()
    finally:
        late.stop()
