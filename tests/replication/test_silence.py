"""A replication connection that stays open and silent is given up (``receive_timeout``), against a real
Postgres whose walsender is stopped (SIGSTOP): the kernel still acknowledges our packets, as it does for a
hung server, so only the reader's own clock can tell; a network that drops packets without a reset looks
the same from our side.  Without the timeout the shapes stayed silently stale (live requests answered
up-to-date) until the kernel gave up retransmitting, some fifteen minutes on Linux.

The walsender must be a process of this machine: the test's cluster is (tests/fixtures/pg.py).
"""

from __future__ import annotations

import dataclasses
import os
import signal

import psycopg

from sync.replication.connection import ConnectionConfig
from tests.replication.support import (
    RecordingSink,
    running_connection,
    setup_table,
    stream_id_for,
    wait_until,
    walsender,
)


def test_a_silent_server_is_given_up_and_streaming_resumes_without_a_gap(db_dsn: str) -> None:
    config = ConnectionConfig(
        dsn=db_dsn,
        stream_id=stream_id_for(db_dsn),
        status_interval=0.2,
        receive_timeout=1.0,
        backoff_base=0.2,
    )
    sink = RecordingSink()
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        setup_table(conn, config)
        conn.execute("INSERT INTO items VALUES (1, 'a')")
        sink.wait_for(lambda: sink.inserted() == ["1"])
        assert handles.status.error is None
        (pid, _) = walsender(conn, config.slot) or (0, None)
        assert pid
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: "nothing received from the server" in str(handles.status.error), timeout=20)
        finally:
            os.kill(pid, signal.SIGCONT)
        conn.execute("INSERT INTO items VALUES (2, 'b')")
        sink.wait_for(lambda: sink.inserted() == ["1", "2"])
        wait_until(lambda: handles.state() == "active")


def test_a_quiet_but_live_server_is_kept(db_dsn: str) -> None:
    """Silence from a live server (no writes at all) lasts at most until it answers our ping: the
    connection outlives many timeouts."""
    config = dataclasses.replace(
        ConnectionConfig(dsn=db_dsn, stream_id=stream_id_for(db_dsn)),
        status_interval=5.0,
        receive_timeout=2.0,  # a reply asked for after 1 s of silence: 1 s for it to come
    )
    sink = RecordingSink()
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        (first, _) = walsender(conn, config.slot) or (0, None)
        conn.execute("SELECT pg_sleep(5)")  # timeouts of a quiet stream (the thing under test is time)
        (now, _) = walsender(conn, config.slot) or (0, None)
        assert (now, handles.state(), handles.status.error) == (first, "active", None)
