"""Test-local catalog values (fitting sync.shapes.catalog's Protocols) and a catalog reader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from sync.postgres.inspector import TableInfo, TableNotFound, inspect_table
from sync.replication.changes import Column, Relation
from sync.shapes.definition import ShapeDefinition


@dataclass(frozen=True)
class Col:
    name: str
    type_name: str = "text"
    generated: bool = False

    def schema_entry(self) -> dict[str, Any]:
        return {"type": self.type_name}


@dataclass(frozen=True)
class Table:
    oid: int
    schema: str
    name: str
    columns: tuple[Col, ...]
    pk: tuple[str, ...] = ()


def relation_of(table: Table) -> Relation:
    return Relation(
        oid=table.oid,
        schema=table.schema,
        name=table.name,
        replica_identity="f",
        columns=tuple(Column(c.name, 25, -1, True) for c in table.columns if not c.generated),
    )


def read_table(conn: psycopg.Connection[Any], schema: str, name: str) -> TableInfo | None:
    try:
        return inspect_table(conn, schema, name)
    except TableNotFound:
        return None


def definition_of(conn: psycopg.Connection[Any], schema: str, name: str, **options: Any) -> ShapeDefinition:
    """The definition of a shape on table ``schema.name`` as the catalog has it now (``options``: those of
    :meth:`ShapeDefinition.create`)."""
    table = read_table(conn, schema, name)
    assert table is not None
    return ShapeDefinition.create((schema, name), table, **options)
