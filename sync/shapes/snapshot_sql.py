"""The snapshot's log items built by Postgres: one SQL expression per row giving the finished item JSON.

Why: a row read by Python costs microseconds (psycopg's COPY row, the item, the storage entry), several
times what Postgres needs to produce it; an initial sync of a million rows was ~7x a plain ``COPY``.  Here
Postgres writes each item's bytes and ``string_agg`` hands a range of the table (a few MB, in a few rows)
to Python at once, which only stores it (:mod:`sync.storage.snapshot_writer`).

The item's SQL expression, byte-identical to the encoder's and so to replication, is built by
:mod:`sync.shapes.item_sql`; here ranges of heap pages are read with it (:class:`BlockQuery`), checked or
unchecked (see there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.abc import Buffer

from sync.shapes.definition import ShapeDefinition
from sync.shapes.item_sql import Column, ItemSql, quote_ident, raw_values_clean
from sync.storage.snapshot_writer import SEP

__all__ = [
    "TABLE_QUERY",
    "UNCHECKED_FAILURES",
    "BlockQuery",
    "TableSize",
    "fetch_table",
    "range_bounds",
    "table_of",
    "table_query_of",
]

TABLE_QUERY: Final = (
    "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int8, pg_table_size(c.oid), a.attname,"
    " a.atttypid::int, a.attnotnull FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " WHERE n.nspname = %s AND c.relname = %s"
)


def table_query_of(conn: psycopg.Connection[Any], definition: ShapeDefinition) -> str:
    """:data:`TABLE_QUERY` of the shape's table with its names merged client-side (as quoted literals, like
    the identifiers of the rows' query): it can follow other statements in one simple query, as the
    snapshot's first round trip does."""
    schema, table = (sql.Literal(name).as_string(conn) for name in (definition.schema, definition.table))
    return TABLE_QUERY % (schema, table)


@dataclass(frozen=True, slots=True)
class TableSize:
    pages: int  # heap pages
    bytes: int  # heap and TOAST (pg_table_size)


def fetch_table(conn: psycopg.Connection[Any], definition: ShapeDefinition) -> tuple[TableSize, list[Column]]:
    """The table's size and the shape's selected columns with their types, in the definition's order, in one
    query (read in the snapshot's transaction, so they are the columns the rows have; any row visible to the
    snapshot is in a heap page below the size read after the snapshot was taken)."""
    return table_of(conn.execute(TABLE_QUERY, (definition.schema, definition.table)).fetchall(), definition)


def table_of(rows: Sequence[Sequence[Any]], definition: ShapeDefinition) -> tuple[TableSize, list[Column]]:
    """:func:`fetch_table`'s answer from the rows of :data:`TABLE_QUERY` (or :func:`table_query_of`)."""
    by_name = {str(r[2]): Column(str(r[2]), int(r[3]), bool(r[4])) for r in rows}
    missing = [c for c in definition.columns if c not in by_name]
    if missing:
        raise LookupError(f"columns {missing} not found in {definition.schema}.{definition.table}")
    return TableSize(int(rows[0][0] or 0), int(rows[0][1] or 0)), [by_name[c] for c in definition.columns]


# The aliases of the ranges' first pages and of the table in each range's query: a table of any name, with
# columns of any names, hides neither the first page (``_shapesync_pages.first``) nor ``ctid``.
_PAGES: Final = "_shapesync_pages"
_ROWS: Final = "_shapesync_rows"


