"""A Postgres restart mid-stream, down for several retries (cluster-wide, so it lives alone here).

Every committed transaction is delivered once, in commit order, across the restart; the client crashes,
the Connection subtree restarts it with backoff, and it resumes from the slot's confirmed position while
skipping what the downstream already processed.
"""

from __future__ import annotations

import dataclasses

import psycopg

from sync.replication.connection import ConnectionConfig
from tests.fixtures.pg import ClusterInfo
from tests.replication.support import RecordingSink, running_connection, stream_id_for, wait_until


def test_postgres_restart_mid_stream_delivers_every_transaction_once(
    db_dsn: str, pg_cluster: ClusterInfo
) -> None:
    assert pg_cluster.cluster is not None, "this test restarts the server: it needs the private cluster"
    config = ConnectionConfig(
        dsn=db_dsn, stream_id=stream_id_for(db_dsn), status_interval=0.2, backoff_base=0.2, backoff_max=1.0
    )
    config = dataclasses.replace(config, lock_check_interval=0.5)
    sink = RecordingSink(ack_every=5, delay=0.01)  # slow downstream: the restart hits mid-stream
    with running_connection(config, sink) as (sup, handles):
        wait_until(lambda: handles.state() == "active")
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
            conn.execute(f"ALTER PUBLICATION {config.publication} ADD TABLE items")
            for i in range(150):
                conn.execute("INSERT INTO items VALUES (%s)", (i,))
        sink.wait_for(lambda: len(sink.inserted()) >= 30)
        assert len(sink.inserted()) < 150  # still streaming
        pg_cluster.cluster.stop()
        wait_until(lambda: handles.status.error is not None)
        wait_until(lambda: handles.backoff.delay() >= 0.8, timeout=60)  # down through several retries
        pg_cluster.cluster.start()
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            for i in range(150, 200):
                conn.execute("INSERT INTO items VALUES (%s)", (i,))
        sink.wait_for(lambda: len(sink.inserted()) >= 200, timeout=60)
        wait_until(lambda: handles.state() == "active")
        assert sink.inserted() == [str(i) for i in range(200)]
        assert sink.violations == []
        assert handles.status.error is None
        assert sup.is_alive()  # backing off, never escalated
