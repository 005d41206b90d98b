"""The snapshot's rows as blocks of finished items, read range by range of heap pages.

Why: see :mod:`sync.shapes.snapshot_sql` (Postgres builds each item; Python must not touch rows one by
one).  The table is cut into ranges of ``pages`` heap pages (``ctid`` range scans, PG >= 14), each read by
one query inside the snapshot's REPEATABLE READ transaction: every row visible to the snapshot is in a page
below the relation's size read after the snapshot was taken (its inserting transaction committed before),
and the last range is open-ended anyway.  A partitioned table has no pages of its own: one open range then
scans every partition.  Each query aggregates the items of every :data:`~sync.shapes.snapshot_sql.SUB_PAGES`
pages of its range (one row each) into one block of items joined by ``,``; empty ranges are skipped.

The item query costs Postgres ~1.2-1.7x the backend CPU of a plain COPY, so :func:`parallel_blocks` spreads
the ranges over several connections sharing the snapshot (``pg_export_snapshot()`` / ``SET TRANSACTION
SNAPSHOT``), each read by its own worker (greenlet or thread) at most ``window`` ranges ahead of the
consumer, which gets the blocks in range order.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import orjson
import psycopg
from psycopg import pq, sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader

from sync import runtime
from sync.shapes.definition import ShapeDefinition
from sync.shapes.item_sql import Column, item_expression, unchecked_allowed
from sync.shapes.snapshot_sql import BlockQuery, TableSize, fetch_table, range_bounds

__all__ = [
    "DEFAULT_PAGES",
    "block_query",
    "page_ranges",
    "parallel_blocks",
    "planner_uses_index",
    "read_blocks",
    "read_few",
    "read_filtered",
    "read_selected",
    "snapshot_blocks",
    "table_ranges",
]

# At most 1 MiB of heap per query (~2.3 MB of items for the benchmark's rows).  32 pages cost Postgres ~15%
# less CPU (the aggregate's buffer staying in cache), but each query also costs the worker's event loop a
# round of psycopg's cooperative waits; with pipelined queries the whole sync of 1M rows measured faster
# at 128 pages than at 64 (9 of 10 interleaved pairs, medians 1.21 s against 1.52 s) and 64 than at 32 (14
# of 20), while 256 pages and 2 MiB were no better than 128.  (Hence a query now aggregates a few pages at
# a time, SUB_PAGES in snapshot_sql.)  With 32-page aggregates, 256 pages and 2 MiB measured 0.08-0.17 s
# less backend CPU per million rows but 0.01-0.09 s more worker CPU, wall time within noise (3 interleaved
# A/Bs of 9), for twice the memory in the window: not taken.
DEFAULT_PAGES: Final = 128
RANGE_BYTES: Final = 1 << 20  # heap + TOAST per query on average (a TOAST-heavy table gets fewer pages)
# Queries in flight per connection (libpq pipeline mode): Postgres starts the next range while this process
# still receives and joins the last one.  One at a time, each backend idled while the worker's event loop
# was busy elsewhere (storing, serving HTTP): 1M rows took ~2.0-2.4 s against ~1.2-1.7 s with 2 (interleaved
# runs on shared, loaded cores).
PIPELINE_DEPTH: Final = 2


class _RawText(Loader):
    """A text value in the binary result format is its raw bytes: no decode, no copy (a view into the
    result, valid until the cursor's next query: :meth:`BlockQuery.block` copies it once, at once)."""

    format = pq.Format.BINARY

    def load(self, data: Buffer) -> Buffer:
        return data


def page_ranges(pages: int, step: int) -> list[tuple[int, int | None]]:
    """``[lo, hi)`` page ranges covering ``pages`` pages, the last one open-ended."""
    if step < 1:
        raise ValueError("pages per query must be >= 1")
    ranges: list[tuple[int, int | None]] = [(lo, lo + step) for lo in range(0, max(pages, 1), step)]
    ranges[-1] = (ranges[-1][0], None)
    return ranges


def table_ranges(size: TableSize, max_pages: int) -> list[tuple[int, int | None]]:
    """Page ranges of at most ``max_pages`` pages and about :data:`RANGE_BYTES` of heap and TOAST each (a
    block's memory follows the rows' size, TOASTed values included)."""
    per_page = size.bytes // max(size.pages, 1)
    return page_ranges(size.pages, max(1, min(max_pages, RANGE_BYTES // max(per_page, 1))))


class _Sent:
    """A range query in flight: its cursor, whether it is unchecked, its pages."""

    __slots__ = ("cur", "hi", "lo", "unchecked")

    def __init__(self, cur: psycopg.Cursor[Any], unchecked: bool, lo: int, hi: int | None) -> None:
        self.cur = cur
        self.unchecked = unchecked
        self.lo = lo
        self.hi = hi


def _send_range(
    conn: psycopg.Connection[Any], query: BlockQuery, lo: int, hi: int | None, *, prepare: bool
) -> _Sent:
    """Send the query of pages ``[lo, hi)``; in pipeline mode it goes out at once (:func:`_take` reads it).
    With ``prepare``, the connection parses and plans the range query once for all its ranges (~0.5 ms of
    Postgres CPU per query otherwise: ~50 ms per million benchmark rows)."""
    statement, unchecked = query.statement()
    cur = _raw_cursor(conn)
    cur.execute(statement, range_bounds(lo, hi), prepare=prepare)
    return _Sent(cur, unchecked, lo, hi)


def _take(sent: _Sent, query: BlockQuery) -> tuple[int, bytes]:
    """``(count, block)`` of a range sent by :func:`_send_range`; an unchecked range whose values need
    escaping is read again, checked (behind the queries still in flight: pipeline results are kept)."""
    with sent.cur as cur:
        rows = cur.fetchall()
    count, block = query.range_items(rows, sent.unchecked)
    if block is not None:
        return count, block
    conn = sent.cur.connection
    with _raw_cursor(conn) as cur:
        cur.execute(query.checked(), range_bounds(sent.lo, sent.hi), prepare=False)
        again, block = query.range_items(cur.fetchall(), False)
    assert block is not None and again == count
    return count, block


def _raw_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    cur = conn.cursor(binary=True)
    cur.adapters.register_loader("text", _RawText)
    return cur


def read_blocks(
    conn: psycopg.Connection[Any],
    query: BlockQuery,
    ranges: Sequence[tuple[int, int | None]],
    *,
    depth: int = PIPELINE_DEPTH,
) -> Iterator[tuple[int, bytes]]:
    """``(count, block)`` of each non-empty range, in order, up to ``depth`` queries in flight (one range
    alone, the common small table, is read without pipeline mode, whose start and end cost ~40 µs)."""
    if depth < 1:
        raise ValueError("pipeline depth must be >= 1")
    pipelined = depth > 1 and len(ranges) > 1
    with conn.pipeline() if pipelined else contextlib.nullcontext():
        sent: collections.deque[_Sent] = collections.deque()
        for lo, hi in ranges:
            sent.append(_send_range(conn, query, lo, hi, prepare=pipelined))
            if len(sent) >= depth:
                count, block = _take(sent.popleft(), query)
                if count:
                    yield count, block
        while sent:
            count, block = _take(sent.popleft(), query)
            if count:
                yield count, block


FILTERED_ROWS: Final = 5000  # items per block of a filtered read (a few MB at most)


_INDEX_SCANS: Final = frozenset({"Index Scan", "Index Only Scan", "Bitmap Heap Scan"})


def planner_uses_index(conn: psycopg.Connection[Any], query: BlockQuery) -> bool:
    """Whether Postgres would answer the shape's WHERE from an index (``EXPLAIN``, ~0.2 ms): then
    :func:`read_filtered` reads only the matching rows; otherwise the page ranges (possibly on several
    connections) scan the table as fast as it can be scanned.  Asked only once :func:`read_few` found more
    than a few rows."""
    row = conn.execute(f"EXPLAIN (FORMAT JSON) {query.filtered()}").fetchone()
    assert row is not None
    plan = row[0]
    if isinstance(plan, (str, bytes)):
        plan = orjson.loads(plan)
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        if node.get("Node Type") in _INDEX_SCANS:
            return True
        nodes.extend(node.get("Plans", ()))
    return False


def read_few(
    conn: psycopg.Connection[Any], query: BlockQuery, rows: int = FILTERED_ROWS
) -> list[tuple[int, bytes]] | None:
    """The ``(count, block)`` of every item of a shape with a WHERE clause (none or one) if it has at most
    ``rows`` items, else None, in one round trip: one plain query for at most ``rows + 1`` items, planned by
    Postgres as it sees fit (through an index for a selective shape).  Most shapes are small; for them the
    planner question (:func:`planner_uses_index`) and a server-side cursor (DECLARE, describe, FETCH, CLOSE)
    were four round trips more.  When it returns None, what it read (at most ``rows + 1`` items) is dropped:
    the shape is read again by the way the planner question picks."""
    with conn.cursor(binary=True) as cur:
        cur.adapters.register_loader("text", _RawText)
        cur.execute(f"{query.filtered()} LIMIT {int(rows) + 1}")
        found = cur.fetchall()
        if len(found) > rows:
            return None
        return [(len(found), query.join([bytes(row[0]) for row in found]))] if found else []


def read_selected(conn: psycopg.Connection[Any], query: BlockQuery) -> Iterable[tuple[int, bytes]] | None:
    """The ``(count, block)`` of a shape with a WHERE clause read through that WHERE: at most a few items in
    one round trip (:func:`read_few`), else through an index where Postgres would use one
    (:func:`read_filtered`); None when its page ranges are to be scanned instead."""
    few = read_few(conn, query)
    if few is not None:
        return few
    return read_filtered(conn, query) if planner_uses_index(conn, query) else None


def read_filtered(
    conn: psycopg.Connection[Any], query: BlockQuery, rows: int = FILTERED_ROWS
) -> Iterator[tuple[int, bytes]]:
    """``(count, block)`` of a shape with a WHERE clause: one query over the whole table (the planner may use
    an index: a selective shape on a large table must not scan every page range), read ``rows`` items at a
    time through a server-side cursor and joined here (~0.3 µs per row in Python, measured)."""
    with contextlib.ExitStack() as stack:
        if conn.info.transaction_status == pq.TransactionStatus.IDLE:
            stack.enter_context(conn.transaction())  # a cursor lives in a transaction; snapshots have one
        cur = stack.enter_context(conn.cursor("shapesync_snapshot_rows", binary=True))
        cur.adapters.register_loader("text", _RawText)
        cur.execute(query.filtered())
        while True:
            batch = cur.fetchmany(rows)
            if batch:
                yield len(batch), query.join([bytes(row[0]) for row in batch])
            if len(batch) < rows:  # the end: no FETCH round trip more only to learn it
                break


class _Lanes:
    """Shared state of :func:`parallel_blocks`: per range, a result slot, ``ready`` (worker -> consumer) and
    ``go`` (consumer -> worker: the range may be read, the window has room)."""

    def __init__(self, n: int) -> None:
        self.results: list[tuple[int, bytes] | BaseException | None] = [None] * n
        self.ready = [runtime.Event() for _ in range(n)]
        self.go = [runtime.Event() for _ in range(n)]
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        for event in self.go:
            event.set()


def _lane(  # noqa: PLR0917 - the spawn target's arguments, all positional
    conn: psycopg.Connection[Any],
    query: BlockQuery,
    ranges: Sequence[tuple[int, int | None]],
    mine: Sequence[int],
    lanes: _Lanes,
    depth: int,
) -> None:
    error: Exception | None = None
    sent: collections.deque[tuple[int, _Sent]] = collections.deque()

    def take_one() -> None:
        i, in_flight = sent.popleft()
        lanes.results[i] = _take(in_flight, query)
        lanes.ready[i].set()

    try:
        with conn.pipeline():
            for i in mine:
                if not lanes.go[i].is_set():
                    while sent:  # the consumer needs these before it lets range i go
                        take_one()
                    lanes.go[i].wait()
                if lanes.stopped:
                    return
                sent.append((i, _send_range(conn, query, *ranges[i], prepare=True)))
                if len(sent) >= depth:
                    take_one()
            while sent:
                take_one()
    except Exception as exc:  # handed to the consumer, which raises it
        error = exc
    finally:  # whatever happened, nobody waits forever on this lane's ranges
        for i in mine:
            if not lanes.ready[i].is_set():
                lanes.results[i] = error or RuntimeError("snapshot lane stopped")
                lanes.ready[i].set()


def parallel_blocks(
    conns: Sequence[psycopg.Connection[Any]],
    query: BlockQuery,
    ranges: Sequence[tuple[int, int | None]],
    *,
    window: int = 0,
    depth: int = PIPELINE_DEPTH,
    timeout: float = 600.0,
) -> Iterator[tuple[int, bytes]]:
    """``(count, block)`` of each non-empty range in range order, range ``i`` read on ``conns[i % n]`` (all in
    the same snapshot) with up to ``depth`` queries in flight per connection, at most ``window`` (default
    ``2 * depth * n``) ranges ahead of the consumer.  Raises the first error of any connection; ``timeout``
    bounds the wait for one range."""
    if depth < 1:
        raise ValueError("pipeline depth must be >= 1")
    n = len(ranges)
    lanes = _Lanes(n)
    window = window or 2 * depth * len(conns)
    for i in range(min(window, n)):
        lanes.go[i].set()
    handles = [
        runtime.spawn(
            _lane, conn, query, ranges, range(k, n, len(conns)), lanes, depth, name=f"snapshot-lane-{k}"
        )
        for k, conn in enumerate(conns)
    ]
    try:
        for i in range(n):
            if not lanes.ready[i].wait(timeout):
                raise TimeoutError(f"snapshot range {ranges[i]} not read within {timeout} s")
            result = lanes.results[i]
            lanes.results[i] = None
            if i + window < n:
                lanes.go[i + window].set()
            if isinstance(result, BaseException):
                raise result
            assert result is not None
            if result[0]:
                yield result
    finally:
        lanes.stop()
        for handle in handles:
            handle.join(timeout)


def block_query(
    conn: psycopg.Connection[Any],
    definition: ShapeDefinition,
    where_sql: sql.Composable | None = None,
    params: Sequence[Any] = (),
    *,
    pages: int = DEFAULT_PAGES,
    unchecked: bool = True,
    table: tuple[TableSize, list[Column]] | None = None,
) -> tuple[BlockQuery, list[tuple[int, int | None]]] | None:
    """The shape's :class:`BlockQuery` and the page ranges to read (:func:`table_ranges`, at most ``pages``
    pages each), on ``conn`` in the snapshot's transaction; None when the shape has no snapshot rows
    (``changes_only``).  Needs a UTF-8 client encoding.  With ``unchecked`` (where
    :func:`~sync.shapes.item_sql.unchecked_allowed`), text values go out unescaped and each range is
    checked, read again with ``to_json`` if a value needed escaping.  ``table``: what
    :func:`~sync.shapes.snapshot_sql.fetch_table` answers, when already read in this transaction."""
    if definition.log_mode == "changes_only":
        return None
    if conn.info.encoding != "utf-8":
        raise ValueError(f"snapshot blocks need a UTF-8 client encoding, not {conn.info.encoding}")
    size, columns = table if table is not None else fetch_table(conn, definition)
    checked = item_expression(conn, definition, columns)
    if unchecked and unchecked_allowed(definition, columns):
        item = item_expression(conn, definition, columns, unchecked=True)
        query = BlockQuery(conn, definition, item, where_sql, params, fallback=checked)
    else:
        query = BlockQuery(conn, definition, checked, where_sql, params)
    return query, table_ranges(size, pages)


def snapshot_blocks(
    conn: psycopg.Connection[Any],
    definition: ShapeDefinition,
    where_sql: sql.Composable | None = None,
    params: Sequence[Any] = (),
    *,
    pages: int = DEFAULT_PAGES,
) -> Iterator[tuple[int, bytes]]:
    """The snapshot's items as ``(count, block)``, read on ``conn`` alone inside the snapshot's transaction
    (with the display settings)."""
    found = block_query(conn, definition, where_sql, params, pages=pages)
    if found is not None:
        query, ranges = found
        selected = read_selected(conn, query) if where_sql is not None else None
        yield from selected if selected is not None else read_blocks(conn, query, ranges)
