"""Run subset snapshot queries (spec §9) with bounded concurrency.

Why a separate runner and not the SnapshotPool actor: a subset is a short read answered within its HTTP
request, so it runs in the request's own greenlet on a pooled connection; nothing is written to storage and
no actor needs to know.  Concurrency is bounded by a connection pool of ``size`` connections (the snapshot
pool's size by default); a request that cannot get one within ``queue_timeout`` gets :class:`SubsetBusy`
(the API answers 503 with ``retry-after``), so a burst of subsets can never exhaust Postgres' connections.

Each query runs in ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`` with the display settings of the
initial snapshot (values are byte-identical to snapshot rows), reads ``pg_current_snapshot()`` and the WAL
insert position first (the metadata the client needs to join the subset with the live log), then the rows
in the text format, encoded by the shape's :class:`~sync.shapes.log_items.ShapeLogEncoder`.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.snapshot import (
    BEGIN_SNAPSHOT,
    SNAPSHOT_INFO_QUERY,
    display_settings_sql,
    parse_lsn,
    raw_text_cursor,
)
from sync.shapes.xid import PgSnapshot

__all__ = ["SubsetBusy", "SubsetQueryFailed", "SubsetResult", "SubsetRunner"]

logger = logging.getLogger(__name__)


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
        conn.execute(display_settings_sql())
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

    def run(self, query: sql.Composed, params: Sequence[Any], encoder: ShapeLogEncoder) -> SubsetResult:
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
        query: sql.Composed,
        params: Sequence[Any],
        encoder: ShapeLogEncoder,
        mark: int,
    ) -> SubsetResult:
        conn.execute(BEGIN_SNAPSHOT)
        try:
            row = conn.execute(SNAPSHOT_INFO_QUERY).fetchone()
            assert row is not None
            snapshot = PgSnapshot.parse(str(row[0]))
            lsn = parse_lsn(str(row[1]))
            with raw_text_cursor(conn) as cur:
                cur.execute(query, tuple(params) or None)
                rows = cur.fetchall()
        finally:
            if not conn.broken:
                conn.execute("ROLLBACK")
        mark_bytes = b',"snapshot_mark":%d' % mark
        item = encoder.snapshot_item
        items = [_with_mark(item(r)[1], mark_bytes) for r in rows]
        metadata = {
            "xmin": str(snapshot.xmin),
            "xmax": str(snapshot.xmax),
            "xip_list": [str(x) for x in sorted(snapshot.xip)],
            "database_lsn": str(lsn),
            "snapshot_mark": mark,
        }
        return SubsetResult(metadata, items)
