"""The :class:`~api.engine_port.ShapeEngine` port over the real engine.

Why it lives in ``api/``: imports flow ``api -> sync``; the port's errors are the API's, so the adapter that
raises them belongs here.  Every request calls it from its own greenlet:

* lookups (handle -> shape, definition -> handle) read the ShapeDirectory the ShapeCache publishes, never
  asking an actor; only creating or deleting a shape asks the cache;
* reads go straight to the shape's storage reader (lock-free, the writer is never involved);
* a live wait is a membership in one registration parked in the shape's consumer, shared by every request
  waiting past the same offset (:mod:`sync.shapes.shared_waits`), so a waiting request holds no actor busy
  and a change wakes them all with one event.

Request definitions are memoised (text -> validated definition) for a short time, so a live request for an
existing shape costs two dict lookups before its read.  Subsets reuse their validated plans
(:mod:`sync.shapes.subset_plan`), per handle the fact that the shape's snapshot has started is kept, and the
resolver keeps each shape's schema header.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import orjson
import pykka

from api.engine_port import (
    DatabaseUnreachable,
    EngineStatus,
    InvalidRequest,
    LogChunk,
    ShapeCreationFailed,
    ShapeDefinition,
    ShapeGone,
    SnapshotBusy,
    SnapshotFailed,
    StackNotReady,
    SubsetSnapshot,
    WaitOutcome,
)
from api.subset import InvalidSubset
from sync.engine import Engine
from sync.offsets import LogOffset
from sync.postgres.inspector import TableInfo
from sync.shapes.cache import DeleteShape, get_or_create_shape
from sync.shapes.definition import ShapeDefinition as SyncDefinition
from sync.shapes.directory import LiveShape
from sync.shapes.resolver import CatalogUnavailable, ShapeRequest, ShapeRequestError
from sync.shapes.shared_waits import SharedWaiter, SharedWaits
from sync.shapes.subset import SubsetError, SubsetRequest
from sync.shapes.subset_plan import KeptPlan, PlannedQuery, SubsetPlans
from sync.shapes.subset_runner import SubsetBusy, SubsetQueryFailed, SubsetRunner
from sync.stack import SHAPE_CACHE
from sync.storage.errors import ShapeGone as StorageShapeGone
from sync.storage.items import ChunkRead
from sync.where import WhereClause, WhereError, compile_where

__all__ = ["EngineShapes"]

logger = logging.getLogger(__name__)

JOIN_WINDOW = 1.0  # s: how long a shared live wait accepts new members (sync/shapes/shared_waits.py)
_OUTCOMES = {"data": WaitOutcome.NEW_DATA, "rotated": WaitOutcome.ROTATED, "stopped": WaitOutcome.STOPPED}


class _Waiter:
    """A :class:`~api.engine_port.ChangeWaiter` over a SharedWaiter."""

    __slots__ = ("_waiter",)

    def __init__(self, waiter: SharedWaiter) -> None:
        self._waiter = waiter

    def wait(self, timeout: float) -> WaitOutcome:
        result = self._waiter.wait(timeout)
        if result is None:
            return WaitOutcome.TIMEOUT
        return _OUTCOMES[result.outcome]

    def cancel(self) -> None:
        self._waiter.cancel()


class EngineShapes:
    """Implements the ShapeEngine port for one running :class:`~sync.engine.Engine`."""

    def __init__(
        self,
        engine: Engine,
        *,
        ask_timeout: float = 30.0,
        memo_size: int = 10_000,
        memo_ttl: float = 30.0,
        snapshot_wait: float = 60.0,
    ) -> None:
        self._engine = engine
        self._services = engine.services
        self._timeout = ask_timeout
        self._memo: OrderedDict[ShapeDefinition, tuple[float, SyncDefinition]] = OrderedDict()
        self._memo_size = memo_size
        self._memo_ttl = memo_ttl
        self._snapshot_wait = snapshot_wait
        # A request waits at most max(long_poll_timeout, 5 s) (read() waits out a snapshot in 5 s steps): a
        # group joined up to JOIN_WINDOW after its registration still outlives every member's wait.
        budget = max(engine.settings.http.long_poll_timeout_ms / 1000, 5.0) + JOIN_WINDOW + 1
        self._waits = SharedWaits(budget=budget, join_window=JOIN_WINDOW)
        self._wheres: OrderedDict[str, WhereClause] = OrderedDict()
        self._plans = SubsetPlans()
        # per handle: the shape seen with its snapshot started (a started snapshot stays started)
        self._started: OrderedDict[str, LiveShape] = OrderedDict()
        db = engine.settings.database
        self._subsets = SubsetRunner(
            engine.settings.snapshot_dsn,
            size=db.snapshot_pool_size,
            queue_timeout=db.snapshot_queue_timeout_s,
            statement_timeout=db.statement_timeout_s,
        )

    # -- definitions ----------------------------------------------------------------------------------

    def _definition(self, d: ShapeDefinition) -> SyncDefinition:
        now = time.monotonic()
        hit = self._memo.get(d)
        if hit is not None and now - hit[0] < self._memo_ttl:
            return hit[1]
        request = ShapeRequest(d.table, d.where, d.params, d.columns, d.replica, d.log_mode)
        try:
            definition, _ = self._services.resolver.resolve(request)
        except ShapeRequestError as exc:
            raise InvalidRequest(exc.errors) from None
        except CatalogUnavailable as exc:
            logger.warning("catalog unavailable: %s", exc)
            raise DatabaseUnreachable(str(exc)) from None
        self._memo[d] = (now, definition)
        self._memo.move_to_end(d)
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return definition

    def _shape(self, handle: str) -> LiveShape:
        shape = self._services.directory.get(handle)
        if shape is None:
            raise ShapeGone(handle)
        return shape

    def _cache(self) -> pykka.ActorRef[Any]:
        ref = self._services.registry.whereis(SHAPE_CACHE)
        if ref is None:
            raise StackNotReady("Stack not ready: the shape subsystem is restarting")
        return ref

    # -- the port -------------------------------------------------------------------------------------

    def status(self) -> EngineStatus:
        state = self._engine.status()
        return "active" if state == "active" else "waiting" if state == "waiting" else "starting"

    def find(self, definition: ShapeDefinition) -> str | None:
        shape = self._services.directory.find(self._definition(definition))
        return shape.handle if shape is not None else None

    def get_or_create(self, definition: ShapeDefinition) -> str:
        defn = self._definition(definition)
        directory = self._services.directory
        shape = directory.find(defn)
        if shape is not None:
            directory.touch(shape.handle)
            return shape.handle
        if self._engine.status() != "active":
            raise StackNotReady("Stack not ready: waiting for the replication stream")
        try:
            # Builds run outside the cache's inbox, so creations of different shapes proceed in parallel.
            result = get_or_create_shape(self._cache(), defn, self._timeout)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            logger.warning("creating a shape failed: %r", exc)
            raise ShapeCreationFailed(str(exc)) from None
        if result.shape is None:
            logger.warning("creating a shape for %s failed: %s", defn.relation, result.error)
            # The cached definition may be stale (a dropped table sends no Relation message): check the
            # catalog again so that a table that is gone is the 400 it is for a new client, not a 503 retry.
            self._memo.pop(definition, None)
            self._services.resolver.forget(defn.schema, defn.table)
            self._definition(definition)
            raise ShapeCreationFailed(result.error or "unknown error")
        return result.shape.handle

    def exists(self, handle: str) -> bool:
        return self._services.directory.get(handle) is not None

    def delete(self, handle: str) -> bool:
        try:
            return bool(self._cache().ask(DeleteShape(handle), timeout=self._timeout))
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            raise StackNotReady(f"Stack not ready: {exc}") from None

    def latest_offset(self, handle: str) -> LogOffset:
        shape = self._shape(handle)
        try:
            return shape.reader.latest_offset()
        except StorageShapeGone:
            raise ShapeGone(handle) from None

    def read(self, handle: str, offset: LogOffset, *, per_item: bool = False) -> LogChunk:
        if not per_item and (
            offset.is_before_all or (offset.is_snapshot and offset != LogOffset.SNAPSHOT_END)
        ):
            # a large closed snapshot chunk is not read here: its pieces are where it lies (FileRange), which
            # our server sends with sendfile and anything else reads when iterating them
            chunk, latest = self._ready_chunk(handle, offset, body=False)
            if chunk.snapshot and chunk.count:
                try:
                    where = self._shape(handle).reader.snapshot_range(offset)
                except StorageShapeGone:
                    raise ShapeGone(handle) from None
                if where is not None:
                    end = chunk.end_offset
                    return LogChunk(
                        end_offset=end, latest_offset=max(latest, end), is_empty=False, pieces=where
                    )
        chunk, latest = self._ready_chunk(handle, offset, body=True)
        pieces: list[bytes]
        if chunk.count == 0:
            pieces = []
        elif per_item:
            pieces = [orjson.dumps(item) for item in orjson.loads(b"[" + chunk.body + b"]")]
        else:
            pieces = [chunk.body]
        end = chunk.end_offset
        return LogChunk(
            end_offset=end, latest_offset=max(latest, end), is_empty=chunk.count == 0, pieces=pieces
        )

    def await_snapshot_start(self, handle: str) -> None:
        self._ready_chunk(handle, LogOffset.BEFORE_ALL, body=False)

    def _ready_chunk(self, handle: str, offset: LogOffset, *, body: bool) -> tuple[ChunkRead, LogOffset]:
        """The chunk after ``offset`` and the latest offset, once that chunk is complete (bounded wait)."""
        shape = self._shape(handle)
        deadline = time.monotonic() + self._snapshot_wait
        while True:
            try:
                chunk = shape.reader.read_chunk(offset, body=body)
                latest = shape.reader.latest_offset()
            except StorageShapeGone:
                raise ShapeGone(handle) from None
            if chunk.ready:
                return chunk, latest
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SnapshotFailed("Timed out waiting for the shape's snapshot, please retry")
            outcome = self.wait_for_change(handle, offset).wait(min(remaining, 5.0))
            if outcome is WaitOutcome.ROTATED:
                reason = self._services.directory.rotation_reason(handle) or ""
                if reason.startswith("snapshot failed"):
                    # The client did nothing wrong and a retry may well succeed: 503, not 409 (spec §2).
                    raise SnapshotFailed(f"Snapshot query failed, please retry ({reason})")
                raise ShapeGone(handle)
            if outcome is WaitOutcome.STOPPED:
                raise StackNotReady("Stack not ready: the shape is restarting")

    def schema_header(self, handle: str) -> str:
        shape = self._shape(handle)
        try:
            return self._services.resolver.schema_header(shape.definition)
        except CatalogUnavailable as exc:
            raise DatabaseUnreachable(str(exc)) from None
        except LookupError:
            raise ShapeGone(handle) from None

    def wait_for_change(self, handle: str, offset: LogOffset) -> _Waiter:
        shape = self._shape(handle)
        try:
            return _Waiter(self._waits.join(shape.consumer, offset))
        except pykka.ActorDeadError:
            raise ShapeGone(handle) from None

    def subset_snapshot(
        self,
        handle: str,
        subset: SubsetRequest,
        *,
        request_offset: LogOffset | None,
        queryable_columns: tuple[str, ...] | None = None,
    ) -> SubsetSnapshot:
        shape = self._shape(handle)
        defn = shape.definition
        try:
            info = self._services.resolver.table(defn.schema, defn.table)
        except CatalogUnavailable as exc:
            raise DatabaseUnreachable(str(exc)) from None
        except LookupError:
            raise ShapeGone(handle) from None
        if info.oid != defn.relation_oid:
            raise ShapeGone(handle)
        if queryable_columns is not None:
            missing = [c for c in info.pk if c not in queryable_columns]
            if missing:
                msg = "The list of queryable columns must include all primary key columns, missing: "
                raise InvalidRequest({"queryable_columns": [msg + ", ".join(missing)]})
        try:
            planned = self._plans.plan(
                handle, defn, self._shape_where(handle, defn, info), info, queryable_columns, subset
            )
        except SubsetError as exc:
            raise InvalidSubset(exc.errors) from None
        # The shape's own snapshot must have been taken before the subset's: for a new shape, a transaction
        # committed between the two would otherwise be neither in the subset nor in the log.
        if self._started.get(handle) is not shape:
            self.await_snapshot_start(handle)
            _remember(self._started, handle, shape, self._memo_size)
        try:
            latest = shape.reader.latest_offset()  # before the subset's snapshot: the log so far is covered
        except StorageShapeGone:
            raise ShapeGone(handle) from None
        return self._run_subset(planned, defn, latest, request_offset)

    def _run_subset(
        self, planned: PlannedQuery, defn: SyncDefinition, latest: LogOffset, request_offset: LogOffset | None
    ) -> SubsetSnapshot:
        """Run a planned subset query (taken after ``latest``, the shape's latest offset): its answer, echoing
        the client's own offset if it has one."""
        try:
            result = self._subsets.run(planned.query, planned.params, defn)
        except SubsetBusy:
            raise SnapshotBusy from None
        except SubsetQueryFailed as exc:
            raise SnapshotFailed(f"Subset snapshot failed: {exc}") from None
        offset = request_offset if request_offset is not None else latest
        # the statement's end is read once the answer has left (sync/shapes/subset_hot.py)
        return SubsetSnapshot(body=result.body(), offset=offset, after=self._subsets.settle_pending)

    def subset_repeat(
        self,
        handle: str,
        subset: SubsetRequest,
        *,
        request_offset: LogOffset | None,
        queryable_columns: tuple[str, ...] | None = None,
    ) -> SubsetRepeat | None:
        """What :meth:`subset_snapshot` checked and planned for this request shape, kept for its repeats
        (called after it succeeded); None when there is nothing to keep."""
        shape = self._services.directory.get(handle)
        if shape is None or self._started.get(handle) is not shape:
            return None
        defn = shape.definition
        try:
            info = self._services.resolver.table(defn.schema, defn.table)
        except (CatalogUnavailable, LookupError):
            return None
        plan = self._plans.kept(handle, info, queryable_columns, subset)
        if plan is None:
            return None
        return SubsetRepeat(self, handle, shape, plan, request_offset)

    def _shape_where(self, handle: str, defn: SyncDefinition, info: TableInfo) -> WhereClause | None:
        """The shape's compiled WHERE, kept per handle (a handle's definition never changes)."""
        if defn.where is None:
            return None
        clause = self._wheres.get(handle)
        if clause is None:
            try:
                clause = compile_where(defn.where, info, {i + 1: v for i, v in enumerate(defn.params)})
            except WhereError:  # the table changed under the shape: it is being invalidated
                raise ShapeGone(handle) from None
            _remember(self._wheres, handle, clause, self._memo_size)
        return clause

    def close(self) -> None:
        """Close the subset connections (the engine's own resources are stopped with the engine)."""
        self._subsets.close()

    def global_last_seen_lsn(self) -> int:
        # Everything before the flush position acknowledged to Postgres was processed (in this run or an
        # earlier one), so it is a floor: right after a restart no transaction has been routed yet.
        positions = self._engine.connection.status.wal_positions()
        acknowledged = positions[0] if positions is not None else 0
        return max(self._services.last_seen_lsn, acknowledged)


class SubsetRepeat:
    """A repeated subset's :meth:`EngineShapes.subset_snapshot`: the checks that can change between
    requests, made again (the shape is still the handle's, the catalog entry still the plan's), then the
    plan bound and run.  ``__call__`` answers None whenever one fails: the full path then answers, with
    its own error if there is one."""

    __slots__ = ("_directory", "_handle", "_offset", "_plan", "_resolver", "_run", "_shape")

    def __init__(
        self, adapter: EngineShapes, handle: str, shape: LiveShape, plan: KeptPlan, offset: LogOffset | None
    ) -> None:
        self._directory = adapter._services.directory
        self._resolver = adapter._services.resolver
        self._run = adapter._run_subset
        self._handle, self._shape, self._plan, self._offset = handle, shape, plan, offset

    def __call__(self, params: str) -> SubsetSnapshot | None:
        shape, defn = self._shape, self._shape.definition
        if self._directory.get(self._handle) is not shape:
            return None
        try:
            if self._resolver.table(defn.schema, defn.table) is not self._plan.table:
                return None
        except (CatalogUnavailable, LookupError):
            return None
        self._directory.touch(self._handle)
        planned = self._plan.bind(params)
        if planned is None:
            return None
        try:
            latest = shape.reader.latest_offset()  # before the subset's snapshot (as subset_snapshot)
        except StorageShapeGone:
            return None
        return self._run(planned, defn, latest, self._offset)


def _remember(cache: OrderedDict[str, Any], key: str, value: Any, size: int) -> None:
    """Put ``key`` in a bounded per-handle cache (oldest first out)."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
