"""Test-local catalog values (fitting sync.shapes.catalog's Protocols) and a tiny catalog reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from sync.replication.changes import Column, Relation


@dataclass(frozen=True)
class Col:
    name: str
    type_name: str = "text"
    type_mod: int = -1
    array_dims: int = 0
    not_null: bool = False


@dataclass(frozen=True)
class Table:
    oid: int
    schema: str
    name: str
    columns: tuple[Col, ...]
    primary_key: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def relation_of(table: Table) -> Relation:
    return Relation(
        oid=table.oid,
        schema=table.schema,
        name=table.name,
        replica_identity="f",
        columns=tuple(Column(c.name, 25, -1, True) for c in table.columns),
    )


_CATALOG = """
SELECT c.oid, n.nspname, c.relname,
       a.attname,
       CASE WHEN t.typcategory = 'A' THEN et.typname ELSE t.typname END,
       a.atttypmod, a.attndims, a.attnotnull,
       (SELECT array_position(i.indkey::int2[], a.attnum)
          FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type et ON et.oid = t.typelem
WHERE n.nspname = %s AND c.relname = %s
ORDER BY a.attnum
"""


def read_table(conn: psycopg.Connection[Any], schema: str, name: str) -> Table | None:
    rows = conn.execute(_CATALOG, (schema, name)).fetchall()
    if not rows:
        return None
    cols = tuple(Col(r[3], r[4], r[5], r[6], r[7]) for r in rows)
    pk = tuple(r[3] for r in sorted((r for r in rows if r[8] is not None), key=lambda r: r[8]))
    return Table(rows[0][0], rows[0][1], rows[0][2], cols, pk)
