"""One initial snapshot, run on its own connection outside any actor's inbox.

Why a separate module: the SnapshotPool actor only dispatches; the work (a consistent read of the shape's
rows, streamed into storage chunk by chunk) happens here, in a worker spawned per snapshot (a greenlet under
gevent, where psycopg's high-level API is cooperative; a thread otherwise).

Sequence (architecture §3, hard spot 3): ask the consumer to register with the collector
(``PrepareSnapshot``; registering only now, not when the shape was created, means shapes queued behind
busy workers hold nothing and pin no acknowledgement), then, in one round trip, ``BEGIN ISOLATION LEVEL
REPEATABLE READ READ ONLY``, ``pg_current_snapshot()`` whose xmin/xmax/xip go to the consumer at once (it
may now filter the transactions it holds) and the table's size and columns (the connection has the display
settings, so values are byte-identical to what replication sends), again until the snapshot sees every
transaction routed before the registration (:mod:`sync.shapes.snapshot_start`); then the rows as finished
log items, built by Postgres: a shape with a WHERE clause and at most a few thousand rows in one more round
trip, others read range by range of heap pages on up to two connections sharing the snapshot
(:mod:`sync.shapes.snapshot_blocks`; ``COPY`` and :mod:`sync.shapes.snapshot_copy` for a non-UTF-8
connection), appended to storage a range (or a few MB of small ranges) at a time, up to
:data:`STORE_AHEAD_BYTES` of appends in the storage actor while the next ranges stream in, then
``snapshot-end``.  The table is never held in memory.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, Final, cast

import psycopg
import pykka
from psycopg import sql

from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.snapshot import (
    BEGIN_SNAPSHOT,
    display_settings_sql,
)
from sync.shapes.snapshot_blocks import (
    DEFAULT_PAGES,
    block_query,
    parallel_blocks,
    read_blocks,
    read_selected,
)
from sync.shapes.snapshot_copy import CopyItemBuilder, copy_items, snapshot_copy_statement
from sync.shapes.snapshot_messages import (
    PrepareSnapshot,
    SnapshotCompleted,
    SnapshotFailed,
    SnapshotProgress,
    SnapshotRequest,
    SnapshotStarted,
)
from sync.shapes.snapshot_sql import table_of
from sync.shapes.snapshot_start import ConnectionLost, begin_snapshot
from sync.storage.storage_actor import AppendSnapshot, AppendSnapshotBlock, CompleteSnapshot

__all__ = [
    "connect_snapshot",
    "run_snapshot",
    "store_messages",
    "take_snapshot",
]

logger = logging.getLogger(__name__)
STORE_BYTES: Final = 4 << 20  # small ranges' items are joined up to this per storage append
# A range's block at least this large goes to storage as it is: joining blocks into bigger appends cost the
# worker ~0.1 s of CPU per million benchmark rows (234 MB copied into fresh buffers; 5 paired runs, 0.66-0.78
# s against 0.79-0.97 s in all).
STORE_ALONE: Final = 1 << 20
# Bytes of appends in flight: the storage actor writes and fsyncs them while the next ranges stream in (with
# one 4 MB append at a time, the worker waited ~0.1-0.6 s per million rows on a busy disk).
STORE_AHEAD_BYTES: Final = 8 << 20


FRESH_S: Final = 1.0
"""A pooled connection handed back less than this long ago is used without a ``SELECT 1`` first (a round trip
per snapshot, ~2 ms when the process is busy creating shapes); if the server cut it meanwhile, the snapshot's
first statement finds out and the snapshot starts again on a new connection (:class:`ConnectionLost`)."""


def connect_snapshot(dsn: str, connect_timeout: float = 10.0) -> psycopg.Connection[Any]:
    """A snapshot connection: autocommit (transactions are explicit), display settings applied."""
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout)))
    conn.execute(display_settings_sql())
    return conn


def run_snapshot(
    conn: psycopg.Connection[Any],
    request: SnapshotRequest,
    *,
    fetch_rows: int = 5000,
    timeout: float = 60.0,
    helpers: Callable[[], psycopg.Connection[Any]] | None = None,
    lanes: int = 2,
    pages: int = DEFAULT_PAGES,
    release: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> int:
    """Take the snapshot of ``request`` on ``conn``; returns the row count.

    With ``release``, ``conn`` is handed to it as soon as every row is read and the transaction ended,
    before waiting for storage to write and fsync the last of them: the connection serves the next
    snapshot meanwhile, and this function never touches it again.

    Each batch is handed to the storage actor with ``ask`` (``timeout`` each), which bounds memory: the
    worker never runs ahead of the disk.  With a UTF-8 connection the rows come as blocks of items built by
    Postgres (:mod:`sync.shapes.snapshot_blocks`), read on up to ``lanes`` connections sharing the snapshot
    (``helpers`` opens the extra ones; a small table uses ``conn`` alone); otherwise through ``COPY`` and
    Python (:mod:`sync.shapes.snapshot_copy`), ``fetch_rows`` rows at a time.  Raises on any failure
    (psycopg errors, ``pykka.ActorDeadError`` when the shape went away meanwhile); the connection is left
    outside any transaction unless it broke.
    """
    storage = request.storage
    count = 0
    released = False
    must_see = cast("tuple[int, ...]", request.consumer.ask(PrepareSnapshot(), timeout=timeout))
    extra: list[psycopg.Connection[Any]] = []
    batches: Iterator[tuple[AppendSnapshot | AppendSnapshotBlock, int, int]] | None = None
    try:
        snapshot, wal_lsn, table_rows = begin_snapshot(conn, request, must_see)
        if request.marks is not None:
            request.marks.record(request.handle, wal_lsn)
        request.consumer.tell(SnapshotStarted(snapshot, wal_lsn))
        # up to STORE_AHEAD_BYTES of appends in storage (written, then fsynced) while the next streams in
        pending: collections.deque[tuple[pykka.Future[Any], int, int]] = collections.deque()
        in_flight = 0
        batches = _batches(
            conn,
            request,
            fetch_rows=fetch_rows,
            helpers=helpers,
            lanes=lanes,
            pages=pages,
            extra=extra,
            table_rows=table_rows,
        )
        for message, rows, size in batches:
            while pending and in_flight >= STORE_AHEAD_BYTES:
                in_flight -= _stored(pending, request, timeout)
            count += rows
            in_flight += size
            pending.append((storage.ask(message, block=False), count, size))
        if release is not None:  # every row is read: the connection can serve the next snapshot
            _end_reads(conn, batches, extra)
            released = True
            release(conn)
        while pending:
            _stored(pending, request, timeout)
        if request.marks is not None:  # a complete snapshot always has its mark on disk
            request.marks.sync()
        storage.ask(
            CompleteSnapshot(snapshot.xmin, snapshot.xmax, tuple(snapshot.xip_sorted)), timeout=timeout
        )
    finally:
        if not released:
            _end_reads(conn, batches, extra)
    request.consumer.tell(SnapshotCompleted(count))
    logger.info("shape %s: snapshot of %d rows complete (%s)", request.handle, count, snapshot)
    return count


def _end_reads(
    conn: psycopg.Connection[Any],
    batches: Iterator[tuple[AppendSnapshot | AppendSnapshotBlock, int, int]] | None,
    extra: list[psycopg.Connection[Any]],
) -> None:
    """Stop reading: the readers joined, the helper connections closed, the transaction on ``conn`` ended
    (unless the connection broke)."""
    if isinstance(batches, Generator):
        batches.close()  # stops and joins the readers before their connections are closed
    for helper in extra:
        helper.close()
    extra.clear()
    if not conn.closed and not conn.broken:
        conn.execute("ROLLBACK")


def _stored(
    pending: collections.deque[tuple[pykka.Future[Any], int, int]], request: SnapshotRequest, timeout: float
) -> int:
    """Wait for the oldest batch in storage, then tell the consumer how many rows are written; returns the
    batch's size."""
    future, written, size = pending.popleft()
    future.get(timeout=timeout)
    request.consumer.tell(SnapshotProgress(written))
    return size


