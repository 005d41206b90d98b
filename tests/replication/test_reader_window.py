"""The reader's durability window against a real Postgres: at a transaction boundary it holds the stream
while more than ``max_unacked_changes`` delivered changes are not durable, resumes on acknowledgement, and
does not hold it for a downstream that makes no progress for ``unacked_stall_s``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import psycopg
import pytest

from sync import runtime
from sync.postgres.backoff import Backoff
from sync.replication.pgoutput import RelationCache
from sync.replication.reader import ReaderConfig, ReplicationReader, Stopped
from sync.replication.status import ConnectionStatus
from tests.replication.support import RecordingSink, stream_id_for, wait_until

ROWS_PER_TXN = 30
TXNS = 10


@contextmanager
def running_reader(config: ReaderConfig, sink: RecordingSink) -> Iterator[ReplicationReader]:
    status = ConnectionStatus()
    locked, stop = runtime.Event(), runtime.Event()
    locked.set()
    reader = ReplicationReader(
        config,
        sink,
        cache=RelationCache(),
        status=status,
        backoff=Backoff(base=0.0),
        lock_acquired=locked,
        stop=stop,
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reader.run()
        except Stopped:
            return
        except BaseException as exc:
            errors.append(exc)

    handle = runtime.spawn(run)
    try:
        wait_until(lambda: status.state == "active" or bool(errors))
        assert errors == []
        yield reader
    finally:
        stop.set()
        handle.join(10)
    assert errors == []


def commit_transactions(dsn: str, config: ReaderConfig) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
        conn.execute(f"ALTER PUBLICATION {config.publication} ADD TABLE items")
        for t in range(TXNS):
            first = t * ROWS_PER_TXN
            conn.execute(
                "INSERT INTO items SELECT g, 'x' FROM generate_series(%s::int, %s::int) g",
                (first, first + ROWS_PER_TXN - 1),
            )


def commit_lsns(sink: RecordingSink) -> list[int]:
    return [f.commit_lsn for f in sink.fragments() if f.commit]


def test_holds_past_the_window_and_resumes_on_ack(db_dsn: str) -> None:
    config = ReaderConfig(
        db_dsn, stream_id=stream_id_for(db_dsn), max_unacked_changes=100, unacked_stall_s=60.0
    )
    sink = RecordingSink(auto_ack=False)
    with running_reader(config, sink) as reader:
        commit_transactions(db_dsn, config)
        # 4 transactions = 120 unacknowledged changes > 100: the 5th waits
        sink.wait_for(lambda: sink.commits >= 4)
        with pytest.raises(AssertionError, match="condition not met"):  # no 5th without an ack
            sink.wait_for(lambda: sink.commits > 4, timeout=1.0)
        assert sink.commits == 4
        reader.ack(commit_lsns(sink)[1])  # 60 of 120 durable: two more fit, then 120 again
        sink.wait_for(lambda: sink.commits >= 6)
        reader.ack(commit_lsns(sink)[-1])
        sink.wait_for(lambda: sink.commits == TXNS)
        assert sink.inserted() == [str(i) for i in range(TXNS * ROWS_PER_TXN)]
        assert sink.violations == []


def test_a_downstream_without_progress_does_not_hold_the_stream(db_dsn: str) -> None:
    config = ReaderConfig(
        db_dsn, stream_id=stream_id_for(db_dsn), max_unacked_changes=100, unacked_stall_s=0.5
    )
    sink = RecordingSink(auto_ack=False)
    with running_reader(config, sink):
        commit_transactions(db_dsn, config)
        sink.wait_for(lambda: sink.commits == TXNS)
        assert sink.inserted() == [str(i) for i in range(TXNS * ROWS_PER_TXN)]


def test_the_byte_window_holds_wide_transactions_too(db_dsn: str) -> None:
    # Only the byte bound: 30 rows of ~30 pgoutput bytes each make ~1 KB per transaction, so a window of
    # 2,500 bytes holds the stream after the third (the change bound would never).
    config = ReaderConfig(
        db_dsn,
        stream_id=stream_id_for(db_dsn),
        max_unacked_changes=0,
        max_unacked_bytes=2_500,
        unacked_stall_s=60.0,
    )
    sink = RecordingSink(auto_ack=False)
    with running_reader(config, sink) as reader:
        commit_transactions(db_dsn, config)
        sink.wait_for(lambda: sink.commits >= 1)
        with pytest.raises(AssertionError, match="condition not met"):  # held well before the last one
            sink.wait_for(lambda: sink.commits > 4, timeout=1.0)
        held = sink.commits
        assert 1 <= held <= 4
        reader.ack(commit_lsns(sink)[-1])  # everything delivered is durable: it goes on
        sink.wait_for(lambda: sink.commits > held)
        while sink.commits < TXNS:
            reader.ack(commit_lsns(sink)[-1])
            sink.wait_for(
                cast(Callable[[], bool], lambda n=sink.commits: sink.commits > n or sink.commits == TXNS)
            )
        assert sink.inserted() == [str(i) for i in range(TXNS * ROWS_PER_TXN)]
        assert sink.violations == []
