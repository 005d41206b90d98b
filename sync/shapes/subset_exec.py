"""Execute a subset statement on libpq directly: prepared once per connection, rows loaded in C.

Why: a subset is a short query answered within its HTTP request, and psycopg's ``Connection.execute`` path
(query conversion, the prepared-statement bookkeeping, generator-based waiting, row building) cost the
gevent worker ~0.2 ms of CPU on a 50-row subset, more than the query costs Postgres.  Here a statement is
sent with ``PQsendQueryPrepared`` and waited for with :mod:`sync.runtime` (cooperative under gevent), and
the rows are loaded by psycopg's C :class:`~psycopg.adapt.Transformer` with the connection's loaders.

Prepared statements are per connection and bounded (:class:`Statements`, least recently used evicted with
``DEALLOCATE``); their names cannot collide with psycopg's own (``_pg3_*``).  A failed statement leaves the
connection's state unknown: the caller closes the connection (:class:`~sync.shapes.subset_runner.SubsetRunner`
does), so a statement cache never outlives its session.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Final

import psycopg
from psycopg import abc, pq
from psycopg import errors as pg_errors
from psycopg.adapt import Transformer

from sync.runtime import wait_readable, wait_writable

__all__ = ["MAX_STATEMENTS", "Statements", "SubsetConnection", "numbered_query", "run_prepared"]

MAX_STATEMENTS: Final = 64  # prepared statements kept per connection
_PLACEHOLDER = re.compile(rb"%%|%s")


@lru_cache(maxsize=512)
def numbered_query(query: bytes) -> bytes:
    """A psycopg-style query (``%s`` placeholders, ``%%`` for ``%``) in Postgres' ``$n`` syntax.

    Raises ValueError on any other ``%`` sequence (psycopg would reject it too)."""
    counter = iter(range(1, 1 << 16))

    def one(match: re.Match[bytes]) -> bytes:
        return b"%" if match.group() == b"%%" else b"$%d" % next(counter)

    out = _PLACEHOLDER.sub(one, query)
    if b"%" in _PLACEHOLDER.sub(b"", query):
        raise ValueError("only %s placeholders and %% are allowed in a subset query")
    return out


class Statements:
    """The statements prepared on one connection: query text -> name, least recently used first."""

    def __init__(self, limit: int = MAX_STATEMENTS) -> None:
        self._names: OrderedDict[bytes, bytes] = OrderedDict()
        self._limit = limit
        self._next = 0

    def get(self, query: bytes) -> bytes | None:
        name = self._names.get(query)
        if name is not None:
            self._names.move_to_end(query)
        return name

    def reserve(self) -> tuple[bytes, bytes | None]:
        """A new statement name, and the name to deallocate first (the least recently used one, forgotten
        now) when the limit is reached; :meth:`add` the name once the statement is prepared."""
        evicted = self._names.popitem(last=False)[1] if len(self._names) >= self._limit else None
        self._next += 1
        return b"shapesync_subset_%d" % self._next, evicted

    def add(self, query: bytes, name: bytes) -> None:
        self._names[query] = name

    def __len__(self) -> int:
        return len(self._names)


class SubsetConnection(psycopg.Connection[Any]):
    """A pooled subset connection: psycopg's, plus its prepared statements and a row transformer."""

    subset_statements: Statements
    subset_transformer: abc.Transformer

    def setup_subsets(self) -> None:
        """Called once the session is configured (loaders registered): the transformer copies them."""
        self.subset_statements = Statements()
        self.subset_transformer = Transformer(self)  # psycopg's C transformer


def _flush(pgconn: pq.abc.PGconn) -> None:
    while pgconn.flush():
        wait_writable(pgconn.socket)


def _last_result(conn: SubsetConnection, pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    """Wait for the statement's results; raise its error (psycopg's class for its SQLSTATE)."""
    result: pq.abc.PGresult | None = None
    error: pq.abc.PGresult | None = None
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            res = pgconn.get_result()
            if res is None:
                if error is not None:
                    raise pg_errors.error_from_result(error, encoding=conn.info.encoding)
                if result is None:
                    raise psycopg.OperationalError("no result from the subset statement")
                return result
            if res.status == pq.ExecStatus.FATAL_ERROR:
                error = error or res
            else:
                result = res
        wait_readable(pgconn.socket)


def _exec(conn: SubsetConnection, send: Any, *args: Any) -> pq.abc.PGresult:
    pgconn = conn.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the subset connection is closed")
    send(*args)
    _flush(pgconn)
    return _last_result(conn, pgconn)


def run_prepared(conn: SubsetConnection, query: bytes, params: list[bytes | None]) -> list[tuple[Any, ...]]:
    """Run ``query`` (``$n`` placeholders, text parameters typed by Postgres) as a prepared statement of
    ``conn`` (prepared on first use); return its rows loaded by the connection's loaders.

    Raises psycopg errors (the statement's own, or OperationalError for a lost connection)."""
    pgconn = conn.pgconn
    statements = conn.subset_statements
    name = statements.get(query)
    if name is None:
        name, evicted = statements.reserve()
        if evicted is not None:
            _exec(conn, pgconn.send_query, b'DEALLOCATE "' + evicted + b'"')
        _exec(conn, pgconn.send_prepare, name, query)
        statements.add(query, name)  # only once prepared: an interrupted prepare is prepared again
    result = _exec(conn, pgconn.send_query_prepared, name, params)
    if result.status != pq.ExecStatus.TUPLES_OK:
        raise psycopg.ProgrammingError(f"the subset statement returned {pq.ExecStatus(result.status).name}")
    transformer = conn.subset_transformer
    transformer.set_pgresult(result)
    rows: list[tuple[Any, ...]] = transformer.load_rows(0, result.ntuples, tuple)
    return rows
