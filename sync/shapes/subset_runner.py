"""Run subset snapshot queries (spec §9) with bounded concurrency.

Why a separate runner and not the SnapshotPool actor: a subset is a short read answered within its HTTP
request, so it runs in the request's own greenlet on a pooled connection; nothing is written to storage and
no actor needs to know.  Concurrency is bounded by a connection pool of ``size`` connections (the snapshot
pool's size by default); a request that cannot get one within ``queue_timeout`` gets :class:`SubsetBusy`
(the API answers 503 with ``retry-after``), so a burst of subsets can never exhaust Postgres' connections.

Each query is ONE statement on an autocommit connection whose session default is ``REPEATABLE READ READ
ONLY``: a single statement is its own transaction with exactly one snapshot, and ``pg_current_snapshot()``
inside it returns that snapshot, so the statement returns the rows together with the metadata the client
needs to join the subset with the live log, in one round trip where ``BEGIN`` + query + ``COMMIT`` would
take three (measured under gevent on a 50-row subset: 0.35 ms against 0.5-0.58 ms even pipelined).  The
WAL position is read in the same statement after its snapshot was taken (as
:data:`~sync.shapes.snapshot.SNAPSHOT_INFO_QUERY` requires).  Postgres builds each item's JSON
(:mod:`sync.shapes.subset_items`) with the display settings of the initial snapshot, so items are
byte-identical to :meth:`~sync.shapes.log_items.ShapeLogEncoder.snapshot_item`'s, with ``"snapshot_mark"``
added as the last header (the mark goes in with the separator Postgres joins them with).

The statement runs on libpq directly (:mod:`sync.shapes.subset_exec`), prepared once per connection, and
the worker only puts the metadata around the items' bytes: on a 50-row subset its CPU went from ~0.28 ms
(psycopg's ``execute``, rows encoded in Python) to ~0.08 ms, and the latency from ~0.48 to ~0.36 ms
(unloaded, wall time of the call).  ``client_encoding`` is UTF8 so that the items Postgres sends are the
body's bytes.

The rows are read as soon as Postgres sends them, before it ends the statement's transaction
(:func:`~sync.shapes.subset_exec.execute_early`: a Flush before the Sync); the connection goes back
unsettled and the end of its statement is read before its next use (:mod:`sync.shapes.subset_hot`).
Measured in alternating bench.subset runs: 20-45 µs less above the HTTP floor.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import orjson
import psycopg
from psycopg import pq, sql
from psycopg_pool import ConnectionPool, PoolTimeout

from sync.shapes.definition import ShapeDefinition
from sync.shapes.item_sql import raw_values_clean
from sync.shapes.snapshot import display_settings_sql, parse_lsn
from sync.shapes.subset_exec import (
    Prepared,
    SubsetConnection,
    deallocate,
    execute_early,
    numbered_query,
    prepare,
    settle,
)
from sync.shapes.subset_hot import KeptConnections
from sync.shapes.subset_items import RAW_AT, STALE_SQLSTATE, ItemStatement, item_statement
from sync.shapes.xid import PgSnapshot

__all__ = ["SubsetBusy", "SubsetQueryFailed", "SubsetResult", "SubsetRunner"]

logger = logging.getLogger(__name__)


class SubsetBusy(RuntimeError):
    """Every subset connection stayed busy for the whole queue timeout."""


class SubsetQueryFailed(RuntimeError):
    """The subset query failed (connection lost, statement timeout, ...)."""


@dataclass(frozen=True, slots=True)
class SubsetResult:
    """The response: the metadata (``metadata_json``, also decoded as ``metadata``), the number of items and
    the whole JSON body."""

    metadata_json: bytes
    count: int
    json: bytes

    @property
    def metadata(self) -> dict[str, Any]:
        decoded: dict[str, Any] = orjson.loads(self.metadata_json)
        return decoded

    def body(self) -> bytes:
        return self.json


SEPARATOR: Final = b"\x01"  # what Postgres joins the items with (see _items)

# Every statement on a subset connection is its own REPEATABLE READ READ ONLY transaction.
SESSION_DEFAULTS: Final = (
    "SET default_transaction_isolation = 'repeatable read'; SET default_transaction_read_only = on; "
    "SET client_encoding = 'UTF8'"
)


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
        self._kept = KeptConnections(
            self._pool, max_idle, settle
        )  # between requests (sync/shapes/subset_hot.py)
        self._lock = threading.Lock()
        self._opened = False
        # marks start at random so that marks of an earlier process run are unlikely to collide
        self._marks = itertools.count(secrets.randbelow(1 << 30) + 1)

    def _configure(self, conn: SubsetConnection) -> None:
        conn.execute(display_settings_sql())
        conn.execute(SESSION_DEFAULTS)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(self._statement_timeout_ms)))
        conn.setup_subsets()

    def settle_pending(self) -> None:
        """Read the end of the statements whose connections were put back unsettled (see
        :func:`~sync.shapes.subset_exec.execute_early`): the hook run once a subset's answer has left."""
        self._kept.settle_kept()

    def close(self) -> None:
        with self._lock:
            if self._opened:
                self._kept.close()
                self._pool.close()
                self._opened = False

    def _open(self) -> None:
        if self._opened:  # set once, under the lock, before any query: a stale False only takes the lock
            return
        with self._lock:
            if not self._opened:
                self._pool.open(wait=False)
                self._opened = True

    def run(self, query: bytes, params: Sequence[Any], definition: ShapeDefinition) -> SubsetResult:
        """Run one subset query (psycopg ``%s`` syntax, as built by
        :func:`~sync.shapes.subset.build_subset_query`, selecting ``definition.columns``); raises SubsetBusy
        or SubsetQueryFailed."""
        self._open()
        mark = next(self._marks)
        values = [SEPARATOR, *[_param(v) for v in params]]  # the separator is the statement's first value
        # kept connections over the pool's getconn/putconn (sync/shapes/subset_hot.py), never
        # pool.connection(): that one also enters the connection's own context, whose exit takes its lock to
        # commit an autocommit connection (~20 µs under gevent)
        # A connection the server or the network cut while it sat idle (a restart, ``idle_session_timeout``,
        # a proxy) fails its next query with the database up: the query (read-only) runs again on another.
        # Each such one is closed and leaves the pool, which holds at most ``max_size``: one more try than
        # that reaches a new connection.
        for tries_left in range(self._pool.max_size, -1, -1):
            try:
                conn = self._kept.get(self._queue_timeout)
            except PoolTimeout:
                raise SubsetBusy("no subset connection free within the queue timeout") from None
            try:
                result, items = _items(conn, query, values, definition, mark)
            except (psycopg.Error, LookupError) as exc:
                cut = conn.broken
                conn.close()  # its prepared statements and session state are unknown now: never reuse it
                if cut and tries_left:
                    logger.info("a subset connection was cut (%r): the query runs again on another", exc)
                    continue
                logger.warning("subset query failed: %r", exc)
                raise SubsetQueryFailed(f"{type(exc).__name__}: {exc}") from exc
            finally:
                self._kept.put(conn, unsettled=conn.unsettled)
            return _result(result, items, mark)
        raise AssertionError("unreachable: the last try returns or raises")


