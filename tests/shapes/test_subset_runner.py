"""The subset runner against a real Postgres: items byte-identical to the encoder's, metadata from the
statement's own snapshot, prepared statements bounded per connection, failures never reuse a connection."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import pq

from sync.shapes import subset_runner
from sync.shapes.definition import ShapeDefinition
from sync.shapes.item_sql import raw_values_clean
from sync.shapes.log_items import ShapeLogEncoder
from sync.shapes.snapshot import parse_lsn
from sync.shapes.subset import OrderItem, SubsetQuery, build_subset_query
from sync.shapes.subset_exec import (
    Statements,
    SubsetConnection,
    execute_early,
    numbered_query,
    prepare,
    settle,
)
from sync.shapes.subset_items import RAW_AT, item_statement
from sync.shapes.subset_runner import SubsetQueryFailed, SubsetRunner, metadata_json
from sync.shapes.xid import PgSnapshot
from sync.where import compile_where
from tests.fixtures.sessions import session_settings_sql
from tests.shapes.helpers import read_table
from tests.shapes.snapshot_support import EXTRA, NASTY, ROWS, alltypes_table
from tests.shapes.subset_support import expected_body, whole_table_shape


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute(session_settings_sql())
        yield c


@pytest.fixture
def runner(db_dsn: str) -> Iterator[SubsetRunner]:
    r = SubsetRunner(db_dsn, size=1, statement_timeout=0.3)
    yield r
    r.close()


def test_items_equal_the_encoders_items_of_replicated_rows(
    conn: psycopg.Connection[Any], runner: SubsetRunner
) -> None:
    extra_rows = [
        {"ip": "'10.0.0.1'", "cidr_": "'10.0.0.0/8'", "nm": "'n'", "ch": "'x'", "tags": "'{ab,\"c d\"}'"},
        {"ip": "'::1/64'", "txt": NASTY, "ta": f"ARRAY[{NASTY}]", "pct%": "'50%'", "ch": "''"},
    ]
    definition, replicated = alltypes_table(conn, EXTRA, extra_rows)
    encoder = ShapeLogEncoder(definition)
    expected = [encoder.snapshot_item(row)[1] for row in replicated]  # inserted in id order
    query, params = build_subset_query(definition, None, SubsetQuery(order_by=(OrderItem("id"),)))
    result = runner.run(query, params, encoder.definition)
    assert result.count == len(ROWS) + 2
    assert result.body() == expected_body(result.metadata, expected)
    # again on the same connection (its prepared statement), and a page of it
    query, params = build_subset_query(
        definition, None, SubsetQuery(order_by=(OrderItem("id", descending=True),), limit=2, offset=1)
    )
    page = runner.run(query, params, encoder.definition)
    assert page.body() == expected_body(page.metadata, expected[::-1][1:3])
    assert page.metadata["snapshot_mark"] != result.metadata["snapshot_mark"]


def test_keys_with_nulls_and_slashes_without_primary_key(
    conn: psycopg.Connection[Any], runner: SubsetRunner
) -> None:
    conn.execute('CREATE TABLE "we/ird" (z text, "a%b" int)')
    conn.execute("""INSERT INTO "we/ird" VALUES ('x/y', 1), (NULL, 2), (E'q"\\\\', NULL)""")
    table, encoder = whole_table_shape(conn, "we/ird")
    definition = encoder.definition
    rows = [("x/y", "1"), (None, "2"), ('q"\\', None)]
    where = compile_where('"a%b" > $1 OR "a%b" IS NULL', table, {1: "0"})
    query, params = build_subset_query(definition, None, SubsetQuery(where, (OrderItem("a%b"),)))
    result = runner.run(query, params, encoder.definition)
    assert result.body() == expected_body(result.metadata, [encoder.snapshot_item(r)[1] for r in rows])
    assert b'"key":"\\"public\\".\\"we//ird\\"/\\"2\\"/_"' in result.body()  # NULL key part


def test_a_statement_built_for_other_columns_is_built_again(
    conn: psycopg.Connection[Any], runner: SubsetRunner
) -> None:
    # v is int4 NOT NULL, t text NOT NULL: quoted without escaping / to_json as is, neither has a NULL case
    conn.execute("CREATE TABLE s (id int PRIMARY KEY, v int NOT NULL, t text NOT NULL)")
    conn.execute("INSERT INTO s VALUES (1, 5, 'x')")
    _, encoder = whole_table_shape(conn, "s")
    definition = encoder.definition
    query, params = build_subset_query(definition, None, SubsetQuery(order_by=(OrderItem("id"),)))

    def check(rows: list[tuple[str | None, ...]]) -> None:
        got = runner.run(query, params, encoder.definition)  # one pooled connection: its prepared statement
        assert got.body() == expected_body(got.metadata, [encoder.snapshot_item(r)[1] for r in rows])

    check([("1", "5", "x")])
    conn.execute("ALTER TABLE s ALTER COLUMN t DROP NOT NULL")  # same result types: the plan stays
    conn.execute("INSERT INTO s VALUES (2, 6, NULL)")
    check([("1", "5", "x"), ("2", "6", None)])
    conn.execute("ALTER TABLE s ALTER COLUMN v TYPE text")
    nasty = 'a"b\\\n'  # a quote, a backslash, a newline: all escaped in JSON
    conn.execute("UPDATE s SET v = %s WHERE id = 1", (nasty,))
    check([("1", nasty, "x"), ("2", "6", None)])


def test_the_metadata_is_the_statements_snapshot(
    db_dsn: str, conn: psycopg.Connection[Any], runner: SubsetRunner
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    table, encoder = whole_table_shape(conn, "t")
    definition = encoder.definition
    query, params = build_subset_query(definition, None, SubsetQuery(compile_where("id > 1", table)))
    snapshot_sql = "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn() - '0/0'"
    with psycopg.connect(db_dsn) as open_tx:
        open_tx.execute("INSERT INTO t VALUES (3)")
        open_xid = int(open_tx.execute("SELECT pg_current_xact_id()::xid::text").fetchone()[0])  # type: ignore[index]
        conn.execute("INSERT INTO t VALUES (2)")  # committed after open_xid started: open_xid < xmax
        before = conn.execute(snapshot_sql).fetchone()
        result = runner.run(query, params, encoder.definition)
        after = conn.execute(snapshot_sql).fetchone()
        open_tx.rollback()
    assert before is not None and after is not None
    assert [item["value"]["id"] for item in orjson.loads(result.body())["data"]] == ["2"]
    meta = result.metadata
    assert set(meta) == {"xmin", "xmax", "xip_list", "database_lsn", "snapshot_mark"}
    assert int(before[0].split(":")[0]) <= int(meta["xmin"]) <= int(after[0].split(":")[0])
    assert int(before[1]) <= int(meta["database_lsn"]) <= int(after[1])
    assert meta["xip_list"] == [str(open_xid)]  # in progress for the statement's snapshot
    # no row matched: the metadata still comes with the (empty) data
    query, params = build_subset_query(definition, None, SubsetQuery(compile_where("id > 5", table)))
    empty = runner.run(query, params, encoder.definition)
    assert orjson.loads(empty.body())["data"] == [] and empty.count == 0
    assert set(empty.metadata) == set(meta) and empty.metadata["xip_list"] == []


def test_a_failed_statement_closes_its_connection_and_the_next_one_works(
    conn: psycopg.Connection[Any], runner: SubsetRunner
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    _, encoder = whole_table_shape(conn, "t")

    def backend_pid() -> str:  # the subset connection's backend, as the row's "id"
        body = runner.run(b'SELECT CAST(pg_backend_pid() AS text) AS "id"', [], encoder.definition).body()
        return str(orjson.loads(body)["data"][0]["value"]["id"])

    first = backend_pid()
    assert backend_pid() == first  # one pooled connection, reused
    with pytest.raises(SubsetQueryFailed, match="QueryCanceled"):  # statement_timeout
        runner.run(
            b'SELECT 1 AS "id" WHERE pg_sleep(CAST(%s AS float8)) IS NOT NULL', ["2"], encoder.definition
        )
    second = backend_pid()
    assert second != first  # the failed connection was not reused
    with pytest.raises(SubsetQueryFailed, match="DivisionByZero"):
        runner.run(b'SELECT 1 / CAST(%s AS int) AS "id"', ["0"], encoder.definition)
    assert backend_pid() not in (first, second)


def test_settle_pending_reads_the_end_of_the_runners_last_statement(
    conn: psycopg.Connection[Any], runner: SubsetRunner
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    _, encoder = whole_table_shape(conn, "t")
    runner.run(b'SELECT CAST(1 AS text) AS "id"', [], encoder.definition)
    [(kept, _, unsettled)] = runner._kept._kept  # the connection the run put back, as it was put back
    assert unsettled and kept.unsettled  # its statement's end still unread: the answer may leave first
    runner.settle_pending()  # the hook the raw answer's close() runs
    assert not kept.unsettled and kept.pgconn.transaction_status == pq.TransactionStatus.IDLE
    assert [(c, u) for c, _, u in runner._kept._kept] == [(kept, False)]  # still kept, settled


def run_prepared(conn: SubsetConnection, query: bytes, params: list[bytes | None]) -> pq.abc.PGresult:
    """Run ``query`` as a statement of ``conn`` prepared on first use, as the runner does (settled after)."""
    result = execute_early(conn, prepare(conn, query, query), params)
    settle(conn)
    return result


def test_prepared_statements_are_bounded_per_connection(db_dsn: str) -> None:
    with SubsetConnection.connect(db_dsn, autocommit=True) as conn:
        conn.setup_subsets()
        conn.subset_statements = Statements(limit=2)
        queries = [numbered_query(b"SELECT CAST(%s AS int) + " + str(i).encode()) for i in range(3)]
        assert [run_prepared(conn, q, [b"10"]).get_value(0, 0) for q in queries] == [b"10", b"11", b"12"]
        names = {r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()}
        assert names == {"shapesync_subset_2", "shapesync_subset_3"} and len(conn.subset_statements) == 2
        assert run_prepared(conn, queries[0], [b"1"]).get_value(0, 0) == b"1"  # prepared again, evicting one
        names = {r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()}
        assert names == {"shapesync_subset_3", "shapesync_subset_4"}
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            run_prepared(conn, queries[1], [b"x"])


def test_numbered_query() -> None:
    assert numbered_query(b'SELECT "a%%b" FROM t WHERE x = %s AND y = %s LIMIT %s') == (
        b'SELECT "a%b" FROM t WHERE x = $1 AND y = $2 LIMIT $3'
    )
    assert numbered_query(b"SELECT '%%s'") == b"SELECT '%s'"
    with pytest.raises(ValueError, match="placeholders"):
        numbered_query(b"SELECT %d")


def test_shapes_with_other_key_columns_do_not_share_a_statement(
    conn: psycopg.Connection[Any], runner: SubsetRunner
) -> None:
    conn.execute("CREATE TABLE k (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO k VALUES (1, 'a')")
    table = read_table(conn, "public", "k")
    assert table is not None
    by_pk = ShapeDefinition.create(("public", "k"), table)
    by_row = dataclasses.replace(by_pk, primary_key=())  # e.g. created before the primary key was added
    query, params = build_subset_query(by_pk, None, SubsetQuery())
    assert build_subset_query(by_row, None, SubsetQuery()) == (query, params)
    for definition in (by_pk, by_row, by_pk):
        encoder = ShapeLogEncoder(definition)
        got = runner.run(query, params, encoder.definition)
        assert got.body() == expected_body(got.metadata, [encoder.snapshot_item(("1", "a"))[1]])


def test_columns_named_like_the_statements_own_names(
    conn: psycopg.Connection[Any], runner: SubsetRunner
) -> None:
    conn.execute(
        'CREATE TABLE n (x int PRIMARY KEY, s text NOT NULL, snapshot text, lsn int, info text, "item" text)'
    )
    conn.execute("INSERT INTO n VALUES (1, 'a', 'b', 2, 'c', 'd'), (3, 'e', NULL, NULL, NULL, NULL)")
    _, encoder = whole_table_shape(conn, "n")
    definition = encoder.definition
    query, params = build_subset_query(definition, None, SubsetQuery(order_by=(OrderItem("x"),)))
    got = runner.run(query, params, encoder.definition)
    rows = [("1", "a", "b", "2", "c", "d"), ("3", "e", None, None, None, None)]
    assert got.body() == expected_body(got.metadata, [encoder.snapshot_item(r)[1] for r in rows])


@pytest.mark.parametrize(
    ("snapshot", "lsn"),
    [("5:5:", "0/0"), ("10:12:", "16/B374D848"), ("10:20:17,11,19", "0/16B3748"), ("1:2:1", "FFFFFFFF/1")],
)
def test_metadata_is_what_orjson_writes_of_the_parsed_values(snapshot: str, lsn: str) -> None:
    parsed = PgSnapshot.parse(snapshot)
    reference = {
        "xmin": str(parsed.xmin),
        "xmax": str(parsed.xmax),
        "xip_list": [str(x) for x in sorted(parsed.xip)],
        "database_lsn": str(parse_lsn(lsn)),
        "snapshot_mark": 77,
    }
    assert metadata_json(snapshot.encode(), lsn.encode(), 77) == orjson.dumps(reference)


def test_metadata_of_one_snapshot_carries_each_requests_own_mark() -> None:
    first = orjson.loads(metadata_json(b"10:20:17,11", b"0/16B3748", 1))
    again = orjson.loads(metadata_json(b"10:20:17,11", b"0/16B3748", 2))
    assert (first["snapshot_mark"], again["snapshot_mark"]) == (1, 2)
    assert {**first, "snapshot_mark": 2} == again
    other = orjson.loads(metadata_json(b"10:21:17,11", b"0/16B3749", 2))
    assert (other["xmax"], other["database_lsn"]) == ("21", str(parse_lsn("0/16B3749")))


@pytest.mark.parametrize("snapshot", ["", "1:2", "1:2:3:4", "a:2:", "3:2:", "1:5:7", "1:5:x"])
def test_metadata_refuses_what_pg_snapshot_refuses(snapshot: str) -> None:
    with pytest.raises(ValueError):
        PgSnapshot.parse(snapshot)
    with pytest.raises(ValueError):
        metadata_json(snapshot.encode(), b"0/0", 1)


def test_a_value_needing_escapes_gets_the_checked_statements_own_tail(
    conn: psycopg.Connection[Any], runner: SubsetRunner
) -> None:
    """The unchecked statement writes a raw text value between quotes of its own (its tail closes the last
    one); when a value needs escaping, the checked statement's items (to_json) end with their own tail."""
    conn.execute("CREATE TABLE m (id int PRIMARY KEY, t text NOT NULL)")
    conn.execute("""INSERT INTO m VALUES (1, 'plain'), (2, E'needs "escaping"')""")
    _, encoder = whole_table_shape(conn, "m")
    query, params = build_subset_query(encoder.definition, None, SubsetQuery(order_by=(OrderItem("id"),)))
    rows = [("1", "plain"), ("2", 'needs "escaping"')]
    for _ in range(2):  # unchecked, then checked; then the checked one first
        result = runner.run(query, params, encoder.definition)
        assert result.body() == expected_body(result.metadata, [encoder.snapshot_item(r)[1] for r in rows])


