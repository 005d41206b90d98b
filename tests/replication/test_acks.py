"""Pure bookkeeping: which LSN may be acknowledged, and the restart backoff."""

from __future__ import annotations

from sync.postgres.backoff import Backoff
from sync.postgres.errors import DbConnectionError
from sync.replication.acks import AckTracker


def test_flush_waits_for_durability_then_follows_wal_end() -> None:
    t = AckTracker(confirmed=100)
    assert t.flush_lsn(in_transaction=False) == 100
    t.on_keepalive(150)
    assert t.flush_lsn(in_transaction=False) == 150  # nothing pending: wal_end
    t.on_delivered(200, 260)
    t.on_keepalive(300)
    assert t.flush_lsn(in_transaction=False) == 150  # transaction 200 not durable: hold
    t.on_ack(200)
    assert t.flush_lsn(in_transaction=False) == 300
    t.on_delivered(400, 450)
    t.on_ack(400)
    t.on_keepalive(500)
    assert t.flush_lsn(in_transaction=True) == 401  # mid-transaction: never past the last commit
    assert t.flush_lsn(in_transaction=False) == 500


def test_flush_never_moves_backwards_and_uses_resume_point() -> None:
    t = AckTracker(confirmed=1000, processed=900, durable=800)
    t.on_keepalive(1200)
    assert t.flush_lsn(in_transaction=False) == 1000  # processed 900 not yet durable: stay at confirmed
    t.on_ack(900)
    assert t.flush_lsn(in_transaction=False) == 1200
    t.on_ack(950)
    assert t.flush_lsn(in_transaction=False) == 1200


def test_backoff_grows_caps_and_slows_down_for_misconfiguration() -> None:
    b = Backoff(base=1.0, cap=8.0, slow=30.0)
    assert b.delay() == 0.0
    lost = DbConnectionError("connection_lost", "x")
    delays = []
    for _ in range(6):
        b.failed(lost)
        delays.append(b.delay())
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.failed(DbConnectionError("wal_level", "x", retry_may_fix=False))
    assert b.delay() == 30.0
    b.succeeded()
    assert b.delay() == 0.0
