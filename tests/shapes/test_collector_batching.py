"""Collector batching: a consumer still busy with what it was told gets the transactions routed meanwhile
as one ShapeBatch; an idle consumer gets each transaction at once; durability reports reach the collector
through its DurableReports sink (one DrainDurable per burst) and move the acknowledgement."""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, cast

import pykka
import pytest

from supervisors import SupervisedActor, runners
from sync import heap
from sync.offsets import LogOffset
from sync.replication.changes import Column, Insert, Relation, TransactionFragment
from sync.replication.sink import GetResumePoint
from sync.shapes import collector as collector_module
from sync.shapes.collector import RegisterShape, ShapeBatch, ShapeChanges, ShapeLogCollector, ShapeRun
from sync.shapes.collector_messages import Registered
from sync.shapes.durable_reports import DrainDurable, DurableReports
from tests.shapes.consumer_harness import BruteIndex, routed_changes

T = 5.0
REL = Relation(1, "public", "items", "f", (Column("id", 20, -1, True),))


class Gate(SupervisedActor):
    """Records what it receives; holds its first message until ``release`` is set."""

    def __init__(self, got: queue.Queue[Any], release: threading.Event) -> None:
        super().__init__()
        self.got = got
        self.release = release
        self.first = True

    def on_receive(self, message: Any) -> None:
        self.got.put(message)
        if self.first:
            self.first = False
            assert self.release.wait(T)


def frag(lsn: int, *, begin: bool = True, commit: bool = True, op: int = 0) -> TransactionFragment:
    change = Insert(REL, (f"{lsn}-{op}",), op)
    end_lsn = lsn + 8 if commit else None
    return TransactionFragment(lsn, lsn, (change,), begin=begin, commit=commit, end_lsn=end_lsn)


def lsns(message: Any) -> list[int]:
    assert isinstance(message, ShapeBatch | ShapeChanges | ShapeRun)
    return [m.commit_lsn for m in routed_changes(message)]


class Held(NamedTuple):
    collector: pykka.ActorRef[Any]
    consumer: pykka.ActorRef[Any]
    got: queue.Queue[Any]  # what the consumer was told
    release: threading.Event  # lets the consumer go on
    sink: Any  # where RegisterShape's answer says the storage reports


@contextlib.contextmanager
def holding_consumer(on_ack: Callable[[int], None] = lambda lsn: None) -> Iterator[Held]:
    """A collector with one shape whose consumer (a :class:`Gate`) was told the transaction at LSN 100 at
    once (it was idle) and holds it until ``release`` is set (at the latest when the test ends)."""
    collector = ShapeLogCollector.start(BruteIndex(), on_ack=on_ack)
    got: queue.Queue[Any] = queue.Queue()
    release = threading.Event()
    consumer = Gate.start(got, release)
    try:
        registered = cast(
            Registered, collector.ask(RegisterShape("s", ("public", "items"), None, consumer), timeout=T)
        )
        sink = registered.reports
        collector.ask(frag(100), timeout=T)
        assert lsns(got.get(timeout=T)) == [100]  # idle: told at once; the consumer now holds it
        yield Held(collector, consumer, got, release, sink)
    finally:
        release.set()
        collector.stop()
        consumer.stop()


