"""HistoryGuard: the identity recorded with the shapes against the server's ``IDENTIFY_SYSTEM``.

The end-to-end cases (a new timeline, another cluster with our slot) are in ``tests/service/test_history.py``;
these check the rules one by one against the real server's identity, told to the guard as the replication
client tells it (``connected``: its ``IDENTIFY_SYSTEM`` answer and the slot as it found it).
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from sync.postgres.lsn import parse_lsn
from sync.replication.changes import ReplicationEvent, SlotRecreated
from sync.replication.history import History, HistoryFile, HistoryGuard, StoredHistory, history_change
from sync.replication.sink import CallbackSink, Connected, Pending, ResumePoint
from sync.replication.stream import ReplicationStream, SlotState
from tests.replication.support import slot_row

RESUME = ResumePoint(processed_lsn=100, durable_lsn=90)


def connection(dsn: str, slot: str = "s") -> Connected:
    """What the client tells its sink on connecting: ``IDENTIFY_SYSTEM`` on a replication connection, and
    the slot as found (one that does not exist is reported at 0, which no recorded position is behind)."""
    stream = ReplicationStream.open(dsn)
    try:
        system = stream.identify_system()
    finally:
        stream.close()
    row = slot_row(dsn, slot)
    return Connected(system, SlotState(parse_lsn(row[0]) if row else 0, None))


def read_history(dsn: str) -> History:
    return History.of(connection(dsn).system)


class Downstream:
    """What the guard hands on: delivered events, purges asked for (``settle``), which may fail."""

    def __init__(self) -> None:
        self.events: list[ReplicationEvent] = []
        self.settled: list[SlotRecreated] = []
        self.fail_settle = False

    def deliver(self, event: ReplicationEvent) -> Pending | None:
        self.events.append(event)
        return None

    def settle(self, event: SlotRecreated) -> None:
        if self.fail_settle:
            raise RuntimeError("the shape cache is not running")
        self.settled.append(event)

    def guard(self, dsn: str, path: Path, slot: str = "s") -> HistoryGuard:
        """A guard (a new incarnation's) told what a new connection to ``dsn`` found."""
        guard = HistoryGuard(
            CallbackSink(self.deliver, lambda: RESUME), HistoryFile(path), slot=slot, settle=self.settle
        )
        guard.connected(connection(dsn, slot))
        return guard


def test_history_change_names_what_changed() -> None:
    h = History("7", 1)
    assert history_change(None, h) is None
    assert history_change(StoredHistory(h), h) is None
    assert "another cluster" in str(history_change(StoredHistory(History("8", 1)), h))
    assert "timeline changed from 2 to 1" in str(history_change(StoredHistory(History("7", 2)), h))
    assert "did not complete" in str(history_change(StoredHistory(h, purge_pending=True), h))
    assert history_change(StoredHistory(h, flushed=100), h, 100) is None
    assert history_change(StoredHistory(h, flushed=100), h, None) is None  # no slot: it is re-created
    assert history_change(StoredHistory(h), h, 100) is None  # nothing recorded yet: nothing to compare
    assert "past what the shape logs hold" in str(history_change(StoredHistory(h, flushed=100), h, 101))


def test_identify_system_is_the_servers_identity(db_dsn: str) -> None:
    history = read_history(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    assert row is not None and history.system_id == row[0]
    assert history.timeline >= 1


def test_a_guard_not_told_its_connection_refuses_to_guess(tmp_path: Path) -> None:
    down = Downstream()
    guard = HistoryGuard(
        CallbackSink(down.deliver), HistoryFile(tmp_path / "h.json"), slot="s", settle=down.settle
    )
    with pytest.raises(RuntimeError, match="has not reported its connection"):
        guard.resume_point()
    assert not (tmp_path / "h.json").exists() and down.events == []


def test_first_start_adopts_the_identity_and_resumes(db_dsn: str, tmp_path: Path) -> None:
    down = Downstream()
    path = tmp_path / "history.json"
    assert down.guard(db_dsn, path).resume_point() == RESUME
    assert HistoryFile(path).load() == StoredHistory(read_history(db_dsn))
    assert down.events == [] and down.settled == []
    assert down.guard(db_dsn, path).resume_point() == RESUME  # same history: nothing happens


def test_other_history_purges_before_streaming_and_an_interrupted_purge_is_redone(
    db_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "history.json"
    old = History("1", 1)
    HistoryFile(path).save(StoredHistory(old))
    down = Downstream()
    down.fail_settle = True  # e.g. the Shapes subtree is restarting: the purge cannot be confirmed
    with pytest.raises(RuntimeError):
        down.guard(db_dsn, path).resume_point()
    assert HistoryFile(path).load() == StoredHistory(old, purge_pending=True)
    down.fail_settle = False
    assert down.guard(db_dsn, path).resume_point() == ResumePoint()  # nothing of the old history counts
    assert [type(e) for e in down.events] == [SlotRecreated, SlotRecreated]
    assert len(down.settled) == 1 and "another cluster" in down.settled[0].reason
    assert HistoryFile(path).load() == StoredHistory(read_history(db_dsn))


def test_a_recreated_slot_purges_and_records_the_identity(db_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    HistoryFile(path).save(StoredHistory(History("1", 1)))
    down = Downstream()
    event = SlotRecreated("s", "slot did not exist")
    assert down.guard(db_dsn, path).deliver(event) is None
    assert down.events == [event] and down.settled == [event]
    assert HistoryFile(path).load() == StoredHistory(read_history(db_dsn))


def test_a_damaged_file_purges(db_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text(json.dumps({"system_id": "1"}))
    down = Downstream()
    assert down.guard(db_dsn, path).resume_point() == ResumePoint()
    assert len(down.settled) == 1


def test_a_slot_confirmed_past_what_was_reported_purges(db_dsn: str, tmp_path: Path) -> None:
    # Our storage lost what it had acknowledged (restored from an older copy), or something else advanced
    # the slot: Postgres will not resend the changes in between, so the shapes cannot continue.
    path = tmp_path / "history.json"
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        slot = "hs_" + str(conn.info.backend_pid)
        row = conn.execute(
            "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
        )
        created = parse_lsn(row.fetchone()[0])  # type: ignore[index]
        down = Downstream()
        guard = down.guard(db_dsn, path, slot)
        assert guard.resume_point() == RESUME
        guard.flushing(created)  # what the client reported before it went away
        assert HistoryFile(path).load() == StoredHistory(read_history(db_dsn), flushed=created)
        assert down.guard(db_dsn, path, slot).resume_point() == RESUME  # the slot is where we left it
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute("SELECT pg_replication_slot_advance(%s, pg_current_wal_lsn())", (slot,))
        assert down.guard(db_dsn, path, slot).resume_point() == ResumePoint()
        assert len(down.settled) == 1 and "past what the shape logs hold" in down.settled[0].reason
        assert HistoryFile(path).load() == StoredHistory(read_history(db_dsn))  # disarmed until reported
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_a_recreated_slot_whose_purge_fails_purges_at_the_next_start(db_dsn: str, tmp_path: Path) -> None:
    # The slot is re-created (changes were lost) but the purge cannot complete; the next incarnation finds
    # the new slot and would reuse it: the mark left before the purge must make it purge anyway.
    path = tmp_path / "history.json"
    down = Downstream()
    down.fail_settle = True
    with pytest.raises(RuntimeError):
        down.guard(db_dsn, path).deliver(SlotRecreated("s", "slot did not exist"))  # first start: no file
    down.fail_settle = False
    assert down.guard(db_dsn, path).resume_point() == ResumePoint()
    assert [e.reason for e in down.settled] == ["an earlier invalidation of every shape did not complete"]
    assert HistoryFile(path).load() == StoredHistory(read_history(db_dsn))
