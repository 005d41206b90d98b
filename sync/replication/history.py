"""Which database history the shapes were built from: the server's system identifier and timeline.

Why this module exists: a shape log is a list of positions in one WAL history.  After a point-in-time
restore, a promoted replica or a different cluster behind the same DSN, the same LSNs name other
transactions, and a slot found there (restored with the data directory, or created by an earlier run) would
happily stream that other history into our logs.  Electric purges every shape when ``IDENTIFY_SYSTEM``
reports a system identifier or timeline other than the one recorded with the shapes (``Timeline.check``);
so do we.

:class:`HistoryGuard` wraps the replication client's sink (the :class:`~sync.replication.sink.ReplicationSink`
contract).  The client tells it what each connection found (``connected``: its own ``IDENTIFY_SYSTEM``
answer and the slot's confirmed position, read on the replication connection before ``START_REPLICATION``).
When the client then asks for its resume point (slot reused), the guard compares that with
:class:`HistoryFile` (``<storage>/<stack>/history.json``); on a mismatch it invalidates every shape
*before* streaming starts (a :class:`~sync.replication.changes.SlotRecreated` delivered downstream, then
handed to ``settle``, which returns once the ShapeCache has removed every shape) and answers an empty
resume point, so nothing of the old history is skipped or acknowledged.

The same file holds the highest position the client reported to Postgres as flushed (``flushing(lsn)``,
recorded *before* the report is sent).  A slot found confirmed past it means Postgres will not resend
changes our logs do not hold (the storage was restored from an older copy, or another instance with
other storage advanced the slot): that purges too.  The check is armed once a position was recorded.

A slot re-created by the client purges the same way, then the guard records the current identity.  The
purge is marked pending in the file first, so a crash in the middle purges again at the next start instead
of reloading shapes of the old history.  No file (first start, or shapes from before this file existed)
adopts the current identity.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sync import runtime
from sync.postgres.lsn import format_lsn
from sync.replication.changes import ReplicationEvent, SlotRecreated
from sync.replication.sink import Connected, Pending, ReplicationSink, ResumePoint
from sync.replication.stream import SystemInfo
from sync.storage.files import replace_file

__all__ = ["History", "HistoryFile", "HistoryGuard", "StoredHistory", "history_change"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class History:
    """``IDENTIFY_SYSTEM``'s systemid and timeline: which WAL history LSNs belong to."""

    system_id: str
    timeline: int

    @classmethod
    def of(cls, system: SystemInfo) -> History:
        return cls(system.system_id, system.timeline)


@dataclass(frozen=True, slots=True)
class StoredHistory:
    history: History
    purge_pending: bool = False  # a purge was started and may not have completed
    flushed: int = 0  # the highest position reported to Postgres as flushed (0: none recorded)


def history_change(
    stored: StoredHistory | None, current: History, slot_flushed: int | None = None
) -> str | None:
    """Why the shapes recorded under ``stored`` cannot follow the server (``current`` history, its slot
    confirmed up to ``slot_flushed``); None when they can, or when nothing was recorded."""
    if stored is None:
        return None
    old = stored.history
    if stored.purge_pending and not old.system_id:  # marked before the identity was known
        return "an earlier invalidation of every shape did not complete"
    if old.system_id != current.system_id:
        return (
            f"the database is another cluster (system identifier {current.system_id}, "
            f"the shapes were built from {old.system_id})"
        )
    if old.timeline != current.timeline:
        return (
            f"the database's timeline changed from {old.timeline} to {current.timeline} "
            "(point-in-time restore or promoted replica)"
        )
    if stored.purge_pending:
        return "an earlier invalidation of every shape did not complete"
    if stored.flushed and slot_flushed is not None and slot_flushed > stored.flushed:
        return (
            f"the replication slot is confirmed up to {format_lsn(slot_flushed)}, past what the shape logs "
            f"hold ({format_lsn(stored.flushed)}): Postgres will not resend the changes in between"
        )
    return None


