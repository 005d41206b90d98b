"""The snapshot's log items built by Postgres: one SQL expression per row giving the finished item JSON.

Why: a row read by Python costs microseconds (psycopg's COPY row, the item, the storage entry), several
times what Postgres needs to produce it; an initial sync of a million rows was ~7x a plain ``COPY``.  Here
Postgres writes each item's bytes and ``string_agg`` hands a whole range of the table (a few MB) to Python
at once, which only stores it (:mod:`sync.storage.snapshot_writer`).

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
from sync.shapes.item_sql import ESCAPED, Column, ItemSql, n_escaped, quote_ident
from sync.storage.snapshot_writer import SEP

__all__ = [
    "TABLE_QUERY",
    "UNCHECKED_FAILURES",
    "BlockQuery",
    "TableSize",
    "fetch_table",
    "range_bounds",
]

TABLE_QUERY: Final = (
    "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int8, pg_table_size(c.oid), a.attname,"
    " a.atttypid::int, a.attnotnull FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " WHERE n.nspname = %s AND c.relname = %s"
)


@dataclass(frozen=True, slots=True)
class TableSize:
    pages: int  # heap pages
    bytes: int  # heap and TOAST (pg_table_size)


def fetch_table(conn: psycopg.Connection[Any], definition: ShapeDefinition) -> tuple[TableSize, list[Column]]:
    """The table's size and the shape's selected columns with their types, in the definition's order, in one
    query (read in the snapshot's transaction, so they are the columns the rows have; any row visible to the
    snapshot is in a heap page below the size read after the snapshot was taken)."""
    rows = conn.execute(TABLE_QUERY, (definition.schema, definition.table)).fetchall()
    by_name = {str(r[2]): Column(str(r[2]), int(r[3]), bool(r[4])) for r in rows}
    missing = [c for c in definition.columns if c not in by_name]
    if missing:
        raise LookupError(f"columns {missing} not found in {definition.schema}.{definition.table}")
    return TableSize(int(rows[0][0] or 0), int(rows[0][1] or 0)), [by_name[c] for c in definition.columns]


class _Form:
    """One way of building a range's items: its query's start and the text Python puts around the middles."""

    __slots__ = ("between", "escaped", "head", "query", "tail")

    def __init__(self, item: ItemSql, table: str) -> None:
        counts = "".join(f", count({ident})" for ident, _ in item.nullable)
        self.query = (
            f"SELECT count(*){counts}, string_agg({item.middle}, E'\\x1e') FROM {table} WHERE ctid >= "
        )
        self.head = item.head.encode()
        self.tail = item.tail.encode()
        self.between = self.tail + b"," + self.head
        self.escaped = n_escaped(item.head + item.tail)

    def whole(self, aggregate: Buffer) -> bytes:
        """``head + middles + tail`` (the one copy out of the query's result), separators still in."""
        return b"".join((self.head, aggregate, self.tail))

    def block(self, whole: bytes) -> bytes:
        """The items of :meth:`whole`'s bytes (head and tail hold no separator)."""
        return whole.replace(SEP, self.between)


# The upper bound of the last range: above every block number (MaxBlockNumber is 0xFFFFFFFE).
_END: Final = "(4294967295,0)"


def range_bounds(lo: int, hi: int | None) -> tuple[str, str]:
    """The parameters of a range query (:meth:`BlockQuery.statement`): heap pages ``[lo, hi)``, ``hi`` None
    to the end of the table."""
    return f"({int(lo)},0)", _END if hi is None else f"({int(hi)},0)"


def _escaped(text: str) -> str:
    """``text`` in a query executed with parameters: psycopg reads every ``%`` as a placeholder's start."""
    return text.replace("%", "%%")


# Unchecked ranges found to hold a byte JSON escapes before the rest of the table is read checked at once.
UNCHECKED_FAILURES: Final = 3


class BlockQuery:
    """``SELECT count(*), string_agg(<middle>, SEP) FROM <table> WHERE <ctid range> [AND
    (<where>)]``: one range of heap pages gives one row, its item count and its items (see :meth:`block`).

    With an ``unchecked`` item (and its checked ``fallback``), :meth:`statement` reads ranges unchecked
    until :data:`UNCHECKED_FAILURES` of them held a byte JSON escapes, then checked."""

    __slots__ = ("_checked", "_item", "_rows_query", "_unchecked", "_where", "failures")

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
        table = f"{quote_ident(conn, definition.schema)}.{quote_ident(conn, definition.table)}"
        if item.unchecked and (fallback is None or fallback.unchecked):
            raise ValueError("an unchecked item needs a checked fallback")
        checked = fallback if item.unchecked and fallback is not None else item
        self._checked = _Form(checked, table)
        self._unchecked = _Form(item, table) if item.unchecked else None
        self._item = item
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
        unchecked (its row goes to :meth:`unchecked_block`, else to :meth:`block`)."""
        form = self._unchecked
        if form is None or self.failures >= UNCHECKED_FAILURES:
            return self._ranged(self._checked), False
        return self._ranged(form), True

    def _ranged(self, form: _Form) -> str:
        # every range runs the same text, so a connection prepares it once (``%`` of names, literals and the
        # WHERE doubled: the bounds are psycopg placeholders)
        return f"{_escaped(form.query)}%s::tid AND ctid < %s::tid{_escaped(self._where)}"

    def block(self, aggregate: Buffer) -> bytes:
        """The items, joined by ``,`` (:data:`~sync.storage.snapshot_writer.ITEM_BOUNDARY` tells them apart),
        from the checked query's ``string_agg`` of their middles (not NULL)."""
        form = self._checked
        return form.block(form.whole(aggregate))

    def unchecked_block(self, row: Sequence[Any]) -> bytes | None:
        """The items of an unchecked query's row (``count``, the nullable columns' counts, the aggregate), or
        None if a value held a byte JSON escapes (read the range again with :meth:`checked`).

        The middles must hold exactly the bytes of ``"``, ``\\`` and control characters their literal text
        and quoted values bring, plus the separators: a value holding any adds at least one (one pass,
        ~0.1 s per million rows of the benchmark, against ~0.25 s of Postgres CPU for ``to_json``)."""
        form = self._unchecked
        assert form is not None
        count = int(row[0])
        whole = form.whole(row[-1])
        item = self._item
        expected = form.escaped + count * item.escaped + count - 1
        expected += sum(int(n) * extra for n, (_, extra) in zip(row[1:-1], item.nullable, strict=True))
        if len(whole) - len(whole.translate(None, ESCAPED)) != expected:
            self.failures += 1
            return None
        return form.block(whole)
