from __future__ import annotations

import orjson
import psycopg
import pytest
from psycopg import sql

from sync.shapes.definition import ShapeDefinition, ShapeDefinitionError
from sync.shapes.identifiers import parse_columns, parse_relation
from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.snapshot import (
    BEGIN_SNAPSHOT,
    SNAPSHOT_INFO_QUERY,
    parse_lsn,
    raw_text_cursor,
    snapshot_batches,
    snapshot_items,
    snapshot_query,
)
from sync.shapes.xid import PgSnapshot
from tests.fixtures.sessions import session_settings_sql
from tests.shapes.helpers import read_table


def test_parse_lsn() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    with pytest.raises(ValueError, match="LSN"):
        parse_lsn("123")


def test_snapshot_of_quoted_table_with_where_and_params(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as admin:
        admin.execute('CREATE SCHEMA "We.ird/S"')
        admin.execute('CREATE TABLE "We.ird/S"."Ta""ble" ("Id" text PRIMARY KEY, "N" int, note char(3))')
        admin.execute(
            """INSERT INTO "We.ird/S"."Ta""ble" VALUES ('a/b', 1, 'x'), ('c', 5, NULL), ('', 7, 'y'),
               ('d"q', 9, 'zz')"""
        )
    relation = parse_relation('"We.ird/S"."Ta""ble"')
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(session_settings_sql())
        table = read_table(conn, *relation)
        definition = ShapeDefinition.create(
            relation, table, columns=parse_columns('"N","Id"'), where="$1 < 1", params=["2"]
        )
        assert definition.columns == ("Id", "N")
        conn.execute(BEGIN_SNAPSHOT)
        info = conn.execute(SNAPSHOT_INFO_QUERY).fetchone()
        assert info is not None
        snap = PgSnapshot.parse(info[0])
        assert snap.xmin <= snap.xmax and parse_lsn(info[1]) > 0
        # the WHERE package hands over a Composable and its params
        where_sql = sql.SQL("{} > %s").format(sql.Identifier("N"))
        query = snapshot_query(definition, where_sql) + sql.SQL(" ORDER BY 1")
        cur = raw_text_cursor(conn, name="snap")
        cur.execute(query, ("2",))
        batches = list(snapshot_batches(cur, ShapeLogEncoder(definition), batch_size=2))
        cur.close()
        items = [item for batch in batches for item in batch]
        assert [len(b) for b in batches] == [2, 1]
        conn.execute("COMMIT")
    assert [key for key, _ in items] == [
        '"We..ird//S"."Ta"ble"/""',
        '"We..ird//S"."Ta"ble"/"c"',
        '"We..ird//S"."Ta"ble"/"d"q"',
    ]
    assert orjson.loads(items[0][1]) == {
        "key": '"We..ird//S"."Ta"ble"/""',
        "value": {"Id": "", "N": "7"},
        "headers": {"operation": "insert", "relation": ["We.ird/S", 'Ta"ble']},
    }


def test_pkless_table_keys_with_nulls(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE w (z text, a int, m text)")
        conn.execute("INSERT INTO w VALUES ('1', NULL, '2'), (NULL, NULL, NULL), ('x/y', 3, '')")
        table = read_table(conn, "public", "w")
        definition = ShapeDefinition.create(("public", "w"), table)
        with raw_text_cursor(conn) as cur:
            cur.execute(snapshot_query(definition) + sql.SQL(" ORDER BY a, z"))
            keys = [k for k, _ in snapshot_items(ShapeLogEncoder(definition), cur.fetchall())]
    assert keys == ['"public"."w"/"3"/""/"x//y"', '"public"."w"/_/"2"/"1"', '"public"."w"/_/_/_']


def test_definition_against_the_real_catalog(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute('CREATE TABLE "Items" (id int PRIMARY KEY, title text)')
        assert read_table(conn, *parse_relation("Items")) is None
        with pytest.raises(ShapeDefinitionError) as exc:
            ShapeDefinition.create(parse_relation("Items"), read_table(conn, *parse_relation("Items")))
        assert exc.value.message == (
            'Table "public"."items" does not exist. '
            "If the table name contains capitals or special characters you must quote it."
        )
        table = read_table(conn, *parse_relation('"Items"'))
        with pytest.raises(ShapeDefinitionError) as exc:
            ShapeDefinition.create(("public", "Items"), table, columns=parse_columns("title"))
        assert exc.value.message == "The list of columns must include all primary key columns, missing: id"
        definition = ShapeDefinition.create(("public", "Items"), table, columns=parse_columns("TITLE,ID"))
        assert definition.columns == ("id", "title") and table is not None
        assert definition.relation_oid == table.oid


@pytest.mark.parametrize("where", [None, '"a%b" < $1', '"a%b" IS NOT NULL'])
def test_percent_in_names_with_and_without_bound_values(db_dsn: str, where: str | None) -> None:
    """psycopg reads ``%`` as a placeholder once parameters are given: names must survive both cases."""
    from sync.where import compile_where  # noqa: PLC0415

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute('CREATE TABLE "we%ird" ("a%b" int PRIMARY KEY, "c%%d" text)')
        conn.execute("""INSERT INTO "we%ird" VALUES (1, 'x'), (5, 'y')""")
        table = read_table(conn, "public", "we%ird")
        assert table is not None
        params = ["2"] if where and "$1" in where else []
        definition = ShapeDefinition.create(("public", "we%ird"), table, where=where, params=params)
        clause = compile_where(where, table, {i + 1: v for i, v in enumerate(params)}) if where else None
        where_sql, values = clause.to_sql() if clause else (None, [])
        query = snapshot_query(definition, sql.SQL(where_sql) if where_sql else None) + sql.SQL(" ORDER BY 1")
        with raw_text_cursor(conn) as cur:
            cur.execute(query, tuple(values))
            rows = cur.fetchall()
    assert rows == ([("1", "x")] if params else [("1", "x"), ("5", "y")])
