"""The snapshot items built by Postgres (``snapshot_sql``/``snapshot_blocks``) are byte-identical to the
Python encoder's items of the replicated rows (and to the COPY path's), for every type, key and WHERE."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from sync.shapes.definition import ShapeDefinition
from sync.shapes.identifiers import parse_columns, parse_relation
from sync.shapes.item_sql import (
    ESCAPED,
    IO_CAST_TYPES,
    KEY_PLAIN_TYPES,
    PLAIN_TYPES,
    Column,
    raw_values_clean,
    unchecked_allowed,
)
from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.snapshot import BEGIN_SNAPSHOT
from sync.shapes.snapshot_blocks import (
    RANGE_BYTES,
    block_query,
    page_ranges,
    parallel_blocks,
    planner_uses_index,
    read_blocks,
    table_ranges,
)
from sync.shapes.snapshot_sql import SUB_PAGES, UNCHECKED_FAILURES, TableSize, range_bounds
from sync.storage.snapshot_writer import split_items
from tests.fixtures.sessions import connect_session
from tests.shapes.helpers import definition_of, read_table
from tests.shapes.snapshot_support import (
    EXTRA,
    NASTY,
    ROWS,
    alltypes_table,
    block_items,
    copy_batches,
    scalar_int,
    sorted_jsons,
)


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with connect_session(db_dsn) as c:
        yield c


def test_items_equal_encoder_items_of_replicated_rows(conn: psycopg.Connection[Any]) -> None:
    extra = {**EXTRA, "mac": "macaddr", "lsn": "pg_lsn", "o": "oid", "m": "money", "ch2": "char(3) NOT NULL"}
    extra_rows = [
        {"ip": "'10.0.0.1'", "cidr_": "'10.0.0.0/8'", "nm": "'n'", "ch": "'x'", "tags": "'{ab,\"c d\"}'"},
        {"ip": "'::1/64'", "txt": NASTY, "ta": f"ARRAY[{NASTY}]", "pct%": "'50%'", "ch": "''"},
        {"mac": "'08:00:2b:01:02:03'", "lsn": "'16/B374D848'", "o": "7", "m": "12.5", "b": "false"},
    ]
    definition, replicated = alltypes_table(conn, extra, extra_rows, defaults={"ch2": "'a'"})
    assert len(replicated) == len(ROWS) + 3
    encoder = ShapeLogEncoder(definition)
    expected = sorted(encoder.snapshot_item(row)[1] for row in replicated)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    got = sorted(block_items(conn, definition))
    conn.execute("ROLLBACK")
    assert got == expected
    assert got == sorted_jsons([i for b in copy_batches(conn, definition) for i in b])
    assert any(b'"b":"t"' in j for j in got) and any(b'"b":"f"' in j for j in got)
    assert any(b'"ip":"10.0.0.1"' in j for j in got) and any(b'"ch2":"a  "' in j for j in got)
    assert any(b'"txt":"tab\\there\\nnl\\rcr back\\\\slash' in j for j in got)


def test_keys_quoted_names_where_params_no_pk_and_small_ranges(conn: psycopg.Connection[Any]) -> None:
    conn.execute('CREATE SCHEMA "We.ird/S"')
    conn.execute('CREATE TABLE "We.ird/S"."Ta""b%le" (z text, "a%b" int, m char(3), "{x}" inet)')
    conn.execute(
        'INSERT INTO "We.ird/S"."Ta""b%le" VALUES '
        "(E'k\\t1/2\\\\x\\n', 1, 'x', '10.1.2.3'), (NULL, NULL, NULL, NULL), ('x/y', 3, '', '10.0.0.0/8'),"
        " ('50%', 4, 'zz', NULL)"
    )
    conn.execute(
        'INSERT INTO "We.ird/S"."Ta""b%le" SELECT g::text, g, NULL, NULL FROM generate_series(10, 2000) g'
    )
    relation = parse_relation('"We.ird/S"."Ta""b%le"')
    table = read_table(conn, *relation)
    assert table is not None
    definition = ShapeDefinition.create(relation, table)
    reference = sorted_jsons([i for b in copy_batches(conn, definition) for i in b])
    assert len(reference) == 1995
    assert sorted(block_items(conn, definition)) == reference
    assert sorted(block_items(conn, definition, pages=1)) == reference  # many ranges, the last one open
    where = sql.SQL("{} > %s OR z LIKE '%%0%%'").format(sql.Identifier("a%%b"))
    got_where = sorted(block_items(conn, definition, where, (2,), pages=2))
    assert got_where == sorted_jsons([i for b in copy_batches(conn, definition, where, (2,)) for i in b])
    assert 0 < len(got_where) < 1995
    only = ShapeDefinition.create(relation, table, log_mode="changes_only")
    assert block_items(conn, only, where, (0,)) == []


def test_columns_and_tables_named_as_the_range_query_names_its_own(conn: psycopg.Connection[Any]) -> None:
    """A column ``s`` once took the place of the range's first page inside the LATERAL: of another type the
    snapshot failed ("operator does not exist: status + integer"), of an integer type it silently read the
    pages its values named, so rows were lost or doubled."""
    for name in ("t", "_shapesync_pages", "_shapesync_rows", "generate_series"):
        conn.execute(
            f'CREATE TABLE "{name}" (id int PRIMARY KEY, s int, r text, first int, "count" int,'
            " _shapesync_pages int, _shapesync_rows int, ctid_ text)"
        )
        conn.execute(
            f"INSERT INTO \"{name}\" SELECT g, g * 7, g::text, 0, 1, 2, 3, 'x' FROM generate_series(1, 900) g"
        )
        relation = parse_relation(name)
        table = read_table(conn, *relation)
        assert table is not None
        definition = ShapeDefinition.create(relation, table)
        reference = sorted_jsons([i for b in copy_batches(conn, definition) for i in b])
        assert len(reference) == 900
        assert sorted(block_items(conn, definition, pages=1)) == reference, name
        where = sql.SQL("s > %s")
        got = sorted(block_items(conn, definition, where, (3500,), pages=2))
        assert got == sorted_jsons([i for b in copy_batches(conn, definition, where, (3500,)) for i in b])
        assert len(got) == 400


@pytest.mark.parametrize("key_type", ["int8", "text", "inet", "timestamptz", "uuid"])
def test_plain_and_escaped_key_forms(conn: psycopg.Connection[Any], key_type: str) -> None:
    values = {
        "int8": "1",
        "text": "E'a\"b\\\\c/d'",
        "inet": "'10.0.0.1/8'",
        "timestamptz": "'2026-01-01 10:00+02'",
        "uuid": "gen_random_uuid()",
    }
    conn.execute(f'CREATE TABLE k (a {key_type}, b int, "q""" text, PRIMARY KEY (a, b))')
    conn.execute(f"INSERT INTO k VALUES ({values[key_type]}, 1, NULL), ({values[key_type]}, 2, 'v')")
    definition = definition_of(conn, "public", "k")
    assert sorted(block_items(conn, definition)) == sorted_jsons(
        [i for b in copy_batches(conn, definition) for i in b]
    )
    subset = definition_of(conn, "public", "k", columns=parse_columns('b,"q""",a'))
    got = sorted(block_items(conn, subset))
    assert got == sorted_jsons([i for b in copy_batches(conn, subset) for i in b]) and len(got) == 2