@pytest.fixture(autouse=True)
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wait for busy consumers as long as a test needs (a loaded machine may stall the test thread)."""
    monkeypatch.setattr(collector_module, "_MAX_GATHER_S", T)


def test_busy_consumer_gets_one_batch_idle_one_each_transaction() -> None:
    acks: list[int] = []
    with holding_consumer(acks.append) as held:
        collector, got, release, sink = held.collector, held.got, held.release, held.sink
        assert isinstance(sink, DurableReports)
        collector.ask(frag(200), timeout=T)  # still told: nothing waits in the consumer's inbox
        futures = [collector.ask(frag(lsn), block=False) for lsn in (300, 400, 500)]
        release.set()
        for f in futures:
            f.get(timeout=T)
        assert lsns(got.get(timeout=T)) == [200]
        assert lsns(got.get(timeout=T)) == [300, 400, 500]  # gathered while 200 waited
        # durability: one report per shape and burst, the newest offset wins
        assert acks == []
        sink.report("s", LogOffset(300, 0))
        sink.report("s", LogOffset(500, 0))
        collector.ask(frag(600), timeout=T)  # the drain happened before (same inbox, in order)
        assert acks[-1] == 500
        sink.report("gone", LogOffset(900, 0))  # a shape not registered: ignored
        sink.report("s", LogOffset(600, 0))
        collector.ask(frag(700), timeout=T)
        assert acks[-1] == 600


def test_no_idle_point_for_the_garbage_collector_while_routed_changes_are_not_durable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sync.heap freezes a wave of new shapes at once unless a write burst is in flight: the collector says
    when one starts (a batch) and when everything routed is durable."""
    calls: list[str] = []
    monkeypatch.setattr(heap, "busy", lambda: calls.append("busy"))
    monkeypatch.setattr(heap, "idle", lambda: calls.append("idle"))
    acks: list[int] = []
    with holding_consumer(acks.append) as held:
        assert calls == ["busy"]  # the transaction at 100 started a batch; it is not durable yet
        held.release.set()
        held.sink.report("s", LogOffset(100, 0))
        held.collector.ask(GetResumePoint(), timeout=T)  # after the drain the report told it
        assert acks == [100]
        assert calls == ["busy", "idle"]


def test_whole_one_change_transactions_travel_as_one_run() -> None:
    """Gathered for a busy consumer: consecutive whole transactions of one change each (also one whose change
    came in an earlier fragment) become one ShapeRun; a transaction of two changes stays a ShapeChanges."""
    other = Relation(2, "public", "other", "f", (Column("id", 20, -1, True),))
    with holding_consumer() as held:
        collector, got, release = held.collector, held.got, held.release
        two = TransactionFragment(
            400, 400, (Insert(REL, ("400-0",), 0), Insert(REL, ("400-2",), 2)), True, True, 408
        )
        end_elsewhere = TransactionFragment(300, 300, (Insert(other, ("x",), 2),), False, True, 308)
        sent = [frag(200), frag(300, commit=False), end_elsewhere, two, frag(500), frag(600)]
        futures = [collector.ask(f, block=False) for f in sent]
        release.set()
        for f in futures:
            f.get(timeout=T)
        batch = got.get(timeout=T)
        assert isinstance(batch, ShapeBatch)
        assert [type(m) for m in batch.messages] == [ShapeRun, ShapeChanges, ShapeRun]
        told = routed_changes(batch)
        assert [(m.commit_lsn, m.begin, m.commit, [c.op for c in m.changes]) for m in told] == [
            (200, True, True, [0]),
            (300, True, True, [0]),
            (400, True, True, [0, 2]),
            (500, True, True, [0]),
            (600, True, True, [0]),
        ]
        assert [c.new for m in told for c in m.changes] == [  # type: ignore[union-attr]
            ("200-0",),
            ("300-0",),
            ("400-0",),
            ("400-2",),
            ("500-0",),
            ("600-0",),
        ]


class Recorder(SupervisedActor):
    def __init__(self, got: queue.Queue[Any]) -> None:
        super().__init__()
        self.got = got

    def on_receive(self, message: Any) -> None:
        self.got.put(message)


@contextlib.contextmanager
def recording_shapes(*tables: str) -> Iterator[tuple[pykka.ActorRef[Any], list[queue.Queue[Any]]]]:
    """A collector with one shape per table name (schema ``public``, no WHERE), each consumer a
    :class:`Recorder`: ``(collector, what each consumer was told)``."""
    collector = ShapeLogCollector.start(BruteIndex(), on_ack=lambda lsn: None)
    got = [queue.Queue[Any]() for _ in tables]
    refs = [Recorder.start(q) for q in got]
    try:
        for i, (table, ref) in enumerate(zip(tables, refs, strict=True)):
            collector.ask(RegisterShape(f"s{i}", ("public", table), None, ref), timeout=T)
        yield collector, got
    finally:
        collector.stop()
        for ref in refs:
            ref.stop()


