"""The ShapeSupervisor and the per-shape subtree it starts (architecture §2).

::

    ShapeSupervisor (dynamic, one_for_one)        one per stack, children come and go with shapes
    └─ shape:<handle> (one_for_all, temporary, no restarts)
       ├─ storage   StorageActor: the one writer of the shape's log
       └─ consumer  Consumer: routed transactions -> log items; live waiters

Why one_for_all with no restarts: the consumer and its storage share one log; if either dies the other
cannot continue alone.  Restarting them in place is not safe either: while they were down the collector
routed transactions elsewhere (or nowhere), so a restarted consumer would serve a log with a hole.  The
subtree therefore stops for good, and the consumer's ``on_failure`` asks the ShapeCache to invalidate the
shape (new handle, clients refetch).  After a whole-engine restart the shapes are reopened from their durable
logs by the cache and Postgres resends everything after the acknowledged LSN, so nothing is lost there.

All three actors of a shape hibernate (:mod:`supervisors.hibernate`): while their inboxes are empty, which
is most of the time for most shapes, they hold no greenlet/thread (that was ~20 KB of the ~60 KB of an idle
shape).  The Consumer and StorageActor classes are not changed for it: the subtree starts
``hibernating(Consumer)`` / ``hibernating(StorageActor)``.

The storage's durability reports are wired to the consumer (``StorageDurable``), which forwards them to the
collector; the consumer is started second, so the wiring goes through a small cell filled in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from supervisors import (
    ONE_FOR_ALL,
    ChildSpec,
    DynamicSupervisor,
    HibernatingActor,
    Restart,
    Supervisor,
    hibernating,
    start_child,
)
from sync.offsets import LogOffset
from sync.postgres.errors import DbConnectionError
from sync.shapes.consumer import Consumer, StorageDurable, StoredShape
from sync.shapes.consumer_rotation import LogRotation
from sync.shapes.definition import ShapeDefinition
from sync.shapes.directory import LiveShape
from sync.shapes.invalidation import CompiledShape
from sync.shapes.snapshot_messages import MarkJournal, SnapshotRequest
from sync.storage.storage import Storage
from sync.storage.storage_actor import StorageActor
from sync.storage.ticker import FlushTicker
from sync.storage.writer import ShapeLogWriter

__all__ = ["ShapeSupervisor", "ShapeWiring", "build_shape", "shape_spec", "start_shape"]

logger = logging.getLogger(__name__)

StartStorage = Callable[[Callable[[LogOffset], None]], pykka.ActorRef[Any]]
StartConsumer = Callable[[pykka.ActorRef[Any]], pykka.ActorRef[Any]]


class ShapeSupervisor(DynamicSupervisor):
    """The dynamic supervisor of every shape subtree of a stack (see the module docstring).

    Owns:       one child per shape, by handle.
    Receives:   StartChild (ask) -> ActorRef | SupervisorError; TerminateChild (ask) -> bool (through
                ``supervisors.start_child`` / ``terminate_child``, from the ShapeCache).
    Sends:      stop to shape subtrees.
    Crashes on: restart intensity exceeded (never, in practice: shape subtrees are temporary).
    """

    def __init__(self, *, name: str = "shapes") -> None:
        super().__init__(name=name, max_restarts=1_000_000, max_seconds=1.0)


class _ShapeSubtree(HibernatingActor, Supervisor):
    """The one_for_all supervisor of one shape; hibernating: it only reacts to its children's exits."""


# The two per-shape actors hibernate too: no greenlet/thread of their own while their inbox is empty.
_StorageActor = hibernating(StorageActor)
_Consumer = hibernating(Consumer)


