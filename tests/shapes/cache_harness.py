"""The ShapeCache test harness: the consumer harness with a real ShapeCache, PublicationManager and directory
on top, shared by ``test_cache*.py``; :func:`cache_harness` is their ``h`` fixture's body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pykka

from supervisors import wait_started
from sync.postgres.errors import DbConnectionError
from sync.postgres.inspector import inspect_table
from sync.replication.publication import AddTable, PublicationManager, RemoveTable
from sync.replication.tables import TableName
from sync.shapes.cache import CacheSettings, ShapeCache, ShapeResult, get_or_create_shape
from sync.shapes.consumer import ConsumerInfo, GetConsumerInfo
from sync.shapes.definition import ShapeDefinition
from sync.shapes.directory import LiveShape, ShapeDirectory
from sync.shapes.invalidation import CompiledShape, compiled_from_clause
from sync.where import RoutingIndex, compile_where
from tests.shapes.consumer_harness import Harness, ShapeUnderTest, read_log, replay

ITEMS_SQL = (
    "CREATE TABLE items (id int PRIMARY KEY, value int NOT NULL, label text);"
    "INSERT INTO items SELECT g, g, 'row ' || g FROM generate_series(1, 30) g;"
)


class CacheHarness(Harness):
    """The consumer harness (database, slot, collector, storage, snapshot pool) with a real ShapeCache on top:
    shapes are created through the cache, published through a real PublicationManager."""

    def make_index(self) -> Any:
        return RoutingIndex()

    def compile(self, definition: ShapeDefinition) -> CompiledShape:
        if definition.where is None:
            return CompiledShape()
        with psycopg.connect(self.dsn) as conn:
            table = inspect_table(conn, definition.schema, definition.table)
        return compiled_from_clause(
            compile_where(definition.where, table, dict(enumerate(definition.params, 1)))
        )

    def start_cache(
        self, settings: CacheSettings | None = None, *, publication_dsn: str | None = None
    ) -> pykka.ActorRef[Any]:
        """Start a PublicationManager (on ``publication_dsn``, by default the database's) and the cache,
        and wait for the cache's reload (raises ``StartError`` if it fails)."""
        self.publications = PublicationManager.start(publication_dsn or self.dsn, self.slot.pub)

        def publish(d: ShapeDefinition, handle: str) -> DbConnectionError | None:
            error = self.publications.ask(AddTable(TableName(d.schema, d.table), handle), timeout=10)
            assert error is None or isinstance(error, DbConnectionError)
            return error

        def unpublish(d: ShapeDefinition, handle: str) -> None:
            self.publications.ask(RemoveTable(TableName(d.schema, d.table), handle), timeout=10)

        self.directory = ShapeDirectory()
        self.cache = ShapeCache.start(
            self.storage,
            shape_supervisor=self.shapes_sup,
            collector=self.collector,
            snapshot_pool=self.pool,
            compile_shape=self.compile,
            publish=publish,
            unpublish=unpublish,
            directory=self.directory,
            settings=settings or CacheSettings(flush_interval=0.01, ask_timeout=10),
        )
        wait_started(self.cache, timeout=30)  # on_start reloads the stored shapes
        return self.cache

    def stop_cache(self) -> None:
        self.cache.stop(timeout=10)
        self.publications.stop(timeout=10)

    def create(self, definition: ShapeDefinition) -> ShapeResult:
        return get_or_create_shape(self.cache, definition, timeout=30)

    def live(self, definition: ShapeDefinition) -> LiveShape:
        result = self.create(definition)
        assert result.shape is not None, result.error
        return result.shape


def cache_harness(db_dsn: str, tmp_path: Path, setup_sql: str) -> Iterator[CacheHarness]:
    """A started harness and cache over the tables ``setup_sql`` makes; stopped after the test."""
    harness = CacheHarness(db_dsn, tmp_path)
    harness.conn.execute(setup_sql)
    harness.start_cache()
    yield harness
    harness.stop_cache()
    harness.stop()


def as_test_shape(shape: LiveShape, h: CacheHarness) -> ShapeUnderTest:
    compiled = h.compile(shape.definition)
    return ShapeUnderTest(
        shape.handle,
        shape.definition,
        compiled.predicate,
        compiled.where_sql,
        tuple(compiled.where_params),
        reader=shape.reader,
    )


def snapshot_done(shape: LiveShape) -> bool:
    result = shape.consumer.ask(GetConsumerInfo(), timeout=5)
    assert isinstance(result, ConsumerInfo)
    return result.snapshot_complete


def check(h: CacheHarness, shape: LiveShape) -> None:
    assert replay(read_log(shape.reader)) == h.expected(as_test_shape(shape, h))