def _batches(
    conn: psycopg.Connection[Any],
    request: SnapshotRequest,
    *,
    fetch_rows: int,
    helpers: Callable[[], psycopg.Connection[Any]] | None,
    lanes: int,
    pages: int,
    extra: list[psycopg.Connection[Any]],
    table_rows: Sequence[Sequence[Any]] | None = None,
) -> Iterator[tuple[AppendSnapshot | AppendSnapshotBlock, int, int]]:
    """The storage messages of the snapshot's rows (in the snapshot's transaction on ``conn``), their row
    counts and sizes (bytes); helper connections opened go to ``extra`` (the caller closes them).
    ``table_rows``: the answer of :func:`~sync.shapes.snapshot_sql.table_query_of` read with the
    snapshot, if it was."""
    definition = request.definition
    if conn.info.encoding != "utf-8":
        statement = snapshot_copy_statement(conn, definition, request.where_sql, request.where_params)
        builder = CopyItemBuilder(definition, ShapeLogEncoder(definition), conn.info.encoding)
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for batch in copy_items(copy, builder, fetch_rows):
                yield AppendSnapshot(tuple(batch)), len(batch), sum(len(j) for _, j in batch)
        return
    table = table_of(table_rows, definition) if table_rows is not None else None
    found = block_query(conn, definition, request.where_sql, request.where_params, pages=pages, table=table)
    if found is None:
        return
    query, ranges = found
    selected = read_selected(conn, query) if request.where_sql is not None else None
    blocks: Iterable[tuple[int, bytes]]
    if selected is not None:  # most shapes with a WHERE clause: a few rows in one round trip
        blocks = selected
    elif helpers is None or lanes < 2 or len(ranges) < 2 * lanes:
        blocks = read_blocks(conn, query, ranges)
    else:
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        for _ in range(lanes - 1):
            helper = helpers()
            extra.append(helper)
            helper.execute(BEGIN_SNAPSHOT)
            helper.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(str(row[0]))))
        blocks = parallel_blocks([conn, *extra], query, ranges)
    yield from store_messages(blocks)


