"""The Connection subtree against a real Postgres: setup, streaming, acknowledgement, failures."""

from __future__ import annotations

import psycopg
import pytest

from sync.replication.changes import Insert
from sync.replication.connection import ConnectionConfig
from tests.replication.support import (
    RecordingSink,
    confirmed_flush,
    running_connection,
    stream_id_for,
    wait_until,
)


@pytest.fixture
def config(db_dsn: str) -> ConnectionConfig:
    return ConnectionConfig(dsn=db_dsn, stream_id=stream_id_for(db_dsn), status_interval=0.2, max_batch=50)


def test_streams_transactions_in_commit_order(db_dsn: str, config: ConnectionConfig) -> None:
    sink = RecordingSink()
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        (slot_event,) = sink.slot_events()
        assert slot_event.reason == "slot did not exist"
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, v text)")
        conn.execute(f"ALTER PUBLICATION {config.publication} ADD TABLE items")
        for i in range(20):
            conn.execute("INSERT INTO items VALUES (%s, %s)", (i, f"v{i}"))
        conn.execute("INSERT INTO items SELECT g, 'bulk' FROM generate_series(100, 219) g")
        sink.wait_for(lambda: len(sink.inserted()) == 140)
        assert sink.inserted() == [str(i) for i in range(20)] + [str(i) for i in range(100, 220)]
        bulk = [
            f
            for f in sink.fragments()
            if f.changes and isinstance(f.changes[0], Insert) and f.changes[0].new[1] == "bulk"
        ]
        assert [len(f.changes) for f in bulk] == [50, 50, 20]
        lsn_now = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert lsn_now is not None
        wait_until(lambda: confirmed_flush(db_dsn, config.slot) >= sink.processed)
