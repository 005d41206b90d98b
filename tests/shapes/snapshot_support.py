"""The reference data and helpers the snapshot tests share (test_snapshot_identity, test_snapshot_copy,
test_snapshot_sql, test_subset_runner): the ``alltypes`` table of every column type (COLUMNS, ROWS, EXTRA,
NASTY and ``alltypes_table``, which also returns the rows as logical replication sent them, decoded by
``parse_inserts``), the readers of a snapshot's items by COPY (``copy_batches``) and by Postgres-built
blocks (``block_items``), and ``round_trips`` (what a call costs in round trips to Postgres).  They live here, not in a test module, because a test module must not import
from another one.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.snapshot_blocks import snapshot_blocks
from sync.shapes.snapshot_copy import CopyItemBuilder, copy_items, snapshot_copy_statement
from sync.storage.snapshot_writer import split_items
from tests.shapes.helpers import read_table

T = TypeVar("T")

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


def parse_inserts(messages: list[bytes]) -> list[tuple[str | None, ...]]:
    """The tuples of pgoutput Insert messages (a tiny decoder for these tests only)."""
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


EXTRA = {"ip": "inet", "cidr_": "cidr", "nm": "name", "ch": '"char"', "tags": "varchar(3)[]", "pct%": "text"}
NASTY = "E'tab\\there\\nnl\\rcr back\\\\slash \\\"q\\\" /sl//ash \\x01\\x1f\\x7f \\u2028 é'"


def copy_batches(
    conn: psycopg.Connection[Any],
    definition: ShapeDefinition,
    where: sql.Composable | None = None,
    params: tuple[Any, ...] = (),
    batch_rows: int = 1000,
) -> list[list[tuple[str, bytes]]]:
    builder = CopyItemBuilder(definition, ShapeLogEncoder(definition), conn.info.encoding)
    with conn.cursor() as cur, cur.copy(snapshot_copy_statement(conn, definition, where, params)) as copy:
        return list(copy_items(copy, builder, batch_rows))


def _replicated(conn: psycopg.Connection[Any]) -> list[tuple[str | None, ...]]:
    changes = conn.execute(
        "SELECT data FROM pg_logical_slot_get_binary_changes('copy_slot', NULL, NULL,"
        " 'proto_version', '1', 'publication_names', 'pub')"
    ).fetchall()
    return parse_inserts([bytes(r[0]) for r in changes])


def alltypes_table(
    conn: psycopg.Connection[Any],
    extra_columns: dict[str, str],
    extra_rows: list[dict[str, str]],
    defaults: dict[str, str] | None = None,
) -> tuple[ShapeDefinition, list[Any]]:
    """Table ``alltypes`` (COLUMNS + ``extra_columns``, published, a slot before any row) with ROWS +
    ``extra_rows`` (each with ``defaults`` filled in); its definition and the rows as replication sent them."""
    conn.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    conn.execute("CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)")
    conn.execute("CREATE TYPE pair AS (x float8, y text)")
    columns = {**COLUMNS, **extra_columns}
    cols = ", ".join(f'"{name}" {typ}' for name, typ in columns.items())
    conn.execute(f"CREATE TABLE alltypes (id serial PRIMARY KEY, {cols})")
    conn.execute("ALTER TABLE alltypes REPLICA IDENTITY FULL")
    conn.execute("CREATE PUBLICATION pub FOR TABLE alltypes")
    conn.execute("SELECT pg_create_logical_replication_slot('copy_slot', 'pgoutput')")
    for row in [*ROWS, *extra_rows]:
        values = {**(defaults or {}), **row}
        names = [n for n in values if n in columns]
        conn.execute(
            f"INSERT INTO alltypes ({', '.join(f'{n!r}'.replace(chr(39), chr(34)) for n in names)}) "
            f"VALUES ({', '.join(values[n] for n in names)})"
        )
    table = read_table(conn, "public", "alltypes")
    assert table is not None
    return ShapeDefinition.create(("public", "alltypes"), table), _replicated(conn)


def block_items(
    conn: psycopg.Connection[Any],
    definition: ShapeDefinition,
    where: sql.Composable | None = None,
    params: tuple[Any, ...] = (),
    pages: int = 128,
) -> list[bytes]:
    out: list[bytes] = []
    for count, block in snapshot_blocks(conn, definition, where, params, pages=pages):
        items = split_items(block)
        assert len(items) == count
        out.extend(items)
    return out


def scalar_int(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def sorted_jsons(items: list[tuple[str, bytes]]) -> list[bytes]:
    return sorted(j for _, j in items)


def round_trips(conn: psycopg.Connection[Any], call: Callable[[], T]) -> tuple[T, int]:
    """``call()``'s answer and the round trips to Postgres it took on ``conn`` (libpq's trace of the
    connection: one ReadyForQuery per round trip)."""
    with tempfile.TemporaryFile() as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            answer = call()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return answer, trace.read().count(b"ReadyForQuery")