def test_reports_tell_one_drain_per_burst() -> None:
    got: queue.Queue[Any] = queue.Queue()
    ref: pykka.ActorRef[Any] = Recorder.start(got)
    try:
        reports = DurableReports(ref)
        reports.report("a", LogOffset(5, 1))
        reports.report("a", LogOffset(4, 0))  # older: kept the newest
        reports.report("b", LogOffset(7, 0))
        assert isinstance(got.get(timeout=T), DrainDurable)
        assert reports.drain() == {"a": LogOffset(5, 1), "b": LogOffset(7, 0)}
        assert got.empty()
        assert reports.drain() == {}
        reports.report("a", LogOffset(6, 0))
        assert isinstance(got.get(timeout=T), DrainDurable)
        assert reports.drain() == {"a": LogOffset(6, 0)}
    finally:
        ref.stop()
    reports.report("c", LogOffset(1, 0))  # the collector is gone: no error


def test_fragments_gathered_for_a_busy_consumer_become_one_message() -> None:
    with holding_consumer() as held:
        collector, got, release = held.collector, held.got, held.release
        collector.ask(frag(150), timeout=T)  # waits in its inbox: the consumer is busy from now on
        pending = [
            collector.ask(frag(200, commit=False), block=False),
            collector.ask(frag(200, begin=False, commit=False, op=2), block=False),
            collector.ask(frag(200, begin=False, op=4), block=False),
            collector.ask(frag(300), block=False),
        ]
        release.set()
        for f in pending:
            f.get(timeout=T)
        assert lsns(got.get(timeout=T)) == [150]
        batch = got.get(timeout=T)
        assert isinstance(batch, ShapeBatch)
        whole, after = routed_changes(batch)
        assert (whole.commit_lsn, whole.begin, whole.commit) == (200, True, True)
        assert [c.new for c in whole.changes if isinstance(c, Insert)] == [("200-0",), ("200-2",), ("200-4",)]
        assert after.commit_lsn == 300 and after.begin and after.commit


def test_a_stuck_consumer_holds_the_collector_only_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector_module, "_MAX_GATHER_S", 0.05)
    with holding_consumer() as held:
        collector, consumer = held.collector, held.consumer
        collector.ask(frag(200), timeout=T)
        collector.ask(frag(300), timeout=1.0)  # gave up waiting for the consumer: told anyway
        assert cast(Any, consumer.actor_inbox).qsize() == 2


def test_a_wide_batch_waits_for_more_transactions_while_they_keep_coming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector_module, "_WIDE_BATCH", 2)  # shapes reached: "wide" from 2 on here
    monkeypatch.setattr(collector_module, "_FLOWING_S", 0.5)  # a gap shorter than this: still flowing
    # two shapes see every row; the third sees none
    with recording_shapes("items", "items", "other") as (collector, got):
        t0 = time.monotonic()
        first = collector.ask(frag(100), block=False)
        second = collector.ask(frag(200), block=False)
        first.get(timeout=T)
        second.get(timeout=T)
        for q in got[:2]:
            assert lsns(q.get(timeout=T)) == [100, 200]  # one message: both transactions
        assert time.monotonic() - t0 >= 0.4  # it waited (bounded) for more
        assert got[2].empty()


def assert_told_100_200(got: list[queue.Queue[Any]], *, together: bool) -> None:
    """Each consumer was told the transactions 100 and 200 in one message (``together``), else apart."""
    for q in got:
        if together:
            assert lsns(q.get(timeout=T)) == [100, 200]
        else:
            assert [lsns(q.get(timeout=T)), lsns(q.get(timeout=T))] == [[100], [200]]


