"""The concrete supervision tree of one stack (one source database, one replication stream).

::

    engine (one_for_one)                         one per stack
    ├─ shapes (one_for_all)                      survives connection loss; shapes are kept
    │  ├─ shape_log_collector   routes each committed transaction to the affected shapes (routing index);
    │  │                        tracks durability, tells the ReplicationClient which LSN may be acknowledged
    │  ├─ publication_manager   adds/removes tables in the publication, sets REPLICA IDENTITY FULL
    │  ├─ snapshot_pool         bounded pool of snapshot connections/workers
    │  ├─ shape_supervisor (dynamic, one_for_one)
    │  │  └─ shape:<handle> (one_for_all, temporary): storage + consumer
    │  └─ shape_cache           definition -> handle; creates, persists, invalidates and deletes shapes
    └─ connection (rest_for_one)                 may crash and restart on any connection loss
       ├─ lock                  pg advisory lock: exactly one active instance per replication stream
       └─ replication_client    owns the replication connection; decodes pgoutput; sends status updates

Why these strategies:

* ``engine`` is one_for_one: a lost connection must not take the shapes down, and a crashed shape
  subsystem does not need a new replication connection (the client simply resumes from the slot).
* ``shapes`` is one_for_all: the collector's routing index, the consumers' registrations and the cache's
  view of live shapes are one consistent whole; if any of them dies, all restart and the cache reloads
  every shape from its durable log (Postgres resends what was not acknowledged).
* ``connection`` is rest_for_one: the client depends on the lock; a lost lock stops streaming too, a lost
  replication connection only restarts the client (with exponential backoff).

Order: ``shapes`` starts before ``connection`` (a deviation from the drawing in architecture §2, which
lists Connection first): the replication client asks the collector for its resume point as soon as it
starts, so the collector must exist; shutdown runs in reverse, so streaming stops before the shapes do.

The replication client's sink is the :class:`~sync.replication.history.HistoryGuard` over the collector: a
server on another history (system identifier or timeline changed) invalidates every shape before streaming.

Actors find each other through the stack's :class:`~supervisors.Registry`, never through refs captured at
start, because every restart makes new refs.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

import pykka

from supervisors import ONE_FOR_ALL, ONE_FOR_ONE, REST_FOR_ONE, ChildSpec, Registry, Supervisor
from sync.postgres.errors import DbConnectionError
from sync.replication.changes import RelationChanged, ReplicationEvent, SlotRecreated
from sync.replication.connection import ConnectionConfig, ConnectionHandles, connection_children
from sync.replication.history import HistoryFile, HistoryGuard
from sync.replication.publication import AddTable, PublicationManager, RemoveTable
from sync.replication.sink import Connected, GetResumePoint, Pending, ResumePoint
from sync.replication.tables import TableName
from sync.settings import Settings
from sync.shapes.cache import CacheSettings, CheckSchemas, InvalidateShape, ShapeCache
from sync.shapes.collector import ShapeLogCollector
from sync.shapes.consumer_rotation import LogRotation
from sync.shapes.definition import ShapeDefinition
from sync.shapes.directory import ShapeDirectory
from sync.shapes.resolver import ShapeResolver
from sync.shapes.schema_check import SchemaCatalog
from sync.shapes.shape_supervisor import ShapeSupervisor
from sync.shapes.snapshot_pool import SnapshotPool
from sync.storage import fdlimit, group_sync
from sync.storage.storage import FileStorage
from sync.where.index import RoutingIndex

__all__ = [
    "COLLECTOR",
    "PUBLICATION_MANAGER",
    "SHAPE_SUPERVISOR",
    "SNAPSHOT_POOL",
    "RegistrySink",
    "build_stack",
]

logger = logging.getLogger(__name__)

COLLECTOR = "shape_log_collector"
PUBLICATION_MANAGER = "publication_manager"
SNAPSHOT_POOL = "snapshot_pool"
SHAPE_SUPERVISOR = "shape_supervisor"
SHAPE_CACHE = "shape_cache"


@dataclass(slots=True)
class StackServices:
    """What request handlers use without asking an actor: the catalog resolver, the live-shape directory
    (replaced with each ShapeCache incarnation), the storage, the last commit LSN routed (a metric) and the
    last one every shape's log holds (acknowledged by the collector: global_last_seen_lsn)."""

    registry: Registry
    resolver: ShapeResolver
    storage: FileStorage
    directory: ShapeDirectory = field(default_factory=ShapeDirectory)
    # global_last_seen_lsn is durable_lsn, not last_seen_lsn: a client retires a subset snapshot once an
    # up-to-date's LSN reaches the snapshot's position, so every shape's log (as readers see it) must hold
    # everything up to it, and a routed transaction may still be on its way to a shape's storage.
    durable_lsn: int = 0
    last_seen_lsn: int = 0  # routed (a metric)

    def note_commit(self, lsn: int) -> None:
        self.last_seen_lsn = max(self.last_seen_lsn, lsn)

    def note_durable(self, lsn: int) -> None:
        self.durable_lsn = max(self.durable_lsn, lsn)


