"""Snapshot rows are byte-identical to what logical replication (pgoutput) delivers, type by type."""

from __future__ import annotations

import struct
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
    display_settings_sql,
    raw_text_cursor,
    snapshot_items,
    snapshot_query,
)
from tests.shapes.helpers import read_table

COLUMNS = {
    "i2": "int2",
    "i4": "int4",
    "i8": "int8",
    "f4": "float4",
    "f8": "float8",
    "num": "numeric",
    "num_s": "numeric(10,3)",
    "txt": "text",
    "vc": "varchar(8)",
    "bp": "char(5)",
    "b": "bool",
    "u": "uuid",
    "d": "date",
    "t": "time",
    "ttz": "timetz",
    "ts": "timestamp",
    "tstz": "timestamptz",
    "iv": "interval",
    "js": "json",
    "jsb": "jsonb",
    "by": "bytea",
    "ia": "int4[]",
    "ia2": "int4[][]",
    "ta": "text[]",
    "en": "mood",
    "ena": "mood[]",
    "dom": "posint",
    "comp": "pair",
    "compa": "pair[]",
}

ROWS: list[dict[str, str]] = [
    {
        "i2": "-32768",
        "i4": "2147483647",
        "i8": "-9223372036854775808",
        "f4": "'NaN'",
        "f8": "'Infinity'",
        "num": "'NaN'",
        "num_s": "1.5",
        "txt": "E'quote \" back\\\\slash \\n newline é 😀'",
        "vc": "'abc'",
        "bp": "'ab'",
        "b": "true",
        "u": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        "d": "'infinity'",
        "t": "'23:59:59.999999'",
        "ttz": "'12:00:00+05:30'",
        "ts": "'-infinity'",
        "tstz": "'2024-02-29 12:34:56.789+02'",
        "iv": "'1 year 2 months 3 days 04:05:06.7'",
        "js": """'{"b": 1,   "a" : [1, 2]}'""",
        "jsb": """'{"b": 1,   "a" : [1, 2], "a": 3}'""",
        "by": "'\\x0001fffe'::bytea",
        "ia": "'{1,NULL,3}'",
        "ia2": "'{{1,2},{3,NULL}}'",
        "ta": """ARRAY['a b', 'q"x', NULL, 'NULL', '', 'c,d', 'back\\slash']""",
        "en": "'happy'",
        "ena": "'{sad,happy}'",
        "dom": "42",
        "comp": "ROW(1.1, 'x y')",
        "compa": "ARRAY[ROW(1.1, 'a'), ROW(NULL, NULL)]::pair[]",
    },
    {
        "i2": "0",
        "i4": "-1",
        "i8": "9223372036854775807",
        "f4": "'-0'",
        "f8": "'-0'",
        "num": "'-0.000100'",
        "num_s": "-12.3456",
        "txt": "''",
        "vc": "'12345678'",
        "bp": "'abcde'",
        "b": "false",
        "u": "'00000000-0000-0000-0000-000000000000'",
        "d": "'0044-03-15 BC'",
        "t": "'00:00'",
        "ttz": "'00:00:00-12'",
        "ts": "'2000-01-01 00:00:00.000001'",
        "tstz": "'infinity'",
        "iv": "'-1 day -00:00:01'",
        "js": "'null'",
        "jsb": "'\"s\"'",
        "by": "''::bytea",
        "ia": "'{}'",
        "ia2": "'{{1}}'",
        "ta": "'{}'",
        "en": "'sad'",
        "ena": "'{}'",
        "dom": "1",
        "comp": "ROW(NULL, '')",
        "compa": "'{}'",
    },
    {"i2": "1", "f4": "1.1", "f8": "0.1", "num": "1e20", "tstz": "'1999-12-31 23:59:59.5-08'"},
    {"i2": "2", "f4": "'-Infinity'", "f8": "1e-300", "num": "123456789012345678901234567890.123"},
    {"i2": "3", "f4": "3.4028235e38", "f8": "1.7976931348623157e308", "iv": "'PT0S'", "num": "0"},
]


def _parse_inserts(messages: list[bytes]) -> list[tuple[str | None, ...]]:
    """The tuples of pgoutput Insert messages (a tiny decoder for this test only)."""
    out: list[tuple[str | None, ...]] = []
    for msg in messages:
        if msg[:1] != b"I":
            continue
        assert msg[5:6] == b"N"
        (ncols,) = struct.unpack_from("!h", msg, 6)
        pos = 8
        values: list[str | None] = []
        for _ in range(ncols):
            kind = msg[pos : pos + 1]
            pos += 1
            if kind == b"n":
                values.append(None)
            elif kind == b"t":
                (length,) = struct.unpack_from("!i", msg, pos)
                pos += 4
                values.append(msg[pos : pos + length].decode())
                pos += length
            else:
                raise AssertionError(f"unexpected tuple kind {kind!r}")
        out.append(tuple(values))
    return out


@pytest.fixture
def conn(db_dsn: str) -> Any:
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute(display_settings_sql())
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
    replicated = _parse_inserts([bytes(r[0]) for r in changes])
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
