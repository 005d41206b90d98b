"""``ShapeCache``: definition -> handle; creates, reloads, invalidates, deletes and evicts shapes.

Creating a shape (all inside one handler, so concurrent requests for one new definition create it once):
publish its table (``REPLICA IDENTITY FULL``, through the PublicationManager), create its log, start its
subtree under the ShapeSupervisor (storage, then the consumer, which registers with the collector *before*
it asks the SnapshotPool for its snapshot: hard spot 3), publish it in the :class:`ShapeDirectory`.

Persistence: a shape's log metadata holds its handle, definition and snapshot visibility, so the storage
directory is the shape index; the WAL position read with each snapshot is kept in the small
:class:`~sync.shapes.snapshot_marks.SnapshotMarks` journal next to it.  On start the cache reopens every log
(a torn tail is trimmed; a log whose snapshot never completed, that is damaged or has no mark is deleted:
clients get 409 and a new shape) and restarts each consumer from its last transaction; Postgres resends
from the acknowledged LSN and the consumers skip what they already have.

Invalidation (TRUNCATE, schema change, a consumer that cannot continue, a re-created slot) withdraws the
handle (clients get 409 and re-create the shape from its definition under a new handle), wakes its waiters
with ``rotated``, deletes its log and stops its subtree, in that order: a woken waiter looks the definition
up again and must never find the old handle.  An invalidation reported from another thread (a consumer,
a storage monitor, the schema checker: ``invalidate(handle, reason)``) therefore withdraws the handle
before it returns, and the inbox does the rest (``_Withdrawn``).  With ``max_shapes`` set, creating one
more shape evicts the least recently used one the same way.

Creation runs outside the cache's inbox (``CreateShape``, through :func:`get_or_create_shape`): the cache
reserves the definition, a worker does the slow part (catalog, publication, log files, subtree start), and
every request for that definition gets the same result; many shapes are thus created at once.

The ShapeSupervisor must be started before the cache (the cache starts shape subtrees from ``on_start``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pykka

from supervisors import Down, Monitor, SupervisedActor, describe_reason, monitor, terminate_child
from sync import runtime
from sync.replication.changes import RelationChanged, SlotRecreated
from sync.shapes.consumer import RotateShape
from sync.shapes.definition import HandleClock, ShapeDefinition
from sync.shapes.directory import LiveShape, ShapeDirectory
from sync.shapes.invalidation import CompiledShape, relation_change_reason
from sync.shapes.schema_check import (
    ColumnTypes,
    SchemaCatalog,
    column_types_from_meta,
)
from sync.shapes.schema_checker import SchemaChecker
from sync.shapes.shape_supervisor import ShapeWiring, build_shape, start_shape
from sync.shapes.snapshot_marks import SnapshotMarks, marks_path
from sync.shapes.snapshot_pool import StartSnapshot
from sync.shapes.snapshot_worker import SnapshotRequest
from sync.shapes.stored import changed_while_down, stored_shape
from sync.storage.errors import ShapeMustBeRecreated
from sync.storage.storage import Storage
from sync.storage.storage_actor import Tick
from sync.storage.ticker import FlushTicker

__all__ = [
    "CacheSettings",
    "CheckSchemas",
    "CreateShape",
    "DeleteShape",
    "GetShape",
    "InvalidateShape",
    "ListShapes",
    "ShapeCache",
    "ShapeResult",
    "get_or_create_shape",
]

logger = logging.getLogger(__name__)

Publish = Callable[[ShapeDefinition, str], str | None]  # error message or None
Unpublish = Callable[[ShapeDefinition, str], None]


# -- messages ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateShape:
    """ask -> ShapeResult | pykka.Future[ShapeResult]: the live shape for ``definition``, or a future of the
    result of building it (snapshot started) outside the cache's inbox; use :func:`get_or_create_shape`."""

    definition: ShapeDefinition


