"""The COPY-built snapshot items are byte-identical to the Python encoder's items of the replicated rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from sync.shapes.definition import ShapeDefinition
from sync.shapes.identifiers import parse_columns, parse_relation
from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.snapshot_copy import CopyItemBuilder, unescape_copy_text
from tests.fixtures.sessions import session_settings_sql
from tests.shapes.helpers import Col, Table, read_table
from tests.shapes.snapshot_support import EXTRA, NASTY, ROWS, alltypes_table, copy_batches


@pytest.fixture
def conn(db_dsn: str) -> Any:
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute(session_settings_sql())
        yield c


def test_copy_items_equal_encoder_items_of_replicated_rows(conn: psycopg.Connection[Any]) -> None:
    extra_rows = [
        {"ip": "'10.0.0.1'", "cidr_": "'10.0.0.0/8'", "nm": "'n'", "ch": "'x'", "tags": "'{ab,\"c d\"}'"},
        {"ip": "'::1/64'", "txt": NASTY, "ta": f"ARRAY[{NASTY}]", "pct%": "'50%'", "ch": "''"},
    ]
    definition, replicated = alltypes_table(conn, EXTRA, extra_rows)
    assert len(replicated) == len(ROWS) + 2
    encoder = ShapeLogEncoder(definition)
    expected = sorted(encoder.snapshot_item(row) for row in replicated)
    batches = copy_batches(conn, definition, batch_rows=3)
    assert [len(b) for b in batches] == [3, 3, 1]
    got = sorted(item for batch in batches for item in batch)
    assert got == expected
    by_key = dict(got)
    assert (
        b'"b":"t"' in by_key['"public"."alltypes"/"1"']
        and b'"ip":"10.0.0.1"' in by_key['"public"."alltypes"/"6"']
    )
    assert b'"txt":"tab\\there\\nnl\\rcr back\\\\slash' in by_key['"public"."alltypes"/"7"']


def test_keys_with_escapes_quoted_names_where_params_and_no_pk(conn: psycopg.Connection[Any]) -> None:
    conn.execute('CREATE SCHEMA "We.ird/S"')
    conn.execute('CREATE TABLE "We.ird/S"."Ta""b%le" (z text, "a%b" int, m char(3))')
    conn.execute(
        'INSERT INTO "We.ird/S"."Ta""b%le" VALUES '
        "(E'k\\t1/2\\\\x\\n', 1, 'x'), (NULL, NULL, NULL), ('x/y', 3, ''), ('50%', 4, 'zz')"
    )
    relation = parse_relation('"We.ird/S"."Ta""b%le"')
    table = read_table(conn, *relation)
    assert table is not None
    definition = ShapeDefinition.create(relation, table)
    encoder = ShapeLogEncoder(definition)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT z, {}::text, m::text FROM {}.{}").format(
                sql.Identifier("a%b"), sql.Identifier("We.ird/S"), sql.Identifier('Ta"b%le')
            ),
            prepare=False,
        )
        rows = cur.fetchall()
    # char(3)::text drops the padding: the expected items use the padded output, as replication does
    rows = [(z, a, None if m is None else m.ljust(3)) for z, a, m in rows]
    expected = sorted(encoder.snapshot_item(r) for r in rows)
    got = sorted(item for batch in copy_batches(conn, definition) for item in batch)
    assert got == expected
    assert '"We..ird//S"."Ta"b%le"/"1"/"x  "/"k\t1//2\\x\n"' in dict(got)  # keyed by a, m, z
    assert '"We..ird//S"."Ta"b%le"/_/_/_' in dict(got)
    where = sql.SQL("{} > %s OR z LIKE '%%0%%'").format(
        sql.Identifier("a%%b")
    )  # escaped as the WHERE package does
    got_where = [item for batch in copy_batches(conn, definition, where, (2,)) for item in batch]
    assert sorted(got_where) == [item for item in got if "x//y" in item[0] or "50%" in item[0]]
    only = ShapeDefinition.create(
        relation, table, columns=parse_columns('z,"a%b",m'), log_mode="changes_only"
    )
    assert copy_batches(conn, only, where, (0,)) == []
    assert copy_batches(conn, only) == []


def test_unescape_copy_text() -> None:
    assert unescape_copy_text(b"plain") == b"plain"
    assert unescape_copy_text(b"a\\tb\\\\c\\nd\\r\\b\\f\\v") == b"a\tb\\c\nd\r\b\f\v"
    assert unescape_copy_text(b"\\001\\x41\\q") == b"\x01Aq"


def test_a_dropped_table_fails_the_copy(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE gone (id int PRIMARY KEY)")
    definition = ShapeDefinition.create(("public", "gone"), read_table(conn, "public", "gone"))
    conn.execute("DROP TABLE gone")
    with pytest.raises(psycopg.errors.UndefinedTable, match="gone"):
        copy_batches(conn, definition)


def _copy_line(row: Sequence[str | None], encoding: str = "utf-8") -> bytes:
    """A row as COPY's text format writes it (what Postgres does in CopyAttributeOutText)."""
    out = []
    for v in row:
        if v is None:
            out.append(b"\\N")
            continue
        b = v.encode(encoding).replace(b"\\", b"\\\\")
        for raw, esc in (
            (b"\n", b"\\n"),
            (b"\t", b"\\t"),
            (b"\r", b"\\r"),
            (b"\b", b"\\b"),
            (b"\f", b"\\f"),
            (b"\v", b"\\v"),
        ):
            b = b.replace(raw, esc)
        out.append(b)
    return b"\t".join(out) + b"\n"