class RegistrySink:
    """The replication client's downstream: whichever collector incarnation is current.

    If the collector is down (the Shapes subtree is restarting), delivery fails and the client crashes; the
    Connection subtree restarts with backoff and resumes from the slot, which is exactly what is needed.
    """

    def __init__(self, registry: Registry, timeout: float = 30.0) -> None:
        self._registry = registry
        self._timeout = timeout

    def _collector(self) -> pykka.ActorRef[Any]:
        ref = self._registry.whereis(COLLECTOR)
        if ref is None:
            raise pykka.ActorDeadError("the shape log collector is not running")
        return ref

    def connected(self, connection: Connected) -> None:
        pass

    def resume_point(self) -> ResumePoint:
        point = self._collector().ask(GetResumePoint(), timeout=self._timeout)
        if not isinstance(point, ResumePoint):
            raise TypeError(f"collector answered the resume point with {point!r}")
        return point

    def deliver(self, event: ReplicationEvent) -> Pending:
        future: Pending = self._collector().ask(event, block=False)
        return future

    def flushing(self, lsn: int) -> None:
        pass


UNPUBLISH_GRACE_S = 60.0  # a table whose last shape went away stays published this long (publication.py)


def _registered(registry: Registry, name: str, ref: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
    registry.register(name, ref)
    return ref


def connection_config(settings: Settings) -> ConnectionConfig:
    return ConnectionConfig(
        dsn=settings.database_dsn,
        stream_id=settings.replication.stream_id,
        max_batch=settings.replication.max_batch,
        status_interval=settings.replication.status_interval_s,
        receive_timeout=settings.replication.receive_timeout_s,
        backoff_max=settings.replication.backoff_max_s,
    )


def shapes_children(
    settings: Settings, services: StackServices, handles: ConnectionHandles
) -> list[ChildSpec]:
    """The Shapes subtree's children in start order."""
    registry = services.registry

    def on_relation_changed(event: RelationChanged) -> None:
        services.resolver.forget(event.relation.schema, event.relation.name)
        if event.previous is not None:
            services.resolver.forget(event.previous.schema, event.previous.name)
        cache = registry.whereis(SHAPE_CACHE)
        if cache is not None:
            cache.tell(event)

    def on_ack(lsn: int) -> None:
        services.note_durable(lsn)
        handles.ack(lsn)

    def on_slot_recreated(event: SlotRecreated) -> None:
        services.durable_lsn = services.last_seen_lsn = 0  # positions of the old history mean nothing now
        cache = registry.whereis(SHAPE_CACHE)
        if cache is not None:
            cache.tell(event)

    def on_overloaded(handle: str) -> None:
        cache = registry.whereis(SHAPE_CACHE)
        if cache is not None:
            cache.tell(InvalidateShape(handle, "its consumer cannot keep up with replication"))

    def start_collector() -> pykka.ActorRef[Any]:
        ref = ShapeLogCollector.start(
            RoutingIndex(),
            on_ack=on_ack,
            on_commit=services.note_commit,
            on_overloaded=on_overloaded,
            on_relation_changed=on_relation_changed,
            on_slot_recreated=on_slot_recreated,
            max_consumer_queue=settings.shapes.max_consumer_queue,
        )
        return _registered(registry, COLLECTOR, ref)

    def start_publication_manager() -> pykka.ActorRef[Any]:
        ref = PublicationManager.start(
            settings.database_dsn,
            settings.publication_name,
            lock_timeout=settings.database.lock_timeout_s,
            unpublish_grace=UNPUBLISH_GRACE_S,
        )
        return _registered(registry, PUBLICATION_MANAGER, ref)

    def start_snapshot_pool() -> pykka.ActorRef[Any]:
        ref = SnapshotPool.start(settings.snapshot_dsn, size=settings.database.snapshot_pool_size)
        return _registered(registry, SNAPSHOT_POOL, ref)

    def start_shape_supervisor() -> pykka.ActorRef[Any]:
        return _registered(registry, SHAPE_SUPERVISOR, ShapeSupervisor.start())

    def publish(definition: ShapeDefinition, handle: str) -> DbConnectionError | None:
        manager = registry.whereis(PUBLICATION_MANAGER)
        if manager is None:  # between its crash and its restart: a connection error, as far as callers go
            return DbConnectionError("connection_lost", "the publication manager is not running")
        error = manager.ask(AddTable(TableName(*definition.relation), handle), timeout=60.0)
        if error is not None and not isinstance(error, DbConnectionError):
            raise TypeError(f"the publication manager answered AddTable with {error!r}")
        return error

    def unpublish(definition: ShapeDefinition, handle: str) -> None:
        manager = registry.whereis(PUBLICATION_MANAGER)
        if manager is not None:
            manager.tell(RemoveTable(TableName(*definition.relation), handle))

    def start_cache() -> pykka.ActorRef[Any]:
        def need(name: str) -> pykka.ActorRef[Any]:
            ref = registry.whereis(name)
            if ref is None:
                raise RuntimeError(f"{name} is not running")
            return ref

        services.directory = ShapeDirectory()
        ref = ShapeCache.start(
            services.storage,
            shape_supervisor=need(SHAPE_SUPERVISOR),
            collector=need(COLLECTOR),
            snapshot_pool=need(SNAPSHOT_POOL),
            compile_shape=services.resolver.compile,
            publish=publish,
            unpublish=unpublish,
            directory=services.directory,
            settings=CacheSettings(
                max_shapes=settings.shapes.max_shapes,
                max_held=settings.shapes.max_pending_transactions,
                flush_bytes=settings.storage.flush_bytes,
                flush_interval=settings.storage.flush_interval_ms / 1000,
                schema_check_interval=settings.shapes.schema_check_interval_s,
                log_rotation=LogRotation.of(
                    settings.shapes.log_rotate_ratio, settings.shapes.log_rotate_min_mb
                ),
            ),
            catalog=SchemaCatalog(settings.database_dsn, publication=settings.publication_name),
            forget_table=services.resolver.forget,
        )
        return _registered(registry, SHAPE_CACHE, ref)

    return [
        ChildSpec(COLLECTOR, start_collector),
        ChildSpec(PUBLICATION_MANAGER, start_publication_manager),
        ChildSpec(SNAPSHOT_POOL, start_snapshot_pool),
        ChildSpec(SHAPE_SUPERVISOR, start_shape_supervisor, shutdown=30.0, kind="supervisor"),
        ChildSpec(SHAPE_CACHE, start_cache, shutdown=30.0),
    ]


def check_schemas_of(services: StackServices, schema: str, table: str) -> None:
    """A request named a table the catalog does not have: if live shapes still read a table of that name
    (dropped, or renamed, since), have the ShapeCache check them against the catalog now."""
    if services.directory.has_table(schema, table):
        cache = services.registry.whereis(SHAPE_CACHE)
        if cache is not None:
            logger.info("%s.%s is not in the catalog but shapes read it: checking them now", schema, table)
            cache.tell(CheckSchemas())


def build_services(settings: Settings) -> StackServices:
    stack_id = settings.replication.stream_id
    group_sync.set_method(settings.storage.sync_method)
    services = StackServices(
        registry=Registry(stack_id),
        resolver=ShapeResolver(settings.database_dsn),
        storage=FileStorage(
            settings.storage.dir,
            stack_id,
            chunk_bytes=settings.storage.chunk_bytes_threshold,
            max_open_files=fdlimit.resolve_max_open_files(
                settings.storage.max_open_files,
                settings.http.max_concurrent_existing + settings.http.max_concurrent_initial,
            ),
        ),
    )
    services.resolver.on_missing_table = functools.partial(check_schemas_of, services)
    return services


PURGE_TIMEOUT_S = 600.0  # removing every shape (each log deleted, each subtree stopped) may take a while


def history_guard(config: ConnectionConfig, services: StackServices) -> HistoryGuard:
    """The replication client's sink: the collector, behind the check of the server's history."""
    registry = services.registry

    def settle(event: SlotRecreated) -> None:
        cache = registry.whereis(SHAPE_CACHE)
        if cache is None:
            raise pykka.ActorDeadError("the shape cache is not running: shapes cannot be invalidated")
        cache.ask(event, timeout=PURGE_TIMEOUT_S)

    return HistoryGuard(
        RegistrySink(registry),
        HistoryFile(services.storage.shapes_dir.parent / "history.json"),
        slot=config.slot,
        settle=settle,
        timeout=PURGE_TIMEOUT_S,
    )


def build_stack(
    settings: Settings, services: StackServices, handles: ConnectionHandles
) -> pykka.ActorRef[Any]:
    """Start the root supervisor of the stack (``supervisors.start_tree`` waits for the subtree)."""
    config = connection_config(settings)
    sink = history_guard(config, services)

    def start_shapes() -> pykka.ActorRef[Any]:
        return Supervisor.start(
            shapes_children(settings, services, handles),
            strategy=ONE_FOR_ALL,
            max_restarts=3,
            max_seconds=30.0,
            name="shapes",
        )

    def start_connection() -> pykka.ActorRef[Any]:
        return Supervisor.start(
            connection_children(config, sink, handles),
            strategy=REST_FOR_ONE,
            # Restarts are slowed by the client's own exponential backoff; allow many before escalating.
            max_restarts=1000,
            max_seconds=60.0,
            name="connection",
        )

    return Supervisor.start(
        [
            ChildSpec("shapes", start_shapes, shutdown=60.0, kind="supervisor"),
            ChildSpec("connection", start_connection, shutdown=30.0, kind="supervisor"),
        ],
        strategy=ONE_FOR_ONE,
        max_restarts=5,
        max_seconds=60.0,
        name="engine",
    )
