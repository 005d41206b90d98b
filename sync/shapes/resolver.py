"""From a request's text (table, where, params, columns, replica, log) to a validated shape definition.

Why this module exists: both the HTTP layer (validating a request, finding its shape) and the ShapeCache
(compiling a shape it creates or reloads) need the table's catalog entry and the compiled WHERE clause.
The :class:`ShapeResolver` reads the catalog through a small pool of its own connections (cooperative under
gevent), keeps the table entries it read (dropped when a Relation message says the table changed, and
after ``ttl`` seconds), and compiles every clause with :mod:`sync.where`, so SQL sent to Postgres is
always regenerated from the validated tree, never the client's text.

A request naming a table the catalog does not have calls ``on_missing_table(schema, name)`` (the stack asks
the ShapeCache for a catalog check when live shapes still read a table of that name: a dropped table sends
no replication message, so this is how it is noticed before the next periodic check).

Errors are returned as :class:`ShapeRequestError` with the field name and Electric's messages; the HTTP
layer turns them into ``{"message":"Invalid request","errors":{field: messages}}``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from sync.postgres.inspector import TableInfo, TableNotFound, inspect_table
from sync.shapes.definition import ShapeDefinition, ShapeDefinitionError
from sync.shapes.identifiers import InvalidIdentifier, parse_columns, parse_relation
from sync.shapes.invalidation import CompiledShape, compiled_from_clause
from sync.shapes.schema import schema_header
from sync.shapes.schema_check import table_column_types
from sync.where import WhereClause, WhereError, compile_where, remember_columns

__all__ = ["CatalogUnavailable", "ShapeRequest", "ShapeRequestError", "ShapeResolver"]

logger = logging.getLogger(__name__)

_HEADERS_MAX = 4096  # schema headers kept (a cache: cleared when full)
_CLAUSES_MAX = 1024  # compiled WHERE clauses kept (a cache: cleared when full)


class ShapeRequestError(ValueError):
    """A client mistake in the definition: ``errors`` maps a parameter to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


class CatalogUnavailable(RuntimeError):
    """Postgres could not be reached to read the catalog."""


@dataclass(frozen=True, slots=True)
class ShapeRequest:
    """A shape definition as the client sent it (text only)."""

    table: str
    where: str | None = None
    params: tuple[str, ...] = ()
    columns: str | None = None
    replica: Literal["default", "full"] = "default"
    log_mode: Literal["full", "changes_only"] = "full"


def _unsyncable(info: TableInfo) -> str | None:
    """Why no shape can follow ``info``, or None.  Relations logical replication does not publish would fail
    their publication on every try (a 503 to retry for ever); a partitioned table's changes are published
    under its partitions' names, which the collector does not route to the parent's shapes (a snapshot, then
    a log that never moves)."""
    table = f'Table "{info.schema}"."{info.name}"'
    kind = info.unpublishable()
    if kind is not None:
        return f"{table} cannot be synced: logical replication does not publish {kind}"
    if info.kind == "p":
        return f"{table} is partitioned: shapes of partitioned tables are not supported yet (use partitions)"
    return None


def _missing_table(schema: str, name: str) -> str:
    return (
        f'Table "{schema}"."{name}" does not exist. If the table name contains capitals or special '
        "characters you must quote it."
    )


