"""The snapshot's log items built by Postgres: one SQL expression per row giving the finished item JSON.

Why: a row read by Python costs microseconds (psycopg's COPY row, the item, the storage entry), several
times what Postgres needs to produce it; an initial sync of a million rows was ~7x a plain ``COPY``.  Here
Postgres writes each item's bytes and ``string_agg`` hands a whole range of the table (a few MB) to Python
at once, which only stores it (:mod:`sync.storage.snapshot_writer`).

Byte-identical to :meth:`sync.shapes.log_items.ShapeLogEncoder.snapshot_item` (and so to replication):

* every value is its type's OUTPUT FUNCTION text, as pgoutput sends it: ``concat(x)`` calls the output
  function (``x::text`` does not always: ``bool`` gives ``true``, ``bpchar`` drops its padding, ``inet``
  adds ``/32``), under :data:`sync.shapes.snapshot.DISPLAY_SETTINGS` like every snapshot session;
* a value is escaped by ``to_json(text)``, which escapes exactly what orjson does (``"``, ``\\``, control
  characters as ``\\b \\f \\n \\r \\t`` or lowercase ``\\u00xx``; UTF-8 passes raw), except for the
  built-in types in :data:`PLAIN_TYPES`, whose output is printable ASCII without ``"`` or ``\\``: those are
  quoted as they are (``to_json`` is the costly part of the query);
* NULL is ``null`` (``concat`` alone would make it ``''``); column names and the relation come from
  ``orjson`` as in the encoder; the key is ``to_json`` of ``"schema"."table"/"v1"/…`` (``/`` doubled
  inside values, NULL as ``_``) or, when every key column is plain and has no ``/`` in its output, the same
  text written already escaped.

Measured (1M rows of the benchmark's 5 columns, backend CPU from /proc, shared noisy cores): the item query
costs Postgres ~2.1x the plain ``COPY`` of the same rows (1.3-1.45 s against 0.6 s; hence two connections,
see :mod:`sync.shapes.snapshot_blocks`), and Python ~0.3 s in all (~0.3 µs a row, against ~5 µs a row
before).  ``to_json`` of the text column is ~0.2-0.3 s of it; ``||`` chains with ``::text`` or ``format()``
were no cheaper than ``concat``; a regex test to skip ``to_json`` was dearer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import psycopg
from psycopg import sql
from psycopg.abc import Buffer

from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import key_prefix
from sync.storage.snapshot_writer import SEP

__all__ = [
    "KEY_PLAIN_TYPES",
    "PLAIN_TYPES",
    "TABLE_QUERY",
    "BlockQuery",
    "Column",
    "ItemSql",
    "TableSize",
    "fetch_table",
    "item_expression",
]

# Built-in types whose output (under DISPLAY_SETTINGS) is printable ASCII without '"' or '\\': bool,
# int8, int2, int4, oid, xid, float4, float8, numeric, date, time, timestamp, timestamptz, timetz,
# interval, uuid, inet, cidr, macaddr, macaddr8, pg_lsn, xid8.
PLAIN_TYPES: Final = frozenset(
    {16, 20, 21, 23, 26, 28, 700, 701, 1700, 1082, 1083, 1114, 1184, 1266, 1186, 2950, 869, 650, 829, 774}
    | {3220, 5069}
)
# ... and without '/' either (a key doubles it): not inet, cidr, pg_lsn.
KEY_PLAIN_TYPES: Final = PLAIN_TYPES - {869, 650, 3220}

_MAX_ARGS: Final = 90
TABLE_QUERY: Final = (
    "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int8, pg_table_size(c.oid), a.attname,"
    " a.atttypid::int, a.attnotnull FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " WHERE n.nspname = %s AND c.relname = %s"
)
# Text types whose to_json is their output function escaped (no concat() needed to make them text first).
_TEXT_TYPES: Final = frozenset({25, 1043, 1042, 19})  # text, varchar, bpchar, name


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    not_null: bool


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


@dataclass(frozen=True, slots=True)
class ItemSql:
    """A row's item is ``head + <middle> + tail``: ``middle`` is an SQL expression, ``head`` and ``tail`` the
    constant text around it, added by Python (:meth:`BlockQuery.block`).  Measured per million rows: the
    constant text as ``concat`` arguments cost Postgres ~0.3 s more than as ``string_agg``'s delimiter, which
    cost ~0.6 s more than leaving it out (a 1-byte delimiter), against ~0.2 s for Python's one ``replace``
    of the separators by ``tail``, ``,``, ``head``."""

    head: str
    middle: str
    tail: str


class _Parts:
    """The arguments of one ``concat(...)``: literal text (merged) and SQL expressions."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._out: list[str] = []
        self._text: list[str] = []
        self._head: str | None = None

    def lit(self, text: str) -> None:
        self._text.append(text)

    def expr(self, expr: str) -> None:
        if self._head is None:
            self._head = "".join(self._text)
            self._text = []
        self._flush()
        self._out.append(expr)

    def quote(self, text: str) -> str:
        return sql.Literal(text).as_string(self._conn)

    def _flush(self) -> None:
        if self._text:
            self._out.append(self.quote("".join(self._text)))
            self._text = []

    def build(self) -> ItemSql:
        if self._head is None:  # no expression at all
            return ItemSql("", self.quote("".join(self._text)), "")
        return ItemSql(self._head, _concat(self._out), "".join(self._text))


