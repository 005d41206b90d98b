"""The subset statement with its items built by Postgres, and the column types it was built for.

Why: building 50 items in Python (a dict per row, the key, orjson) cost the gevent worker ~0.1 ms per
subset, more than Postgres needs for the same items with :func:`~sync.shapes.snapshot_sql.item_expression`
(the snapshot's item SQL, byte-identical to the encoder's items, see that module).  The worker then only
joins the items' bytes.

That SQL depends on the column types and NOT NULL flags: a value of a "plain" type is quoted without
escaping, a NOT NULL column has no NULL case.  Types read once and then trusted could be stale (a column
altered to ``text`` could then break the JSON), so the statement returns, from the catalog, the signature
of the table's columns as its execution sees them (:data:`SIGNATURE_SQL`): the statement holds its lock on
the table while it runs, so no ``ALTER TABLE`` can come between its plan and that read.  A signature other
than the one the SQL was built for means the rows must be discarded and the statement built again
(:class:`~sync.shapes.subset_runner.SubsetRunner` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import psycopg

from sync.shapes.definition import ShapeDefinition
from sync.shapes.snapshot_sql import Column, item_expression

__all__ = ["COLUMNS_QUERY", "ItemStatement", "item_statement", "signature"]

COLUMNS_QUERY: Final = (
    "SELECT a.attname, a.atttypid::int, a.attnotnull FROM pg_attribute a"
    " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)
# The same columns as one text, computed by the statement itself: signature() must give the same text.
SIGNATURE_SQL: Final = (
    "(SELECT string_agg(concat(a.attname, ' ', a.atttypid::int, ' ', a.attnotnull), ',' ORDER BY a.attnum)"
    " FROM pg_attribute a WHERE a.attrelid = %d AND a.attnum > 0 AND NOT a.attisdropped)"
)


def signature(columns: list[tuple[str, int, bool]]) -> bytes:
    """What :data:`SIGNATURE_SQL` returns for ``(name, type oid, not null)`` rows in ``attnum`` order."""
    return ",".join(f"{n} {t} {'t' if nn else 'f'}" for n, t, nn in columns).encode()


@dataclass(frozen=True, slots=True)
class ItemStatement:
    """``query`` (psycopg ``%s`` syntax) returns ``(snapshot, wal insert lsn, signature, ordinal, middle)``
    per row of the subset, in order (one row with a NULL ordinal when none matched); an item is
    ``head + middle + tail`` and is valid only if the row's ``signature`` equals ``signature``."""

    query: bytes
    signature: bytes
    head: bytes
    tail: bytes


def item_statement(conn: psycopg.Connection[Any], definition: ShapeDefinition, query: bytes) -> ItemStatement:
    """The statement for ``query`` (a subset query of ``definition``'s columns, ``%s`` placeholders), built
    for the column types read now; raises LookupError if a shape column is gone."""
    rows = conn.execute(COLUMNS_QUERY, (definition.relation_oid,)).fetchall()
    catalog = [(str(r[0]), int(r[1]), bool(r[2])) for r in rows]
    by_name = {name: Column(name, oid, not_null) for name, oid, not_null in catalog}
    missing = [c for c in definition.columns if c not in by_name]
    if missing:
        raise LookupError(f"columns {missing} not found in {definition.schema}.{definition.table}")
    item = item_expression(conn, definition, [by_name[c] for c in definition.columns])
    middle = item.middle.replace("%", "%%").encode()
    statement = b"".join(
        (
            b"WITH info AS MATERIALIZED (SELECT pg_current_snapshot()::text AS snapshot,"
            b" pg_current_wal_insert_lsn()::text AS lsn, ",
            (SIGNATURE_SQL % definition.relation_oid).encode(),
            b' AS signature) SELECT info.snapshot, info.lsn, info.signature, s."shapesync ordinal", s.item'
            b' FROM info LEFT JOIN LATERAL (SELECT row_number() OVER () AS "shapesync ordinal", ',
            middle,
            b" AS item FROM (",
            query,
            b') x) s ON true ORDER BY s."shapesync ordinal"',
        )
    )
    return ItemStatement(statement, signature(catalog), item.head.encode(), item.tail.encode())
