"""``Consumer``: one actor per shape, turning routed transactions into the shape's log.

The decisions (replay skip, holding until the snapshot's visibility is known, snapshot filtering, item
encoding) live in the pure :class:`~sync.shapes.consumer_state.ConsumerState`; this actor wires them to the
shape's :class:`~sync.storage.storage_actor.StorageActor`, the ShapeLogCollector (registration, durability)
and the live waiters (:mod:`sync.shapes.waiters`).

The collector tells a batch of transactions at once (``ShapeBatch``); the consumer hands all their items to
the storage as one ``AppendBatch``.

Durability: the collector answers ``RegisterShape`` with its batched report sink, which the consumer passes
to its storage (``ReportTo``): the storage then reports straight to the collector, and a transaction that
added nothing to the log travels with the batch as ``settle`` (reported as ``<commit_lsn>_0`` once
everything written before it is durable, so a transaction dropped by the snapshot filter never pins the
acknowledgement).  Without a sink (a collector answering None) the older path remains
(:mod:`sync.shapes.consumer_durable`).

Waiters are completed when data is *readable* (written by the storage actor, not necessarily fsynced).  The
storage writes asynchronously, so when waiters exist the consumer hands a completed transaction over with
``ask`` (returning once written), and a waiter arriving while data is still in flight is checked again
behind a cheap ``ask`` barrier; without waiters appends are plain ``tell``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import pykka
from psycopg import sql

from supervisors import SupervisedActor
from sync.offsets import LogOffset
from sync.shapes.collector import (
    RegisterShape,
    ShapeBatch,
    ShapeChanges,
    ShapeDurable,
    ShapeRun,
    UnregisterShape,
)
from sync.shapes.collector_messages import ForgetVisible, Registered, flatten_routed
from sync.shapes.consumer_durable import DirectDurability
from sync.shapes.consumer_messages import (
    ConsumerInfo,
    GetConsumerInfo,
    RotateShape,
    StorageDurable,
    StoredShape,
)
from sync.shapes.consumer_rotation import LogRotation, SizeWatch
from sync.shapes.consumer_state import Action, CommitEmpty, ConsumerState, ShapeFailed
from sync.shapes.definition import ShapeDefinition
from sync.shapes.durable_reports import DurableReports
from sync.shapes.log_items import (
    IncompleteChange,
    Predicate,
    RelationMismatch,
    ShapeLogEncoder,
    ShapeTruncated,
)
from sync.shapes.snapshot_messages import (
    MarkJournal,
    PrepareSnapshot,
    SnapshotCompleted,
    SnapshotFailed,
    SnapshotProgress,
    SnapshotRequest,
    SnapshotStarted,
)
from sync.shapes.waiters import AwaitData, CancelWait, Waiter, WaiterList, WaitResult
from sync.shapes.xid import SnapshotFilter
from sync.storage.errors import ShapeGone
from sync.storage.inbox import LightInbox
from sync.storage.items import AppendItem
from sync.storage.reader import ShapeLogReader
from sync.storage.storage_actor import AppendBatch, DeleteLog, GetReader, ReportTo
from sync.where.errors import WhereEvalError

__all__ = [
    "Consumer",
    "ConsumerInfo",
    "GetConsumerInfo",
    "RotateShape",
    "StorageDurable",
    "StoredShape",
]

logger = logging.getLogger(__name__)

_INVALIDATING = (ShapeFailed, ShapeTruncated, RelationMismatch, IncompleteChange, WhereEvalError)
_ROUTED = (ShapeChanges, ShapeBatch, ShapeRun)  # what the collector tells: consecutive ones are one batch


# -- the actor --------------------------------------------------------------------------------------------


class Consumer(SupervisedActor):
    """Keeps one shape's log in step with replication.

    Owns:       the shape's ConsumerState (encoder, snapshot filter, held transactions), its WaiterList,
                the reader of its log, what was appended and what is durable.
    Receives:   ShapeChanges / ShapeBatch / ShapeRun (tell, collector; those queued back to back are one
                batch: one append to the storage); PrepareSnapshot (ask) -> the xids its snapshot must
                see; SnapshotStarted / SnapshotProgress / SnapshotCompleted / SnapshotFailed (tell,
                snapshot worker); StorageDurable (tell, storage, only without a report sink); AwaitData /
                CancelWait (tell, API); RotateShape (ask, cache) -> None; GetConsumerInfo (ask).
    Sends:      RegisterShape (ask: on start if reloaded, on PrepareSnapshot if new), ForgetVisible (tell, on
                SnapshotStarted), UnregisterShape and ShapeDurable (tell, without a report sink) to the
                collector; AppendBatch (tell, or ask when waiters exist), ReportTo (tell), GetReader and
                DeleteLog (ask) to the storage;
                ``start_snapshot(SnapshotRequest)`` once for a new shape; ``on_invalidate(handle, reason)``
                when the shape cannot continue.
    Crashes on: storage or collector ask timeouts and unexpected errors; ``on_failure`` then invalidates the
                shape (a restarted consumer would have missed transactions, so it is never restarted).
    """

    _create_actor_inbox = staticmethod(LightInbox)  # one actor per shape: a smaller inbox

    def __init__(
        self,
        handle: str,
        definition: ShapeDefinition,
        *,
        storage: pykka.ActorRef[Any],
        collector: pykka.ActorRef[Any],
        start_snapshot: Callable[[SnapshotRequest], None],
        on_invalidate: Callable[[str, str], None],
        stored: StoredShape | None = None,
        marks: MarkJournal | None = None,
        routing_clause: Any = None,
        predicate: Predicate | None = None,
        where_sql: sql.Composable | None = None,
        where_params: Sequence[Any] = (),
        max_held: int = 10_000,
        max_held_changes: int = 1_000_000,
        log_rotation: LogRotation | None = None,
        ask_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.handle = handle
        self._definition = definition
        self._storage = storage
        self._collector = collector
        self._start_snapshot = start_snapshot
        self._on_invalidate = on_invalidate
        self._stored = stored
        self._marks = marks
        self._clause = routing_clause
        self._where_sql = where_sql
        self._where_params = tuple(where_params)
        self._timeout = ask_timeout
        self._state = ConsumerState(
            ShapeLogEncoder(definition, predicate),
            last_tx=stored.last_tx if stored is not None else 0,
            snapshot_filter=SnapshotFilter(stored.snapshot, stored.wal_lsn) if stored is not None else None,
            max_held=max_held,
            max_held_changes=max_held_changes,
        )
        self._waiters = WaiterList()
        self._reader: ShapeLogReader | None = None
        self._appended: LogOffset | None = None  # last item of the last complete transaction sent
        self._txn_last: LogOffset | None = None  # last item sent of the open transaction
        self._direct = DirectDurability()  # without a report sink
        self._failed: str | None = None
        self._registered = False
        self._sink: DurableReports | None = None  # the collector's, once registered
        self._must_see: tuple[int, ...] = ()  # xids routed before registering (sync.shapes.routed_history)
        self._size = SizeWatch(log_rotation) if log_rotation is not None else None

    def __str__(self) -> str:
        return f"Consumer[{self.handle}]"

    # -- lifecycle ----------------------------------------------------------------------------------------

    def on_start(self) -> None:
        self._reader = cast("ShapeLogReader", self._storage.ask(GetReader(), timeout=self._timeout))
        if self._stored is not None:
            self._register()  # a reloaded shape follows the log at once
        else:  # a new shape registers when its snapshot worker is about to start (PrepareSnapshot)
            self._start_snapshot(
                SnapshotRequest(
                    self.handle,
                    self._definition,
                    self._storage,
                    self.actor_ref,
                    self._where_sql,
                    self._where_params,
                    self._marks,
                )
            )

    def on_stop(self) -> None:
        self._waiters.complete_all(WaitResult("stopped", reason="shape consumer stopped"))
        self._unregister()

    def on_failure(self, *exc_info: Any) -> None:
        reason = f"shape consumer crashed: {exc_info[1]!r}"
        self._waiters.complete_all(WaitResult("stopped", reason=reason))
        self._unregister()
        self._on_invalidate(self.handle, reason)

    # -- dispatch -----------------------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case ShapeChanges():
                if self._failed is None:
                    queued = self.take_queued(_ROUTED)
                    if queued:
                        self._batch(flatten_routed((message,), queued))
                    else:
                        self._guarded(self._state.changes, message)
            case ShapeBatch(messages):
                if self._failed is None:
                    queued = self.take_queued(_ROUTED)
                    self._batch(flatten_routed(messages, queued) if queued else messages)
            case ShapeRun():
                if self._failed is None:
                    self._batch(flatten_routed((message,), self.take_queued(_ROUTED)))
            case StorageDurable(offset):
                self._report(self._direct.stored(offset))
            case AwaitData(after, future, deadline):
                self._await(after, future, deadline)
            case CancelWait(future):
                self._waiters.cancel(id(future))
            case PrepareSnapshot():
                if self._failed is None:
                    self._register()
                return self._must_see  # again to a worker that retries on a new connection
            case SnapshotStarted(snapshot, wal_lsn):
                if self._failed is None:
                    self._must_see = ()
                    self._collector.tell(ForgetVisible(snapshot))
                    self._guarded(self._state.snapshot_known, snapshot, wal_lsn)
            case SnapshotProgress():
                self._notify()
            case SnapshotCompleted(rows):
                logger.debug("%s: snapshot complete (%d rows)", self, rows)
                self._notify()
            case SnapshotFailed(reason):
                self._fail(f"snapshot failed: {reason}")
            case RotateShape(reason, delete_log):
                self._rotate(reason, delete_log=delete_log)
            case GetConsumerInfo():
                return self._info()
            case _:
                msg = f"{self}: unexpected message {message!r}"
                raise TypeError(msg)
        return None

    # -- transactions -------------------------------------------------------------------------------------

    def _guarded(self, step: Callable[..., list[Action]], *args: Any) -> None:
        try:
            actions = step(*args)
        except _INVALIDATING as exc:
            self._fail(str(exc))
            return
        self._apply(actions)

    def _batch(self, messages: tuple[ShapeChanges | ShapeRun, ...]) -> None:
        try:
            actions = self._state.changes_batch(messages)
        except _INVALIDATING as exc:
            self._fail(str(exc))
            return
        self._apply(actions)

    def _apply(self, actions: list[Action]) -> None:
        parts: list[tuple[Sequence[AppendItem], bool]] = []
        settle = 0
        completed = False
        for action in actions:
            if isinstance(action, CommitEmpty):
                if self._sink is not None:
                    settle = action.commit_lsn  # the storage settles it after what precedes it
                else:
                    settled = self._direct.settle_empty(action.commit_lsn, self._appended)
                    if settled is not None:
                        self._report(settled)
                continue
            if action.items:
                self._txn_last = action.items[-1].offset
            parts.append(action)  # an (items, complete) pair
            if action.complete:
                completed = True
                self._appended = self._txn_last
                self._txn_last = None
        if not parts and not settle:
            return
        msg = AppendBatch(tuple(parts), settle)
        if completed and len(self._waiters):
            self._storage.ask(msg, timeout=self._timeout)  # written (readable) when it returns
            self._notify()
        else:
            self._storage.tell(msg)
        if self._size is not None and self._reader is not None and (why := self._size.due(self._reader)):
            self._fail(why)

    def _report(self, offset: LogOffset) -> None:
        if self._failed is None:
            self._collector.tell(ShapeDurable(self.handle, offset))

    # -- waiters ------------------------------------------------------------------------------------------

    def _readable(self) -> LogOffset:
        """The latest readable offset: the log's latest once the snapshot is complete, else the end of the
        last closed snapshot chunk (``0_k``), else ``-1``."""
        reader = self._reader
        if reader is None:
            return LogOffset.BEFORE_ALL
        try:
            if reader.snapshot_complete:
                return reader.latest_offset()
            chunks = reader.snapshot_chunks
        except ShapeGone:
            return LogOffset.BEFORE_ALL
        return LogOffset.snapshot_chunk(chunks - 1) if chunks else LogOffset.BEFORE_ALL

    def _await(self, after: LogOffset, future: Waiter, deadline: float) -> None:
        if self._failed is not None:
            future.set(WaitResult("rotated", reason=self._failed))
            return
        latest = self._readable()
        if latest <= after and self._appended is not None and self._appended > after:
            self._storage.ask(GetReader(), timeout=self._timeout)  # barrier: in-flight appends land
            latest = self._readable()
        if latest > after:
            future.set(WaitResult("data", latest))
            return
        self._waiters.prune(time.monotonic())
        self._waiters.add(id(future), after, future, deadline)

    def _snapshot_complete(self) -> bool:
        try:
            return self._reader is not None and self._reader.snapshot_complete
        except ShapeGone:
            return False

    def _notify(self) -> None:
        if len(self._waiters):
            self._waiters.notify(self._readable())

    # -- end of the shape ---------------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        if self._failed is not None:
            return
        logger.warning("shape %s must be invalidated: %s", self.handle, reason)
        self._failed = reason
        # First: the cache withdraws the handle before returning, so a waiter woken below that looks the
        # definition up again never finds the handle it must drop.
        self._on_invalidate(self.handle, reason)
        self._waiters.complete_all(WaitResult("rotated", reason=reason))
        self._unregister()

    def _rotate(self, reason: str, *, delete_log: bool) -> None:
        self._failed = self._failed or reason
        self._waiters.complete_all(WaitResult("rotated", reason=reason))
        self._unregister()
        if delete_log:
            self._storage.ask(DeleteLog(), timeout=self._timeout)

    def _register(self) -> None:
        if self._registered:
            return  # re-registering would make the collector forget what this shape still owes
        self._registered = True
        relation = self._definition.relation
        message = RegisterShape(self.handle, relation, self._clause, self.actor_ref, self._stored is None)
        answer = cast("Registered", self._collector.ask(message, timeout=self._timeout))
        if answer.reports is not None:
            self._sink = answer.reports
            self._storage.tell(ReportTo(self.handle, answer.reports.report))
        self._must_see = answer.routed

    def _unregister(self) -> None:
        try:
            self._collector.tell(UnregisterShape(self.handle))
        except pykka.ActorDeadError:
            logger.debug("%s: collector already stopped", self)

    def _info(self) -> ConsumerInfo:
        assert self._reader is not None
        return ConsumerInfo(
            self.handle,
            self._reader,
            self._snapshot_complete(),
            self._state.held_transactions,
            len(self._waiters),
            self._failed,
        )