class _Form:
    """One way of building a range's items: its aggregate and the text Python puts around the middles."""

    __slots__ = ("between", "head", "select", "tail")

    def __init__(self, item: ItemSql, table: str) -> None:
        # an unchecked item's unescaped values also come alone, one aggregate per column, for the check
        raw = "".join(f", string_agg({ident}, '')" for ident in item.raw)
        self.select = f"SELECT count(*), string_agg({item.middle}, E'\\x1e'){raw} FROM {table} AS {_ROWS}"
        self.head = item.head.encode()
        self.tail = item.tail.encode()
        self.between = self.tail + b"," + self.head

    def whole(self, aggregates: Sequence[Buffer]) -> bytes:
        """``head + middles + tail`` of the sub-ranges' aggregates, joined by the separator (the one copy out
        of the query's result), separators still in."""
        parts: list[Buffer] = [self.head]
        for aggregate in aggregates:
            parts += (aggregate, SEP)
        parts[-1] = self.tail
        return b"".join(parts)

    def block(self, whole: bytes) -> bytes:
        """The items of :meth:`whole`'s bytes (head and tail hold no separator)."""
        return whole.replace(SEP, self.between)


# Heap pages per aggregate inside a range query (the worker still sends one query per range).  Postgres
# copies each aggregate several times (the growing buffer, the result datum, the DataRow message), into
# fresh memory once a string passes glibc's mmap threshold (128 KB): at 32 pages (~0.35 MB strings) one
# backend reading 1M benchmark rows took ~38,000 page faults and 0.11-0.17 s of system time, at 8 pages
# and less none and 0.05-0.08 s (user time within noise; ~45 KB strings at 4 pages, so wider rows keep
# some margin).  Whole syncs, one service per setting on one cluster, alternated (3 runs of 10-12 rounds,
# a loaded machine): 4 pages against 32, Postgres 0.04-0.11 CPU-s less per sync, the sync 0.03-0.13 s
# sooner (+- 0.03-0.08); 2 pages cost the worker ~0.1 s more (4x the result rows), 16 were no better than
# 32.  (Session 5: 32 pages against whole ranges of ~1.4 MB strings, 0.68 against 0.78 s of backend CPU.)
SUB_PAGES: Final = 4
# The upper bound of the last range: above every block number (MaxBlockNumber is 0xFFFFFFFE).
_END: Final = "(4294967295,0)"


def range_bounds(lo: int, hi: int | None) -> tuple[str, str, str, str]:
    """The parameters of a range query (:meth:`BlockQuery.statement`): heap pages ``[lo, hi)``, ``hi`` None
    to the end of the table (one sub-range, open-ended)."""
    end = str(int(lo) + 1 if hi is None else int(hi))  # where the sub-ranges stop
    return str(int(lo)), end, end, _END if hi is None else f"({int(hi)},0)"


def _escaped(text: str) -> str:
    """``text`` in a query executed with parameters: psycopg reads every ``%`` as a placeholder's start."""
    return text.replace("%", "%%")


# Unchecked ranges found to hold a byte JSON escapes before the rest of the table is read checked at once.
UNCHECKED_FAILURES: Final = 3


