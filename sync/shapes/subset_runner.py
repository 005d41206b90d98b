"""Run subset snapshot queries (spec §9) with bounded concurrency.

Why a separate runner and not the SnapshotPool actor: a subset is a short read answered within its HTTP
request, so it runs in the request's own greenlet on a pooled connection; nothing is written to storage and
no actor needs to know.  Concurrency is bounded by a connection pool of ``size`` connections (the snapshot
pool's size by default); a request that cannot get one within ``queue_timeout`` gets :class:`SubsetBusy`
(the API answers 503 with ``retry-after``), so a burst of subsets can never exhaust Postgres' connections.

Each query is ONE statement on an autocommit connection whose session default is ``REPEATABLE READ READ
ONLY``: a single statement is its own transaction with exactly one snapshot, and ``pg_current_snapshot()``
inside it returns that snapshot, so the statement returns the rows together with the metadata the client
needs to join the subset with the live log (see :func:`with_snapshot_info`) in one round trip, where
``BEGIN`` + query + ``COMMIT`` would take three.  Values are read in the text format with the display
settings of the initial snapshot, so they are byte-identical to snapshot rows, and the items are those of
:meth:`~sync.shapes.log_items.ShapeLogEncoder.snapshot_item` with ``"snapshot_mark"`` added to their headers.

Why the query runs on libpq directly (:mod:`sync.shapes.subset_exec`) rather than ``conn.execute``: on a
50-row subset under gevent, psycopg's cursor machinery cost the worker ~0.2 ms of CPU per query, more than
the whole query costs Postgres.  Each connection prepares a statement once per distinct query text (bounded,
see :class:`~sync.shapes.subset_exec.Statements`), loads the rows with psycopg's C transformer, and the
response body is serialised by one ``orjson.dumps``.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import psycopg
import psycopg.postgres
from psycopg import sql
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.log_layout import key_prefix, row_key
from sync.shapes.snapshot import display_settings_sql, parse_lsn
from sync.shapes.subset_exec import SubsetConnection, numbered_query, run_prepared
from sync.shapes.xid import PgSnapshot

__all__ = ["SubsetBusy", "SubsetQueryFailed", "SubsetResult", "SubsetRunner", "with_snapshot_info"]

logger = logging.getLogger(__name__)

_TEXT_OIDS = frozenset(oid for t in psycopg.postgres.types for oid in (t.oid, t.array_oid) if oid)


class SubsetBusy(RuntimeError):
    """Every subset connection stayed busy for the whole queue timeout."""


class SubsetQueryFailed(RuntimeError):
    """The subset query failed (connection lost, statement timeout, ...)."""


@dataclass(frozen=True, slots=True)
class SubsetResult:
    """The response: ``metadata`` (JSON-ready), the number of items and the whole JSON body."""

    metadata: dict[str, Any]
    count: int
    json: bytes

    def body(self) -> bytes:
        return self.json


# Every statement on a subset connection is its own REPEATABLE READ READ ONLY transaction.
SESSION_DEFAULTS: Final = (
    "SET default_transaction_isolation = 'repeatable read'; SET default_transaction_read_only = on; "
    "SET client_encoding = 'UTF8'"
)
_INFO_HEAD: Final = (
    b"WITH info AS MATERIALIZED "
    b"(SELECT pg_current_snapshot()::text AS snapshot, pg_current_wal_insert_lsn()::text AS lsn) "
    b"SELECT info.snapshot, info.lsn, s.* FROM info LEFT JOIN LATERAL "
    b'(SELECT row_number() OVER () AS "shapesync ordinal", x.* FROM ('
)
_INFO_TAIL: Final = b') x) s ON true ORDER BY s."shapesync ordinal"'


def with_snapshot_info(query: bytes) -> bytes:
    """One statement giving ``(snapshot, wal insert lsn, ordinal, *row)`` per row of ``query``, in order.

    Why one statement: its snapshot is the transaction's (one autocommit statement, see the module
    docstring), so ``pg_current_snapshot()`` describes exactly the rows read, and the WAL position is read
    after that snapshot was taken (as :data:`~sync.shapes.snapshot.SNAPSHOT_INFO_QUERY` requires) -- all in
    one round trip, where ``BEGIN`` + snapshot query + rows + ``ROLLBACK`` cost four statements (measured
    under gevent on a 50-row subset: 0.35 ms against 0.5-0.58 ms even pipelined).  No row matched: one row
    whose ordinal is NULL.  ``row_number() OVER ()`` numbers the rows in the subquery's ORDER BY order.
    """
    return _INFO_HEAD + query + _INFO_TAIL


def _param(value: Any) -> bytes | None:
    """A bound value in the text format, typed by Postgres from its context (``CAST`` or LIMIT/OFFSET)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    raise TypeError(f"unexpected subset parameter {value!r}")


