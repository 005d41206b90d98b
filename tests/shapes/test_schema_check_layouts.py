"""Composite types whose attributes change (``ALTER TYPE ... ADD/DROP ATTRIBUTE``, or ``ALTER TABLE`` of a
table whose row type a column holds): every existing value prints otherwise (``(1)`` becomes ``(1,)``) and
nothing is replicated, so the catalog check must invalidate the shapes that print them (against a real
catalog: :mod:`sync.postgres.type_output`, :mod:`sync.shapes.schema_check`)."""

from __future__ import annotations

import dataclasses

import psycopg

from sync.postgres.inspector import inspect_table
from sync.shapes.definition import ShapeDefinition
from sync.shapes.schema_check import (
    CatalogTable,
    ColumnType,
    ColumnTypes,
    SchemaCatalog,
    catalog_reason,
    column_types_from_meta,
    column_types_to_meta,
    table_column_types,
)

COLUMNS = ("id", "p", "ps", "d", "r", "nested", "x")


def test_composite_layouts_changed_invalidate_the_shapes_printing_them(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for statement in (
            "CREATE TYPE pt AS (x int)",
            "CREATE DOMAIN dpt AS pt",
            "CREATE TYPE outer_t AS (inner_p pt, n int)",
            "CREATE TABLE row_t (a int)",
            "CREATE TABLE t (id int PRIMARY KEY, p pt, ps pt[], d dpt, r row_t, nested outer_t, x text)",
            "INSERT INTO t VALUES (1, ROW(1), ARRAY[ROW(1)::pt], ROW(1), ROW(1), ROW(ROW(1), 2), 'x')",
        ):
            conn.execute(statement)
        compiled = table_column_types(inspect_table(conn, "public", "t"))
        oid = inspect_table(conn, "public", "t").oid
    every = ShapeDefinition("public", "t", oid, COLUMNS, ("id",), True)

    def now() -> CatalogTable:
        catalog = SchemaCatalog(db_dsn)
        try:
            return catalog.tables([oid])[oid]
        finally:
            catalog.close()

    def invalidated(statement: str) -> set[str]:
        """The columns whose one-column shapes the catalog invalidates after ``statement``."""
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(statement)
        table = now()
        out = set()
        for name in COLUMNS[1:]:
            one = dataclasses.replace(every, columns=("id", name), all_columns=False)
            if catalog_reason(one, table, compiled) is not None:
                out.add(name)
        return out

    assert now().columns == compiled  # the compiler's inspection and the check read alike
    layouts = {c.name: len(c.layouts) for c in compiled}
    assert layouts == {"id": 0, "p": 1, "ps": 1, "d": 1, "r": 1, "nested": 2, "x": 0}
    assert column_types_from_meta(column_types_to_meta(compiled)) == compiled
    assert invalidated("ALTER TYPE pt RENAME ATTRIBUTE x TO y") == set()  # names do not print
    assert invalidated("ALTER TABLE row_t ADD COLUMN b int") == {"r"}
    with psycopg.connect(db_dsn, autocommit=True) as conn:  # what the shape of p would serve for ever
        assert conn.execute("SELECT p::text, r::text FROM t").fetchone() == ("(1)", "(1,)")
    added = invalidated("ALTER TYPE pt ADD ATTRIBUTE z text")
    assert added == {"p", "ps", "d", "nested", "r"}  # (r: compared with the creation's, like the rest)
    reason = catalog_reason(every, now(), compiled)
    assert reason == (
        "a composite type of column p of public.t has other attributes now (ALTER TYPE): its values print otherwise"
    )


def test_layouts_unknown_to_an_older_log_are_not_compared() -> None:
    """Column types stored before layouts were: none recorded, none compared (the entry reads back)."""
    then: ColumnTypes = (ColumnType("id", 23, -1), ColumnType("p", 90000, -1))
    stored = [entry[:6] for entry in column_types_to_meta(then)]
    assert column_types_from_meta(stored) == then
    now = CatalogTable(1, "public", "t", tuple(c._replace(layouts=((90000, "23:-1,23:-1"),)) for c in then))
    assert catalog_reason(ShapeDefinition("public", "t", 1, ("id", "p"), ("id",), True), now, then) is None
