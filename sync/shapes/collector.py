"""ShapeLogCollector: fans committed transactions out to the shape consumers they affect.

One per stack, in the Shapes subtree (architecture §2).  The replication client hands it each
replication event (``ask`` through :class:`~sync.replication.sink.ActorSink`, which doubles as backpressure:
the client keeps a bounded number of events in flight).  For every change the routing index returns
the shapes whose WHERE clause holds for the new or the old row, in time independent of the number of
shapes for indexable clauses; TRUNCATE reaches every shape of its table.  Each affected consumer gets only
its own changes (``tell``; the collector never waits for a consumer), batched: what is routed while the
replication client keeps handing over events (its reads), while the consumers are still busy with the
previous batch (at most ``_MAX_GATHER_S``; up to ``_MAX_BACKLOG_S`` while the actors' run queue has a
backlog), and, when the batch reaches ``_WIDE_BATCH`` shapes or more (its cost is per shape: more
transactions ride along almost for free), for as long as transactions keep arriving (no gap of
``_FLOWING_S`` unless the replication reader is behind; up to ``_WIDE_FLOWING_S``, or ``_BEHIND_FLOWING_S``
while it is behind, after the consumers are done with the previous batch), is gathered per shape and told
as one ``ShapeBatch`` (at the latest after ``_BATCH_COMMITS`` transactions / ``_BATCH_CHANGES`` changes).  A
transaction reaching few shapes on an idle engine is told at once.  A consumer whose inbox grows past
``max_consumer_queue`` cannot keep up: it is reported to the ShapeCache for invalidation instead of
stalling every other shape.

Durability (hard spot 2): at each commit the collector registers, with its :class:`FlushTracker`, which
shapes received the transaction; storages report the offsets they made durable (batched through the
:class:`~sync.shapes.durable_reports.DurableReports` that ``RegisterShape`` answers with, or one
``ShapeDurable`` each); whenever the durable commit LSN advances the collector calls ``on_ack(commit_lsn)``
(the stack wires it to the replication client's ``AckLsn``), and the client acknowledges it to Postgres;
when that leaves nothing pending it tells :func:`sync.heap.idle` (a quiet moment for the garbage collector,
if the process enabled it; :func:`sync.heap.busy` when a batch starts).  Relation changes and a re-created
slot are passed on (``on_relation_changed`` / ``on_slot_recreated``) to whoever invalidates shapes.

How a fragment's routed changes join what each shape already has waiting is the pure
:mod:`sync.shapes.collector_outbox`; routing a change to its shapes is :mod:`sync.shapes.collector_routing`.

Register before snapshot (hard spot 3): a shape is routed changes from the moment ``RegisterShape``
returns; its consumer holds them until its snapshot's visibility is known.  The answer also names the
transactions routed before, which its snapshot must see (:mod:`sync.shapes.routed_history`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pykka

from supervisors import SupervisedActor, runners
from sync import heap, runtime
from sync.replication.changes import RelationChanged, SlotRecreated, TransactionFragment
from sync.replication.sink import GetResumePoint, ResumePoint
from sync.shapes.collector_messages import (
    ForgetVisible,
    Registered,
    RegisterShape,
    ShapeBatch,
    ShapeChanges,
    ShapeDurable,
    ShapeRun,
    UnregisterShape,
)
from sync.shapes.collector_outbox import OpenTransaction, Outbox, gather_fragment, open_provisional
from sync.shapes.collector_routing import (
    ShapeRoute,
    ShapeRouting,
    TableKey,
    TableRouting,
    clause_columns,
    route_changes,
)
from sync.shapes.durable_reports import DrainDurable, DurableReports
from sync.shapes.flush_tracker import FlushTracker
from sync.shapes.routed_history import RoutedHistory

__all__ = [
    "RegisterShape",
    "ShapeBatch",
    "ShapeChanges",
    "ShapeDurable",
    "ShapeLogCollector",
    "ShapeRouting",
    "ShapeRun",
    "UnregisterShape",
]

logger = logging.getLogger(__name__)

_BATCH_COMMITS = 128  # transactions routed before the gathered changes are told anyway
_BATCH_CHANGES = 100_000  # changes routed before the same
_GATHER_S = 0.0005  # the pause while consumers are busy with the previous batch
_HANDOVER_S = 0.0001  # a full turn of the event loop (I/O included) for the replication client
_BUSY_SAMPLE = 4  # consumers looked at to tell whether they are
_MAX_GATHER_S = 0.1  # the longest wait for busy consumers before telling anyway
_MAX_BACKLOG_S = 1.0  # the longest wait while the actors' run queue has a backlog (see _maybe_tell)
_WIDE_BATCH = 256  # shapes reached by a batch that waits for more transactions while they keep coming
_WIDE_FLOWING_S = 0.5  # ... (no gap of _FLOWING_S) up to this long
_BEHIND_FLOWING_S = 2.0  # ... or this long while the replication reader is behind (fragment.behind)
_FLOWING_S = 0.02


class ShapeLogCollector(SupervisedActor):
    """Routes committed transactions to shape consumers and tracks what may be acknowledged.

    Owns:       the routing index, the registered shapes, the FlushTracker, the RoutedHistory, the last routed
                commit LSN, the changes routed but not yet told (per shape), the DurableReports sink.
    Receives:   RegisterShape (ask) -> Registered; UnregisterShape (tell/ask); ForgetVisible (tell, from a
                consumer whose snapshot is taken); from the ReplicationClient (ask): TransactionFragment ->
                None, RelationChanged -> None, SlotRecreated -> None,
                GetResumePoint -> ResumePoint; DrainDurable (tell, from its DurableReports); ShapeDurable
                (tell, from consumers whose storage reports one by one).
    Sends:      ShapeChanges / ShapeBatch (tell) to consumers; ``on_ack(commit_lsn)`` towards the replication
                client; ``on_commit(commit_lsn)`` once the transaction is told to its consumers
                (global_last_seen_lsn); ``on_overloaded(handle)``, ``on_relation_changed(event)``,
                ``on_slot_recreated(event)``.
    Crashes on: fragments out of commit order; a routing/evaluation bug (the Shapes subtree restarts,
                shapes reload from their durable logs and replication resumes from the slot).  A consumer
                found stopped is dropped as if it had unregistered.
    """

    def __init__(
        self,
        index: ShapeRouting,
        *,
        on_ack: Callable[[int], None],
        on_overloaded: Callable[[str], None] | None = None,
        on_relation_changed: Callable[[RelationChanged], None] | None = None,
        on_slot_recreated: Callable[[SlotRecreated], None] | None = None,
        on_commit: Callable[[int], None] | None = None,
        max_consumer_queue: int = 50_000,
        acked_lsn: int = 0,
    ) -> None:
        super().__init__()
        self._index = index
        self._routes: dict[str, ShapeRoute] = {}
        self._by_table: dict[TableKey, TableRouting] = {}
        self._tracker = FlushTracker(acked_lsn)
        self._on_ack = on_ack
        self._on_overloaded = on_overloaded
        self._on_relation_changed = on_relation_changed
        self._on_slot_recreated = on_slot_recreated
        self._on_commit = on_commit
        self._max_queue = max_consumer_queue
        self._open: OpenTransaction | None = None
        self._last_commit_lsn = 0
        self._last_acked = acked_lsn
        self._reports: DurableReports | None = None  # created on start (needs our ref)
        self._history = RoutedHistory()  # what a new shape's snapshot must see
        # routed, not yet told: per shape, its messages in commit order
        self._outbox: Outbox = {}
        self._outbox_commits = 0
        self._outbox_changes = 0
        self._told_lsn = 0  # newest commit told to consumers (``on_commit``)
        self._backlog = False  # events were waiting when the gathered batch started
        self._last_batch = 0  # transactions in the batch told last
        self._batch_started = 0.0  # when the first change of the gathered batch was routed
        self._free_at = 0.0  # when its consumers were first seen done with the previous batch
        self._routed_at = 0.0  # when the last fragment was routed
        self._behind = False  # the last fragment was read while more WAL was already there

    def on_start(self) -> None:
        self._reports = DurableReports(self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if message.__class__ is TransactionFragment:
            if not self._outbox:  # a batch starts: under load (events waiting, or the last batch was large)?
                self._backlog = self._last_batch > 1 or not self.actor_inbox.empty()
                self._batch_started = time.monotonic()
                heap.busy()  # no idle point for the garbage collector until this is durable
            self._route(message)
            self._behind = message.behind
            self._routed_at = time.monotonic()
            if self._outbox:
                self._maybe_tell()
            return None
        if message.__class__ is DrainDurable or message.__class__ is ForgetVisible:  # not a cut in the batch
            if isinstance(message, ForgetVisible):
                self._history.forget_visible(message.snapshot)
            else:
                self._drain_reports()
            if self._outbox:
                self._maybe_tell()
            return None
        if self._outbox:
            self._tell_outbox()  # anything else sees the routed changes delivered first
        match message:
            case GetResumePoint():
                return ResumePoint(processed_lsn=self._last_commit_lsn, durable_lsn=self._last_acked)
            case RelationChanged():
                if self._on_relation_changed is not None:
                    self._on_relation_changed(message)
            case SlotRecreated():
                logger.warning("replication slot re-created (%s): every shape must refetch", message.reason)
                # Positions of the old history mean nothing in the new one (another cluster, another
                # timeline may number lower): start the replay check and the acknowledgements afresh.
                self._last_commit_lsn = 0
                self._told_lsn = 0
                self._last_acked = 0
                self._tracker = FlushTracker()
                self._history.clear()
                if self._on_slot_recreated is not None:
                    self._on_slot_recreated(message)
            case ShapeDurable(handle, offset):
                if handle in self._routes:
                    self._report(self._tracker.durable(handle, offset))
            case RegisterShape(handle, table, clause, consumer, snapshot):
                self._register(handle, table, clause, consumer)
                return Registered(self._reports, self._history.pending() if snapshot else ())
            case UnregisterShape(handle):
                self._unregister(handle)
            case _:
                msg = f"{type(self).__name__}: unexpected message {message!r}"
                raise TypeError(msg)
        return None

    # -- registration -----------------------------------------------------------------------------

    def _register(self, handle: str, table: TableKey, clause: Any, consumer: pykka.ActorRef[Any]) -> None:
        if handle in self._routes:
            self._unregister(handle)
        columns = clause_columns(clause)
        self._routes[handle] = ShapeRoute(handle, table, consumer, columns)
        routing = self._by_table.get(table)
        if routing is None:
            routing = self._by_table[table] = TableRouting()
        routing.shapes.add(handle)
        routing.add(columns)
        self._index.add(handle, table, clause)

    def _unregister(self, handle: str) -> None:
        route = self._routes.pop(handle, None)
        if route is None:
            return
        self._index.remove(handle)
        routing = self._by_table.get(route.table)
        if routing is not None:
            routing.shapes.discard(handle)
            routing.discard(route.columns)
            if not routing.shapes:
                del self._by_table[route.table]
        if self._open is not None:
            self._open.touched.discard(handle)
            self._open.provisional.discard(handle)
        self._outbox.pop(handle, None)
        self._report(self._tracker.remove_shape(handle))

    # -- routing ----------------------------------------------------------------------------------

    def _route(self, fragment: TransactionFragment) -> None:
        if fragment.begin:
            if self._open is not None and self._open.provisional:
                # The open transaction ends without its commit (a reconnect resends it from its beginning):
                # its provisional changes are the open messages they are, not whole transactions; the
                # consumer sorts out the replay that follows.
                open_provisional(self._outbox, self._open)
            if fragment.commit_lsn <= self._last_commit_lsn:
                # Already routed before a reconnect: Postgres resent it.  Skip (exactly once).
                logger.debug("skipping replayed transaction %s", fragment.commit_lsn)
                self._open = None
                return
            self._open = OpenTransaction(fragment.xid, fragment.commit_lsn)
            self._history.add(fragment.xid)
        txn = self._open
        if txn is None or txn.commit_lsn != fragment.commit_lsn:
            if txn is None and fragment.commit_lsn <= self._last_commit_lsn:
                return  # the rest of a skipped replayed transaction
            msg = f"fragment of transaction {fragment.commit_lsn} arrived without its beginning"
            raise RuntimeError(msg)
        per_shape, inexact = route_changes(self._index, self._by_table, fragment.changes)
        outbox = self._outbox
        lsn, commit = fragment.commit_lsn, fragment.commit
        gather_fragment(outbox, per_shape, inexact, self._routes, txn, fragment.begin, commit)
        self._outbox_changes += len(fragment.changes)
        if commit:
            self._outbox_commits += 1
            self._last_commit_lsn = lsn
            self._open = None
            # every touched shape is registered (_unregister takes a shape out of ``touched``)
            self._report(self._tracker.register_commit(lsn, txn.touched))
            if not outbox and self._on_commit is not None:
                self._told_lsn = lsn
                self._on_commit(lsn)

    def _maybe_tell(self) -> None:
        """Tell the gathered changes unless more events are on their way or the consumers are still busy
        with the previous batch (bounded: see the module docstring)."""
        inbox = self.actor_inbox
        give_up = backlog_until = 0.0
        while self._outbox_commits < _BATCH_COMMITS and self._outbox_changes < _BATCH_CHANGES:
            if not inbox.empty():
                return  # the next event is already here
            # Let the replication client hand over what it has already read: under load (a backlog when the
            # batch started, or several transactions in it) a full turn of the event loop, I/O included;
            # otherwise only the greenlets ready now run, so that a lone transaction is told at once.
            runtime.sleep(_HANDOVER_S if self._backlog or self._outbox_commits > 1 else 0)
            if not inbox.empty():
                return
            backlog = runners.backlog() > 0
            if not backlog and not self._consumers_busy():
                self._free_at = self._free_at or time.monotonic()
                if not self._wide_and_young():
                    break
            # Self-clocking (as in group commit): while the consumers still work on what they were told,
            # more transactions gather here and reach them as one batch; not for long, though (a stuck
            # consumer must not hold up the others, nor this actor's other messages).  While the actors'
            # run queue has a backlog (consumers and storages still working through the last batch: a
            # batch reaching thousands of shapes takes a good part of a second) telling more now would
            # only make each shape handle it separately (a wake-up, an append and a sync per shape
            # again); a single stuck actor leaves no backlog (spare runners take the queue on).
            now = time.monotonic()
            if not give_up:
                give_up = now + _MAX_GATHER_S
                backlog_until = now + _MAX_BACKLOG_S
            elif now >= (backlog_until if backlog else give_up):
                break
            runtime.sleep(_GATHER_S)
        self._tell_outbox()

    def _wide_and_young(self) -> bool:
        """A batch reaching many shapes costs mostly per shape, not per change: while transactions keep coming
        (a burst still being read) it waits for them, so each shape gets them in one message.  A lone wide
        transaction waits at most ``_FLOWING_S`` for a follower; a narrow batch never waits.  While the
        replication reader is behind (the burst is already on the connection, ahead of us) the batch may
        gather for ``_BEHIND_FLOWING_S`` instead of ``_WIDE_FLOWING_S``: its transactions are late anyway,
        and cutting it would visit each of its shapes again for the rest of the burst.  Both are counted from
        when the consumers were done with the previous batch, not from the batch's first change: under
        sustained load that change is already as old as the previous batch's work.  The end of a burst (a
        gap of ``_FLOWING_S``) is told at once, but not in the middle of a transaction (its other fragments
        are on their way; bench.ingest many's first window often saw a 20-27 ms gap right after the first
        fragment of its first transactions, and each of their shapes was visited twice) nor while the reader
        is behind (the gap is only the reader waiting for the CPU: at 10,000 shapes and 1,000,000 rows, one
        batch in two was cut after 10-26 transactions by 20-140 ms gaps)."""
        if len(self._outbox) < _WIDE_BATCH:
            return False
        now = time.monotonic()
        limit = _BEHIND_FLOWING_S if self._behind else _WIDE_FLOWING_S
        return now - max(self._batch_started, self._free_at) < limit and (
            now - self._routed_at < _FLOWING_S or self._open is not None or self._behind
        )

    def _consumers_busy(self) -> bool:
        """Whether a few of the consumers waiting for the gathered changes still have messages queued."""
        routes = self._routes
        for n, handle in enumerate(self._outbox):
            if n >= _BUSY_SAMPLE:
                break
            route = routes.get(handle)
            qsize = route.qsize if route is not None else None
            if qsize is not None and qsize() > 0:
                return True
        return False

    def _tell_outbox(self) -> None:
        if self._open is not None and self._open.provisional:
            open_provisional(self._outbox, self._open)  # told before its commit
        outbox, self._outbox = self._outbox, {}
        self._free_at = 0.0
        self._last_batch = self._outbox_commits
        self._outbox_commits = self._outbox_changes = 0
        dead: list[str] = []
        max_queue = self._max_queue
        for handle, messages in outbox.items():
            route = self._routes.get(handle)
            if route is None:
                continue
            qsize = route.qsize
            if qsize is not None and qsize() > max_queue and self._on_overloaded is not None:
                logger.warning("shape %s cannot keep up (queue > %d); invalidating it", handle, max_queue)
                self._on_overloaded(handle)
            try:
                route.consumer.tell(messages[0] if len(messages) == 1 else ShapeBatch(tuple(messages)))
            except pykka.ActorDeadError:
                # The consumer stopped (crashed, deleted) and its UnregisterShape is still on the way: the
                # shape is gone, it must neither take the collector down nor pin the acknowledgement.
                logger.info("shape %s: consumer already stopped; no longer routing to it", handle)
                dead.append(handle)
        for handle in dead:
            self._unregister(handle)
        lsn = self._last_commit_lsn
        if lsn > self._told_lsn and self._on_commit is not None:
            self._told_lsn = lsn
            self._on_commit(lsn)

    def _drain_reports(self) -> None:
        if self._reports is None:
            return
        tracker = self._tracker
        routes = self._routes
        acked = self._last_acked
        for handle, offset in self._reports.drain().items():
            if handle in routes:  # a report of a shape gone meanwhile must not linger in the tracker
                acked = tracker.durable(handle, offset)
        self._report(acked)

    def _report(self, acked: int) -> None:
        if acked > self._last_acked:
            self._last_acked = acked
            self._on_ack(acked)
            if self._tracker.idle:
                heap.idle()  # everything routed is durable: a quiet moment for the garbage collector