class SubsetRunner:
    """Thread/greenlet-safe.  Connections are opened lazily and closed after ``max_idle`` seconds idle."""

    def __init__(
        self,
        dsn: str,
        *,
        size: int = 8,
        queue_timeout: float = 5.0,
        statement_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_idle: float = 60.0,
    ) -> None:
        self._queue_timeout = queue_timeout
        self._statement_timeout_ms = max(1, int(statement_timeout * 1000))
        self._pool: ConnectionPool[SubsetConnection] = ConnectionPool(
            dsn,
            connection_class=SubsetConnection,
            min_size=0,
            max_size=size,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            configure=self._configure,
            open=False,
            max_idle=max_idle,
            name="subsets",
        )
        self._lock = threading.Lock()
        self._opened = False
        # marks start at random so that marks of an earlier process run are unlikely to collide
        self._marks = itertools.count(secrets.randbelow(1 << 30) + 1)

    def _configure(self, conn: SubsetConnection) -> None:
        # values in their Postgres text output, as the initial snapshot reads them (see raw_text_cursor),
        # registered once per connection: registering per cursor costs more than a small query
        for oid in _TEXT_OIDS:
            conn.adapters.register_loader(oid, TextLoader)
        conn.execute(display_settings_sql())
        conn.execute(SESSION_DEFAULTS)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(self._statement_timeout_ms)))
        conn.setup_subsets()

    def close(self) -> None:
        with self._lock:
            if self._opened:
                self._pool.close()
                self._opened = False

    def _open(self) -> None:
        if self._opened:  # set once, under the lock, before any query: a stale False only takes the lock
            return
        with self._lock:
            if not self._opened:
                self._pool.open(wait=False)
                self._opened = True

    def run(self, query: bytes, params: Sequence[Any], encoder: ShapeLogEncoder) -> SubsetResult:
        """Run one subset query (psycopg ``%s`` syntax, as built by
        :func:`~sync.shapes.subset.build_subset_query`); raises SubsetBusy or SubsetQueryFailed."""
        self._open()
        mark = next(self._marks)
        statement = numbered_query(with_snapshot_info(query))
        values = [_param(v) for v in params]
        # getconn/putconn rather than pool.connection(): that one also enters the connection's own context,
        # whose exit takes its lock to commit an autocommit connection (~20 µs under gevent)
        try:
            conn = self._pool.getconn(timeout=self._queue_timeout)
        except PoolTimeout:
            raise SubsetBusy("no subset connection free within the queue timeout") from None
        try:
            rows = run_prepared(conn, statement, values)
        except psycopg.Error as exc:
            conn.close()  # its prepared statements and session state are unknown now: never reuse it
            logger.warning("subset query failed: %r", exc)
            raise SubsetQueryFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._pool.putconn(conn)
        return _result(rows, encoder, mark)


def _result(rows: list[tuple[Any, ...]], encoder: ShapeLogEncoder, mark: int) -> SubsetResult:
    """The body: ``{"metadata":…,"data":[items]}``, each item as :meth:`ShapeLogEncoder.snapshot_item` makes
    it plus ``"snapshot_mark"`` as the last header, serialised by one ``orjson.dumps`` (orjson writes dicts
    in insertion order without whitespace, as the encoder's own ``orjson.dumps`` calls do)."""
    snapshot = PgSnapshot.parse(str(rows[0][0]))
    lsn = parse_lsn(str(rows[0][1]))
    if rows[0][2] is None:  # the LEFT JOIN's lone row: no row matched
        rows = []
    definition = encoder.definition
    columns = definition.columns
    headers = {
        "operation": "insert",
        "relation": [definition.schema, definition.table],
        "snapshot_mark": mark,
    }
    prefix = key_prefix(definition.schema, definition.table)
    positions = [3 + columns.index(c) for c in definition.key_columns]
    # rows are (snapshot, lsn, ordinal, *columns) by construction of the query: zip needs no strict check
    if len(positions) == 1 and all(r[positions[0]] is not None for r in rows):  # the common single-column key
        head, at = prefix + '/"', positions[0]
        data = [
            {
                "key": head + r[at].replace("/", "//") + '"',
                "value": dict(zip(columns, r[3:], strict=False)),
                "headers": headers,
            }
            for r in rows
        ]
    else:
        data = [
            {
                "key": row_key(prefix, [r[i] for i in positions]),
                "value": dict(zip(columns, r[3:], strict=False)),
                "headers": headers,
            }
            for r in rows
        ]
    metadata = {
        "xmin": str(snapshot.xmin),
        "xmax": str(snapshot.xmax),
        "xip_list": [str(x) for x in sorted(snapshot.xip)],
        "database_lsn": str(lsn),
        "snapshot_mark": mark,
    }
    return SubsetResult(metadata, len(data), orjson.dumps({"metadata": metadata, "data": data}))
