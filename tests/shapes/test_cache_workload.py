"""A random workload racing shape creation: every shape's log, replayed, equals SELECT of the shape at the end
and at every transaction boundary it contains (no gap, no duplicate, no intermediate state skipped)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sync.shapes.cache import get_or_create_shape
from sync.shapes.definition import ShapeDefinition
from sync.shapes.directory import LiveShape
from sync.shapes.log_items import key_prefix, row_key
from sync.shapes.snapshot import raw_text_cursor
from tests.fixtures.sessions import SESSION_OPTIONS
from tests.shapes.cache_harness import CacheHarness, cache_harness, check, snapshot_done
from tests.shapes.consumer_harness import read_log, replay, wait_for

TextRow = dict[str, str | None]

SHAPES: list[dict[str, Any]] = [
    {"table": "items"},
    {"table": "pairs"},
    {"table": "items", "replica": "full"},
    {"table": "pairs", "where": "a > 5", "replica": "full"},
    {"table": "items", "where": "value > 50"},
    {"table": "items", "where": "value % 3 = 0", "replica": "full"},
    {"table": "items", "where": "label LIKE 'a%'"},
    {"table": "items", "where": "id IN (1, 2, 3, 5, 8, 13, 21, 34)"},
    {"table": "items", "where": "value = 7"},
    {"table": "items", "columns": ["id", "value"], "where": "value < 30"},
    {"table": "items", "where": "value BETWEEN 20 AND 60 AND label IS NOT NULL", "replica": "full"},
]


TABLES_SQL = (
    "CREATE TABLE items (id int PRIMARY KEY, value int NOT NULL, label text);"
    "INSERT INTO items SELECT g, g * 3 % 100, CASE WHEN g % 2 = 0 THEN 'a' || g ELSE 'b' || g END"
    "  FROM generate_series(1, 40) g;"
    "CREATE TABLE pairs (a int, b text);"
    "INSERT INTO pairs SELECT g % 10, 'p' || g FROM generate_series(1, 20) g;"
)


@pytest.fixture
def h(db_dsn: str, tmp_path: Path) -> Iterator[CacheHarness]:
    yield from cache_harness(db_dsn, tmp_path, TABLES_SQL)


def statement(rng: random.Random, next_id: list[int]) -> tuple[str, tuple[Any, ...]]:
    kind = rng.randrange(9)
    some = rng.randrange(1, next_id[0])
    value = rng.randrange(100)
    label = rng.choice(["a", "b", None]) and f"{rng.choice('ab')}{rng.randrange(100)}"
    if kind == 0:
        next_id[0] += 1
        return "INSERT INTO items VALUES (%s, %s, %s)", (next_id[0], value, label)
    if kind == 1:
        return "UPDATE items SET value = %s WHERE id = %s", (value, some)
    if kind == 2:
        return "UPDATE items SET label = %s WHERE id = %s", (label, some)
    if kind == 3:
        return "DELETE FROM items WHERE id = %s", (some,)
    if kind == 4:
        next_id[0] += 1
        return "UPDATE items SET id = %s WHERE id = %s", (next_id[0], some)  # PK change
    if kind == 5:
        return "UPDATE items SET value = value WHERE id = %s", (some,)  # no-op
    if kind == 6:
        return "UPDATE items SET value = (value + 7) %% 100 WHERE id %% 7 = %s", (value % 7,)
    if kind == 7:
        return "UPDATE pairs SET a = %s WHERE b = %s", (value % 10, f"p{rng.randrange(1, 21)}")
    next_id[0] += 1  # rows of a table without a primary key are keyed by their values: keep them distinct
    return "INSERT INTO pairs VALUES (%s, %s)", (value % 10, f"q{next_id[0]}")


def table_state(conn: psycopg.Connection[Any]) -> dict[str, list[TextRow]]:
    out: dict[str, list[TextRow]] = {}
    for table, cols in (("items", ["id", "value", "label"]), ("pairs", ["a", "b"])):
        cur = raw_text_cursor(conn)
        cur.execute(f"SELECT {', '.join(cols)} FROM {table}")
        out[table] = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    return out


def shape_state(h: CacheHarness, shape: LiveShape, rows: list[TextRow]) -> dict[str, TextRow]:
    d: ShapeDefinition = shape.definition
    pred = h.compile(d).predicate
    prefix = key_prefix(d.schema, d.table)
    out = {}
    for row in rows:
        if pred is None or pred(row):
            value = {c: row[c] for c in d.columns}
            out[row_key(prefix, [row[c] for c in d.key_columns])] = value
    return out


def check_boundaries(h: CacheHarness, shape: LiveShape, states: dict[int, dict[str, list[TextRow]]]) -> int:
    """Replay the log transaction by transaction; at each end compare with the table after that xid."""
    items = read_log(shape.reader)
    checked = 0
    for i, item in enumerate(items):
        if item["headers"].get("last"):
            (xid,) = item["headers"]["txids"]
            expected = shape_state(h, shape, states[xid][shape.definition.table])
            assert replay(items[: i + 1]) == expected, f"state after xid {xid} differs"
            checked += 1
    return checked


@pytest.mark.parametrize("seed", [1, 2])
def test_random_workload_racing_shape_creation(h: CacheHarness, seed: int) -> None:
    rng = random.Random(seed)
    states: dict[int, dict[str, list[TextRow]]] = {}
    done = threading.Event()
    first_shapes = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with psycopg.connect(h.dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
                next_id = [1000]
                for n in range(80):
                    if n == 10:  # most of the workload comes after some shapes exist, the rest races them
                        first_shapes.wait(timeout=30)
                    with conn.transaction():
                        for _ in range(rng.randrange(1, 4)):
                            conn.execute(*statement(rng, next_id))
                        row = conn.execute("SELECT txid_current() % 4294967296").fetchone()
                        assert row is not None
                        states[int(row[0])] = table_state(conn)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def feeder() -> None:
        try:
            while not done.is_set():
                h.feed()
                done.wait(0.02)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=feeder)]
    for t in threads:
        t.start()
    shapes = []
    for spec in SHAPES:
        args = {k: v for k, v in spec.items() if k != "table"}
        shapes.append(h.live(h.definition(spec["table"], **args)))
        if len(shapes) == 2:
            first_shapes.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    h.sync_all()
    wait_for(lambda: all(snapshot_done(s) for s in shapes))
    assert h.invalidated.empty()
    assert {s.handle for s in shapes} == set(h.directory.handles())
    boundaries = 0
    for s in shapes:
        check(h, s)
        boundaries += check_boundaries(h, s, states)
    assert boundaries > 50


def test_concurrent_writers_racing_parallel_shape_builds(h: CacheHarness) -> None:
    """Several writers at once: snapshots see transactions in progress (xip) and commits out of xid order."""
    done = threading.Event()
    errors: list[BaseException] = []
    next_id = [5000]
    id_lock = threading.Lock()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(h.dsn, autocommit=True) as conn:
                for _ in range(40):
                    try:
                        with conn.transaction():
                            for _ in range(rng.randrange(1, 4)):
                                with id_lock:
                                    stmt = statement(rng, next_id)
                                conn.execute(*stmt)
                    except (psycopg.errors.DeadlockDetected, psycopg.errors.UniqueViolation):
                        continue  # rolled back: never replicated
        except BaseException as exc:
            errors.append(exc)

    def feeder() -> None:
        try:
            while not done.is_set():
                h.feed()
                done.wait(0.02)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    feed = threading.Thread(target=feeder)
    for t in [*writers, feed]:
        t.start()
    results = []
    lock = threading.Lock()

    def create(spec: dict[str, Any]) -> None:
        args = {k: v for k, v in spec.items() if k != "table"}
        result = get_or_create_shape(h.cache, h.definition(spec["table"], **args), timeout=60)
        with lock:
            results.append(result)

    creators = [threading.Thread(target=create, args=(spec,)) for spec in SHAPES]
    for t in creators:
        t.start()
    for t in [*creators, *writers]:
        t.join(timeout=120)
    done.set()
    feed.join(timeout=60)
    assert not errors, errors
    shapes = [r.shape for r in results if r.shape is not None]
    assert len(shapes) == len(SHAPES)
    h.sync_all()
    wait_for(lambda: all(snapshot_done(s) for s in shapes))
    assert h.invalidated.empty()
    for s in shapes:
        check(h, s)
