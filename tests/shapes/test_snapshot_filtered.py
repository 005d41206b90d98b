"""A shape with a WHERE clause: at most a few rows are read in one round trip; more go the way the planner
picks (through the index with a cursor, or by page ranges); the items are the same every way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sync.shapes.definition import ShapeDefinition
from sync.shapes.identifiers import parse_relation
from sync.shapes.snapshot import BEGIN_SNAPSHOT
from sync.shapes.snapshot_blocks import FILTERED_ROWS, block_query, read_few, snapshot_blocks
from sync.storage.snapshot_writer import split_items
from tests.fixtures.sessions import connect_session
from tests.shapes.helpers import definition_of
from tests.shapes.snapshot_support import copy_batches, round_trips, sorted_jsons

ROWS = 5  # at most this many items are read at once in these tests
WHERE = sql.SQL("owner = %s")


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with connect_session(db_dsn) as c:
        c.execute("CREATE TABLE owned (id int PRIMARY KEY, owner int NOT NULL, doc text)")
        c.execute("CREATE INDEX owned_owner ON owned (owner)")
        c.execute("INSERT INTO owned SELECT g, g % 100, 'd' || g FROM generate_series(1, 2000) g")
        c.execute("ANALYZE owned")
        yield c


def definition(conn: psycopg.Connection[Any]) -> ShapeDefinition:
    return definition_of(conn, *parse_relation("owned"))


def expected(conn: psycopg.Connection[Any], owner: int) -> list[bytes]:
    return sorted_jsons([i for b in copy_batches(conn, definition(conn), WHERE, (owner,)) for i in b])


def few(conn: psycopg.Connection[Any], owner: int) -> tuple[list[tuple[int, bytes]] | None, int]:
    """:func:`read_few` of ``owner = <owner>`` in a snapshot, and the round trips it took."""
    conn.execute(BEGIN_SNAPSHOT)
    try:
        found = block_query(conn, definition(conn), WHERE, (owner,))
        assert found is not None
        return round_trips(conn, lambda: read_few(conn, found[0], rows=ROWS))
    finally:
        conn.execute("ROLLBACK")


def items(blocks: list[tuple[int, bytes]]) -> list[bytes]:
    out: list[bytes] = []
    for count, block in blocks:
        got = split_items(block)
        assert len(got) == count
        out.extend(got)
    return sorted(out)


def test_at_most_rows_items_take_one_round_trip(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DELETE FROM owned WHERE owner = 5 AND id > 405")  # ids 5, 105, 205, 305, 405: ROWS items
    blocks, trips = few(conn, 5)
    assert blocks is not None and trips == 1
    assert [count for count, _ in blocks] == [ROWS]
    assert items(blocks) == expected(conn, 5)
    blocks, trips = few(conn, 100_000)
    assert blocks == [] and trips == 1  # none: no block at all


def test_one_more_is_left_to_the_planners_way(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DELETE FROM owned WHERE owner = 5 AND id > 405")
    conn.execute("INSERT INTO owned VALUES (3000, 5, 'one more')")
    blocks, trips = few(conn, 5)
    assert blocks is None and trips == 1


@pytest.mark.parametrize("indexed", [True, False])
def test_a_shape_reads_the_same_items_whatever_its_size(conn: psycopg.Connection[Any], indexed: bool) -> None:
    if not indexed:
        conn.execute("DROP INDEX owned_owner")
    conn.execute(
        f"INSERT INTO owned SELECT g, 7, 'many' FROM generate_series(3001, {3000 + FILTERED_ROWS}) g"
    )
    conn.execute("ANALYZE owned")
    for owner in (7, 3, 100_000):  # more than FILTERED_ROWS items, 20, none
        conn.execute(BEGIN_SNAPSHOT)
        try:
            got = items(list(snapshot_blocks(conn, definition(conn), WHERE, (owner,), pages=4)))
        finally:
            conn.execute("ROLLBACK")
        assert got == expected(conn, owner)
        assert len(got) == {7: FILTERED_ROWS + 20, 3: 20, 100_000: 0}[owner]