def test_toast_heavy_tables_get_fewer_pages_per_query(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("ALTER TABLE docs ALTER body SET STORAGE EXTERNAL")  # out of line, uncompressed
    conn.execute("INSERT INTO docs SELECT g, repeat(md5(g::text), 1000) FROM generate_series(1, 3000) g")
    definition = definition_of(conn, "public", "docs")
    found = block_query(conn, definition)
    assert found is not None
    _, ranges = found
    # ~100 MB of TOAST over ~20 heap pages: one page (~5 MB) per query, not the whole table in one
    assert len(ranges) > 10 and all(hi is None or hi - lo == 1 for lo, hi in ranges)
    assert table_ranges(TableSize(pages=20, bytes=20 * RANGE_BYTES // 4), 128) == page_ranges(20, 4)
    assert table_ranges(TableSize(pages=1000, bytes=1000 * RANGE_BYTES // 256), 128) == page_ranges(1000, 128)
    assert table_ranges(TableSize(pages=0, bytes=0), 128) == [(0, None)]


def test_page_ranges() -> None:
    assert page_ranges(0, 4) == [(0, None)]
    assert page_ranges(4, 4) == [(0, None)]
    assert page_ranges(9, 4) == [(0, 4), (4, 8), (8, None)]
    with pytest.raises(ValueError, match="pages"):
        page_ranges(3, 0)


def test_plain_types_are_builtin_and_keys_exclude_slashes() -> None:
    assert KEY_PLAIN_TYPES < PLAIN_TYPES
    assert 25 not in PLAIN_TYPES and 1043 not in PLAIN_TYPES and 1042 not in PLAIN_TYPES  # text types


def test_text_casts_of_io_cast_types_call_the_output_function(conn: psycopg.Connection[Any]) -> None:
    """``x::text`` is the output function's text only for types without a cast of their own to text (an I/O
    conversion) or binary-coercible to it: the items' ``||`` chains rely on it."""
    rows = conn.execute(
        "SELECT castsource::int, castmethod FROM pg_cast WHERE casttarget = 'text'::regtype"
    ).fetchall()
    casts = {int(r[0]): str(r[1]) for r in rows}
    assert all(casts.get(oid, "b") == "b" for oid in IO_CAST_TYPES), casts
    assert casts[16] == "f" and casts[869] == "f"  # bool and inet: not I/O conversions, not in the set
    assert IO_CAST_TYPES - {1043} < PLAIN_TYPES


def test_parallel_lanes_share_the_snapshot_and_keep_range_order(
    conn: psycopg.Connection[Any], db_dsn: str
) -> None:
    conn.execute("CREATE TABLE p (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO p SELECT g, md5(g::text) FROM generate_series(1, 3000) g")
    definition = definition_of(conn, "public", "p")
    conn.execute(BEGIN_SNAPSHOT)
    exported = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert exported is not None
    with connect_session(db_dsn) as other, psycopg.connect(db_dsn, autocommit=True) as writer:
        writer.execute(
            "INSERT INTO p SELECT g, 'later' FROM generate_series(3001, 3100) g"
        )  # not in the snapshot
        other.execute(BEGIN_SNAPSHOT)
        other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported[0])))
        found = block_query(conn, definition, pages=2)
        assert found is not None
        query, ranges = found
        assert len(ranges) > 4
        sequential = list(read_blocks(conn, query, ranges, depth=1))
        prepared = "SELECT count(*) FROM pg_prepared_statements"
        assert conn.execute(prepared).fetchone() == (0,)  # one range at a time: nothing prepared
        assert list(read_blocks(conn, query, ranges, depth=3)) == sequential  # pipelined: same blocks
        assert conn.execute(prepared).fetchone() == (1,)  # every range ran one statement, planned once
        parallel = list(parallel_blocks([conn, other], query, ranges, window=3))
        assert parallel == sequential
        assert other.execute(prepared).fetchone() == (1,)
        # a window narrower than the pipeline: a lane hands over what it sent before it waits for the window
        narrow = list(parallel_blocks([conn, other], query, ranges, window=1, depth=3, timeout=10))
        assert narrow == sequential
        assert sum(count for count, _ in parallel) == 3000
        other.close()  # a failing lane fails the whole read
        with pytest.raises(psycopg.OperationalError):
            list(parallel_blocks([conn, other], query, ranges))
    conn.execute("ROLLBACK")


def test_a_selective_shape_reads_through_the_index(conn: psycopg.Connection[Any], db_dsn: str) -> None:
    """A shape with a WHERE clause is one query the planner may answer from an index; page ranges would read
    every page of the table for a handful of rows (TID range scans never use an index)."""
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, owner int NOT NULL, doc text)")
    conn.execute("CREATE INDEX big_owner ON big (owner)")
    conn.execute("INSERT INTO big SELECT g, g % 5000, repeat('x', 50) FROM generate_series(1, 50000) g")
    conn.execute("ANALYZE big")
    relation = parse_relation("big")
    definition = definition_of(conn, *relation)
    where = sql.SQL("owner = %s")

    def index_scans() -> int:
        with psycopg.connect(db_dsn, autocommit=True) as stats:
            row = stats.execute("SELECT idx_scan FROM pg_stat_user_tables WHERE relname = 'big'").fetchone()
        assert row is not None
        return int(row[0] or 0)

    before = index_scans()
    items = block_items(conn, definition, where, (42,), pages=1)
    assert len(items) == 10
    conn.execute("SELECT pg_stat_force_next_flush()")  # this backend's counters, published at once
    conn.execute("SELECT 1")  # (the flush happens when the backend next goes idle)
    deadline = time.monotonic() + 10
    while index_scans() == before and time.monotonic() < deadline:  # no event: stats are published async
        time.sleep(0.05)
    assert index_scans() > before
    assert sorted(items) == sorted_jsons([i for b in copy_batches(conn, definition, where, (42,)) for i in b])
    # and a WHERE that keeps most rows is read by page ranges (in parallel lanes), as the planner would scan
    for clause, param, indexed in [("owner = %s", 42, True), ("owner >= %s", 0, False)]:
        found = block_query(conn, definition, sql.SQL(clause), (param,))
        assert found is not None
        assert planner_uses_index(conn, found[0]) is indexed


# Values JSON must escape, one per row: each row that holds one makes its unchecked range fail its check.
DIRTY = [
    "'q\"uote'",
    "E'back\\\\slash'",
    "E'tab\\there'",
    "E'nl\\n'",
    "E'sep\\x1ehere'",
    "E'\\x01'",
    "E'\\x1f'",
]


def test_unchecked_text_values_are_checked_per_range(conn: psycopg.Connection[Any], db_dsn: str) -> None:
    """Text and varchar values go out unescaped; a range holding one that JSON escapes is read again with
    to_json, and after UNCHECKED_FAILURES such ranges the rest of the table is read checked."""
    conn.execute('CREATE TABLE u (id int PRIMARY KEY, t text NOT NULL, v varchar(20), n int, "q""" text)')
    conn.execute(
        "INSERT INTO u SELECT g, md5(g::text) || 'é☃', CASE WHEN g % 3 = 0 THEN NULL ELSE 'v/' || g END,"
        " NULLIF(g % 4, 0), CASE WHEN g % 5 = 0 THEN NULL ELSE '' END FROM generate_series(1, 3000) g"
    )
    definition = definition_of(conn, "public", "u")

    def check(expect_failures: int, unchecked_at_end: bool) -> None:
        conn.execute(BEGIN_SNAPSHOT)
        found = block_query(conn, definition, pages=2)
        assert found is not None
        query, ranges = found
        assert query.statement()[1] is True  # unchecked at first: the path under test is taken
        blocks = list(read_blocks(conn, query, ranges))
        items = [i for _, block in blocks for i in split_items(block)]
        assert query.failures == expect_failures
        assert query.statement()[1] is unchecked_at_end
        assert sorted(items) == sorted_jsons([i for b in copy_batches(conn, definition) for i in b])
        conn.execute("ROLLBACK")

    check(0, True)
    # two dirty values (nullable varchar and NOT NULL text) in rows 5 and 6: one range fails, then passes
    conn.execute(f"UPDATE u SET t = {DIRTY[0]} WHERE id = 5")
    conn.execute(f"UPDATE u SET v = {DIRTY[4]} WHERE id = 6")
    check(1, True)
    # every kind of dirty value, in rows far apart (distinct ranges): checked from the third failure on
    for k, value in enumerate(DIRTY):
        conn.execute(f"UPDATE u SET t = {value} WHERE id = {400 * (k + 1)}")
    check(UNCHECKED_FAILURES, False)
    # the parallel lanes do the same, the failures shared
    conn.execute(BEGIN_SNAPSHOT)
    exported = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert exported is not None
    with connect_session(db_dsn) as other:
        other.execute(BEGIN_SNAPSHOT)
        other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported[0])))
        found = block_query(conn, definition, pages=2)
        assert found is not None
        items = [i for _, b in parallel_blocks([conn, other], found[0], found[1]) for i in split_items(b)]
        assert sorted(items) == sorted_jsons([i for b in copy_batches(conn, definition) for i in b])
    conn.execute("ROLLBACK")