@dataclass(frozen=True, slots=True)
class _Built:
    """tell (creation worker -> cache): the outcome of building ``handle``."""

    definition: ShapeDefinition
    handle: str
    outcome: tuple[LiveShape, pykka.ActorRef[Any]] | str


@dataclass(slots=True)
class _Pending:
    handle: str
    futures: list[pykka.ThreadingFuture[ShapeResult]]


@dataclass(frozen=True, slots=True)
class ShapeResult:
    shape: LiveShape | None
    created: bool = False
    error: str | None = None  # why the shape could not be created (publication, storage, start failure)


@dataclass(frozen=True, slots=True)
class GetShape:
    """ask -> LiveShape | None."""

    handle: str


@dataclass(frozen=True, slots=True)
class DeleteShape:
    """ask -> bool: delete the shape (waiters complete with ``rotated``); False if unknown."""

    handle: str
    reason: str = "deleted"


@dataclass(frozen=True, slots=True)
class InvalidateShape:
    """tell/ask -> bool: the shape cannot continue (consumer, collector overload, schema change)."""

    handle: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Withdrawn:
    """tell (any thread -> cache): ``shape`` was withdrawn from the directory for ``reason``: remove it."""

    shape: LiveShape
    reason: str


@dataclass(frozen=True, slots=True)
class ListShapes:
    """ask -> list[LiveShape]."""


@dataclass(frozen=True, slots=True)
class CheckSchemas:
    """tell: compare every live shape with the catalog now (off the inbox); mismatches are invalidated."""


@dataclass(frozen=True, slots=True)
class CacheSettings:
    max_shapes: int = 0  # 0: unlimited
    max_held: int = 10_000  # transactions a consumer may hold while its snapshot starts
    max_held_changes: int = 1_000_000  # and changes
    flush_bytes: int = 64 * 1024
    flush_interval: float = 0.05
    ask_timeout: float = 30.0
    max_parallel_builds: int = 16  # new shapes built at once (CreateShape)
    schema_check_interval: float = 10.0  # seconds between catalog checks (dropped/renamed tables); 0: never


# -- the actor --------------------------------------------------------------------------------------------