@lru_cache(maxsize=1024)
def _keys(query: bytes, relation_oid: int, key_columns: tuple[str, ...]) -> tuple[bytes, bytes]:
    """The keys of ``query``'s unchecked and checked statements on a connection: the items depend on the
    shape's key columns too, which the query text does not show.  Kept, so that a repeated subset (its plan
    hands the same ``query`` object again) neither joins nor hashes the ~1 KB keys again."""
    key = query + b"\x00" + orjson.dumps([relation_oid, key_columns])
    return key, key + _CHECKED


def _items(
    conn: SubsetConnection, query: bytes, values: list[bytes | None], definition: ShapeDefinition, mark: int
) -> tuple[pq.abc.PGresult, tuple[bytes, ...]]:
    """Run ``query``'s item statement with ``values`` (:data:`SEPARATOR` first, then the query's): its result
    and the items' pieces (``mark`` added to each).  The statement is built again (once) if the columns
    changed since it was built (:mod:`sync.shapes.subset_items`).

    Postgres joins the items with one :data:`SEPARATOR` byte, which the worker then replaces by the
    separator proper (``tail + "," + head``, ~130 bytes): the answer Postgres sends is that much smaller
    (the benchmark's 50 rows: ~6 KB instead of ~12 KB, under Postgres' 8 KB send buffer, so it leaves in
    one send and wakes the worker once).  Items are JSON, which never holds that byte unescaped; should a
    value hold it anyway, Postgres joins them with the separator proper.

    Where the columns allow it, the statement is first run unchecked (text values without ``to_json``,
    ~25-30 µs of Postgres time on the benchmark's 50 rows, spent while the worker waits): its middles are
    used only when the values written unescaped hold no byte JSON escapes (the separator among them:
    :func:`~sync.shapes.item_sql.raw_values_clean`); otherwise the checked statement (``to_json``) runs,
    as it always did."""
    key, checked = _keys(query, definition.relation_oid, definition.key_columns)
    for attempt in range(2):
        try:
            found = _run_items(conn, (key, checked), query, values, definition, mark)
        except psycopg.Error as exc:
            if attempt or exc.sqlstate != STALE_SQLSTATE:
                raise
        else:
            if found is not None:
                return found
        settle(conn)  # the answer is dropped: read its end before the connection runs anything else
        deallocate(conn, key)
        deallocate(conn, checked)
    raise LookupError(f"the columns of {definition.schema}.{definition.table} keep changing")


_CHECKED: Final = b"\x00checked"  # the key suffix of the checked statement beside an unchecked one