@pytest.mark.parametrize("behind", [False, True])
def test_a_wide_batch_gathers_longer_while_the_reader_is_behind(
    monkeypatch: pytest.MonkeyPatch, behind: bool
) -> None:
    """Transactions read while the replication reader was behind (more WAL already on the connection) keep
    a wide batch gathering past ``_WIDE_FLOWING_S``, up to ``_BEHIND_FLOWING_S``; otherwise it is told at
    ``_WIDE_FLOWING_S`` and the follower comes as a batch of its own."""
    monkeypatch.setattr(collector_module, "_WIDE_BATCH", 2)
    monkeypatch.setattr(collector_module, "_FLOWING_S", 5.0)  # never a gap here
    monkeypatch.setattr(collector_module, "_WIDE_FLOWING_S", 0.2)
    monkeypatch.setattr(collector_module, "_BEHIND_FLOWING_S", 60.0)
    with recording_shapes("items", "items") as (collector, got):
        asked = [collector.ask(dataclasses.replace(frag(100), behind=behind), block=False)]
        time.sleep(0.4)  # past _WIDE_FLOWING_S (the follower of a burst that is late)
        asked.append(collector.ask(dataclasses.replace(frag(200, commit=False), behind=behind), block=False))
        asked.append(collector.ask(frag(200, begin=False), block=False))  # the burst's end: caught up
        for future in asked:
            future.get(timeout=T)
        assert_told_100_200(got, together=behind)


def test_a_wide_batch_gathers_for_its_time_from_when_its_consumers_are_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under sustained load a batch's first change is as old as the previous batch's work: a wide batch
    gathers for ``_WIDE_FLOWING_S`` from when its consumers are done, so that a transaction arriving soon
    after joins it (at 10,000 shapes, each shape visit costs ~0.1 ms whatever it brings)."""
    monkeypatch.setattr(collector_module, "_WIDE_BATCH", 1)
    monkeypatch.setattr(collector_module, "_FLOWING_S", 60.0)  # never a gap here
    monkeypatch.setattr(collector_module, "_WIDE_FLOWING_S", 0.5)
    with holding_consumer() as held:
        collector, got, release = held.collector, held.got, held.release
        collector.ask(frag(150), timeout=T)  # waits in the consumer's inbox: busy from now on
        gathered = collector.ask(frag(200), block=False)
        time.sleep(0.7)  # the consumer works longer than _WIDE_FLOWING_S
        release.set()
        assert lsns(got.get(timeout=T)) == [150]  # the consumer took it: done with the previous batch
        time.sleep(0.1)  # the next transaction comes a little later
        follower = collector.ask(frag(300), block=False)
        gathered.get(timeout=T)
        follower.get(timeout=T)
        assert lsns(got.get(timeout=T)) == [200, 300]


@pytest.mark.parametrize("behind", [False, True])
def test_a_gap_ends_a_wide_batch_only_when_the_reader_has_caught_up(
    monkeypatch: pytest.MonkeyPatch, behind: bool
) -> None:
    """While the replication reader is behind (more WAL already on the connection), a gap between
    transactions is the reader waiting for the CPU, not the end of a burst: the wide batch keeps gathering."""
    monkeypatch.setattr(collector_module, "_WIDE_BATCH", 2)
    monkeypatch.setattr(collector_module, "_FLOWING_S", 0.05)
    monkeypatch.setattr(collector_module, "_WIDE_FLOWING_S", 60.0)  # only the gap could end the wait
    monkeypatch.setattr(collector_module, "_BEHIND_FLOWING_S", 60.0)
    with recording_shapes("items", "items") as (collector, got):
        first = collector.ask(dataclasses.replace(frag(100), behind=behind), block=False)
        time.sleep(0.3)  # a gap well past _FLOWING_S
        collector.ask(frag(200), timeout=T)  # caught up: the gap after it ends the batch
        first.get(timeout=T)
        assert_told_100_200(got, together=behind)


def test_a_lone_wide_transaction_is_not_held_for_followers_that_do_not_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(collector_module, "_WIDE_BATCH", 2)
    monkeypatch.setattr(collector_module, "_FLOWING_S", 0.05)
    monkeypatch.setattr(collector_module, "_WIDE_FLOWING_S", 60.0)  # only the gap can end the wait
    with recording_shapes("items", "items") as (collector, got):
        collector.ask(frag(100), timeout=T)
        for q in got:  # told once no follower came within _FLOWING_S, long before _WIDE_FLOWING_S
            assert lsns(q.get(timeout=T)) == [100]


def test_a_run_queue_backlog_gathers_a_narrow_batch_for_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the actors' run queue has a backlog (supervisors.runners.backlog() > 0), even a narrow batch
    for an idle consumer keeps gathering, but only for _MAX_BACKLOG_S (not the _MAX_GATHER_S of a busy
    consumer).  Without a backlog the same consumer gets each transaction at once (the first test)."""
    monkeypatch.setattr(runners, "backlog", lambda: 1)  # the collector's runners: a backlog that never drains
    monkeypatch.setattr(collector_module, "_MAX_BACKLOG_S", 1.0)
    monkeypatch.setattr(collector_module, "_MAX_GATHER_S", 60.0)
    collector = ShapeLogCollector.start(BruteIndex(), on_ack=lambda lsn: None)
    got: queue.Queue[Any] = queue.Queue()
    consumer = Recorder.start(got)
    try:
        collector.ask(RegisterShape("s", ("public", "items"), None, consumer), timeout=T)
        t0 = time.monotonic()
        first = collector.ask(frag(100), block=False)
        second = collector.ask(frag(200), block=False)
        assert lsns(got.get(timeout=T)) == [100, 200]  # one message: gathered behind the backlog
        waited = time.monotonic() - t0
        assert 0.9 <= waited < 30  # for about _MAX_BACKLOG_S, far from _MAX_GATHER_S
        first.get(timeout=T)
        second.get(timeout=T)
        assert got.empty()
    finally:
        collector.stop()
        consumer.stop()


