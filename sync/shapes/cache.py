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

The messages are in :mod:`sync.shapes.cache_messages` (re-exported here), the creation bookkeeping in
:mod:`sync.shapes.cache_builds`, the reopening of stored logs in :mod:`sync.shapes.cache_reload`, the
judging of a Relation message's shapes (a slice at a time) in :mod:`sync.shapes.cache_relations`.

The ShapeSupervisor must be started before the cache (the cache starts shape subtrees from ``on_start``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pykka

from supervisors import Down, Monitor, SupervisedActor, describe_reason, monitor, terminate_child
from sync import heap, runtime
from sync.replication.changes import RelationChanged, SlotRecreated
from sync.shapes.cache_builds import Builds
from sync.shapes.cache_messages import (
    Built,
    CacheSettings,
    CheckSchemas,
    CreateShape,
    DeleteShape,
    GetShape,
    InvalidateShape,
    ListShapes,
    Publish,
    ShapeResult,
    Unpublish,
    Withdrawn,
    get_or_create_shape,
)
from sync.shapes.cache_relations import broken_shapes
from sync.shapes.cache_reload import RELOAD_KEEPS, DatabaseDown, Reopened, reopen_stored, wait_for_database
from sync.shapes.consumer import RotateShape
from sync.shapes.definition import HandleClock, ShapeDefinition
from sync.shapes.directory import LiveShape, ShapeDirectory
from sync.shapes.invalidation import CompiledShape
from sync.shapes.schema_check import ColumnTypes, SchemaCatalog
from sync.shapes.schema_checker import SchemaChecker
from sync.shapes.shape_supervisor import ShapeWiring, build_shape, start_shape
from sync.shapes.snapshot_marks import SnapshotMarks, marks_path
from sync.shapes.snapshot_messages import SnapshotRequest
from sync.shapes.snapshot_pool import StartSnapshot
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

ShapeFuture = pykka.ThreadingFuture[ShapeResult]


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
                from requests that find a table missing); Built (tell, from its creation workers);
                Withdrawn (tell, from ``invalidate`` on any thread).
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
        self._builds: Builds[ShapeFuture] = Builds(self._settings.max_parallel_builds)
        self._catalog = catalog
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
            self._marks,
            max_held=s.max_held,
            max_held_changes=s.max_held_changes,
            log_rotation=s.log_rotation,
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
        for future in self._builds.drain():
            future.set(ShapeResult(None, error="the shape cache stopped"))

    def on_receive(self, message: Any) -> Any:
        match message:
            case CreateShape(definition):
                return self._create_async(definition)
            case Built(definition, handle, outcome):
                self._built(definition, handle, outcome)
            case GetShape(handle):
                return self.directory.get(handle)
            case DeleteShape(handle, reason):
                return self._remove(handle, reason)
            case InvalidateShape(handle, reason):
                return self._remove(handle, reason)
            case Withdrawn(shape, reason):
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
        while limit and len(self.directory) + len(self._builds) >= limit:
            victim = self.directory.least_recently_used()
            if victim is None or not self._remove(victim, "evicted (least recently used)"):
                break

    def _create_async(self, definition: ShapeDefinition) -> ShapeResult | ShapeFuture:
        existing = self._existing(definition)
        if existing is not None:
            return ShapeResult(existing)
        future: ShapeFuture = pykka.ThreadingFuture()
        if self._builds.join(definition, future):
            return future
        self._make_room()
        self._builds.reserve(self._clock.new_handle(definition), definition, future)
        self._start_builds()
        return future

    def _start_builds(self) -> None:
        for handle, definition in self._builds.startable():
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
            self.actor_ref.tell(Built(definition, handle, outcome))
        except pykka.ActorDeadError:
            logger.info(
                "shape %s built after the cache stopped; it is reloaded or dropped at restart", handle
            )

    def _built(
        self, definition: ShapeDefinition, handle: str, outcome: tuple[LiveShape, pykka.ActorRef[Any]] | str
    ) -> None:
        done = self._builds.finished(definition, handle)
        self._start_builds()
        if isinstance(outcome, str):
            self._types.pop(handle, None)
            for future in done.waiters:
                future.set(ShapeResult(None, error=outcome))
            return
        shape = self._adopt(*outcome)
        for i, future in enumerate(done.waiters):
            future.set(ShapeResult(shape, created=i == 0))
        if done.doomed is not None:
            self._remove(handle, done.doomed)

    def _adopt(self, shape: LiveShape, subtree: pykka.ActorRef[Any]) -> LiveShape:
        """Publish a started shape and watch its subtree."""
        handle = shape.handle

        def down(event: Down) -> None:
            if event.reason is not None:  # a normal stop is the cache's or the engine's own doing
                self._invalidate_later(handle, f"shape subtree failed: {describe_reason(event.reason)}")

        self._monitors[handle] = monitor(subtree, down)
        self.directory.publish(shape)
        heap.shapes_added()  # long-lived objects: frozen at an idle point once enough are added
        logger.info("shape %s live for %s.%s", handle, shape.definition.schema, shape.definition.table)
        return shape

    def _start_snapshot(self, request: SnapshotRequest) -> None:
        self._pool.tell(StartSnapshot(request))

    def _invalidate_later(self, handle: str, reason: str) -> None:
        """Invalidate ``handle`` from any thread: withdrawn now, removed by the inbox (module docstring)."""
        shape = self.directory.withdraw(handle, reason)
        message = Withdrawn(shape, reason) if shape is not None else InvalidateShape(handle, reason)
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
        if handles and self._catalog is not None:
            wait_for_database(self._catalog)
        for shape in reopen_stored(self._storage, handles, self._marks, self._compile, self._catalog):
            self._resume(shape)
        self._marks.compact(self.directory.handles())
        logger.info("reloaded %d of %d stored shapes", len(self.directory), len(handles))

    def _resume(self, shape: Reopened) -> None:
        """Publish a reopened shape's table and start its subtree (its log is deleted if either fails)."""
        handle, definition = shape.handle, shape.definition
        if shape.types is not None:
            self._types[handle] = shape.types
        if self._publish is not None and (error := self._publish(definition, handle)) is not None:
            if error.kind in RELOAD_KEEPS:  # Postgres stopped answering: keep every log for a later start
                shape.writer.abort()
                msg = f"the table of shape {handle} cannot be published now ({error}): stored shapes are kept"
                raise DatabaseDown(msg)
            logger.warning("shape %s: table not published (%s): deleted", handle, error)
            shape.writer.abort()
            self._storage.delete(handle)
            return
        try:
            self._adopt(
                *start_shape(
                    self._wiring, handle, definition, shape.compiled, shape.writer, stored=shape.stored
                )
            )
        except Exception:
            logger.exception("shape %s: subtree failed to start: deleted", handle)
            self._storage.delete(handle)
            self._release(definition, handle)

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
            self._builds.doom(handle, reason)  # removed as soon as it is built (if being built)
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
        heap.shapes_released()  # its frozen cycles are garbage: counted towards a full collection

    def _release(self, definition: ShapeDefinition, handle: str) -> None:
        if self._unpublish is not None:
            self._unpublish(definition, handle)

    def _relation_changed(self, event: RelationChanged) -> None:
        """Invalidate the shapes the Relation message breaks (judged a slice at a time, with a turn of the
        event loop between slices: :mod:`sync.shapes.cache_relations`)."""
        for handle, reason in broken_shapes(self.directory, event):
            self._remove(handle, reason)
