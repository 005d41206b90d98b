"""Test doubles for the downstream (a recording sink playing the collector) and small helpers (slots, a
published table, the walsender serving a slot and the status updates it has seen)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pykka

from supervisors import stop_tree, wait_started
from sync.replication.changes import (
    Insert,
    RelationChanged,
    ReplicationEvent,
    SlotRecreated,
    TransactionFragment,
)
from sync.replication.connection import ConnectionConfig, ConnectionHandles, start_connection_supervisor
from sync.replication.sink import Connected, Pending, ResumePoint


class RecordingSink:
    """Plays the collector: records events, remembers the last processed commit and (optionally)
    acknowledges each transaction as durable as soon as its commit fragment arrives."""

    def __init__(self, *, auto_ack: bool = True, ack_every: int = 1, delay: float = 0.0) -> None:
        self.events: list[ReplicationEvent] = []
        self.processed = 0
        self.durable = 0
        self.auto_ack = auto_ack
        self.ack_every = ack_every  # acknowledge only every n-th transaction (forces replays)
        self.delay = delay  # a slow downstream
        self.violations: list[str] = []
        self.commits = 0
        self._partial: list[ReplicationEvent] = []
        self.handles: ConnectionHandles | None = None
        self.changed = threading.Condition()
        self.on_deliver: Callable[[ReplicationEvent], Pending | None] | None = None
        self.connections: list[Connected] = []  # what each connection found, in order
        self.flushing_reports: list[int] = []  # positions announced before each report to Postgres

    def connected(self, connection: Connected) -> None:
        with self.changed:
            self.connections.append(connection)
            self.changed.notify_all()

    def flushing(self, lsn: int) -> None:
        with self.changed:
            self.flushing_reports.append(lsn)
            self.changed.notify_all()

    def resume_point(self) -> ResumePoint:
        return ResumePoint(self.processed, self.durable)

    def deliver(self, event: ReplicationEvent) -> Pending | None:
        hook = self.on_deliver(event) if self.on_deliver is not None else None
        if self.delay:
            time.sleep(self.delay)
        with self.changed:
            if isinstance(event, SlotRecreated):  # a new history: forget positions of the old one
                self.processed = self.durable = 0
            if isinstance(event, TransactionFragment):
                if event.begin and self._partial:  # a transaction cut by a reconnect comes again whole
                    self.events = [e for e in self.events if e not in self._partial]
                    self._partial = []
                if event.commit_lsn <= self.processed:
                    self.violations.append(f"commit {event.commit_lsn} after {self.processed}")
                if not event.commit:
                    self._partial.append(event)
                else:
                    self._partial = []
                    self.processed = event.commit_lsn
                    self.commits += 1
                    if self.auto_ack and self.commits % self.ack_every == 0:
                        self.ack(event.commit_lsn)
            self.events.append(event)
            self.changed.notify_all()
        return hook

    def ack(self, lsn: int) -> None:
        self.durable = max(self.durable, lsn)
        if self.handles is not None:
            self.handles.ack(lsn)

    # -- views ---------------------------------------------------------------------------------
    def fragments(self) -> list[TransactionFragment]:
        return [e for e in self.events if isinstance(e, TransactionFragment)]

    def inserted(self, column: int = 0) -> list[Any]:
        return [c.new[column] for f in self.fragments() for c in f.changes if isinstance(c, Insert)]

    def slot_events(self) -> list[SlotRecreated]:
        return [e for e in self.events if isinstance(e, SlotRecreated)]

    def relations(self) -> list[RelationChanged]:
        return [e for e in self.events if isinstance(e, RelationChanged)]

    def wait_for(self, pred: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"condition not met within {timeout} s; {len(self.events)} events")
                self.changed.wait(left)


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll an observable condition with a deadline (used where no event exists, e.g. catalog state)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def stream_id_for(dsn: str) -> str:
    """A stream id unique to the test database (slots are cluster-wide)."""
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    return str(dbname).split("_")[1]


def slot_row(dsn: str, slot: str) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()


def confirmed_flush(dsn: str, slot: str) -> int:
    from sync.postgres.lsn import parse_lsn  # noqa: PLC0415

    row = slot_row(dsn, slot)
    assert row is not None
    return parse_lsn(row[0])


@contextmanager
def running_connection(
    config: ConnectionConfig, sink: RecordingSink
) -> Iterator[tuple[pykka.ActorRef[Any], ConnectionHandles]]:
    handles = ConnectionHandles(config)
    sink.handles = handles
    sup = start_connection_supervisor(config, sink, handles)
    try:
        wait_started(sup, 30)
        yield sup, handles
    finally:
        assert stop_tree(sup, 30)


def walsender(conn: psycopg.Connection[Any], slot: str) -> tuple[int, Any] | None:
    row = conn.execute(
        "SELECT r.pid, r.reply_time FROM pg_replication_slots s JOIN pg_stat_replication r "
        "ON r.pid = s.active_pid WHERE s.slot_name = %s",
        (slot,),
    ).fetchone()
    return (int(row[0]), row[1]) if row else None


def replies_seen(conn: psycopg.Connection[Any], slot: str, n: int) -> None:
    """Wait until the client has sent ``n`` more status updates (reply_time moves each time)."""
    seen: list[Any] = []

    def moved() -> bool:
        ws = walsender(conn, slot)
        if ws is not None and (not seen or ws[1] != seen[-1]):
            seen.append(ws[1])
        return len(seen) > n

    wait_until(moved, timeout=10, interval=0.02)


def setup_table(conn: psycopg.Connection[Any], config: ConnectionConfig, table: str = "items") -> None:
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    conn.execute(f"ALTER PUBLICATION {config.publication} ADD TABLE {table}")


def replies_seen_for(dsn: str, slot: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        replies_seen(conn, slot, n)
