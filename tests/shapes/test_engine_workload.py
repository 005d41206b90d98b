"""50 assorted shapes in the real engine (in-process, streaming replication) follow a random workload that
races every one of their snapshots: each log, replayed, equals the shape as Postgres evaluates it after
every transaction the log holds and at the end, and skips no transaction that changed the shape.

The workload and the oracle: :mod:`tests.shapes.workload_oracle`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from api.engine_adapter import EngineShapes
from api.engine_port import ShapeDefinition
from sync.engine import Engine
from tests.fixtures.engine import streaming_engine
from tests.fixtures.sessions import SESSION_OPTIONS
from tests.shapes.consumer_harness import read_log, replay, wait_for
from tests.shapes.workload_oracle import (
    TABLES,
    TABLES_SQL,
    Oracle,
    ShapeSpec,
    check_log,
    shape_specs,
    statement,
)

TRANSACTIONS = 150
AFTER_LAST_SHAPE = 40  # transactions committed once every shape exists


@pytest.fixture
def engine(db_dsn: str, tmp_path: Path) -> Iterator[Engine]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(TABLES_SQL)
    with streaming_engine(db_dsn, tmp_path) as engine:
        yield engine


def _definition(spec: ShapeSpec) -> ShapeDefinition:
    return ShapeDefinition(TABLES[spec.table][0], spec.where, spec.params, spec.columns, spec.replica)  # type: ignore[arg-type]


def test_fifty_shapes_replay_every_transaction_of_a_workload_racing_their_snapshots(
    engine: Engine, db_dsn: str
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    specs = shape_specs()
    oracle = Oracle(specs)
    port = EngineShapes(engine)
    started, created = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    target = [0]

    def writer() -> None:
        try:
            with psycopg.connect(db_dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
                next_id = [2000]
                for n in range(TRANSACTIONS):
                    if n == 5:
                        started.set()
                    if n == TRANSACTIONS - AFTER_LAST_SHAPE:
                        assert created.wait(120), "shapes not created"
                    with conn.transaction():
                        for _ in range(rng.randrange(1, 5)):
                            conn.execute(*statement(rng, next_id))
                        oracle.record(conn)
                        row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'").fetchone()
                        assert row is not None
                        target[0] = int(row[0])  # the commit comes after it
        except BaseException as exc:
            errors.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert started.wait(60)
    try:
        # concurrently, as HTTP requests do: each snapshot races the writer
        with ThreadPoolExecutor(8) as pool:
            handles = list(pool.map(lambda s: port.get_or_create(_definition(s)), specs))
    finally:
        created.set()
        thread.join(120)
    assert not errors, (seed, errors)
    assert len(set(handles)) == len(specs)

    directory = engine.services.directory
    live = {h: directory.get(h) for h in handles}
    assert all(live.values()), "a shape was invalidated"
    wait_for(lambda: all(s.reader.snapshot_complete for s in live.values() if s), timeout=60)
    acknowledged = engine.connection.status.wal_positions
    wait_for(lambda: (acknowledged() or (0, 0))[0] > target[0], timeout=60)  # the last commit
    assert set(directory.handles()) >= set(handles), "a shape was invalidated"

    with psycopg.connect(db_dsn, options=SESSION_OPTIONS) as conn:
        now = oracle.snapshot(conn)
    boundaries = 0
    for i, handle in enumerate(handles):
        shape = live[handle]
        assert shape is not None
        assert set(shape.definition.columns) == set(specs[i].resolved_columns())
        items = read_log(shape.reader)
        try:
            boundaries += check_log(oracle, i, items)
        except AssertionError as exc:  # the seed replays the workload (the races with it only sometimes)
            raise AssertionError(f"seed {seed}, {specs[i]}: {exc}") from exc
        final = replay(items)
        assert final == oracle.expected(oracle.states[oracle.order[-1]], i), (seed, specs[i])
        assert final == oracle.expected(now, i), (seed, specs[i])
    assert boundaries > 2 * TRANSACTIONS, boundaries  # most shapes saw many of the transactions live