class ShapeCache(SupervisedActor):
    """The registry of a stack's shapes (see the module docstring).

    Owns:       the live shapes (with the ShapeDirectory it publishes), the shapes being built, the
                HandleClock, the SnapshotMarks journal, a monitor per shape subtree, the stack's
                FlushTicker (one flush timer shared by every shape's StorageActor).
    Receives:   CreateShape (ask) -> ShapeResult | Future[ShapeResult]; GetShape (ask) -> LiveShape | None;
                DeleteShape (ask) -> bool; InvalidateShape (tell/ask) -> bool; RelationChanged, SlotRecreated
                (tell, from the collector's callbacks; SlotRecreated also ask, from the HistoryGuard: returns
                once every shape is removed); ListShapes (ask) -> list[LiveShape]; CheckSchemas (tell, also
                from requests that find a table missing); _Built (tell, from its creation workers);
                _Withdrawn (tell, from ``invalidate`` on any thread).
    Sends:      ``publish``/``unpublish`` (the PublicationManager); start_child / terminate_child to the
                ShapeSupervisor; RotateShape (ask) to consumers; StartSnapshot (tell, via consumers) to the
                SnapshotPool.
    Crashes on: storage I/O errors while reloading; ask timeouts of the ShapeSupervisor.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        shape_supervisor: pykka.ActorRef[Any],
        collector: pykka.ActorRef[Any],
        snapshot_pool: pykka.ActorRef[Any],
        compile_shape: Callable[[ShapeDefinition], CompiledShape],
        publish: Publish | None = None,
        unpublish: Unpublish | None = None,
        directory: ShapeDirectory | None = None,
        settings: CacheSettings | None = None,
        marks: SnapshotMarks | None = None,
        catalog: SchemaCatalog | None = None,
        forget_table: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__()
        self._storage = storage
        self._sup = shape_supervisor
        self._collector = collector
        self._pool = snapshot_pool
        self._compile = compile_shape
        self._publish = publish
        self._unpublish = unpublish
        self.directory = directory if directory is not None else ShapeDirectory()
        self._settings = settings or CacheSettings()
        self._clock = HandleClock()
        self._marks = marks if marks is not None else SnapshotMarks(marks_path(storage))
        self._monitors: dict[str, Monitor] = {}
        self._pending: dict[ShapeDefinition, _Pending] = {}
        self._doomed: dict[str, str] = {}  # handles invalidated while still being built
        self._queued: deque[tuple[str, ShapeDefinition]] = deque()  # builds waiting for a free slot
        self._building = 0
        self._checker = (
            SchemaChecker(catalog, self._settings.schema_check_interval, self._invalidate_later, forget_table)
            if catalog is not None
            else None
        )
        self._types: dict[str, ColumnTypes] = {}  # handle -> column types when created (schema checks)
        s = self._settings
        self._ticker = FlushTicker(s.flush_interval, Tick(), name="shape-flush-ticker")
        self._wiring = ShapeWiring(
            storage,
            shape_supervisor,
            collector,
            self._start_snapshot,
            self._invalidate_later,
            self._marks.record,
            max_held=s.max_held,
            max_held_changes=s.max_held_changes,
            flush_bytes=s.flush_bytes,
            flush_interval=s.flush_interval,
            ask_timeout=s.ask_timeout,
            ticker=self._ticker,
        )

    def on_start(self) -> None:
        self._ticker.start()
        self._reload()
        if self._checker is not None:
            self._checker.start(self._tell_check)

    def on_failure(self, *exc_info: Any) -> None:
        self._stop_background()

    def on_stop(self) -> None:
        # Shapes still running flush their logs when they stop (right after the cache, in reverse order).
        self._stop_background()
        self._marks.close()
        for pending in self._pending.values():
            for future in pending.futures:
                future.set(ShapeResult(None, error="the shape cache stopped"))
        self._pending.clear()

    def on_receive(self, message: Any) -> Any:
        match message:
            case CreateShape(definition):
                return self._create_async(definition)
            case _Built(definition, handle, outcome):
                self._built(definition, handle, outcome)
            case GetShape(handle):
                return self.directory.get(handle)
            case DeleteShape(handle, reason):
                return self._remove(handle, reason)
            case InvalidateShape(handle, reason):
                return self._remove(handle, reason)
            case _Withdrawn(shape, reason):
                self._dispose(shape, reason)
            case RelationChanged():
                self._relation_changed(message)
            case SlotRecreated(slot, reason):
                for handle in self.directory.handles():
                    self._remove(handle, f"replication slot {slot} re-created: {reason}")
            case ListShapes():
                return [s for h in self.directory.handles() if (s := self.directory.get(h)) is not None]
            case CheckSchemas():
                if self._checker is not None:
                    live = (self.directory.get(h) for h in self.directory.handles())
                    self._checker.run([(s.handle, s.definition) for s in live if s is not None], self._types)
            case _:
                msg = f"{type(self).__name__}: unexpected message {message!r}"
                raise TypeError(msg)
        return None

    # -- creation -----------------------------------------------------------------------------------------

    def _existing(self, definition: ShapeDefinition) -> LiveShape | None:
        existing = self.directory.find(definition)
        if existing is not None:
            self.directory.touch(existing.handle)
        return existing

    def _make_room(self) -> None:
        limit = self._settings.max_shapes
        while limit and len(self.directory) + len(self._pending) >= limit:
            victim = self.directory.least_recently_used()
            if victim is None or not self._remove(victim, "evicted (least recently used)"):
                break

    def _create_async(self, definition: ShapeDefinition) -> ShapeResult | pykka.ThreadingFuture[ShapeResult]:
        existing = self._existing(definition)
        if existing is not None:
            return ShapeResult(existing)
        future: pykka.ThreadingFuture[ShapeResult] = pykka.ThreadingFuture()
        pending = self._pending.get(definition)
        if pending is not None:
            pending.futures.append(future)
            return future
        self._make_room()
        handle = self._clock.new_handle(definition)
        self._pending[definition] = _Pending(handle, [future])
        self._queued.append((handle, definition))
        self._start_builds()
        return future

    def _start_builds(self) -> None:
        while self._queued and self._building < self._settings.max_parallel_builds:
            handle, definition = self._queued.popleft()
            self._building += 1
            runtime.spawn(self._build_and_report, handle, definition, name=f"create-{handle}")

    def _build(self, handle: str, definition: ShapeDefinition) -> tuple[LiveShape, pykka.ActorRef[Any]] | str:
        def compile_shape(d: ShapeDefinition) -> CompiledShape:
            compiled = self._compile(d)
            self._types[handle] = compiled.column_types  # a single dict store: safe from a worker
            return compiled

        return build_shape(
            self._wiring,
            handle,
            definition,
            compile_shape=compile_shape,
            publish=self._publish,
            unpublish=self._unpublish,
        )

    def _build_and_report(self, handle: str, definition: ShapeDefinition) -> None:
        outcome = self._build(handle, definition)  # in a worker: never in the inbox
        try:
            self.actor_ref.tell(_Built(definition, handle, outcome))
        except pykka.ActorDeadError:
            logger.info(
                "shape %s built after the cache stopped; it is reloaded or dropped at restart", handle
            )

    def _built(
        self, definition: ShapeDefinition, handle: str, outcome: tuple[LiveShape, pykka.ActorRef[Any]] | str
    ) -> None:
        self._building -= 1
        self._start_builds()
        pending = self._pending.pop(definition, None)
        futures = pending.futures if pending is not None else []
        if isinstance(outcome, str):
            self._types.pop(handle, None)
            for future in futures:
                future.set(ShapeResult(None, error=outcome))
            return
        shape = self._adopt(*outcome)
        for i, future in enumerate(futures):
            future.set(ShapeResult(shape, created=i == 0))
        doomed = self._doomed.pop(handle, None)
        if doomed is not None:
            self._remove(handle, doomed)

    def _adopt(self, shape: LiveShape, subtree: pykka.ActorRef[Any]) -> LiveShape:
        """Publish a started shape and watch its subtree."""
        handle = shape.handle

        def down(event: Down) -> None:
            if event.reason is not None:  # a normal stop is the cache's or the engine's own doing
                self._invalidate_later(handle, f"shape subtree failed: {describe_reason(event.reason)}")

        self._monitors[handle] = monitor(subtree, down)
        self.directory.publish(shape)
        logger.info("shape %s live for %s.%s", handle, shape.definition.schema, shape.definition.table)
        return shape

    def _start_snapshot(self, request: SnapshotRequest) -> None:
        self._pool.tell(StartSnapshot(request))

    def _invalidate_later(self, handle: str, reason: str) -> None:
        """Invalidate ``handle`` from any thread: withdrawn now, removed by the inbox (module docstring)."""
        shape = self.directory.withdraw(handle, reason)
        message = _Withdrawn(shape, reason) if shape is not None else InvalidateShape(handle, reason)
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            logger.debug("cache stopped: invalidation of %s (%s) dropped", handle, reason)

    # -- reload -------------------------------------------------------------------------------------------

    def _reload(self) -> None:
        self._marks.load()
        handles = self._storage.handles()
        for handle in handles:
            self._clock.observe(handle)
        for handle in handles:
            try:
                writer = self._storage.open(handle)
            except (ShapeMustBeRecreated, OSError) as exc:
                logger.warning("shape %s cannot be resumed (%s): deleted", handle, exc)
                self._storage.delete(handle)
                continue
            try:
                stored_definition = cast("dict[str, Any]", writer.metadata["definition"])
                definition = ShapeDefinition.from_dict(stored_definition)
                compiled = self._compile(definition)
                stored = stored_shape(writer, self._marks.get(handle))
                types = column_types_from_meta(stored_definition.get("column_types"))
                changed = changed_while_down(definition, compiled, types)
                if changed is not None:
                    raise ShapeMustBeRecreated(changed)
            except Exception as exc:  # any doubt about a stored shape: drop it, clients refetch
                logger.warning("shape %s cannot be reloaded (%r): deleted", handle, exc)
                writer.abort()
                self._storage.delete(handle)
                continue
            if types is not None:
                self._types[handle] = types
            if self._publish is not None and (error := self._publish(definition, handle)) is not None:
                logger.warning("shape %s: table not published (%s): deleted", handle, error)
                writer.abort()
                self._storage.delete(handle)
                continue
            try:
                self._adopt(*start_shape(self._wiring, handle, definition, compiled, writer, stored=stored))
            except Exception:
                logger.exception("shape %s: subtree failed to start: deleted", handle)
                self._storage.delete(handle)
                self._release(definition, handle)
        self._marks.compact(self.directory.handles())
        logger.info("reloaded %d of %d stored shapes", len(self.directory), len(handles))

    # -- schema checks (dropped / renamed tables, types; off the inbox) -----------------------------------

    def _stop_background(self) -> None:
        self._ticker.stop()
        if self._checker is not None:
            self._checker.stop()

    def _tell_check(self) -> bool:
        try:
            self.actor_ref.tell(CheckSchemas())
        except pykka.ActorDeadError:
            return False
        return True

    # -- removal ------------------------------------------------------------------------------------------

    def _remove(self, handle: str, reason: str) -> bool:
        shape = self.directory.withdraw(handle, reason)
        if shape is None:
            if any(p.handle == handle for p in self._pending.values()):
                self._doomed[handle] = reason  # removed as soon as it is built
            return False
        self._dispose(shape, reason)
        return True

    def _dispose(self, shape: LiveShape, reason: str) -> None:
        """Wake the waiters of a withdrawn shape (``rotated``), delete its log, stop its subtree."""
        handle = shape.handle
        logger.info("shape %s removed: %s", handle, reason)
        mon = self._monitors.pop(handle, None)
        if mon is not None:
            mon.cancel()
        try:
            shape.consumer.ask(RotateShape(reason, delete_log=True), timeout=self._settings.ask_timeout)
        except pykka.ActorDeadError:
            self._storage.delete(handle)  # the subtree is already gone: remove the log ourselves
        terminate_child(self._sup, handle, timeout=self._settings.ask_timeout)
        self._marks.forget(handle)
        self._types.pop(handle, None)
        self._release(shape.definition, handle)

    def _release(self, definition: ShapeDefinition, handle: str) -> None:
        if self._unpublish is not None:
            self._unpublish(definition, handle)

    def _relation_changed(self, event: RelationChanged) -> None:
        rel = event.relation
        for handle in self.directory.handles():
            shape = self.directory.get(handle)
            if shape is None:
                continue
            d = shape.definition
            if d.relation_oid != rel.oid and (d.schema, d.table) != (rel.schema, rel.name):
                continue
            reason = relation_change_reason(d, rel, event.previous)
            if reason is not None:
                self._remove(handle, reason)


def get_or_create_shape(
    cache: pykka.ActorRef[Any], definition: ShapeDefinition, timeout: float
) -> ShapeResult:
    """The live shape for ``definition``, created if needed (concurrent creations run in parallel).

    Raises ``pykka.Timeout`` / ``pykka.ActorDeadError`` like an ask.
    """
    reply = cache.ask(CreateShape(definition), timeout=timeout)
    if isinstance(reply, pykka.Future):
        reply = reply.get(timeout=timeout)
    assert isinstance(reply, ShapeResult)
    return reply
