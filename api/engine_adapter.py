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
existing shape costs two dict lookups before its read, and the resolver keeps each shape's schema header.
Subset snapshots (spec §9) are the port's methods in :mod:`api.engine_subsets`, which the adapter inherits.
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
    SnapshotFailed,
    StackNotReady,
    WaitOutcome,
)
from api.engine_subsets import EngineSubsets
from sync.engine import Engine
from sync.offsets import LogOffset
from sync.shapes.cache import DeleteShape, ShapeResult, get_or_create_shape
from sync.shapes.definition import ShapeDefinition as SyncDefinition
from sync.shapes.directory import LiveShape
from sync.shapes.resolver import CatalogUnavailable, ShapeRequest, ShapeRequestError
from sync.shapes.shared_waits import SharedWaiter, SharedWaits
from sync.stack import SHAPE_CACHE
from sync.storage.errors import ShapeGone as StorageShapeGone
from sync.storage.items import ChunkRead

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


class EngineShapes(EngineSubsets):
    """Implements the ShapeEngine port for one running :class:`~sync.engine.Engine`; its subset methods
    (``subset_snapshot``, ``subset_repeat``, ``close``) are :class:`~api.engine_subsets.EngineSubsets`'s."""

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
        self._init_subsets(engine)

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
        result = self._create(defn)
        if result.shape is None:
            logger.warning("creating a shape for %s failed: %s", defn.relation, result.error)
            # The cached definition may be stale (a dropped table sends no Relation message): check the
            # catalog again, so that a table that is gone is the 400 it is for a new client, not a 503 retry,
            # and a table created again under its name (another OID) gets its shape now.
            self._memo.pop(definition, None)
            self._services.resolver.forget(defn.schema, defn.table)
            fresh = self._definition(definition)
            if fresh != defn:
                result = self._create(fresh)
        if result.shape is None:
            raise ShapeCreationFailed(result.error or "unknown error")
        return result.shape.handle

    def _create(self, defn: SyncDefinition) -> ShapeResult:
        try:
            # Builds run outside the cache's inbox, so creations of different shapes proceed in parallel.
            return get_or_create_shape(self._cache(), defn, self._timeout)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            logger.warning("creating a shape failed: %r", exc)
            raise ShapeCreationFailed(str(exc)) from None

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

    def global_last_seen_lsn(self) -> int:
        # Every shape's log holds every transaction up to the position the collector acknowledged (in this
        # run), or the reader reports to Postgres as flushed (with nothing pending, the server's own
        # position; in an earlier run too): a client may retire a subset snapshot there (spec §10).
        positions = self._engine.connection.status.wal_positions()
        acknowledged = positions[0] if positions is not None else 0
        return max(self._services.durable_lsn, acknowledged)
