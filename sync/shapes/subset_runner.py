"""Run subset snapshot queries (spec §9) with bounded concurrency.

Why a separate runner and not the SnapshotPool actor: a subset is a short read answered within its HTTP
request, so it runs in the request's own greenlet on a pooled connection; nothing is written to storage and
no actor needs to know.  Concurrency is bounded by a connection pool of ``size`` connections (the snapshot
pool's size by default); a request that cannot get one within ``queue_timeout`` gets :class:`SubsetBusy`
(the API answers 503 with ``retry-after``), so a burst of subsets can never exhaust Postgres' connections.

Each query is one statement in a ``REPEATABLE READ READ ONLY`` transaction (the session defaults of the
subset connections) with the display settings of the initial snapshot (values are byte-identical to
snapshot rows); it returns ``pg_current_snapshot()`` and the WAL insert position with the rows (the
metadata the client needs to join the subset with the live log, see :func:`with_snapshot_info`), in the
text format, encoded by the shape's :class:`~sync.shapes.log_items.ShapeLogEncoder`.
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
from sync.shapes.snapshot import display_settings_sql, parse_lsn
from sync.shapes.xid import PgSnapshot

__all__ = ["SubsetBusy", "SubsetQueryFailed", "SubsetResult", "SubsetRunner"]

logger = logging.getLogger(__name__)

_TEXT_OIDS = frozenset(oid for t in psycopg.postgres.types for oid in (t.oid, t.array_oid) if oid)


class SubsetBusy(RuntimeError):
    """Every subset connection stayed busy for the whole queue timeout."""


class SubsetQueryFailed(RuntimeError):
    """The subset query failed (connection lost, statement timeout, ...)."""


@dataclass(frozen=True, slots=True)
class SubsetResult:
    """The response body parts: ``metadata`` (JSON-ready) and the items as JSON bytes."""

    metadata: dict[str, Any]
    items: list[bytes]

    def body(self) -> bytes:
        return b"".join(
            (b'{"metadata":', orjson.dumps(self.metadata), b',"data":[', b",".join(self.items), b"]}")
        )


# Every statement on a subset connection is its own REPEATABLE READ READ ONLY transaction.
SESSION_DEFAULTS: Final = (
    "SET default_transaction_isolation = 'repeatable read'; SET default_transaction_read_only = on"
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

    Why one statement: its snapshot is the transaction's (REPEATABLE READ, see SESSION_DEFAULTS), so
    ``pg_current_snapshot()`` describes exactly the rows read, and the WAL position is read after that
    snapshot was taken (as :data:`~sync.shapes.snapshot.SNAPSHOT_INFO_QUERY` requires) -- all in one round
    trip, where ``BEGIN`` + snapshot query + rows + ``ROLLBACK`` cost four statements (measured under gevent
    on a 50-row subset: 0.35 ms against 0.5-0.58 ms even pipelined).  No row matched: one row whose
    ordinal is NULL.  ``row_number() OVER ()`` numbers the rows in the subquery's ORDER BY order.
    """
    return _INFO_HEAD + query + _INFO_TAIL


def _with_mark(item: bytes, mark: bytes) -> bytes:
    """Add ``"snapshot_mark":N`` to the headers object that closes a snapshot item."""
    assert item.endswith(b"}}"), item[-20:]
    return item[:-2] + mark + b"}}"


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
        self._pool = ConnectionPool(
            dsn,
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

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # values in their Postgres text output, as the initial snapshot reads them (see raw_text_cursor),
        # registered once per connection: registering per cursor costs more than a small query
        for oid in _TEXT_OIDS:
            conn.adapters.register_loader(oid, TextLoader)
        conn.execute(display_settings_sql())
        conn.execute(SESSION_DEFAULTS)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(self._statement_timeout_ms)))

    def close(self) -> None:
        with self._lock:
            if self._opened:
                self._pool.close()
                self._opened = False

    def _open(self) -> None:
        with self._lock:
            if not self._opened:
                self._pool.open(wait=False)
                self._opened = True

    def run(self, query: bytes, params: Sequence[Any], encoder: ShapeLogEncoder) -> SubsetResult:
        """Run one subset query; raises SubsetBusy or SubsetQueryFailed."""
        self._open()
        mark = next(self._marks)
        try:
            with self._pool.connection(timeout=self._queue_timeout) as conn:
                return self._query(conn, query, params, encoder, mark)
        except PoolTimeout:
            raise SubsetBusy("no subset connection free within the queue timeout") from None
        except psycopg.Error as exc:
            logger.warning("subset query failed: %r", exc)
            raise SubsetQueryFailed(f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _query(
        conn: psycopg.Connection[Any],
        query: bytes,
        params: Sequence[Any],
        encoder: ShapeLogEncoder,
        mark: int,
    ) -> SubsetResult:
        # params always given (even empty): psycopg then parses the query, so `%%` in identifiers means `%`
        rows = conn.execute(with_snapshot_info(query), tuple(params)).fetchall()
        snapshot = PgSnapshot.parse(str(rows[0][0]))
        lsn = parse_lsn(str(rows[0][1]))
        if rows[0][2] is None:  # the LEFT JOIN's lone row: no row matched
            rows = []
        mark_bytes = b',"snapshot_mark":%d' % mark
        item = encoder.snapshot_item
        items = [_with_mark(item(r[3:])[1], mark_bytes) for r in rows]
        metadata = {
            "xmin": str(snapshot.xmin),
            "xmax": str(snapshot.xmax),
            "xip_list": [str(x) for x in sorted(snapshot.xip)],
            "database_lsn": str(lsn),
            "snapshot_mark": mark,
        }
        return SubsetResult(metadata, items)
