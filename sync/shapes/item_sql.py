"""The snapshot's (and subsets') log item as one SQL expression per row: Postgres writes the finished item
JSON, so that Python only stores it (see :mod:`sync.shapes.snapshot_sql`, which reads ranges of a table
with it, and :mod:`sync.shapes.subset_items`).

Byte-identical to :meth:`sync.shapes.log_items.ShapeLogEncoder.snapshot_item` (and so to replication):

* every value is its type's OUTPUT FUNCTION text, as pgoutput sends it: ``concat(x)`` calls the output
  function, and so does ``x::text`` for the types with no cast to text in ``pg_cast`` (an I/O conversion;
  ``bool``'s cast gives ``true``, ``bpchar``'s drops its padding, ``inet``'s adds ``/32``), under
  :data:`sync.shapes.snapshot.DISPLAY_SETTINGS` like every snapshot session; the pieces of an item are
  joined by ``||`` (:func:`_chain`);
* a value is escaped by ``to_json(text)``, which escapes exactly what orjson does (``"``, ``\\``, control
  characters as ``\\b \\f \\n \\r \\t`` or lowercase ``\\u00xx``; UTF-8 passes raw), except for the
  built-in types in :data:`PLAIN_TYPES`, whose output is printable ASCII without ``"`` or ``\\``: those are
  quoted as they are (``to_json`` is the costly part of the query);
* unless the shape's columns are all plain or text/varchar and its key plain (:func:`unchecked_allowed`):
  then text values go out as they are (:func:`item_expression` ``unchecked``) and Python checks that they
  hold no byte JSON escapes (``"``, ``\\``, control characters, the separator): the query also returns
  those values alone (``ItemSql.raw``: one ``string_agg`` per column) and :func:`raw_values_clean` reads
  them (the snapshot's :meth:`sync.shapes.snapshot_sql.BlockQuery.range_items` per range, subsets'
  :mod:`sync.shapes.subset_runner` per statement); a value that needed escaping has the rows read again
  the ``to_json`` way (in the snapshot, after ``UNCHECKED_FAILURES`` such ranges, the rest of the table
  too).
  Measured on 1M rows of the benchmark: Postgres ~0.3-0.45 s less CPU, Python ~0.15 s more;
* NULL is ``null`` (a ``CASE``: ``||`` would make the item NULL); column names and the relation come from
  ``orjson`` as in the encoder; the key is ``to_json`` of ``"schema"."table"/"v1"/…`` (``/`` doubled
  inside values, NULL as ``_``) or, when every key column is plain and has no ``/`` in its output, the same
  text written already escaped.

Measured (1M rows of the benchmark's 5 columns, backend CPU from /proc, shared noisy cores): the item query
costs Postgres ~2.1x the plain ``COPY`` of the same rows (1.3-1.45 s against 0.6 s; hence two connections,
see :mod:`sync.shapes.snapshot_blocks`), and Python ~0.3 s in all (~0.3 µs a row, against ~5 µs a row
before).  ``to_json`` of the text column is ~0.2-0.3 s of it; a regex test to skip ``to_json`` was dearer
(~0.4 s), and so was ``format()``.  Session 4, range queries alone (``sum(octet_length(item))``, no
aggregate, one backend): ``concat()`` of the item's pieces ~0.6 s, a ``||`` chain with ``::text`` ~0.47 s,
the plain columns' output ~0.25 s; with ``string_agg`` and the result sent, ``||`` saved ~0.07-0.1 s of
~1.0 s (medians of 5 interleaved runs, 1 and 2 connections).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import psycopg
from psycopg import sql
from psycopg.abc import Buffer

from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import key_prefix

__all__ = [
    "ESCAPED",
    "IO_CAST_TYPES",
    "KEY_PLAIN_TYPES",
    "PLAIN_TYPES",
    "RAW_TEXT_TYPES",
    "Column",
    "ItemSql",
    "item_expression",
    "quote_ident",
    "raw_values_clean",
    "unchecked_allowed",
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
# Pieces per ``||`` chain: measured per million rows of the benchmark, a chain of the item's ~12 pieces cost
# Postgres ~0.15 s less CPU than ``concat()`` of them (~0.55 s against ~0.7 s), which runs every argument,
# constants included, through an output function, a C string and ``strlen``.
_CHAIN: Final = 16
_TEXT_OID: Final = 25
# Built-in types with no cast to text in ``pg_cast``: ``x::text`` is an I/O conversion, the output function's
# text exactly (bool, inet and cidr have casts of their own: ``true``, ``10.0.0.1/32``).  varchar is
# binary-coercible to text.
IO_CAST_TYPES: Final = frozenset(
    {20, 21, 23, 26, 28, 700, 701, 1700, 1082, 1083, 1114, 1184, 1266, 1186, 2950, 774, 829, 3220, 5069, 1043}
)
# Text types whose to_json is their output function escaped (no concat() needed to make them text first).
_TEXT_TYPES: Final = frozenset({25, 1043, 1042, 19})  # text, varchar, bpchar, name
# Text types written unescaped in an unchecked item (see ``snapshot_sql.BlockQuery``): text, varchar.
RAW_TEXT_TYPES: Final = frozenset({25, 1043})
# The bytes JSON escapes inside a string (the separator SEP among them): none may be in an unescaped value.
ESCAPED: Final = bytes(range(32)) + b'"\\'
# Every other byte: deleting these from values leaves what JSON escapes in them (nothing, when clean).
_UNESCAPED: Final = bytes(b for b in range(256) if b not in ESCAPED)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    not_null: bool


@dataclass(frozen=True, slots=True)
class ItemSql:
    """A row's item is ``head + <middle> + tail``: ``middle`` is an SQL expression, ``head`` and ``tail`` the
    constant text around it, added by Python (``snapshot_sql.BlockQuery.block``).  Measured per million
    rows: the constant text as ``concat`` arguments cost Postgres ~0.3 s more than as ``string_agg``'s
    delimiter, which cost ~0.6 s more than leaving it out (a 1-byte delimiter), against ~0.2 s for Python's
    one ``replace`` of the separators by ``tail``, ``,``, ``head``."""

    head: str
    middle: str
    tail: str
    # Unchecked items (text values unescaped); ``raw``: the SQL identifiers of the columns that go out
    # unescaped (what :func:`raw_values_clean` must read).
    unchecked: bool = False
    raw: tuple[str, ...] = ()
    # Whether a NULL in any column built as NOT NULL makes ``middle`` NULL: every such column's piece is
    # strict (``x::text`` as an I/O conversion, the text column itself, ``to_json``; not ``concat``, which
    # writes '' for NULL) and the pieces are one ``||`` chain.  Then a column whose NOT NULL was dropped
    # since cannot give a wrong item, only a NULL one (``subset_items`` needs no NULL test of its own).
    strict: bool = False


def raw_values_clean(values: Iterable[Buffer | None]) -> bool:
    """Do the values an unchecked item wrote unescaped (its ``raw`` columns' values, NULLs skipped) hold no
    byte of :data:`ESCAPED`?  Then its items are the JSON the checked form writes; a single such byte in any
    value and they are not (read the rows again checked).  One ``translate`` pass over the values alone:
    counting those bytes in the whole items instead (against what their literal text brings) read ~3x the
    bytes for the snapshot benchmark's rows.  The pass deletes the bytes that need no escaping: it writes
    (almost) nothing, where deleting :data:`ESCAPED` rewrote every byte (40 MB of values: 18 vs 49 ms)."""
    raw = b"".join(v for v in values if v is not None)
    return not raw.translate(None, _UNESCAPED)


class _Parts:
    """The pieces of one item's SQL text, joined by ``||``: literal text (merged) and SQL expressions, each
    a non-NULL text (``||`` gives NULL for any NULL operand)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._out: list[str] = []
        self._text: list[str] = []
        self._head: str | None = None
        self.raw: list[str] = []  # identifiers of the columns written unescaped
        self.strict = True  # see ItemSql.strict; False once a NOT NULL column's piece is not strict

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

    def quoted(self, ident: str, text: str, not_null: bool, opening: str, closing: str, *, null: str) -> None:
        """``opening`` + the column's ``text`` (an SQL text expression of column ``ident``) + ``closing``, or
        ``null`` when it is NULL."""
        if not_null:
            self.strict = self.strict and _strict(text, ident)
            self.lit(opening)
            self.expr(text)
            self.lit(closing)
            return
        q = self.quote
        self.expr(f"CASE WHEN {ident} IS NULL THEN {q(null)} ELSE {q(opening)} || {text} || {q(closing)} END")

    def _flush(self) -> None:
        if self._text:
            text = "".join(self._text)
            self._out.append(self.quote(text))
            self._text = []

    def build(self, unchecked: bool = False) -> ItemSql:
        if self._head is None:  # no expression at all
            return ItemSql("", self.quote("".join(self._text)), "")
        strict = self.strict and len(self._out) <= _CHAIN  # a longer chain is a concat() of chains
        if not unchecked:
            return ItemSql(self._head, _chain(self._out), "".join(self._text), strict=strict)
        tail = "".join(self._text)
        return ItemSql(self._head, _chain(self._out), tail, True, tuple(self.raw), strict)


def _chain(args: list[str]) -> str:
    """``a || b || …`` of ``args``; a long chain is cut into ``concat()`` of chains (each ``||`` copies what
    it was given, so one long chain costs quadratic copies; a function takes at most 100 arguments)."""
    if len(args) <= _CHAIN:
        return "(" + " || ".join(args) + ")" if len(args) > 1 else args[0]
    groups = [_chain(args[i : i + _CHAIN]) for i in range(0, len(args), _CHAIN)]
    return _concat(groups)


def _strict(text: str, ident: str) -> bool:
    """Is ``text`` (a column's piece as built here) NULL when column ``ident`` is: the column itself, its
    ``::text`` cast (an I/O conversion or a binary-coercible relabel) or its ``to_json``; not
    ``concat()``."""
    return text in (ident, f"{ident}::text", f"to_json({ident})::text")


def _concat(args: list[str]) -> str:
    """``concat(...)`` of ``args``, nested by groups: a function takes at most 100 arguments."""
    if len(args) <= _MAX_ARGS:
        return "concat(" + ", ".join(args) + ")"
    return _concat([_concat(args[i : i + _MAX_ARGS]) for i in range(0, len(args), _MAX_ARGS)])


def _as_text(ident: str, type_oid: int) -> str:
    """The column's output-function text as an SQL text expression: ``x::text`` where that cast is an I/O
    conversion (no ``pg_cast`` entry to text: it calls the output function), ``concat(x)`` otherwise."""
    if type_oid in IO_CAST_TYPES:
        return f"{ident}::text"
    if type_oid == _TEXT_OID:
        return ident
    return f"concat({ident})"


_BQ: Final = '\\"'  # an escaped quote inside the key's JSON string


def quote_ident(conn: psycopg.Connection[Any], name: str) -> str:
    return sql.Identifier(name).as_string(conn)


def _key(
    p: _Parts, conn: psycopg.Connection[Any], definition: ShapeDefinition, cols: dict[str, Column]
) -> None:
    prefix = key_prefix(definition.schema, definition.table)
    keys = [cols[c] for c in definition.key_columns]
    if all(c.type_oid in KEY_PLAIN_TYPES for c in keys):
        p.lit(orjson.dumps(prefix).decode()[:-1])  # the opening '"' and the escaped prefix
        for c in keys:
            ident = quote_ident(conn, c.name)
            p.quoted(ident, _as_text(ident, c.type_oid), c.not_null, "/" + _BQ, _BQ, null="/_")
        p.lit('"')
        return
    p.strict = p.strict and not any(c.not_null for c in keys)  # concat_ws() and concat(): not strict
    parts = [p.quote(prefix)]
    for c in keys:
        ident = quote_ident(conn, c.name)
        part = f"""concat('"', replace(concat({ident}), '/', '//'), '"')"""
        parts.append(part if c.not_null else f"CASE WHEN {ident} IS NULL THEN '_' ELSE {part} END")
    p.expr(f"to_json(concat_ws('/', {', '.join(parts)}))::text")


def unchecked_allowed(definition: ShapeDefinition, columns: Sequence[Column]) -> bool:
    """Whether the shape's items can be built unchecked (:func:`item_expression`): every column plain or
    text/varchar, every key column plain without ``/``."""
    cols = {c.name: c for c in columns}
    return all(c.type_oid in PLAIN_TYPES or c.type_oid in RAW_TEXT_TYPES for c in columns) and all(
        cols[k].type_oid in KEY_PLAIN_TYPES for k in definition.key_columns
    )


def item_expression(
    conn: psycopg.Connection[Any],
    definition: ShapeDefinition,
    columns: Sequence[Column],
    *,
    unchecked: bool = False,
) -> ItemSql:
    """The row's item JSON as SQL (``columns`` from :func:`fetch_table`); contains no placeholder.

    ``unchecked`` (only where :func:`unchecked_allowed`): text and varchar values go out as they are, not
    through ``to_json`` (~0.25 s of Postgres CPU per million 40-byte values); such an item is JSON only when
    none of them holds a byte JSON escapes (:func:`raw_values_clean`)."""
    if unchecked and not unchecked_allowed(definition, columns):
        raise ValueError("unchecked items need plain or text columns and plain key columns")
    cols = {c.name: c for c in columns}
    p = _Parts(conn)
    p.lit('{"key":')
    _key(p, conn, definition, cols)
    p.lit(',"value":{')
    for i, c in enumerate(columns):
        p.lit(("," if i else "") + orjson.dumps(c.name).decode() + ":")
        ident = quote_ident(conn, c.name)
        if c.type_oid in PLAIN_TYPES or (unchecked and c.type_oid in RAW_TEXT_TYPES):
            if c.type_oid not in PLAIN_TYPES:
                p.raw.append(ident)
            p.quoted(ident, _as_text(ident, c.type_oid), c.not_null, '"', '"', null="null")
        else:
            text = ident if c.type_oid in _TEXT_TYPES else f"concat({ident})"
            if c.not_null:
                p.strict = p.strict and _strict(f"to_json({text})::text", ident)
                p.expr(f"to_json({text})::text")
            else:
                p.expr(f"CASE WHEN {ident} IS NULL THEN 'null' ELSE to_json({text})::text END")
    rel = orjson.dumps([definition.schema, definition.table]).decode()
    p.lit('},"headers":{"operation":"insert","relation":' + rel + "}}")
    return p.build(unchecked)
