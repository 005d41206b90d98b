"""The round trips of one small snapshot: BEGIN with the snapshot's visibility and the table's size and
columns, the rows, ROLLBACK; names merged into that first query whatever characters they hold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pykka
import pytest
from psycopg import sql

from sync.shapes.identifiers import parse_relation
from sync.shapes.snapshot_messages import PrepareSnapshot, SnapshotRequest
from sync.shapes.snapshot_worker import run_snapshot
from sync.storage.snapshot_writer import split_items
from sync.storage.storage_actor import AppendSnapshotBlock, CompleteSnapshot
from tests.fixtures.sessions import connect_session
from tests.shapes.helpers import definition_of
from tests.shapes.snapshot_support import round_trips


class Recorder(pykka.ThreadingActor):
    """Stands in for the shape's consumer and storage actors: answers every message with None, but
    PrepareSnapshot with no transaction the snapshot must see."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.messages.append(message)
        return () if isinstance(message, PrepareSnapshot) else None


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with connect_session(db_dsn) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, label text)")
        c.execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g")
        yield c


@pytest.fixture
def actor() -> Iterator[pykka.ActorRef[Any]]:
    ref = Recorder.start()
    yield ref
    ref.stop()


def request(conn: psycopg.Connection[Any], actor: pykka.ActorRef[Any]) -> SnapshotRequest:
    definition = definition_of(conn, *parse_relation("t"))
    return SnapshotRequest("1-1", definition, actor, actor, sql.SQL("id < %s"), (4,))


def test_a_small_snapshot_takes_three_round_trips(
    conn: psycopg.Connection[Any], actor: pykka.ActorRef[Any]
) -> None:
    shape = request(conn, actor)
    rows, trips = round_trips(conn, lambda: run_snapshot(conn, shape, timeout=10))
    assert rows == 3
    assert trips == 3  # BEGIN + visibility + table; the rows; ROLLBACK
    messages = actor.proxy().messages.get(timeout=5)
    blocks = [m for m in messages if isinstance(m, AppendSnapshotBlock)]
    assert [b.count for b in blocks] == [3]
    assert len(split_items(blocks[0].block)) == 3
    assert any(isinstance(m, CompleteSnapshot) for m in messages)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_names_that_need_quoting(conn: psycopg.Connection[Any], actor: pykka.ActorRef[Any]) -> None:
    conn.execute(
        """CREATE SCHEMA "it's"; CREATE TABLE "it's"."a ""b"" \\c %s" (id int PRIMARY KEY, v text);"""
        """INSERT INTO "it's"."a ""b"" \\c %s" SELECT g, 'v' FROM generate_series(1, 5) g"""
    )
    definition = definition_of(conn, "it's", 'a "b" \\c %s')
    shape = SnapshotRequest("1-1", definition, actor, actor, sql.SQL("id < %s"), (3,))
    assert run_snapshot(conn, shape, timeout=10) == 2