def test_every_byte_json_escapes_sends_an_unchecked_range_to_the_checked_query(
    conn: psycopg.Connection[Any],
) -> None:
    """Each control character (1-31; text holds no NUL), the quote and the backslash, alone in one value of
    a text or of a nullable varchar column, fails the unchecked range's check; the range read again checked
    gives the encoder's items.  A value without any passes unchecked."""
    conn.execute("CREATE TABLE e (id int PRIMARY KEY, t text NOT NULL, v varchar(10))")
    conn.execute(
        "INSERT INTO e SELECT g, 'ok é☃ ' || g, CASE WHEN g % 2 = 0 THEN 'v' || g END FROM generate_series(1, 20) g"
    )
    definition = definition_of(conn, "public", "e")

    def read(expect_failures: int) -> None:
        conn.execute(BEGIN_SNAPSHOT)
        found = block_query(conn, definition, pages=1)
        assert found is not None
        query, ranges = found
        assert query.statement()[1] is True
        items = [i for _, block in read_blocks(conn, query, ranges) for i in split_items(block)]
        assert query.failures == expect_failures
        assert sorted(items) == sorted_jsons([i for b in copy_batches(conn, definition) for i in b])
        conn.execute("ROLLBACK")

    read(0)
    for code in [*range(1, 32), ord('"'), ord("\\")]:
        for column, row in (("t", 3), ("v", 4)):
            conn.execute(f"UPDATE e SET {column} = 'a' || chr(%s) || 'b' WHERE id = %s", (code, row))
            read(1)
            conn.execute(f"UPDATE e SET {column} = 'clean' WHERE id = %s", (row,))
    read(0)