_TEXT = st.one_of(st.none(), st.text(alphabet=st.sampled_from('aN/\\"\t\n\r\x01\x1f\x7f é😀%_'), max_size=6))


@pytest.mark.parametrize("pk", [("a",), ("c", "a"), ()])
@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(_TEXT, _TEXT, _TEXT), min_size=1, max_size=5))
def test_fast_and_slow_paths_agree_with_the_encoder(
    pk: tuple[str, ...], rows: list[tuple[str | None, ...]]
) -> None:
    table = Table(
        1, "s/c.h", 'ta"b%', (Col("a"), Col("b%"), Col('c"')), pk=tuple(c.replace("c", 'c"') for c in pk)
    )
    definition = ShapeDefinition.create(("s/c.h", 'ta"b%'), table)
    encoder = ShapeLogEncoder(definition)
    builder = CopyItemBuilder(definition, encoder)
    for row in rows:
        if pk and row[definition.columns.index("a")] is None:
            continue  # a primary key is never NULL
        assert builder(_copy_line(row)) == encoder.snapshot_item(row)


def test_fast_path_is_taken_for_plain_lines_and_nulls() -> None:
    table = Table(1, "public", "t", (Col("id"), Col("x")), pk=("id",))
    definition = ShapeDefinition.create(("public", "t"), table)
    builder = CopyItemBuilder(definition, ShapeLogEncoder(definition))
    builder._encoder = None  # type: ignore[assignment]  # the slow path would need it
    assert builder(b"1/2\t\\N\n") == (
        '"public"."t"/"1//2"',
        b'{"key":"\\"public\\".\\"t\\"/\\"1//2\\"","value":{"id":"1/2","x":null},"headers":{"operation":"insert","relation":["public","t"]}}',
    )
    with pytest.raises(AttributeError):
        builder(b'1\t"q"\n')


def test_a_non_utf8_connection_decodes_with_its_encoding() -> None:
    table = Table(1, "public", "t", (Col("id"),), pk=("id",))
    definition = ShapeDefinition.create(("public", "t"), table)
    encoder = ShapeLogEncoder(definition)
    builder = CopyItemBuilder(definition, encoder, "iso8859-1")
    assert builder(_copy_line(["é"], "iso8859-1")) == encoder.snapshot_item(["é"])
