"""The subset item statement's plan: its type guard costs no plan node (the empty branch is dropped)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.subset import OrderItem, SubsetQuery, build_subset_query
from sync.shapes.subset_exec import numbered_query
from sync.shapes.subset_items import item_statement
from sync.shapes.subset_runner import SubsetRunner
from tests.fixtures.sessions import session_settings_sql
from tests.shapes.helpers import read_table


def _nodes(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"], *(n for child in plan.get("Plans", ()) for n in _nodes(child))]


def test_the_type_guard_adds_no_plan_node(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(session_settings_sql())
        conn.execute("CREATE TABLE g (id int PRIMARY KEY, v text, n numeric NOT NULL)")
        table = read_table(conn, "public", "g")
        assert table is not None
        definition = ShapeDefinition.create(("public", "g"), table)
        query, _ = build_subset_query(definition, None, SubsetQuery(order_by=(OrderItem("id"),), limit=5))
        for unchecked in (True, False):
            statement = item_statement(conn, definition, query, unchecked=unchecked)
            conn.execute("DEALLOCATE ALL")
            conn.execute(b"PREPARE s AS " + numbered_query(statement.query))
            conn.execute("SET plan_cache_mode = force_generic_plan")
            row = conn.execute("EXPLAIN (FORMAT JSON) EXECUTE s('\x01', 5)").fetchone()
            assert row is not None
            plan = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]["Plan"]
            nodes = _nodes(plan)
            assert nodes[0] == "Aggregate", nodes
            assert not {"Append", "Nested Loop", "Result", "Hash Join", "Merge Join"} & set(nodes), nodes
            # the result still carries one column per shape column, typed as the table's
            described = conn.execute(b"EXECUTE s('\x01', 5)").description
            assert described is not None
            assert [d.type_code for d in described[-3:]] == [23, 25, 1700]


def test_a_dropped_not_null_never_gives_a_wrong_item(db_dsn: str) -> None:
    """Strict statements (no NULL test of their own) and not strict ones (``concat`` for bool, a non-plain
    key, a chain longer than one ``||``) alike: a NULL in a column built as NOT NULL never goes out as an
    item; the runner builds the statement again and the item says ``null``."""
    wide = ", ".join(f"w{i} int NOT NULL DEFAULT {i}" for i in range(12))
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(session_settings_sql())
        conn.execute(
            "CREATE TABLE p (id int PRIMARY KEY, t text NOT NULL, v varchar(9) NOT NULL DEFAULT 'x')"
        )
        conn.execute("CREATE TABLE b (id int PRIMARY KEY, f bool NOT NULL)")
        conn.execute("CREATE TABLE k (id text PRIMARY KEY, n int NOT NULL)")
        conn.execute(f"CREATE TABLE w (id int PRIMARY KEY, {wide})")
        cases = {"p": ("t", True), "b": ("f", False), "k": ("n", False), "w": ("w3", False)}
        runner = SubsetRunner(db_dsn, size=1)
        try:
            for name, (column, strict) in cases.items():
                conn.execute(f"INSERT INTO {name} (id, {column}) VALUES ('1', '1')")
                table = read_table(conn, "public", name)
                assert table is not None
                definition = ShapeDefinition.create(("public", name), table)
                query, params = build_subset_query(definition, None, SubsetQuery(order_by=(OrderItem("id"),)))
                # every column is NOT NULL: a CASE is the statement's own NULL test
                assert (b"CASE WHEN" not in item_statement(conn, definition, query).query) is strict, name
                encoder = ShapeLogEncoder(definition)
                assert runner.run(query, params, definition).count == 1
                conn.execute(f"ALTER TABLE {name} ALTER COLUMN {column} DROP NOT NULL")
                conn.execute(f"UPDATE {name} SET {column} = NULL")
                row = conn.execute(f"SELECT * FROM {name}").fetchone()
                assert row is not None
                item = encoder.snapshot_item(tuple(None if v is None else str(v) for v in row))[1]
                body = runner.run(query, params, definition).body()
                assert b'"' + column.encode() + b'":null' in item
                assert item[:-2] in body, (name, body)
        finally:
            runner.close()
