"""``shapes.log_rotate_ratio``: a shape whose log outgrew its snapshot is rotated (a new handle, its clients
refetch, its files deleted); below the limit, and with rotation off, nothing happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.shapes.cache import CacheSettings
from sync.shapes.consumer_rotation import LogRotation
from sync.shapes.directory import LiveShape
from tests.shapes.cache_harness import ITEMS_SQL, CacheHarness, cache_harness, check, snapshot_done
from tests.shapes.consumer_harness import read_log, wait_for


@pytest.fixture
def h(db_dsn: str, tmp_path: Path) -> Iterator[CacheHarness]:
    yield from cache_harness(db_dsn, tmp_path, ITEMS_SQL + "CREATE SEQUENCE rounds;")


def _grow(h: CacheHarness, rounds: int) -> None:
    """``rounds`` transactions, each updating 10 rows to a new label (~1.4 KB of log)."""
    for _ in range(rounds):
        h.conn.execute(
            "UPDATE items SET label = 'round ' || nextval('rounds') || repeat('x', 100) WHERE id <= 10"
        )
        h.sync_all()


def _json_bytes(shape: LiveShape) -> tuple[int, int]:
    return shape.reader.snapshot_json_bytes(), shape.reader.log_json_bytes()


def test_a_log_past_ratio_times_its_snapshot_is_rotated(h: CacheHarness) -> None:
    h.stop_cache()
    rotation = LogRotation(ratio=3, min_bytes=1000)
    h.start_cache(CacheSettings(flush_interval=0.01, ask_timeout=10, log_rotation=rotation))
    definition = h.definition("items")
    shape = h.live(definition)
    wait_for(lambda: snapshot_done(shape))
    snapshot, _ = _json_bytes(shape)
    assert snapshot > 1000  # the ratio decides, not the floor
    _grow(h, 1)
    _, log = _json_bytes(shape)
    assert 0 < log < 3 * snapshot
    assert h.directory.get(shape.handle) is shape  # below the limit: kept
    check(h, shape)
    rounds = 0
    while h.directory.get(shape.handle) is not None:
        rounds += 1
        assert rounds < 50, "never rotated"
        _grow(h, 1)
    assert rounds >= 2
    wait_for(lambda: shape.handle not in h.storage.handles())
    fresh = h.live(definition)
    assert fresh.handle != shape.handle
    wait_for(lambda: snapshot_done(fresh))
    check(h, fresh)
    assert _json_bytes(fresh)[1] == 0


def test_without_rotation_a_log_grows_past_any_ratio(h: CacheHarness) -> None:
    shape = h.live(h.definition("items"))
    wait_for(lambda: snapshot_done(shape))
    snapshot, _ = _json_bytes(shape)
    _grow(h, 12)
    assert _json_bytes(shape)[1] > 5 * snapshot
    assert h.directory.get(shape.handle) is shape
    assert read_log(shape.reader)