def _concat(args: list[str]) -> str:
    """``concat(...)`` of ``args``, nested by groups: a function takes at most 100 arguments."""
    if len(args) <= _MAX_ARGS:
        return "concat(" + ", ".join(args) + ")"
    return _concat([_concat(args[i : i + _MAX_ARGS]) for i in range(0, len(args), _MAX_ARGS)])


_BQ: Final = '\\"'  # an escaped quote inside the key's JSON string


def _ident(conn: psycopg.Connection[Any], name: str) -> str:
    return sql.Identifier(name).as_string(conn)


def _key(
    p: _Parts, conn: psycopg.Connection[Any], definition: ShapeDefinition, cols: dict[str, Column]
) -> None:
    prefix = key_prefix(definition.schema, definition.table)
    keys = [cols[c] for c in definition.key_columns]
    if all(c.type_oid in KEY_PLAIN_TYPES for c in keys):
        p.lit(orjson.dumps(prefix).decode()[:-1])  # the opening '"' and the escaped prefix
        for c in keys:
            ident = _ident(conn, c.name)
            if c.not_null:
                p.lit("/" + _BQ)
                p.expr(ident)
                p.lit(_BQ)
            else:
                p.expr(f"CASE WHEN {ident} IS NULL THEN '/_' ELSE {p.quote(chr(47) + _BQ)} END")
                p.expr(ident)
                p.expr(f"CASE WHEN {ident} IS NOT NULL THEN {p.quote(_BQ)} END")
        p.lit('"')
        return
    parts = [p.quote(prefix)]
    for c in keys:
        ident = _ident(conn, c.name)
        part = f"""concat('"', replace(concat({ident}), '/', '//'), '"')"""
        parts.append(part if c.not_null else f"CASE WHEN {ident} IS NULL THEN '_' ELSE {part} END")
    p.expr(f"to_json(concat_ws('/', {', '.join(parts)}))")


def item_expression(
    conn: psycopg.Connection[Any], definition: ShapeDefinition, columns: Sequence[Column]
) -> ItemSql:
    """The row's item JSON as SQL (``columns`` from :func:`fetch_table`); contains no placeholder."""
    cols = {c.name: c for c in columns}
    p = _Parts(conn)
    p.lit('{"key":')
    _key(p, conn, definition, cols)
    p.lit(',"value":{')
    for i, c in enumerate(columns):
        p.lit(("," if i else "") + orjson.dumps(c.name).decode() + ":")
        ident = _ident(conn, c.name)
        if c.type_oid in PLAIN_TYPES:
            if c.not_null:
                p.lit('"')
                p.expr(ident)
                p.lit('"')
            else:
                p.expr(f"CASE WHEN {ident} IS NULL THEN 'null' ELSE '\"' END")
                p.expr(ident)
                p.expr(f"CASE WHEN {ident} IS NOT NULL THEN '\"' END")
        else:
            text = ident if c.type_oid in _TEXT_TYPES else f"concat({ident})"
            if c.not_null:
                p.expr(f"to_json({text})")
            else:
                p.expr(f"CASE WHEN {ident} IS NULL THEN 'null' ELSE to_json({text})::text END")
    rel = orjson.dumps([definition.schema, definition.table]).decode()
    p.lit('},"headers":{"operation":"insert","relation":' + rel + "}}")
    return p.build()


class BlockQuery:
    """``SELECT count(*), string_agg(<middle>, SEP) FROM <table> WHERE <ctid range> [AND
    (<where>)]``: one range of heap pages gives one row, its item count and its items (see :meth:`block`)."""

    __slots__ = ("_between", "_head", "_query", "_rows_query", "_tail", "_where")

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        definition: ShapeDefinition,
        item: ItemSql,
        where_sql: sql.Composable | None = None,
        params: Sequence[Any] = (),
    ) -> None:
        table = f"{_ident(conn, definition.schema)}.{_ident(conn, definition.table)}"
        self._query = f"SELECT count(*), string_agg({item.middle}, E'\\x1e') FROM {table} WHERE ctid >= "
        self._rows_query = f"SELECT {item.middle} FROM {table}"
        self._head = item.head.encode()
        self._tail = item.tail.encode()
        self._between = self._tail + b"," + self._head
        self._where = ""
        if where_sql is not None:  # COPY-like: the parameters merged client-side, once
            where = psycopg.ClientCursor(conn).mogrify(sql.Composed([where_sql]), tuple(params))
            self._where = f" AND ({where})"

    def filtered(self) -> str:
        """One row per item middle, the shape's WHERE alone (no ctid range): lets the planner use an index
        for a selective shape instead of scanning every page of the table."""
        where = f" WHERE{self._where[4:]}" if self._where else ""
        return f"{self._rows_query}{where}"

    def join(self, middles: Sequence[Buffer]) -> bytes:
        """The items of ``middles`` (one per row of :meth:`filtered`), joined by ``,``."""
        return b"".join((self._head, self._between.join(middles), self._tail))

    def pages(self, lo: int, hi: int | None) -> str:
        """The query for heap pages ``[lo, hi)`` (``hi`` None: to the end); no placeholders left."""
        upper = "" if hi is None else f" AND ctid < '({int(hi)},0)'::tid"
        return f"{self._query}'({int(lo)},0)'::tid{upper}{self._where}"

    def block(self, aggregate: Buffer) -> bytes:
        """The items, joined by ``,`` (:data:`~sync.storage.snapshot_writer.ITEM_BOUNDARY` tells them apart),
        from the query's ``string_agg`` of their middles (not NULL)."""
        middles = bytes(aggregate).replace(SEP, self._between)
        return b"".join((self._head, middles, self._tail))