class HistoryFile:
    """The identity recorded with the shapes; each write is atomic and fsynced (file and directory)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> StoredHistory | None:
        try:
            raw = json.loads(self.path.read_text())
            history = History(str(raw["system_id"]), int(raw["timeline"]))
            return StoredHistory(history, bool(raw.get("purge_pending", False)), int(raw.get("flushed", 0)))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            # Written atomically, so this is damage from outside: trust nothing recorded with it.
            logger.warning("%s is damaged (%r): every shape is invalidated", self.path, exc)
            return StoredHistory(History("", 0), purge_pending=True)

    def save(self, stored: StoredHistory) -> None:
        h = stored.history
        data = {
            "system_id": h.system_id,
            "timeline": h.timeline,
            "purge_pending": stored.purge_pending,
            "flushed": stored.flushed,
        }
        runtime.run_blocking(self._write, json.dumps(data).encode())

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(self.path, data)


class HistoryGuard:
    """A :class:`~sync.replication.sink.ReplicationSink` that keeps shapes to the history they came from.

    The server is what the client found on its connection (``connected``, before anything else on that
    connection); ``settle(event)`` makes the shape registry remove every shape and returns once it has (it
    raises if it cannot: the client then crashes and retries, and the pending mark purges again).
    """

    def __init__(
        self,
        sink: ReplicationSink,
        store: HistoryFile,
        *,
        slot: str,
        settle: Callable[[SlotRecreated], None],
        timeout: float = 60.0,
    ) -> None:
        self._sink = sink
        self._store = store
        self._slot = slot
        self._settle = settle
        self._timeout = timeout
        self._connection: Connected | None = None  # what the client's current connection found
        self._recorded: StoredHistory | None = None  # what the file holds, once this incarnation checked

    def connected(self, connection: Connected) -> None:
        self._connection = connection
        self._sink.connected(connection)

    def resume_point(self) -> ResumePoint:
        """Called by the client once per connection when it reuses the slot, before it streams."""
        connection = self._current()
        current = History.of(connection.system)
        stored = self._store.load()
        reason = history_change(stored, current, connection.slot.confirmed_flush_lsn)
        if reason is None:
            if stored is None or stored.history != current:
                stored = StoredHistory(current)
                self._store.save(stored)
            self._recorded = stored
            return self._sink.resume_point()
        logger.warning("every shape is invalidated: %s", reason)
        self._mark_pending(stored)
        self._purge(SlotRecreated(self._slot, reason))
        self._record(StoredHistory(current))
        return ResumePoint()  # positions of the old history mean nothing: skip nothing, acknowledge nothing

    def deliver(self, event: ReplicationEvent) -> Pending | None:
        if event.__class__ is SlotRecreated:
            assert isinstance(event, SlotRecreated)
            self._mark_pending(self._store.load())  # before anything that may fail
            current = History.of(self._current().system)
            self._purge(event)
            self._record(StoredHistory(current))
            return None
        return self._sink.deliver(event)

    def flushing(self, lsn: int) -> None:
        """The client is about to report ``lsn`` to Postgres as flushed: record it first (fsynced)."""
        recorded = self._recorded
        if recorded is not None and lsn > recorded.flushed:
            self._record(StoredHistory(recorded.history, flushed=lsn))
        self._sink.flushing(lsn)

    def _current(self) -> Connected:
        if self._connection is None:
            raise RuntimeError("the replication client has not reported its connection to the history guard")
        return self._connection

    def _record(self, stored: StoredHistory) -> None:
        self._store.save(stored)
        self._recorded = stored

    def _mark_pending(self, stored: StoredHistory | None) -> None:
        """Record that every shape must go: until the purge is confirmed, each start purges again."""
        if stored is None or not stored.purge_pending:
            history = stored.history if stored is not None else History("", 0)
            self._store.save(StoredHistory(history, purge_pending=True))

    def _purge(self, event: SlotRecreated) -> None:
        """Have every shape removed (once marked pending): deliver ``event`` downstream, then settle it."""
        pending = self._sink.deliver(event)
        if pending is not None:
            pending.get(timeout=self._timeout)
        self._settle(event)
