"""The subset statement with its items built by Postgres, guarded against column changes.

Why: building 50 items in Python (a dict per row, the key, orjson) cost the gevent worker ~0.1 ms per
subset, more than Postgres needs for the same items with :func:`~sync.shapes.item_sql.item_expression`
(the snapshot's item SQL, byte-identical to the encoder's items, see that module).  Postgres also joins
them (``string_agg`` with ``tail + "," + head`` as the separator, as the snapshot does), so the statement
returns ONE row and the worker only puts the metadata, the first head and the last tail around one value.
Measured on the benchmark's 50-row subset (libpq, prepared, 1M rows): ~140 µs against ~185 µs for the
same items as 50 rows ordered by a ``row_number()`` ordinal through a lateral join, and no per-row work in
the worker.

The rows reach ``string_agg`` in the subquery's order: nothing at the aggregate's level (no join, no
grouping) can reorder them, which is how PostgreSQL documents ordering an aggregate's input by a sorted
subquery.  ``OFFSET 0`` keeps that subquery from being flattened, so each item is computed once (``count(m)``
and ``string_agg(m, …)`` would each compute it otherwise).

That SQL depends on the columns as they were when it was built: a value of a "plain" type is quoted
without escaping, a text value goes through ``to_json`` as is, a NOT NULL column has no NULL case.  A
prepared statement outlives that read, and a column altered since (``int4`` to ``text``, NOT NULL dropped)
would then break the JSON.  Two guards, nearly free (measured: ~50 µs a query for a catalog check in the
statement, and as much for NULL cases on every column):

* types: the statement also returns, per column, a ``NULL`` of the column's type: the aggregate row is
  ``UNION ALL``-ed with the table's columns ``WHERE false``, so each result column has the type both
  branches resolve to (a domain resolves to its base type, whose items are the same bytes).  The planner
  drops the empty branch: the plan is the aggregate alone, no per-row work and no node of its own.  (Before:
  the same ``WHERE false`` subquery left-joined to the aggregate row, whose join and its inner ``Result``
  cost Postgres ~10 µs a query at the benchmark's 50 rows; before that ``array_agg(column) FILTER (WHERE
  false)`` per column, as much.)  Postgres re-plans a prepared statement after ``ALTER TABLE`` and refuses
  a plan whose result types changed ("cached plan must not change result type", :data:`STALE_SQLSTATE`),
  so no row is ever built with stale types;
* NOT NULL: a row with a NULL in a column built as NOT NULL has a NULL item, never a wrong one (a ``CASE``
  around the middle, unless the item is already NULL then, :attr:`~sync.shapes.item_sql.ItemSql.strict`:
  ~5 µs of Postgres time less at the benchmark's 50 rows); the statement counts the rows and the items
  (:data:`ItemStatement`), so such a row cannot go unnoticed.

Either way the runner discards the result and builds the statement again from the catalog.

Where the columns allow it (:func:`~sync.shapes.item_sql.unchecked_allowed`), the statement is built
unchecked first: text and varchar values without ``to_json`` (~25-30 µs of Postgres time on the benchmark's
50 rows, spent while the worker waits), and those values again alone, one ``string_agg`` per column, so
that the runner can check that none holds a byte JSON escapes
(:func:`~sync.shapes.item_sql.raw_values_clean`, as the snapshot's ``BlockQuery.range_items`` does per
range); if one does, the checked statement runs.  The type guard covers both: a column that changes from a
plain type to text fails the plan as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg import sql

from sync.shapes.definition import ShapeDefinition
from sync.shapes.item_sql import Column, item_expression, unchecked_allowed

__all__ = ["COLUMNS_QUERY", "RAW_AT", "STALE_SQLSTATE", "ItemStatement", "item_statement"]

COLUMNS_QUERY: Final = (
    "SELECT a.attname, a.atttypid::int, a.attnotnull FROM pg_attribute a"
    " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped"
)
STALE_SQLSTATE: Final = "0A000"  # feature_not_supported: "cached plan must not change result type"
RAW_AT: Final = 5  # an unchecked statement's column of its first raw column's values (ItemStatement.raw)


@dataclass(frozen=True, slots=True)
class ItemStatement:
    """``query`` (psycopg ``%s`` syntax; its first placeholder is the separator, the subset's own follow)
    returns one row: ``(snapshot, wal insert lsn, rows, items, middles, type guards...)``: ``middles`` is
    the row's item middles joined by the separator (NULL when no row matched), ``items`` how many of the
    ``rows`` have a middle.  An item is ``head + middle + tail``; fewer items than rows means a column
    built as NOT NULL no longer is.

    ``unchecked``: text and varchar values are in the middles as they are (:func:`item_expression`'s
    unchecked form, no ``to_json``), and the row returns, from column :data:`RAW_AT` on, the values of each
    of those ``raw`` columns joined; the middles are JSON only if
    :func:`~sync.shapes.item_sql.raw_values_clean` holds for them (else run the checked statement)."""

    query: bytes
    head: bytes
    tail: bytes
    unchecked: bool = False
    raw: int = 0  # columns whose values an unchecked statement also returns alone (from RAW_AT on)
    # ``tail`` and ``tail + "," + head`` with the request's ``"snapshot_mark"`` added as the last header, as
    # ``%`` templates of the mark (one formatting per request instead of a slice and three joins)
    marked_tail: bytes = field(init=False, repr=False, compare=False)
    marked_separator: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # the tail ends the item's headers and the item: ``}}``
        marked = self.tail[:-2].replace(b"%", b"%%") + b',"snapshot_mark":%d}}'
        object.__setattr__(self, "marked_tail", marked)
        object.__setattr__(self, "marked_separator", marked + b"," + self.head.replace(b"%", b"%%"))


def item_statement(
    conn: psycopg.Connection[Any], definition: ShapeDefinition, query: bytes, *, unchecked: bool = False
) -> ItemStatement:
    """The statement for ``query`` (a subset query of ``definition``'s columns, ``%s`` placeholders), built
    for the column types read now; raises LookupError if a shape column is gone.  ``unchecked``: built
    unchecked where the columns allow it (:func:`~sync.shapes.item_sql.unchecked_allowed`), else checked."""
    rows = conn.execute(COLUMNS_QUERY, (definition.relation_oid,)).fetchall()
    catalog = {str(r[0]): Column(str(r[0]), int(r[1]), bool(r[2])) for r in rows}
    missing = [c for c in definition.columns if c not in catalog]
    if missing:
        raise LookupError(f"columns {missing} not found in {definition.schema}.{definition.table}")
    columns = [catalog[c] for c in definition.columns]
    unchecked = unchecked and unchecked_allowed(definition, columns)
    item = item_expression(conn, definition, columns, unchecked=unchecked)
    middle = item.middle
    not_null = [f"x.{sql.Identifier(c.name).as_string(conn)} IS NULL" for c in columns if c.not_null]
    if not_null and not item.strict:  # else a NULL there already makes the middle NULL (ItemSql.strict)
        middle = f"CASE WHEN {' OR '.join(not_null)} THEN NULL ELSE {middle} END"
    idents = [sql.Identifier(c).as_bytes(conn).replace(b"%", b"%%") for c in definition.columns]
    table = sql.Identifier(definition.schema, definition.table).as_bytes(conn).replace(b"%", b"%%")
    statement = b"".join(
        (
            b"SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text, count(*), count(m),"
            b" string_agg(m, %s)",
            b"".join(b", string_agg(r%d, '')" % i for i in range(len(item.raw))),
            b", NULL" * len(idents),
            b" FROM (SELECT ",
            middle.replace("%", "%%").encode(),
            b"".join(b", x." + ident.replace("%", "%%").encode() for ident in item.raw),
            b" FROM (",
            query,
            # y's columns are renamed: no shape column name can clash with them
            b") x OFFSET 0) y(m",
            b"".join(b", r%d" % i for i in range(len(item.raw))),
            b") UNION ALL SELECT NULL, NULL, NULL, NULL, NULL",
            b", NULL" * len(item.raw),
            b", ",
            b", ".join(idents),
            b" FROM ",
            table,
            b" WHERE false",
        )
    )
    return ItemStatement(
        statement,
        item.head.encode(),
        item.tail.encode(),
        item.unchecked,
        len(item.raw),
    )