def store_messages(
    blocks: Iterable[tuple[int, bytes]],
) -> Iterator[tuple[AppendSnapshotBlock, int, int]]:
    """The storage appends of ``(count, block)`` in order, with their row counts and sizes: a block of at
    least :data:`STORE_ALONE` bytes as it is (no copy), smaller ones (cheaper for Postgres) joined up to
    :data:`STORE_BYTES`."""
    parts: list[bytes] = []
    size = count = 0
    for rows, block in blocks:
        if len(block) >= STORE_ALONE:  # as it is, after the small ones before it
            if parts:
                yield AppendSnapshotBlock(b",".join(parts), count), count, size
                parts, size, count = [], 0, 0
            yield AppendSnapshotBlock(block, rows), rows, len(block)
            continue
        parts.append(block)
        size += len(block)
        count += rows
        if size >= STORE_BYTES:
            yield AppendSnapshotBlock(b",".join(parts), count), count, size
            parts, size, count = [], 0, 0
    if parts:
        yield AppendSnapshotBlock(b",".join(parts), count), count, size


def take_snapshot(
    dsn: str,
    conn: psycopg.Connection[Any] | None,
    request: SnapshotRequest,
    *,
    fetch_rows: int = 5000,
    timeout: float = 60.0,
    pages: int = DEFAULT_PAGES,
    fresh: bool = False,
    release: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> psycopg.Connection[Any] | None:
    """A worker's whole job: (re)connect if needed, run the snapshot, report a failure to the consumer.
    ``fresh``: ``conn`` was handed back less than :data:`FRESH_S` ago (used without checking it first).
    ``release``: see :func:`run_snapshot` (a connection handed to it is no longer this worker's).

    Returns the connection if it is healthy and idle (the pool reuses it), else None (it was closed, or
    handed to ``release``).  Never raises: every outcome is a message to the consumer (or nobody, if the
    shape is already gone).
    """
    handed_back = False

    def hand_back(done: psycopg.Connection[Any]) -> None:
        nonlocal handed_back
        handed_back = True
        assert release is not None
        release(done)

    try:
        conn = _usable(conn, fresh)
        reused = conn is not None
        if conn is None:
            conn = connect_snapshot(dsn, timeout)

        def run(on: psycopg.Connection[Any]) -> None:
            run_snapshot(
                on,
                request,
                fetch_rows=fetch_rows,
                timeout=timeout,
                helpers=lambda: connect_snapshot(dsn, timeout),
                pages=pages,
                release=hand_back if release is not None else None,
            )

        try:
            run(conn)
        except ConnectionLost as lost:
            conn.close()
            if not reused:
                raise lost.error from None
            logger.info("shape %s: pooled snapshot connection was cut; reconnecting", request.handle)
            conn = connect_snapshot(dsn, timeout)
            try:
                run(conn)
            except ConnectionLost as again:
                raise again.error from None
    except pykka.ActorDeadError:
        logger.info("shape %s went away during its snapshot", request.handle)
    except Exception as exc:
        logger.warning("shape %s: snapshot failed: %r", request.handle, exc)
        try:
            request.consumer.tell(SnapshotFailed(f"{type(exc).__name__}: {exc}"))
        except pykka.ActorDeadError:
            logger.debug("shape %s: consumer gone, snapshot failure not reported", request.handle)
    if handed_back or conn is None or conn.closed:  # handed back: another snapshot may be using it
        return None
    if conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.close()
        return None
    return conn


def _usable(conn: psycopg.Connection[Any] | None, fresh: bool = False) -> psycopg.Connection[Any] | None:
    """``conn`` if it still works (an idle pooled connection may have been cut by a server restart); not
    asked when ``fresh`` (see :data:`FRESH_S`)."""
    if conn is None or conn.closed or conn.broken:
        return None
    if fresh:
        return conn
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        conn.close()
        return None
    return conn
