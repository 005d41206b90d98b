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
with ``rotated``, deletes its log and stops its subtree.  With ``max_shapes`` set, creating one more shape
evicts the least recently used one the same way.

The ShapeSupervisor must be started before the cache (the cache starts shape subtrees from ``on_start``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pykka

from supervisors import Down, Monitor, SupervisedActor, describe_reason, monitor, start_child, terminate_child
from sync.replication.changes import RelationChanged, SlotRecreated
from sync.shapes.consumer import Consumer, RotateShape, StoredShape
from sync.shapes.definition import HandleClock, ShapeDefinition
from sync.shapes.directory import LiveShape, ShapeDirectory
from sync.shapes.invalidation import CompiledShape, relation_change_reason
from sync.shapes.shape_supervisor import shape_spec
from sync.shapes.snapshot_marks import SnapshotMarks
from sync.shapes.snapshot_pool import StartSnapshot
from sync.shapes.snapshot_worker import SnapshotRequest
from sync.shapes.xid import PgSnapshot
from sync.storage.errors import ShapeMustBeRecreated
from sync.storage.storage import Storage
from sync.storage.storage_actor import StorageActor
from sync.storage.writer import ShapeLogWriter

__all__ = [
    "CacheSettings",
    "DeleteShape",
    "GetOrCreateShape",
    "GetShape",
    "InvalidateShape",
    "ListShapes",
    "ShapeCache",
    "ShapeResult",
]

logger = logging.getLogger(__name__)

Publish = Callable[[ShapeDefinition, str], str | None]  # error message or None
Unpublish = Callable[[ShapeDefinition, str], None]


# -- messages ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetOrCreateShape:
    """ask -> ShapeResult: the live shape for ``definition``, created (snapshot started) if there is none."""

    definition: ShapeDefinition


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
class ListShapes:
    """ask -> list[LiveShape]."""


@dataclass(frozen=True, slots=True)
class CacheSettings:
    max_shapes: int = 0  # 0: unlimited
    max_held: int = 10_000  # transactions a consumer may hold while its snapshot starts
    max_held_changes: int = 1_000_000  # and changes
    flush_bytes: int = 64 * 1024
    flush_interval: float = 0.05
    ask_timeout: float = 30.0


# -- the actor --------------------------------------------------------------------------------------------


class ShapeCache(SupervisedActor):
    """The registry of a stack's shapes (see the module docstring).

    Owns:       the live shapes (with the ShapeDirectory it publishes), the HandleClock.
    Receives:   GetOrCreateShape (ask) -> ShapeResult; GetShape (ask) -> LiveShape | None; DeleteShape (ask)
                -> bool; InvalidateShape (tell/ask) -> bool; RelationChanged, SlotRecreated (tell, from the
                collector's callbacks); ListShapes (ask) -> list[LiveShape].
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
        self._marks = marks if marks is not None else SnapshotMarks(_marks_path(storage))
        self._monitors: dict[str, Monitor] = {}

    def on_start(self) -> None:
        self._reload()

    def on_stop(self) -> None:
        self._marks.close()

    def on_receive(self, message: Any) -> Any:
        match message:
            case GetOrCreateShape(definition):
                return self._get_or_create(definition)
            case GetShape(handle):
                return self.directory.get(handle)
            case DeleteShape(handle, reason):
                return self._remove(handle, reason)
            case InvalidateShape(handle, reason):
                return self._remove(handle, reason)
            case RelationChanged():
                self._relation_changed(message)
            case SlotRecreated(slot, reason):
                for handle in self.directory.handles():
                    self._remove(handle, f"replication slot {slot} re-created: {reason}")
            case ListShapes():
                return [s for h in self.directory.handles() if (s := self.directory.get(h)) is not None]
            case _:
                msg = f"{type(self).__name__}: unexpected message {message!r}"
                raise TypeError(msg)
        return None

    # -- creation -----------------------------------------------------------------------------------------

    def _get_or_create(self, definition: ShapeDefinition) -> ShapeResult:
        existing = self.directory.find(definition)
        if existing is not None:
            self.directory.touch(existing.handle)
            return ShapeResult(existing)
        limit = self._settings.max_shapes
        while limit and len(self.directory) >= limit:
            victim = self.directory.least_recently_used()
            if victim is None or not self._remove(victim, "evicted (least recently used)"):
                break
        handle = self._clock.new_handle(definition)
        try:
            compiled = self._compile(definition)
        except Exception as exc:  # reported to the requester as a value
            return ShapeResult(None, error=f"cannot compile the shape: {exc}")
        if self._publish is not None:
            error = self._publish(definition, handle)
            if error is not None:
                return ShapeResult(None, error=error)
        try:
            writer = self._storage.create(handle, definition.to_dict())
        except OSError as exc:
            logger.warning("shape %s: cannot create its log: %r", handle, exc)
            self._release(definition, handle)
            return ShapeResult(None, error=f"cannot create the shape's log: {exc}")
        shape = self._start(handle, definition, compiled, writer, None)
        if shape is None:
            self._storage.delete(handle)
            self._release(definition, handle)
            return ShapeResult(None, error="the shape's actors failed to start")
        logger.info("shape %s created for %s.%s", handle, definition.schema, definition.table)
        return ShapeResult(shape, created=True)

    def _start(
        self,
        handle: str,
        definition: ShapeDefinition,
        compiled: CompiledShape,
        writer: ShapeLogWriter,
        stored: StoredShape | None,
    ) -> LiveShape | None:
        s = self._settings
        consumer_ref: list[pykka.ActorRef[Any]] = []
        reader = writer.reader()

        def start_storage(on_durable: Callable[..., None]) -> pykka.ActorRef[Any]:
            return StorageActor.start(
                writer,
                self._storage,
                on_durable=on_durable,
                flush_bytes=s.flush_bytes,
                flush_interval=s.flush_interval,
            )

        def start_consumer(storage: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
            ref = Consumer.start(
                handle,
                definition,
                storage=storage,
                collector=self._collector,
                start_snapshot=self._start_snapshot,
                on_invalidate=self._invalidate_later,
                stored=stored,
                record_snapshot=self._marks.record,
                routing_clause=compiled.routing_clause,
                predicate=compiled.predicate,
                where_sql=compiled.where_sql,
                where_params=compiled.where_params,
                max_held=s.max_held,
                max_held_changes=s.max_held_changes,
                ask_timeout=s.ask_timeout,
            )
            consumer_ref.append(ref)
            return ref

        spec = shape_spec(handle, start_storage=start_storage, start_consumer=start_consumer)
        try:
            subtree = start_child(self._sup, spec, timeout=s.ask_timeout)
        except Exception:
            logger.exception("shape %s: subtree failed to start", handle)
            writer.abort()  # no storage actor owns it
            return None

        def down(event: Down) -> None:
            if event.reason is not None:  # a normal stop is the cache's or the engine's own doing
                self._invalidate_later(handle, f"shape subtree failed: {describe_reason(event.reason)}")

        self._monitors[handle] = monitor(subtree, down)
        shape = LiveShape(handle, definition, reader, consumer_ref[0])
        self.directory.publish(shape)
        return shape

    def _start_snapshot(self, request: SnapshotRequest) -> None:
        self._pool.tell(StartSnapshot(request))

    def _invalidate_later(self, handle: str, reason: str) -> None:
        try:
            self.actor_ref.tell(InvalidateShape(handle, reason))
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
                definition = ShapeDefinition.from_dict(cast("dict[str, Any]", writer.metadata["definition"]))
                compiled = self._compile(definition)
                stored = _stored(writer, self._marks.get(handle))
            except Exception as exc:  # any doubt about a stored shape: drop it, clients refetch
                logger.warning("shape %s cannot be reloaded (%r): deleted", handle, exc)
                writer.abort()
                self._storage.delete(handle)
                continue
            if self._publish is not None and (error := self._publish(definition, handle)) is not None:
                logger.warning("shape %s: table not published (%s): deleted", handle, error)
                writer.abort()
                self._storage.delete(handle)
                continue
            if self._start(handle, definition, compiled, writer, stored) is None:
                self._storage.delete(handle)
                self._release(definition, handle)
        self._marks.compact(self.directory.handles())
        logger.info("reloaded %d of %d stored shapes", len(self.directory), len(handles))

    # -- removal ------------------------------------------------------------------------------------------

    def _remove(self, handle: str, reason: str) -> bool:
        shape = self.directory.withdraw(handle, reason)
        if shape is None:
            return False
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
        self._release(shape.definition, handle)
        return True

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


def _stored(writer: ShapeLogWriter, wal_lsn: int | None) -> StoredShape:
    meta = writer.metadata
    xmin, xmax, xip = meta.get("xmin"), meta.get("xmax"), meta.get("xip_list")
    if not isinstance(xmin, int) or not isinstance(xmax, int) or not isinstance(xip, list):
        raise ShapeMustBeRecreated("snapshot visibility missing from metadata")
    if wal_lsn is None:
        raise ShapeMustBeRecreated("no snapshot mark (WAL position) recorded")
    last = writer.last_offset
    snapshot = PgSnapshot(xmin, xmax, frozenset(int(x) for x in xip))
    return StoredShape(snapshot, wal_lsn, last.tx if last else 0)


def _marks_path(storage: Storage) -> Path | None:
    """Next to the shape logs of a FileStorage (``<root>/<stack>/snapshot_marks``); None in memory."""
    shapes_dir = getattr(storage, "shapes_dir", None)
    return Path(shapes_dir).parent / "snapshot_marks" if shapes_dir is not None else None