def _statement(
    conn: SubsetConnection, key: bytes, query: bytes, definition: ShapeDefinition, *, unchecked: bool
) -> Prepared:
    entry = conn.subset_statements.get(key)
    if entry is None:
        item = item_statement(conn, definition, query, unchecked=unchecked)
        entry = prepare(conn, key, numbered_query(item.query), item)
    return entry


def _run_items(  # noqa: PLR0917 - one request's whole context
    conn: SubsetConnection,
    keys: tuple[bytes, bytes],
    query: bytes,
    values: list[bytes | None],
    definition: ShapeDefinition,
    mark: int,
) -> tuple[pq.abc.PGresult, tuple[bytes, ...]] | None:
    """:func:`_items`' one try; None when a column changed (the caller builds the statements again).
    Once an unchecked run needed the checked statement on this connection, the checked one runs first
    (its values are likely to need escaping again): at most one wasted run per statement and connection."""
    key, checked = keys
    statements = conn.subset_statements
    entry = (
        statements.get(checked)
        or statements.get(key)
        or _statement(conn, key, query, definition, unchecked=True)
    )
    statement: ItemStatement = entry.payload
    result = execute_early(conn, entry, values)
    get = result.get_value
    rows, items, middles = get(0, 2), get(0, 3), get(0, 4)
    if rows != items:  # a column built as NOT NULL holds a NULL now
        return None
    if middles is None:
        return result, ()
    tail = statement.marked_tail % mark
    separator = statement.marked_separator % mark
    n = int(items or b"0")
    if statement.unchecked:
        # the separators counted too: the replace is right only if no value holds that byte
        if raw_values_clean([get(0, i) for i in range(RAW_AT, RAW_AT + statement.raw)]) and (
            middles.count(SEPARATOR) == n - 1
        ):
            return result, (statement.head, middles.replace(SEPARATOR, separator), tail)
        settle(conn)  # a value needs escaping (or holds the separator byte): the checked statement
        entry = _statement(conn, checked, query, definition, unchecked=False)
        statement = entry.payload
        tail = statement.marked_tail % mark  # its own: the unchecked one's closes a raw text value's quote
        separator = statement.marked_separator % mark
        result = execute_early(conn, entry, values)
        rows, items, middles = result.get_value(0, 2), result.get_value(0, 3), result.get_value(0, 4)
        if rows != items:
            return None
        if middles is None:
            return result, ()
        n = int(items or b"0")
    if middles.count(SEPARATOR) == n - 1:
        return result, (statement.head, middles.replace(SEPARATOR, separator), tail)
    settle(conn)  # a value holds the byte: joined by Postgres with the separator proper
    result = execute_early(conn, entry, [separator, *values[1:]])
    rows, items, middles = result.get_value(0, 2), result.get_value(0, 3), result.get_value(0, 4)
    if rows != items:
        return None
    return result, () if middles is None else (statement.head, middles, tail)


def _result(result: pq.abc.PGresult, items: tuple[bytes, ...], mark: int) -> SubsetResult:
    """The body ``{"metadata":…,"data":[items]}`` (the items' pieces joined once, into the body)."""
    meta = metadata_json(bytes(result.get_value(0, 0) or b""), bytes(result.get_value(0, 1) or b""), mark)
    count = int(bytes(result.get_value(0, 2) or b"0"))
    return SubsetResult(meta, count, b"".join((b'{"metadata":', meta, b',"data":[', *items, b"]}")))


def metadata_json(snapshot: bytes, lsn: bytes, mark: int) -> bytes:
    """The subset's metadata object from the statement's ``pg_current_snapshot()`` and WAL position texts,
    as ``orjson.dumps`` writes ``{"xmin": str, "xmax": str, "xip_list": [str, ...] (ascending),
    "database_lsn": str (decimal), "snapshot_mark": mark}``; written directly (numbers only, nothing to
    escape).  Raises ValueError on a value that is not what Postgres writes (PgSnapshot.parse).

    All but the mark is kept per (snapshot, WAL position) text (:func:`_metadata_head`): subsets with no
    write between them see the same snapshot and position, and the parse and formatting cost the worker
    ~8 µs a request on its critical path (in the benchmark, where its caches are cold)."""
    return _metadata_head(snapshot, lsn) + b"%d}" % mark


@lru_cache(maxsize=64)
def _metadata_head(snapshot: bytes, lsn: bytes) -> bytes:
    """``metadata_json`` up to the mark's value (a pure function of the two texts: safe to share)."""
    parsed = PgSnapshot.parse(snapshot.decode())
    return b'{"xmin":"%d","xmax":"%d","xip_list":[%s],"database_lsn":"%d","snapshot_mark":' % (
        parsed.xmin,
        parsed.xmax,
        b",".join(b'"%d"' % x for x in sorted(parsed.xip)),
        parse_lsn(lsn.decode()),
    )