@dataclass(frozen=True, slots=True)
class ShapeWiring:
    """What every shape subtree of a stack is connected to, and its tuning (set by the ShapeCache)."""

    storage: Storage
    shape_supervisor: pykka.ActorRef[Any]
    collector: pykka.ActorRef[Any]
    start_snapshot: Callable[[SnapshotRequest], None]
    on_invalidate: Callable[[str, str], None]
    marks: MarkJournal | None = None
    max_held: int = 10_000
    max_held_changes: int = 1_000_000
    log_rotation: LogRotation | None = None
    flush_bytes: int = 64 * 1024
    flush_interval: float = 0.05
    ask_timeout: float = 30.0
    ticker: FlushTicker | None = None  # the stack's shared flush timer (None: one per storage actor)


class _Subtree:
    """How one shape's subtree starts and how its storage reports to its consumer.

    One slotted object per shape whose bound methods are the ChildSpecs' start functions and the storage's
    durability callback (no closures, no per-step helper objects: one of these lives per shape).
    Subclasses say how to start the two actors (``storage_actor`` first, then ``consumer_actor``).
    """

    __slots__ = ("consumer", "handle", "shutdown", "storage")

    def __init__(self, handle: str, shutdown: float = 10.0) -> None:
        self.handle = handle
        self.shutdown = shutdown
        self.storage: pykka.ActorRef[Any] | None = None
        self.consumer: pykka.ActorRef[Any] | None = None

    def spec(self) -> ChildSpec:
        """The shape's child spec under the ShapeSupervisor (temporary: a shape is never restarted)."""
        temporary = Restart.TEMPORARY
        return ChildSpec(
            self.handle, self.subtree, restart=temporary, shutdown=self.shutdown, kind="supervisor"
        )

    def subtree(self) -> pykka.ActorRef[Any]:
        """Start the one_for_all subtree: the storage first, then the consumer."""
        self.storage = self.consumer = None
        half = self.shutdown / 2
        children = [
            ChildSpec("storage", self.storage_actor, shutdown=half),
            ChildSpec("consumer", self.consumer_actor, shutdown=half),
        ]
        name = f"shape:{self.handle}"
        return _ShapeSubtree.start(children, strategy=ONE_FOR_ALL, max_restarts=0, name=name)

    def durable(self, offset: LogOffset) -> None:
        ref = self.consumer
        if ref is not None:
            try:
                ref.tell(StorageDurable(offset))
            except pykka.ActorDeadError:
                return

    def storage_actor(self) -> pykka.ActorRef[Any]:
        raise NotImplementedError

    def consumer_actor(self) -> pykka.ActorRef[Any]:
        raise NotImplementedError


class _GivenStarts(_Subtree):
    """A subtree whose actors are started by given functions (`shape_spec`, used by tests)."""

    __slots__ = ("start_consumer", "start_storage")

    def __init__(
        self, handle: str, start_storage: StartStorage, start_consumer: StartConsumer, shutdown: float
    ) -> None:
        super().__init__(handle, shutdown)
        self.start_storage = start_storage
        self.start_consumer = start_consumer

    def storage_actor(self) -> pykka.ActorRef[Any]:
        self.storage = self.start_storage(self.durable)
        return self.storage

    def consumer_actor(self) -> pykka.ActorRef[Any]:
        assert self.storage is not None, "the storage child starts first"
        self.consumer = self.start_consumer(self.storage)
        return self.consumer


def shape_spec(
    handle: str,
    *,
    start_storage: StartStorage,
    start_consumer: StartConsumer,
    shutdown: float = 10.0,
) -> ChildSpec:
    """The child spec of one shape's subtree, its actors started by the given functions.

    ``start_storage(on_durable)`` starts the shape's StorageActor reporting to ``on_durable``;
    ``start_consumer(storage_ref)`` starts its Consumer.
    """
    return _GivenStarts(handle, start_storage, start_consumer, shutdown).spec()


