"""Snapshot rows are byte-identical to what logical replication (pgoutput) delivers, type by type."""

from __future__ import annotations

from typing import Any

import orjson
import psycopg
import pytest

from sync.replication.changes import Column, Insert, Relation, TransactionFragment
from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.snapshot import (
    DISPLAY_SETTINGS,
    display_settings_options,
    raw_text_cursor,
    snapshot_items,
    snapshot_query,
)
from tests.fixtures.sessions import session_settings_sql
from tests.shapes.helpers import read_table
from tests.shapes.snapshot_support import COLUMNS, ROWS, parse_inserts


@pytest.fixture
def conn(db_dsn: str) -> Any:
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute(session_settings_sql())
        yield c


def test_display_settings_as_connection_options(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, options=display_settings_options()) as c:
        for name, value in DISPLAY_SETTINGS.items():
            row = c.execute(psycopg.sql.SQL("SHOW {}").format(psycopg.sql.Identifier(name))).fetchone()
            assert row is not None and row[0] == value


def test_snapshot_text_equals_pgoutput_text(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    conn.execute("CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)")
    conn.execute("CREATE TYPE pair AS (x float8, y text)")
    cols = ", ".join(f"{name} {typ}" for name, typ in COLUMNS.items())
    conn.execute(f"CREATE TABLE alltypes (id serial PRIMARY KEY, {cols})")
    conn.execute("ALTER TABLE alltypes REPLICA IDENTITY FULL")
    conn.execute("CREATE PUBLICATION pub FOR TABLE alltypes")
    conn.execute("SELECT pg_create_logical_replication_slot('identity_slot', 'pgoutput')")
    for values in ROWS:
        names = [n for n in values if n in COLUMNS]
        conn.execute(
            f"INSERT INTO alltypes ({', '.join(names)}) VALUES ({', '.join(values[n] for n in names)})"
        )
    table = read_table(conn, "public", "alltypes")
    assert table is not None
    definition = ShapeDefinition.create(("public", "alltypes"), table)
    with raw_text_cursor(conn) as cur:
        cur.execute(snapshot_query(definition) + psycopg.sql.SQL(" ORDER BY id"))
        snapshot_rows = cur.fetchall()
    changes = conn.execute(
        "SELECT data FROM pg_logical_slot_get_binary_changes('identity_slot', NULL, NULL,"
        " 'proto_version', '1', 'publication_names', 'pub')"
    ).fetchall()
    replicated = parse_inserts([bytes(r[0]) for r in changes])
    assert len(replicated) == len(ROWS)
    for snap, repl in zip(snapshot_rows, replicated, strict=True):
        for name, s_val, r_val in zip(definition.columns, snap, repl, strict=True):
            assert s_val == r_val, (name, s_val, r_val)
    # the values are the Postgres text output, not Python reprs
    first = dict(zip(definition.columns, snapshot_rows[0], strict=True))
    assert first["b"] == "t" and first["bp"] == "ab   " and first["by"] == "\\x0001fffe"
    assert first["f4"] == "NaN" and first["f8"] == "Infinity" and first["ia"] == "{1,NULL,3}"
    assert first["js"] == '{"b": 1,   "a" : [1, 2]}' and first["jsb"] == '{"a": 3, "b": 1}'
    assert first["iv"] == "P1Y2M3DT4H5M6.7S" and first["tstz"] == "2024-02-29 10:34:56.789+00"
    assert first["comp"] == '(1.1,"x y")' and first["ena"] == "{sad,happy}"
    second = dict(zip(definition.columns, snapshot_rows[1], strict=True))
    assert second["f8"] == "-0" and second["d"] == "0044-03-15 BC" and second["b"] == "f"
    # and so are the log items built from either side
    relation = Relation(
        table.oid,
        "public",
        "alltypes",
        "f",
        tuple(Column(c, 0, -1, True) for c in definition.columns),
    )
    encoder = ShapeLogEncoder(definition)
    fragment = TransactionFragment(
        1, 100, tuple(Insert(relation, r, 2 * i) for i, r in enumerate(replicated)), True, True, 108
    )
    log_items = encoder.encode_fragment(fragment)
    snap_items = list(snapshot_items(encoder, snapshot_rows))
    for item, (key, js) in zip(log_items, snap_items, strict=True):
        assert item.key == key
        assert orjson.dumps(orjson.loads(item.json)["value"]) == orjson.dumps(orjson.loads(js)["value"])
