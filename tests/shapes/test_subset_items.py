"""The subset item statement's plan: its type guard costs no plan node (the empty branch is dropped)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from sync.shapes.definition import ShapeDefinition
from sync.shapes.snapshot import display_settings_sql
from sync.shapes.subset import OrderItem, SubsetQuery, build_subset_query
from sync.shapes.subset_exec import numbered_query
from sync.shapes.subset_items import item_statement
from tests.shapes.helpers import read_table


def _nodes(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"], *(n for child in plan.get("Plans", ()) for n in _nodes(child))]


def test_the_type_guard_adds_no_plan_node(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(display_settings_sql())
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