def test_unchecked_only_for_plain_and_text_columns_with_plain_keys() -> None:
    def cols(*types: int) -> list[Column]:
        return [Column(f"c{i}", t, True) for i, t in enumerate(types)]

    def shape(keys: tuple[str, ...], n: int) -> ShapeDefinition:
        return ShapeDefinition("public", "t", 1, tuple(f"c{i}" for i in range(n)), keys, True)

    assert unchecked_allowed(shape(("c0",), 3), cols(23, 25, 1043))
    assert not unchecked_allowed(shape(("c1",), 2), cols(23, 25))  # a text key: '/' and escapes in the key
    assert not unchecked_allowed(shape(("c0",), 2), cols(23, 1042))  # bpchar: through to_json
    assert not unchecked_allowed(shape(("c0",), 2), cols(23, 3802))  # jsonb
    assert not unchecked_allowed(shape(("c0",), 2), cols(869, 25))  # an inet key may hold '/'


def test_a_range_is_aggregated_by_sub_ranges_in_page_order(conn: psycopg.Connection[Any]) -> None:
    """A range query aggregates SUB_PAGES heap pages at a time: the items of a range of several sub-ranges
    come in page order, a value to escape in any sub-range has the range read again checked, and a
    partitioned table (one open range) is read whole."""
    conn.execute("CREATE TABLE w (id int PRIMARY KEY, t text NOT NULL, n int)")
    fill = "INSERT INTO w SELECT g, CASE WHEN g = %s THEN E'quo\"te' ELSE md5(g::text) END, NULLIF(g %% 3, 0)"
    conn.execute(fill + " FROM generate_series(1, 200) g", (0,))
    per_page = scalar_int(conn, "SELECT count(*) FROM w WHERE ctid < '(1,0)'")
    conn.execute("TRUNCATE w")
    # the quote in the first row of page SUB_PAGES + 1: the first range's second sub-range
    dirty = per_page * (SUB_PAGES + 1) + 1
    conn.execute(fill + " FROM generate_series(1, %s) g", (dirty, per_page * 12 * SUB_PAGES))
    assert (
        scalar_int(conn, "SELECT (ctid::text::point)[0]::int FROM w WHERE id = %s", (dirty,)) == SUB_PAGES + 1
    )
    definition = definition_of(conn, "public", "w")
    reference = sorted_jsons([i for b in copy_batches(conn, definition) for i in b])
    conn.execute(BEGIN_SNAPSHOT)
    found = block_query(conn, definition, pages=3 * SUB_PAGES)
    assert found is not None
    query, ranges = found
    assert len(ranges) >= 3 and ranges[0] == (0, 3 * SUB_PAGES)
    statement, unchecked = query.statement()
    rows = conn.execute(statement, range_bounds(*ranges[0])).fetchall()
    assert unchecked and [int(r[0]) for r in rows] == [0, SUB_PAGES, 2 * SUB_PAGES]
    sizes = [len(conn.execute(statement, range_bounds(lo, hi)).fetchall()) for lo, hi in ranges[1:]]
    assert sizes == [3] * (len(ranges) - 2) + [1]  # the last range is open-ended: one sub-range
    items = [i for _, block in read_blocks(conn, query, ranges) for i in split_items(block)]
    assert query.failures == 1  # the first range held the quote (in its second sub-range)
    assert [orjson.loads(i)["value"]["id"] for i in items] == [str(g) for g in range(1, len(items) + 1)]
    assert len(items) == per_page * 12 * SUB_PAGES
    assert sorted(items) == reference
    conn.execute("ROLLBACK")
    conn.execute("CREATE TABLE pt (id int PRIMARY KEY, t text) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (100)")
    conn.execute("CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (100) TO (200)")
    conn.execute("INSERT INTO pt SELECT g, 'v' || g FROM generate_series(0, 199) g")
    definition = definition_of(conn, "public", "pt")
    conn.execute(BEGIN_SNAPSHOT)
    assert sorted(block_items(conn, definition)) == sorted_jsons(
        [i for b in copy_batches(conn, definition) for i in b]
    )
    conn.execute("ROLLBACK")


def test_raw_values_clean_refuses_exactly_the_bytes_json_escapes() -> None:
    for byte in range(256):
        value = b"before " + bytes([byte]) + b" after"
        assert raw_values_clean([b"clean", None, memoryview(value)]) is (bytes([byte]) not in ESCAPED), byte
    assert raw_values_clean([]) and raw_values_clean([None, b""])