class BlockQuery:
    """``SELECT count(*), string_agg(<middle>, SEP) FROM <table> WHERE <ctid range> [AND (<where>)]`` per
    sub-range of :data:`SUB_PAGES` heap pages: one range query gives a few rows, its items and their count
    (see :meth:`range_items`).

    With an ``unchecked`` item (and its checked ``fallback``), :meth:`statement` reads ranges unchecked
    until :data:`UNCHECKED_FAILURES` of them held a byte JSON escapes, then checked."""

    __slots__ = ("_checked", "_rows_query", "_unchecked", "_where", "failures")

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        definition: ShapeDefinition,
        item: ItemSql,
        where_sql: sql.Composable | None = None,
        params: Sequence[Any] = (),
        *,
        fallback: ItemSql | None = None,
    ) -> None:
        # ONLY: the table's own rows, as the publication sends them (sync.replication.tables.TableName.only)
        table = f"ONLY {quote_ident(conn, definition.schema)}.{quote_ident(conn, definition.table)}"
        if item.unchecked and (fallback is None or fallback.unchecked):
            raise ValueError("an unchecked item needs a checked fallback")
        checked = fallback if item.unchecked and fallback is not None else item
        self._checked = _Form(checked, table)
        self._unchecked = _Form(item, table) if item.unchecked else None
        self._rows_query = f"SELECT {checked.middle} FROM {table}"
        self.failures = 0
        self._where = ""
        if where_sql is not None:  # COPY-like: the parameters merged client-side, once
            where = psycopg.ClientCursor(conn).mogrify(sql.Composed([where_sql]), tuple(params))
            self._where = f" AND ({where})"

    def filtered(self) -> str:
        """One row per (checked) item middle, the shape's WHERE alone (no ctid range): lets the planner use an
        index for a selective shape instead of scanning every page of the table."""
        where = f" WHERE{self._where[4:]}" if self._where else ""
        return f"{self._rows_query}{where}"

    def join(self, middles: Sequence[Buffer]) -> bytes:
        """The items of ``middles`` (one per row of :meth:`filtered`), joined by ``,``."""
        form = self._checked
        return b"".join((form.head, form.between.join(middles), form.tail))

    def checked(self) -> str:
        """The checked query of a range of heap pages, with placeholders for :func:`range_bounds`."""
        return self._ranged(self._checked)

    def statement(self) -> tuple[str, bool]:
        """The query of a range of heap pages (placeholders for :func:`range_bounds`) and whether it is
        unchecked (tell :meth:`range_items`)."""
        form = self._unchecked
        if form is None or self.failures >= UNCHECKED_FAILURES:
            return self._ranged(self._checked), False
        return self._ranged(form), True

    def _ranged(self, form: _Form) -> str:
        # one row per sub-range of SUB_PAGES pages: (first page, count, aggregate, raw values...); every
        # range runs the same text, so a connection prepares it once (``%`` of names, literals and the WHERE
        # doubled: the bounds are psycopg placeholders).  Inside the LATERAL the table's columns come first:
        # the first page is named qualified (a column ``s`` took the place of a plain ``s``).
        page = f"{_PAGES}.first"
        sub = f"('(' || ({page} + {SUB_PAGES}) || ',0)')::tid"
        return (
            f"SELECT {page}, r.* FROM generate_series(%s::int, %s::int - 1, {SUB_PAGES}) {_PAGES}(first),"
            f" LATERAL ({_escaped(form.select)} WHERE ctid >= ('(' || {page} || ',0)')::tid AND ctid < CASE"
            f" WHEN {page} + {SUB_PAGES} >= %s::int THEN %s::tid ELSE {sub} END{_escaped(self._where)}) r"
        )

    def range_items(self, rows: Sequence[Sequence[Any]], unchecked: bool) -> tuple[int, bytes | None]:
        """``(count, items)`` of a range query's rows (:meth:`statement`), the items joined by ``,``
        (:data:`~sync.storage.snapshot_writer.ITEM_BOUNDARY` tells them apart); items None when the query is
        ``unchecked`` and a value held a byte JSON escapes (read the range again with :meth:`checked`).

        Unchecked, the values written unescaped come again alone (``ItemSql.raw``: one aggregate per
        column, NULLs skipped) and must hold no byte JSON escapes (:func:`raw_values_clean`).
        Counting those bytes in the middles instead (against what their literal text brings) read ~3x the
        bytes for the benchmark's rows (~0.15 s per million, ~17% of the worker's CPU); the extra aggregate
        costs Postgres about what the nullable columns' counts it replaces did (A/B of whole syncs, 12
        alternated rounds: worker 0.106 CPU-s less, Postgres 0.012 less, the sync 0.081 +- 0.029 s sooner)."""
        ordered = sorted(rows, key=lambda row: int(row[0]))  # sub-ranges in page order (as the loop has them)
        count = sum(int(row[1]) for row in ordered)
        if not count:
            return 0, b""
        aggregates = [row[2] for row in ordered if int(row[1])]
        form = self._checked
        if unchecked and self._unchecked is not None:
            form = self._unchecked
            if not raw_values_clean(value for row in ordered for value in row[3:]):
                self.failures += 1
                return count, None
        return count, form.block(form.whole(aggregates))