def test_a_wide_batch_waits_for_the_rest_of_an_open_transaction_past_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gap in the middle of a transaction does not end a wide batch: its other fragments are coming, and
    its shapes get it in one message (it used to be told at the gap, the rest following as a second visit)."""
    monkeypatch.setattr(collector_module, "_WIDE_BATCH", 2)
    monkeypatch.setattr(collector_module, "_FLOWING_S", 0.05)
    monkeypatch.setattr(collector_module, "_WIDE_FLOWING_S", 60.0)  # only the gap could end the wait
    with recording_shapes("items", "items") as (collector, got):
        first = collector.ask(frag(100, commit=False), block=False)  # the client keeps several in flight
        time.sleep(0.3)  # a gap well past _FLOWING_S, mid-transaction
        second = collector.ask(frag(100, begin=False, op=2), block=False)
        first.get(timeout=T)
        second.get(timeout=T)
        for q in got:
            message = q.get(timeout=T)
            assert [(len(m.changes), m.begin, m.commit) for m in routed_changes(message)] == [(2, True, True)]


def test_a_transaction_resent_from_its_beginning_does_not_turn_its_first_attempt_whole() -> None:
    """A reconnect in the middle of a fragmented transaction resends it from its beginning.  The first
    attempt's lone change, gathered (provisionally) as a whole transaction, must go out as the open message
    it is: as a whole one-change transaction, the replay with the rest of it would be dropped as a replay."""
    with holding_consumer() as held:
        collector, got, release = held.collector, held.got, held.release
        collector.ask(frag(150), timeout=T)  # the consumer is busy from now on
        pending = [
            collector.ask(frag(200, commit=False), block=False),  # first attempt, cut by a reconnect
            collector.ask(frag(200, commit=False), block=False),  # resent from its beginning
            collector.ask(frag(200, begin=False, op=2), block=False),
        ]
        release.set()
        for f in pending:
            f.get(timeout=T)
        assert lsns(got.get(timeout=T)) == [150]
        told = [
            (m.commit_lsn, m.begin, m.commit, [cast(Insert, c).new for c in m.changes])
            for m in routed_changes(got.get(timeout=T))
        ]
        assert told == [(200, True, False, [("200-0",)]), (200, True, True, [("200-0",), ("200-2",)])]
