"""Execute a subset statement on libpq directly, prepared once per connection.

Why: a subset is a short query answered within its HTTP request, and psycopg's ``Connection.execute`` path
(query conversion, the prepared-statement bookkeeping, generator-based waiting, row building) cost the
gevent worker ~0.2 ms of CPU on a 50-row subset, more than the query costs Postgres.  Here a statement is
sent with ``PQsendQueryPrepared`` and waited for with :mod:`sync.runtime` (cooperative under gevent); the
caller reads the values it needs from the PGresult.

Prepared statements are per connection and bounded (:class:`Statements`, least recently used evicted with
``DEALLOCATE``); their names cannot collide with psycopg's own (``_pg3_*``).  A failed statement leaves the
connection's state unknown: the caller closes the connection (:class:`~sync.shapes.subset_runner.SubsetRunner`
does), so a statement cache never outlives its session.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from sync.runtime import FdWaiter

__all__ = [
    "MAX_STATEMENTS",
    "Prepared",
    "Statements",
    "SubsetConnection",
    "deallocate",
    "execute_early",
    "numbered_query",
    "prepare",
    "settle",
]

MAX_STATEMENTS: Final = 64  # prepared statements kept per connection
_OK: Final = pq.ConnStatus.OK  # the enum members, looked up once (per request on the hot path otherwise)
_TUPLES_OK: Final = pq.ExecStatus.TUPLES_OK
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


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement prepared on a connection: its name and what the caller keeps with it."""

    name: bytes
    payload: Any = None


class Statements:
    """The statements prepared on one connection: key -> :class:`Prepared`, least recently used first."""

    def __init__(self, limit: int = MAX_STATEMENTS) -> None:
        self._entries: OrderedDict[bytes, Prepared] = OrderedDict()
        self._limit = limit
        self._next = 0

    def get(self, key: bytes) -> Prepared | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def reserve(self) -> tuple[bytes, bytes | None]:
        """A new statement name, and the name to deallocate first (the least recently used one, forgotten
        now) when the limit is reached; :meth:`add` the entry once the statement is prepared."""
        evicted = self._entries.popitem(last=False)[1].name if len(self._entries) >= self._limit else None
        self._next += 1
        return b"shapesync_subset_%d" % self._next, evicted

    def add(self, key: bytes, entry: Prepared) -> None:
        self._entries[key] = entry

    def pop(self, key: bytes) -> Prepared | None:
        return self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class SubsetConnection(psycopg.Connection[Any]):
    """A pooled subset connection: psycopg's, plus its prepared statements and whether a statement run by
    :func:`execute_early` still has its end to be read (:func:`settle`)."""

    subset_statements: Statements
    unsettled: bool = False
    waiter: FdWaiter = FdWaiter(-1)  # until setup_subsets: the one-shot waits (never closed)

    def setup_subsets(self) -> None:
        """Called once the session is configured."""
        self.subset_statements = Statements()
        # its waits reuse their watchers (sync/runtime.py): closed in close(), before the socket is
        self.waiter = FdWaiter(self.pgconn.socket)

    def close(self) -> None:
        self.waiter.close()
        super().close()


def _flush(conn: SubsetConnection, pgconn: pq.abc.PGconn) -> None:
    while pgconn.flush():
        conn.waiter.wait_writable(pgconn.socket)


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
        conn.waiter.wait_readable(pgconn.socket)


def _exec(conn: SubsetConnection, send: Any, *args: Any) -> pq.abc.PGresult:
    pgconn = conn.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the subset connection is closed")
    send(*args)
    _flush(conn, pgconn)
    return _last_result(conn, pgconn)


def prepare(conn: SubsetConnection, key: bytes, query: bytes, payload: Any = None) -> Prepared:
    """The statement ``key`` of ``conn``, prepared from ``query`` (``$n`` placeholders) on first use."""
    statements = conn.subset_statements
    entry = statements.get(key)
    if entry is None:
        pgconn = conn.pgconn
        name, evicted = statements.reserve()
        if evicted is not None:
            _exec(conn, pgconn.send_query, b'DEALLOCATE "' + evicted + b'"')
        _exec(conn, pgconn.send_prepare, name, query)
        entry = Prepared(name, payload)
        statements.add(key, entry)  # only once prepared: an interrupted prepare is prepared again
    return entry


def deallocate(conn: SubsetConnection, key: bytes) -> None:
    """Forget the statement ``key`` of ``conn`` and deallocate it."""
    entry = conn.subset_statements.pop(key)
    if entry is not None:
        _exec(conn, conn.pgconn.send_query, b'DEALLOCATE "' + entry.name + b'"')


def execute_early(conn: SubsetConnection, entry: Prepared, params: list[bytes | None]) -> pq.abc.PGresult:
    """Run a prepared statement with text parameters (typed by Postgres); its rows as a PGresult, returned
    as soon as they are here, before Postgres ends the statement's transaction: the statement goes in a
    pipeline with a Flush request before its Sync, so Postgres sends the rows (and CommandComplete) before
    it commits and says ReadyForQuery.  For a read-only statement nothing is left to fail but the
    connection itself.  The connection is then ``unsettled``: :func:`settle` it before anything else runs
    on it (the caller may answer first).

    Raises psycopg errors (the statement's own, or OperationalError for a lost connection); the connection
    is settled again when it raises a statement's error."""
    pgconn = conn.pgconn
    if pgconn.status != _OK:
        raise psycopg.OperationalError("the subset connection is closed")
    pgconn.enter_pipeline_mode()
    conn.unsettled = True
    pgconn.send_query_prepared(entry.name, params)
    pgconn.send_flush_request()
    pgconn.pipeline_sync()
    _flush(conn, pgconn)
    wait, fd = conn.waiter.wait_readable, pgconn.socket
    while True:
        wait(fd)
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
    result = pgconn.get_result()
    if result is None or result.status != _TUPLES_OK:
        settle(conn)
        if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
            raise pg_errors.error_from_result(result, encoding=conn.info.encoding)
        status = "nothing" if result is None else pq.ExecStatus(result.status).name
        raise psycopg.ProgrammingError(f"the subset statement returned {status}")
    return result


def settle(conn: SubsetConnection) -> None:
    """Read the end of an :func:`execute_early` statement (up to its Sync) and leave pipeline mode; the
    connection is then idle.  Nothing to do for a settled connection.  Raises psycopg errors (the
    connection's state is then unknown: close it)."""
    if not conn.unsettled:
        return
    pgconn = conn.pgconn
    while True:
        # Normally the end came with the rows (libpq holds it already: no read, where reading anyway
        # cost a system call answering EAGAIN per subset) or since (read without waiting: no hub round
        # trip); only then wait.
        if pgconn.is_busy():
            pgconn.consume_input()
            while pgconn.is_busy():
                conn.waiter.wait_readable(pgconn.socket)
                pgconn.consume_input()
        result = pgconn.get_result()
        if result is not None and result.status == pq.ExecStatus.PIPELINE_SYNC:
            break
        if pgconn.status != pq.ConnStatus.OK:
            raise psycopg.OperationalError("the subset connection was lost")
    pgconn.exit_pipeline_mode()
    conn.unsettled = False
