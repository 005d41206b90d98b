"""Kept subset connections (sync/shapes/subset_hot.py) over a real pool and Postgres: reuse without the pool,
no starved pool waiter, idle ones back to the pool after max_idle, unusable ones never kept, unsettled ones
settled before their next use (or closed when they cannot be)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg_pool import ConnectionPool, PoolTimeout

from sync.shapes.subset_exec import SubsetConnection, execute_early, prepare, settle
from sync.shapes.subset_hot import KeptConnections

Pool = ConnectionPool[psycopg.Connection[Any]]


@pytest.fixture
def pool(db_dsn: str) -> Iterator[Pool]:
    p: Pool = ConnectionPool(db_dsn, min_size=0, max_size=1, kwargs={"autocommit": True}, open=False)
    p.open(wait=False)
    yield p
    p.close()


def _available(pool: Pool) -> int:
    return int(pool.get_stats().get("pool_available", 0))


def test_a_given_back_connection_is_kept_and_reused(pool: Pool) -> None:
    kept = KeptConnections(pool, max_idle=60)
    conn = kept.get(5)
    kept.put(conn)
    assert len(kept) == 1 and _available(pool) == 0  # still checked out of the pool
    assert kept.get(5) is conn
    kept.put(conn)
    kept.close()
    assert len(kept) == 0 and _available(pool) == 1
    conn = pool.getconn(5)  # the pool's again
    pool.putconn(conn)


def test_a_request_waiting_in_the_pool_gets_the_connection(pool: Pool) -> None:
    kept = KeptConnections(pool, max_idle=60)
    held = kept.get(5)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(kept.get(10)))
    waiter.start()
    deadline = time.monotonic() + 5
    while pool.get_stats().get("requests_waiting", 0) == 0:  # the waiter is in pool.getconn
        assert time.monotonic() < deadline
        time.sleep(0.01)
    kept.put(held)
    waiter.join(5)
    assert got == [held] and len(kept) == 0
    kept.put(held)
    kept.close()


def test_with_nothing_kept_the_pool_bounds_as_before(pool: Pool) -> None:
    kept = KeptConnections(pool, max_idle=60)
    held = kept.get(5)
    with pytest.raises(PoolTimeout):
        kept.get(0.2)
    kept.put(held)
    kept.close()


def test_an_idle_kept_connection_goes_back_to_the_pool(pool: Pool) -> None:
    kept = KeptConnections(pool, max_idle=0.2)
    kept.put(kept.get(5))
    assert len(kept) == 1
    deadline = time.monotonic() + 5
    while len(kept) or _available(pool) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    kept.close()


def test_connections_not_idle_go_back_to_the_pool(pool: Pool) -> None:
    kept = KeptConnections(pool, max_idle=60)
    conn = kept.get(5)
    conn.execute("BEGIN")
    kept.put(conn)  # in a transaction: the pool checks (rolls back) it
    assert len(kept) == 0
    conn = kept.get(5)
    conn.close()
    kept.put(conn)
    assert len(kept) == 0
    conn = kept.get(5)  # a new one, usable
    assert conn.execute("SELECT 1").fetchone() == (1,)
    kept.put(conn)
    kept.close()
    conn = kept.get(5)  # after close nothing is kept any more
    kept.put(conn)
    assert len(kept) == 0


@pytest.fixture
def subset_pool(db_dsn: str) -> Iterator[ConnectionPool[SubsetConnection]]:
    p: ConnectionPool[SubsetConnection] = ConnectionPool(
        db_dsn,
        connection_class=SubsetConnection,
        min_size=0,
        max_size=1,
        kwargs={"autocommit": True},
        configure=lambda c: c.setup_subsets(),
        open=False,
    )
    p.open(wait=False)
    yield p
    p.close()


def _early(conn: SubsetConnection, value: bytes) -> bytes | None:
    return execute_early(conn, prepare(conn, b"q", b"SELECT $1::int * 2"), [value]).get_value(0, 0)


def _after_an_early_statement(
    pool: ConnectionPool[SubsetConnection],
) -> tuple[KeptConnections[SubsetConnection], SubsetConnection]:
    """Kept connections over ``pool`` and the one a statement just ran on early (its end still unread)."""
    kept = KeptConnections(pool, max_idle=60, settle=settle)
    conn = kept.get(5)
    assert _early(conn, b"2") == b"4"
    return kept, conn


def test_an_unsettled_connection_is_settled_before_its_next_use(
    subset_pool: ConnectionPool[SubsetConnection],
) -> None:
    kept, conn = _after_an_early_statement(subset_pool)
    kept.put(conn, unsettled=conn.unsettled)
    assert len(kept) == 1 and conn.unsettled  # kept as it is: settled off the request's path
    again = kept.get(5)
    assert again is conn and not conn.unsettled
    assert conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
    assert _early(conn, b"3") == b"6"
    kept.put(conn, unsettled=True)
    kept.close()  # given back to the pool settled: the pool keeps it (it discards a busy one)
    assert _available(subset_pool) == 1 and not conn.unsettled


def test_settle_kept_settles_kept_connections_in_place(
    subset_pool: ConnectionPool[SubsetConnection],
) -> None:
    kept, conn = _after_an_early_statement(subset_pool)
    kept.put(conn, unsettled=conn.unsettled)
    assert conn.unsettled
    kept.settle_kept()  # what the raw answer's close hook runs once the answer has left
    assert len(kept) == 1 and not conn.unsettled  # still kept, and idle
    assert conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
    kept.settle_kept()  # nothing left: a no-op
    assert kept.get(5) is conn
    assert _early(conn, b"3") == b"6"
    conn.pgconn.finish()  # lost with its statement's end unread: closed, never kept
    kept.put(conn, unsettled=True)
    kept.settle_kept()
    assert len(kept) == 0 and conn.closed
    fresh = kept.get(5)
    assert fresh is not conn and fresh.execute("SELECT 1").fetchone() == (1,)
    kept.put(fresh)
    kept.close()


def test_a_connection_that_cannot_settle_is_closed_and_another_one_used(
    subset_pool: ConnectionPool[SubsetConnection],
) -> None:
    kept, conn = _after_an_early_statement(subset_pool)
    conn.pgconn.finish()  # lost with its statement's end unread
    kept.put(conn, unsettled=True)
    fresh = kept.get(5)
    assert fresh is not conn and conn.closed
    assert fresh.execute("SELECT 1").fetchone() == (1,)
    kept.put(fresh)
    kept.close()
