"""The subset statement with its items built by Postgres, guarded against column changes.

Why: building 50 items in Python (a dict per row, the key, orjson) cost the gevent worker ~0.1 ms per
subset, more than Postgres needs for the same items with :func:`~sync.shapes.snapshot_sql.item_expression`
(the snapshot's item SQL, byte-identical to the encoder's items, see that module).  The worker then only
joins the items' bytes.

That SQL depends on the columns as they were when it was built: a value of a "plain" type is quoted
without escaping, a text value goes through ``to_json`` as is, a NOT NULL column has no NULL case.  A
prepared statement outlives that read, and a column altered since (``int4`` to ``text``, NOT NULL dropped)
would then break the JSON.  Two guards, nearly free (measured: ~50 µs a query for a catalog check in the
statement, and as much for NULL cases on every column):

* types: the statement also returns, per column, a ``NULL`` of the column's type (``CASE WHEN false THEN
  col END``, folded to a constant by the planner).  Postgres re-plans a prepared statement after ``ALTER
  TABLE`` and refuses a plan whose result types changed ("cached plan must not change result type",
  :data:`STALE_SQLSTATE`), so no row is ever built with stale types;
* NOT NULL: a row with a NULL in a column built as NOT NULL has a NULL item (:data:`ItemStatement` says
  so), never a wrong one.

Either way the runner discards the result and builds the statement again from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from sync.shapes.definition import ShapeDefinition
from sync.shapes.snapshot_sql import Column, item_expression

__all__ = ["COLUMNS_QUERY", "STALE_SQLSTATE", "ItemStatement", "item_statement"]

COLUMNS_QUERY: Final = (
    "SELECT a.attname, a.atttypid::int, a.attnotnull FROM pg_attribute a"
    " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped"
)
STALE_SQLSTATE: Final = "0A000"  # feature_not_supported: "cached plan must not change result type"


@dataclass(frozen=True, slots=True)
class ItemStatement:
    """``query`` (psycopg ``%s`` syntax) returns ``(snapshot, wal insert lsn, ordinal, item middle, type
    guards...)`` per row of the subset, in order (one row with a NULL ordinal when none matched); an item
    is ``head + middle + tail``.  A NULL middle means a column built as NOT NULL no longer is."""

    query: bytes
    head: bytes
    tail: bytes


def item_statement(conn: psycopg.Connection[Any], definition: ShapeDefinition, query: bytes) -> ItemStatement:
    """The statement for ``query`` (a subset query of ``definition``'s columns, ``%s`` placeholders), built
    for the column types read now; raises LookupError if a shape column is gone."""
    rows = conn.execute(COLUMNS_QUERY, (definition.relation_oid,)).fetchall()
    catalog = {str(r[0]): Column(str(r[0]), int(r[1]), bool(r[2])) for r in rows}
    missing = [c for c in definition.columns if c not in catalog]
    if missing:
        raise LookupError(f"columns {missing} not found in {definition.schema}.{definition.table}")
    columns = [catalog[c] for c in definition.columns]
    item = item_expression(conn, definition, columns)
    middle = item.middle
    not_null = [f"x.{sql.Identifier(c.name).as_string(conn)} IS NULL" for c in columns if c.not_null]
    if not_null:
        middle = f"CASE WHEN {' OR '.join(not_null)} THEN NULL ELSE {middle} END"
    guards = b"".join(
        b", CASE WHEN false THEN x." + sql.Identifier(c).as_bytes(conn).replace(b"%", b"%%") + b" END"
        for c in definition.columns
    )
    statement = b"".join(
        (
            b"WITH info AS MATERIALIZED (SELECT pg_current_snapshot()::text AS snapshot,"
            b" pg_current_wal_insert_lsn()::text AS lsn)"
            b" SELECT info.snapshot, info.lsn, s.* FROM info LEFT JOIN LATERAL"
            b' (SELECT row_number() OVER () AS "shapesync ordinal", ',
            middle.replace("%", "%%").encode(),
            guards,
            b" FROM (",
            query,
            b') x) s ON true ORDER BY s."shapesync ordinal"',
        )
    )
    return ItemStatement(statement, item.head.encode(), item.tail.encode())