def test_early_rows_come_before_the_statements_end_which_settle_reads(db_dsn: str) -> None:
    with SubsetConnection.connect(db_dsn, autocommit=True) as conn:
        conn.setup_subsets()
        entry = prepare(conn, b"q", b"SELECT $1::int + 1")
        result = execute_early(conn, entry, [b"41"])
        assert result.get_value(0, 0) == b"42"
        assert conn.unsettled and conn.pgconn.transaction_status != pq.TransactionStatus.IDLE
        settle(conn)
        assert not conn.unsettled and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        settle(conn)  # nothing to do
        assert conn.execute("SELECT 1").fetchone() == (1,)  # psycopg's own path works again
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            execute_early(conn, entry, [b"x"])
        assert not conn.unsettled  # settled before the error was raised
        assert execute_early(conn, entry, [b"1"]).get_value(0, 0) == b"2"
        settle(conn)
        conn.pgconn.finish()  # lost: an unsettled connection cannot settle
        conn.unsettled = True
        with pytest.raises(psycopg.OperationalError):
            settle(conn)


def test_items_holding_the_separator_byte_are_joined_by_postgres(
    conn: psycopg.Connection[Any], runner: SubsetRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO t VALUES (1, 'a,b'), (2, 'c'), (3, ',')")
    _, encoder = whole_table_shape(conn, "t")
    query, params = build_subset_query(encoder.definition, None, SubsetQuery(order_by=(OrderItem("id"),)))
    rows = [("1", "a,b"), ("2", "c"), ("3", ",")]
    expected = [encoder.snapshot_item(r)[1] for r in rows]
    plain = runner.run(query, params, encoder.definition)
    assert plain.body() == expected_body(plain.metadata, expected)
    # a byte the items do hold (no JSON value holds the real one unescaped): Postgres joins them instead
    monkeypatch.setattr(subset_runner, "SEPARATOR", b",")
    joined = runner.run(query, params, encoder.definition)
    assert joined.body() == expected_body(joined.metadata, expected) and joined.count == 3
    monkeypatch.setattr(subset_runner, "SEPARATOR", b"\x02")
    one = runner.run(*build_subset_query(encoder.definition, None, SubsetQuery(limit=1)), encoder.definition)
    assert one.body() == expected_body(one.metadata, expected[:1])


_DIRTY = [chr(c) for c in range(1, 32)] + ['"', "\\"]  # what JSON escapes (Postgres text holds no NUL)


def test_unchecked_items_never_let_a_value_that_needs_escaping_through(
    conn: psycopg.Connection[Any], runner: SubsetRunner, db_dsn: str
) -> None:
    """Text values go out without ``to_json`` only when none holds a byte JSON escapes: every byte that needs
    escaping, in a NOT NULL text, a nullable text and a varchar column, makes the unchecked statement's
    middles refused on their own (one row per subset) and among clean rows; the runner then answers what
    the encoder writes, and keeps the checked statement first on that connection."""
    conn.execute("CREATE TABLE u (id int PRIMARY KEY, a text NOT NULL, b text, c varchar(20))")
    Row = tuple[int, str, str | None, str | None]
    printable = "".join(chr(c) for c in range(32, 127) if chr(c) not in '"\\')
    clean: list[Row] = [
        (1, "plain é \u2028 \x7f", None, None),
        (2, "x", "y/z", "50% ,"),
        (3, printable, printable, printable[-20:]),
    ]
    dirty: list[Row] = [
        (10 + 3 * i + j, d if j == 0 else "ok", d if j == 1 else "ok", d if j == 2 else "ok")
        for i, d in enumerate(_DIRTY)
        for j in range(3)
    ]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO u VALUES (%s, %s, %s, %s)", clean + dirty)
    table, encoder = whole_table_shape(conn, "u")
    definition = encoder.definition
    one = build_subset_query(definition, None, SubsetQuery(compile_where("id = $1", table, {1: "1"})))[0]
    some = build_subset_query(definition, None, SubsetQuery(compile_where("id <= $1", table, {1: "1"})))[0]
    with SubsetConnection.connect(db_dsn, autocommit=True) as sc:
        sc.execute(session_settings_sql())
        sc.setup_subsets()
        by_query = {}
        for name, query in (("one", one), ("some", some)):
            statement = item_statement(sc, definition, query, unchecked=True)
            assert statement.unchecked and statement.raw == 3  # a, b and c
            by_query[name] = statement, prepare(sc, name.encode(), numbered_query(statement.query), statement)

        def passes(name: str, row_id: int) -> bool:
            statement, entry = by_query[name]
            result = execute_early(sc, entry, [subset_runner.SEPARATOR, b"%d" % row_id])
            settle(sc)
            return raw_values_clean(result.get_value(0, RAW_AT + i) for i in range(statement.raw))

        assert all(passes("one", row[0]) for row in clean)
        assert passes("some", 3)  # three clean rows
        for row in dirty:
            assert not passes("one", row[0]), row
            assert not passes("some", row[0]), row
    query, params = build_subset_query(definition, None, SubsetQuery(order_by=(OrderItem("id"),)))
    expected = [
        encoder.snapshot_item(tuple(None if v is None else str(v) for v in row))[1] for row in clean + dirty
    ]
    for _ in range(2):  # unchecked refused then checked; then checked first
        result = runner.run(query, params, definition)
        assert result.body() == expected_body(result.metadata, expected)
    clean_only = build_subset_query(definition, None, SubsetQuery(compile_where("id <= $1", table, {1: "3"})))
    result = runner.run(*clean_only, definition)
    assert result.body() == expected_body(result.metadata, expected[:3])
