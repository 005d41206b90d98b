"""The Connection subtree against a real Postgres: setup, streaming, acknowledgement, failures."""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from typing import Any, cast

import psycopg
import pykka
import pytest

from supervisors import stop_tree
from sync.postgres.lsn import parse_lsn
from sync.replication.changes import Insert, ReplicationEvent, TransactionFragment
from sync.replication.connection import ConnectionConfig, ConnectionHandles, start_connection_supervisor
from sync.replication.sink import ActorSink, GetResumePoint, Pending, ResumePoint
from tests.replication.support import (
    RecordingSink,
    confirmed_flush,
    replies_seen,
    replies_seen_for,
    running_connection,
    setup_table,
    slot_row,
    stream_id_for,
    wait_until,
    walsender,
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


def test_confirmed_flush_advances_only_after_ack(db_dsn: str, config: ConnectionConfig) -> None:
    sink = RecordingSink(auto_ack=False)
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        setup_table(conn, config)
        conn.execute("CREATE TABLE other (n int)")  # not published: unrelated traffic
        conn.execute("INSERT INTO items VALUES (1, 'a')")
        sink.wait_for(lambda: sink.processed > 0)
        commit = sink.processed
        for _ in range(20):
            conn.execute("INSERT INTO other SELECT generate_series(1, 100)")
        replies_seen(conn, config.slot, 5)
        assert confirmed_flush(db_dsn, config.slot) <= commit  # pending: neither the txn nor wal_end
        sink.ack(commit)
        wait_until(lambda: confirmed_flush(db_dsn, config.slot) > commit)


def test_idle_traffic_advances_the_slot_when_nothing_is_pending(
    db_dsn: str, config: ConnectionConfig
) -> None:
    sink = RecordingSink()
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        setup_table(conn, config)
        conn.execute("INSERT INTO items VALUES (1, 'a')")
        sink.wait_for(lambda: sink.processed > 0)
        conn.execute("CREATE TABLE other (n int)")
        for _ in range(10):
            conn.execute("INSERT INTO other SELECT generate_series(1, 100)")
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        target = parse_lsn(row[0])
        assert target > sink.processed
        wait_until(lambda: confirmed_flush(db_dsn, config.slot) >= target)


def test_walsender_terminated_mid_stream_delivers_every_transaction_once(
    db_dsn: str, config: ConnectionConfig
) -> None:
    sink = RecordingSink(ack_every=7, delay=0.002)  # lagging acks: the server replays, we must skip
    config = dataclasses.replace(config, backoff_base=0.2)
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        setup_table(conn, config)
        pids = set()
        for i in range(300):
            conn.execute("INSERT INTO items VALUES (%s, 'x')", (i,))
            if i % 75 == 40:
                sink.wait_for(cast(Callable[[], bool], lambda i=i: len(sink.inserted()) >= i - 20))
                ws = walsender(conn, config.slot)
                assert ws is not None
                pids.add(ws[0])
                conn.execute("SELECT pg_terminate_backend(%s)", (ws[0],))
        sink.wait_for(lambda: len(sink.inserted()) >= 300)
        wait_until(lambda: handles.state() == "active")
        assert sink.inserted() == [str(i) for i in range(300)]
        assert sink.violations == []
        assert len(pids) == 4  # every termination hit a new walsender, i.e. the client reconnected


def test_stalled_downstream_keeps_connection_alive(db_dsn: str, config: ConnectionConfig) -> None:
    config = dataclasses.replace(config, extra_options="-c wal_sender_timeout=2s", status_interval=5.0)
    sink = RecordingSink()
    release = threading.Event()

    def stall(event: ReplicationEvent) -> Pending | None:
        if isinstance(event, TransactionFragment) and event.commit and not release.is_set():
            future: pykka.ThreadingFuture[None] = pykka.ThreadingFuture()
            threading.Timer(10.0, lambda: (release.set(), future.set(None))).start()  # type: ignore[func-returns-value]  # two calls in a lambda
            return future
        return None

    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        setup_table(conn, config)
        before = walsender(conn, config.slot)
        sink.on_deliver = stall
        for i in range(config.max_in_flight + 20):
            conn.execute("INSERT INTO items VALUES (%s, 'x')", (i,))
        conn.execute("INSERT INTO items SELECT g, repeat('y', 500) FROM generate_series(1000, 30000) g")
        assert not release.wait(1.0)
        assert len(sink.inserted()) < 20  # really stalled
        assert release.wait(15.0)
        sink.wait_for(lambda: len(sink.inserted()) == config.max_in_flight + 20 + 29001)
        after = walsender(conn, config.slot)
        assert before is not None and after is not None and before[0] == after[0]
        assert handles.status.error is None


def test_missing_replication_privilege_is_a_clear_slow_retried_error(
    db_dsn: str, config: ConnectionConfig
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS norepl")
        conn.execute("CREATE ROLE norepl LOGIN")
    dsn = db_dsn.replace("user=postgres", "user=norepl")
    config = dataclasses.replace(config, dsn=dsn, misconfiguration_retry=30.0)
    sink = RecordingSink()
    try:
        with running_connection(config, sink) as (sup, handles):
            wait_until(lambda: handles.status.error is not None)
            error = handles.status.error
            assert error is not None and error.kind == "replication_privilege"
            assert not error.retry_may_fix and "REPLICATION" in error.message
            assert handles.backoff.delay() >= 30.0
            assert handles.health()["error"]["kind"] == "replication_privilege"  # type: ignore[index]
            assert sup.is_alive()
    finally:
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("DROP ROLE norepl")


def test_slot_dropped_from_outside_is_recreated_and_announced(db_dsn: str, config: ConnectionConfig) -> None:
    sink = RecordingSink()
    config = dataclasses.replace(config, backoff_base=1.0)
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        setup_table(conn, config)
        conn.execute("INSERT INTO items VALUES (1, 'a')")
        sink.wait_for(lambda: sink.inserted() == ["1"])
        ws = walsender(conn, config.slot)
        assert ws is not None
        conn.execute("SELECT pg_terminate_backend(%s)", (ws[0],))
        wait_until(lambda: (slot_row(db_dsn, config.slot) or (None, 1))[1] is None, timeout=5)
        conn.execute("SELECT pg_drop_replication_slot(%s)", (config.slot,))
        sink.processed = 2**62  # a position from another history (e.g. before a restore): not a skip point
        sink.wait_for(lambda: len(sink.slot_events()) == 2)
        assert sink.slot_events()[1].reason == "slot did not exist"
        conn.execute("INSERT INTO items VALUES (2, 'b')")
        sink.wait_for(lambda: sink.inserted() == ["1", "2"])


def test_sink_learns_each_connection_and_each_flush_position_before_it_is_reported(
    db_dsn: str, config: ConnectionConfig
) -> None:
    sink = RecordingSink()
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        row = conn.execute(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()), "
            "(SELECT timeline_id FROM pg_control_checkpoint())"
        ).fetchone()
        assert row is not None
        (first,) = sink.connections
        assert (first.system.system_id, first.system.timeline) == (row[0], row[1])
        assert first.slot.recreated == "slot did not exist" == sink.slot_events()[0].reason
        assert 0 < first.system.xlogpos <= first.slot.confirmed_flush_lsn
        setup_table(conn, config)
        conn.execute("INSERT INTO items VALUES (1, 'a')")
        sink.wait_for(lambda: sink.processed > 0)
        wait_until(lambda: confirmed_flush(db_dsn, config.slot) >= sink.processed)
        reports = list(sink.flushing_reports)
        assert reports == sorted(set(reports))  # only ever higher
        confirmed = confirmed_flush(db_dsn, config.slot)
        assert reports[-1] >= confirmed  # Postgres holds nothing it was not announced first
        ws = walsender(conn, config.slot)
        assert ws is not None
        conn.execute("SELECT pg_terminate_backend(%s)", (ws[0],))
        sink.wait_for(lambda: len(sink.connections) == 2)
        second = sink.connections[1]
        assert second.slot.recreated is None and second.system == dataclasses.replace(
            first.system, xlogpos=second.system.xlogpos
        )
        assert confirmed <= second.slot.confirmed_flush_lsn <= max(sink.flushing_reports)


def test_publication_dropped_from_outside_recreates_publication_and_slot(
    db_dsn: str, config: ConnectionConfig
) -> None:
    sink = RecordingSink()
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        setup_table(conn, config)
        conn.execute("INSERT INTO items VALUES (1, 'a')")
        sink.wait_for(lambda: sink.inserted() == ["1"])
        conn.execute(f"DROP PUBLICATION {config.publication}")
        conn.execute("INSERT INTO items VALUES (2, 'b')")  # makes the walsender fail
        sink.wait_for(lambda: len(sink.slot_events()) == 2)
        assert sink.slot_events()[1].reason == "publication was re-created"
        wait_until(lambda: handles.state() == "active")
        conn.execute(f"ALTER PUBLICATION {config.publication} ADD TABLE items")
        conn.execute("INSERT INTO items VALUES (3, 'c')")
        sink.wait_for(lambda: sink.inserted()[-1:] == ["3"])


def test_publication_altered_to_send_less_is_set_back_at_start(db_dsn: str, config: ConnectionConfig) -> None:
    """Updates left out of the publication while the engine was down were lost: on start the publication
    publishes every operation again and the slot is re-created with the reason (every shape refetches)."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        with running_connection(config, RecordingSink()) as (_sup, handles):
            wait_until(lambda: handles.state() == "active")
        conn.execute(f"ALTER PUBLICATION {config.publication} SET (publish = 'insert')")
        sink = RecordingSink()
        with running_connection(config, sink) as (_sup, handles):
            wait_until(lambda: handles.state() == "active")
            assert [e.reason for e in sink.slot_events()] == [
                "publication did not publish insert, update, delete and truncate"
            ]
        row = conn.execute(
            "SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate FROM pg_publication WHERE pubname = %s",
            (config.publication,),
        ).fetchone()
        assert row == (True,)


def test_publication_owned_by_another_role_is_a_clear_error(db_dsn: str, config: ConnectionConfig) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(db_dsn)["dbname"]
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pubowner")
        conn.execute("DROP ROLE IF EXISTS repl")
        conn.execute("CREATE ROLE pubowner")
        conn.execute("CREATE ROLE repl LOGIN REPLICATION")
        conn.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO pubowner, repl')
        conn.execute("SET ROLE pubowner")
        conn.execute(f"CREATE PUBLICATION {config.publication}")
        conn.execute("RESET ROLE")
    config = dataclasses.replace(config, dsn=db_dsn.replace("user=postgres", "user=repl"))
    try:
        with running_connection(config, RecordingSink()) as (sup, handles):
            wait_until(lambda: handles.status.error is not None)
            error = handles.status.error
            assert error is not None and error.kind == "publication_not_ours", error
            assert "owned by another role" in error.message and not error.retry_may_fix
            assert slot_row(db_dsn, config.slot) is None  # no slot created for a publication we cannot use
            assert sup.is_alive()
    finally:
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(f"DROP PUBLICATION IF EXISTS {config.publication}")
            conn.execute(f'REVOKE ALL ON DATABASE "{dbname}" FROM pubowner, repl')
            conn.execute("DROP ROLE pubowner")
            conn.execute("DROP ROLE repl")


def test_no_free_replication_slot_is_a_clear_error(db_dsn: str, config: ConnectionConfig) -> None:
    fillers: list[str] = []
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        try:
            while True:  # take every free slot (the test cluster allows a few dozen)
                name = f"filler_{config.stream_id}_{len(fillers)}"
                conn.execute("SELECT pg_create_physical_replication_slot(%s)", (name,))
                fillers.append(name)
        except psycopg.errors.ConfigurationLimitExceeded:
            pass
        try:
            with running_connection(config, RecordingSink()) as (sup, handles):
                wait_until(lambda: handles.status.error is not None)
                error = handles.status.error
                assert error is not None and error.kind == "slot_limit", error
                assert "max_replication_slots" in error.message and not error.retry_may_fix
                assert handles.backoff.delay() >= config.misconfiguration_retry
                assert sup.is_alive()
        finally:
            for name in fillers:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def test_values_use_the_shared_display_settings(db_dsn: str, config: ConnectionConfig) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(db_dsn)["dbname"]
    with psycopg.connect(db_dsn, autocommit=True) as conn:  # database defaults that must not leak in
        for setting, value in [
            ("TimeZone", "America/New_York"),
            ("DateStyle", "SQL, MDY"),
            ("IntervalStyle", "postgres_verbose"),
            ("extra_float_digits", "-3"),
            ("bytea_output", "escape"),
        ]:
            conn.execute(f"ALTER DATABASE \"{dbname}\" SET {setting} = '{value}'")
    sink = RecordingSink()
    with (
        psycopg.connect(db_dsn, autocommit=True) as conn,
        running_connection(config, sink) as (_sup, handles),
    ):
        wait_until(lambda: handles.state() == "active")
        conn.execute(
            "CREATE TABLE v (id int PRIMARY KEY, ts timestamptz, d date, i interval, f float8, b bytea)"
        )
        conn.execute(f"ALTER PUBLICATION {config.publication} ADD TABLE v")
        conn.execute(
            "INSERT INTO v VALUES (1, '2026-01-02 03:04:05.5+00', '2026-01-02', '1 day 2 hours', 0.1, '\\x0102')"
        )
        sink.wait_for(lambda: len(sink.inserted()) == 1)
        (ins,) = [c for f in sink.fragments() for c in f.changes]
        assert isinstance(ins, Insert)
        assert ins.new == ("1", "2026-01-02 03:04:05.5+00", "2026-01-02", "P1DT2H", "0.1", "\\x0102")


class _Downstream(pykka.ThreadingActor):
    """A downstream actor behind ActorSink: records events, answers GetResumePoint, counts in-flight."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.events: list[ReplicationEvent] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, GetResumePoint):
            return ResumePoint()
        if isinstance(message, TransactionFragment):
            self.gate.wait(10)  # a slow downstream: the client must stop at max_in_flight
        self.events.append(message)
        return None


def test_actor_sink_bounds_in_flight_events(db_dsn: str, config: ConnectionConfig) -> None:
    gate = threading.Event()
    ref = _Downstream.start(gate)
    inbox = cast(queue.Queue[Any], ref.actor_inbox)  # a ThreadingActor's inbox is a queue.Queue
    config = dataclasses.replace(config, max_in_flight=3)
    handles = ConnectionHandles(config)
    sup = start_connection_supervisor(config, ActorSink(ref, timeout=10), handles)
    try:
        wait_until(lambda: handles.state() == "active")
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
            conn.execute(f"ALTER PUBLICATION {config.publication} ADD TABLE items")
            for i in range(20):
                conn.execute("INSERT INTO items VALUES (%s)", (i,))
        wait_until(lambda: inbox.qsize() >= 2)  # the actor is stuck on the first event
        replies_seen_for(db_dsn, config.slot, 2)  # time passes: the client keeps the connection alive...
        assert inbox.qsize() <= config.max_in_flight  # ...but sends no more than its window
        gate.set()
        wait_until(lambda: len(ref.proxy().events.get(timeout=5)) >= 22)  # SlotRecreated, Relation, 20 txns
        events = ref.proxy().events.get(timeout=5)
        inserted = [
            cast(Insert, c).new[0] for e in events if isinstance(e, TransactionFragment) for c in e.changes
        ]
        assert inserted == [str(i) for i in range(20)]
    finally:
        stop_tree(sup, 30)
        ref.stop(timeout=5)