class _Shape(_Subtree):
    """The engine's shape subtree: hibernating StorageActor and Consumer wired to the stack."""

    __slots__ = ("compiled", "definition", "stored", "wiring", "writer")

    def __init__(
        self,
        wiring: ShapeWiring,
        handle: str,
        definition: ShapeDefinition,
        compiled: CompiledShape,
        writer: ShapeLogWriter,
        *,
        stored: StoredShape | None,
    ) -> None:
        super().__init__(handle)
        self.wiring = wiring
        self.definition = definition
        self.compiled = compiled
        self.writer = writer
        self.stored = stored

    def storage_actor(self) -> pykka.ActorRef[Any]:
        w = self.wiring
        self.storage = _StorageActor.start(
            self.writer,
            w.storage,
            on_durable=self.durable,
            flush_bytes=w.flush_bytes,
            flush_interval=w.flush_interval,
            ticker=w.ticker,
        )
        return self.storage

    def consumer_actor(self) -> pykka.ActorRef[Any]:
        assert self.storage is not None, "the storage child starts first"
        w, compiled = self.wiring, self.compiled
        self.consumer = _Consumer.start(
            self.handle,
            self.definition,
            storage=self.storage,
            collector=w.collector,
            start_snapshot=w.start_snapshot,
            on_invalidate=w.on_invalidate,
            stored=self.stored,
            marks=w.marks,
            routing_clause=compiled.routing_clause,
            predicate=compiled.predicate,
            where_sql=compiled.where_sql,
            where_params=compiled.where_params,
            max_held=w.max_held,
            max_held_changes=w.max_held_changes,
            log_rotation=w.log_rotation,
            ask_timeout=w.ask_timeout,
        )
        return self.consumer


def start_shape(
    wiring: ShapeWiring,
    handle: str,
    definition: ShapeDefinition,
    compiled: CompiledShape,
    writer: ShapeLogWriter,
    *,
    stored: StoredShape | None = None,
) -> tuple[LiveShape, pykka.ActorRef[Any]]:
    """Start one shape's subtree under the ShapeSupervisor; returns the live shape and the subtree's ref.

    Safe to call from any thread.  Raises (``StartError``, ``pykka.Timeout``) if the subtree does not start;
    ``writer`` is then released.
    """
    shape = _Shape(wiring, handle, definition, compiled, writer, stored=stored)
    reader = writer.reader()
    try:
        subtree = start_child(wiring.shape_supervisor, shape.spec(), timeout=wiring.ask_timeout)
    except BaseException:
        writer.abort()  # no storage actor owns it
        raise
    assert shape.consumer is not None
    return LiveShape(handle, definition, reader, shape.consumer), subtree


def build_shape(
    wiring: ShapeWiring,
    handle: str,
    definition: ShapeDefinition,
    *,
    compile_shape: Callable[[ShapeDefinition], CompiledShape],
    publish: Callable[[ShapeDefinition, str], DbConnectionError | None] | None,
    unpublish: Callable[[ShapeDefinition, str], None] | None,
) -> tuple[LiveShape, pykka.ActorRef[Any]] | str:
    """Create a new shape end to end: compile, publish its table, create its log, start its subtree.

    Returns the live shape and its subtree, or the reason it failed (everything undone).  Safe to call from
    any thread (the ShapeCache runs several at once, outside its inbox).
    """
    try:
        compiled = compile_shape(definition)
    except Exception as exc:  # reported as a value
        return f"cannot compile the shape: {exc}"
    if publish is not None:
        error = publish(definition, handle)
        if error is not None:
            return str(error)
    try:
        stored = definition.to_stored()
        if compiled.column_types:  # compared with the catalog on reload (type changes while down)
            stored["column_types"] = compiled.column_types  # shared tuples; msgpack stores them as arrays
        writer = wiring.storage.create(handle, stored)
    except OSError as exc:
        logger.warning("shape %s: cannot create its log: %r", handle, exc)
        if unpublish is not None:
            unpublish(definition, handle)
        return f"cannot create the shape's log: {exc}"
    try:
        return start_shape(wiring, handle, definition, compiled, writer)
    except Exception:
        logger.exception("shape %s: subtree failed to start", handle)
        wiring.storage.delete(handle)
        if unpublish is not None:
            unpublish(definition, handle)
        return "the shape's actors failed to start"