class ShapeResolver:
    """Validates definitions against the catalog and compiles their WHERE clauses (thread-safe)."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 2,
        ttl: float = 30.0,
        connect_timeout: float = 10.0,
        on_missing_table: Callable[[str, str], None] | None = None,
    ) -> None:
        self.on_missing_table = on_missing_table
        self._pool = ConnectionPool(
            dsn,
            min_size=0,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": int(connect_timeout)},
            # Checked when lent (a round trip; the catalog is read once per table and TTL): an idle one the
            # server cut (a restart, ``idle_session_timeout``, a proxy) is replaced, instead of failing the
            # request that found it with a 503 while the database is up.
            check=ConnectionPool.check_connection,
            open=False,
            name="catalog",
        )
        self._opened = False
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], tuple[float, TableInfo]] = {}
        # definition -> (the catalog entry it was rendered from, its electric-schema header)
        self._headers: dict[ShapeDefinition, tuple[TableInfo, str]] = {}
        # (where, params) -> (the catalog entry it was compiled against, the clause): a new shape's WHERE is
        # compiled when its request is validated and again when the ShapeCache builds it, moments later
        # (~1 ms each in sqlglot and the compiler; WhereClause is immutable, so both may share one)
        self._clauses: dict[tuple[str, tuple[str, ...]], tuple[TableInfo, WhereClause]] = {}
        self._ttl = ttl
        self._timeout = connect_timeout

    def close(self) -> None:
        if self._opened:
            self._pool.close()

    def _open(self) -> None:
        with self._lock:
            if not self._opened:
                self._pool.open(wait=False)
                self._opened = True

    # -- catalog --------------------------------------------------------------------------------------

    def table(self, schema: str, name: str, *, fresh: bool = False) -> TableInfo:
        """The catalog entry of ``schema.name``; raises TableNotFound or CatalogUnavailable."""
        key = (schema, name)
        hit = self._tables.get(key)
        if hit is not None and not fresh and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        self._open()
        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                info = inspect_table(conn, schema, name)
        except TableNotFound:
            self._tables.pop(key, None)
            raise
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise CatalogUnavailable(str(exc)) from exc
        self._tables[key] = (time.monotonic(), info)
        return info

    def forget(self, schema: str, name: str) -> None:
        """The table changed (a Relation message): read it again next time."""
        self._tables.pop((schema, name), None)

    # -- definitions ----------------------------------------------------------------------------------

    def resolve(self, request: ShapeRequest) -> tuple[ShapeDefinition, WhereClause | None]:
        """Validate ``request``; raises ShapeRequestError (400) or CatalogUnavailable (503)."""
        try:
            schema, name = parse_relation(request.table)
        except InvalidIdentifier as exc:
            raise ShapeRequestError({"table": [exc.message]}) from None
        try:
            info = self.table(schema, name)
        except TableNotFound:
            self._missing(schema, name)
            raise ShapeRequestError({"table": [_missing_table(schema, name)]}) from None
        refusal = _unsyncable(info)
        if refusal is not None:
            raise ShapeRequestError({"table": [refusal]})
        columns: Sequence[str] | None = None
        if request.columns is not None:
            try:
                columns = parse_columns(request.columns)
            except InvalidIdentifier as exc:
                raise ShapeRequestError({"columns": [exc.message]}) from None
        clause = self._compile(request.where, info, request.params)
        try:
            definition = ShapeDefinition.create(
                (schema, name),
                info,
                columns=columns,
                where=request.where if clause is not None else None,
                params=request.params,
                replica=request.replica,
                log_mode=request.log_mode,
            )
        except ShapeDefinitionError as exc:
            raise ShapeRequestError({exc.field: [exc.message]}) from None
        return definition, clause

    def _missing(self, schema: str, name: str) -> None:
        hook = self.on_missing_table
        if hook is not None:
            try:
                hook(schema, name)
            except Exception:  # the request's answer (400) does not depend on it
                logger.exception("on_missing_table(%s, %s) failed", schema, name)

    def _compile(self, where: str | None, info: TableInfo, params: Sequence[str]) -> WhereClause | None:
        if where is None or not where.strip():
            return None
        key = (where, tuple(params))
        hit = self._clauses.get(key)
        if hit is not None and hit[0] is info:
            return hit[1]
        try:
            clause = compile_where(where, info, {i + 1: v for i, v in enumerate(params)})
        except WhereError as exc:
            raise ShapeRequestError({"where": list(exc.messages)}) from None
        if len(self._clauses) >= _CLAUSES_MAX:
            self._clauses.clear()
        self._clauses[key] = (info, clause)
        return clause

    def compile(self, definition: ShapeDefinition) -> CompiledShape:
        """The ShapeCache's ``compile_shape``: recompile a stored or new definition against the catalog."""
        info = self.table(definition.schema, definition.table)
        if info.oid != definition.relation_oid:
            msg = f"table {definition.schema}.{definition.table} was re-created (oid {info.oid})"
            raise ShapeDefinitionError("table", msg)
        refusal = _unsyncable(info)
        if refusal is not None:  # a shape stored before it was refused: reloading drops it (clients get 409)
            raise ShapeDefinitionError("table", refusal)
        clause = self._compile(definition.where, info, definition.params)
        if clause is not None and definition.where is not None:  # for the schema checks: no parse again
            remember_columns(definition.where, clause.columns)
        return replace(compiled_from_clause(clause), column_types=table_column_types(info))

    def schema_header(self, definition: ShapeDefinition) -> str:
        """The ``electric-schema`` header for the shape, from the current catalog entry (rendered again only
        when that entry is another object: every response of a shape carries it)."""
        info = self.table(definition.schema, definition.table)
        hit = self._headers.get(definition)
        if hit is not None and hit[0] is info:
            return hit[1]
        header = schema_header(definition, info)
        if len(self._headers) >= _HEADERS_MAX:
            self._headers.clear()
        self._headers[definition] = (info, header)
        return header

    def describe(self) -> dict[str, Any]:
        return {"cached_tables": len(self._tables)}
