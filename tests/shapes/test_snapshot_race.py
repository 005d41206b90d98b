"""A new shape's snapshot against a transaction that was already replicated but is not yet visible.

A commit is written to the WAL (and so decoded, sent and routed) before its backend leaves the proc array,
where snapshots see it.  A shape registering with the collector in that window missed the transaction's
changes (routed before it registered) and its snapshot missed them too (the transaction was still running
for it): a gap, for good.  The window is short unless the commit waits in it: synchronous replication holds
every commit there until a standby confirms it, which this test uses, with a standby that never comes, to
hold one transaction in it for as long as the test needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from api.engine_adapter import EngineShapes
from api.engine_port import ShapeDefinition
from sync.engine import Engine
from sync.shapes import snapshot_start
from tests.fixtures.engine import streaming_engine
from tests.fixtures.held_commit import held_commit
from tests.shapes.consumer_harness import read_log, replay, wait_for

KEY_1 = '"public"."items"/"1"'
KEY_2 = '"public"."items"/"2"'
INSERT_2 = "INSERT INTO items VALUES (2, 'b')"


@pytest.fixture
def engine(db_dsn: str, tmp_path: Path) -> Iterator[Engine]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a')")
    with streaming_engine(db_dsn, tmp_path) as engine:
        yield engine


def _complete(engine: Engine, handle: str) -> bool:
    shape = engine.services.directory.get(handle)
    return shape is not None and shape.reader.snapshot_complete


def _keys(engine: Engine, handle: str) -> set[str]:
    shape = engine.services.directory.get(handle)
    assert shape is not None
    return {item["key"] for item in read_log(shape.reader) if "key" in item}


def _rows(engine: Engine, handle: str) -> set[str]:
    wait_for(lambda: _complete(engine, handle), timeout=30)
    shape = engine.services.directory.get(handle)
    assert shape is not None
    return set(replay(read_log(shape.reader)))


def test_a_snapshot_waits_for_a_routed_transaction_it_does_not_see_yet(
    engine: Engine, db_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sync.shapes.snapshot_start")
    port = EngineShapes(engine)
    everything = port.get_or_create(ShapeDefinition("items"))
    wait_for(lambda: _complete(engine, everything), timeout=30)
    with held_commit(db_dsn, INSERT_2, replicated=lambda: KEY_2 in _keys(engine, everything)):
        late = port.get_or_create(ShapeDefinition("items", where="id > 0"))
        wait_for(lambda: _complete(engine, late) or "waits for 1 transactions" in caplog.text, timeout=30)
    assert _rows(engine, late) == {KEY_1, KEY_2}


def test_a_snapshot_gives_up_on_a_transaction_that_stays_invisible(
    engine: Engine, db_dsn: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit held for longer than the snapshot's wait (a standby gone): the new shape fails with a
    message naming the transaction, and is created afresh once the commit is through."""
    monkeypatch.setattr(snapshot_start, "UNSEEN_WAIT_S", 0.5)
    port = EngineShapes(engine)
    everything = port.get_or_create(ShapeDefinition("items"))
    wait_for(lambda: _complete(engine, everything), timeout=30)
    definition = ShapeDefinition("items", where="id > 0")
    with held_commit(db_dsn, INSERT_2, replicated=lambda: KEY_2 in _keys(engine, everything)):
        late = port.get_or_create(definition)
        wait_for(lambda: engine.services.directory.get(late) is None, timeout=30)  # failed, removed
        assert "1 transactions (xid " in caplog.text and "still running for Postgres after" in caplog.text
    again = port.get_or_create(definition)
    assert again != late
    assert _rows(engine, again) == {KEY_1, KEY_2}
