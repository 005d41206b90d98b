"""State of the Connection subtree that outlives its actors: the status shown by the health endpoint.

Why this module exists: the Lock and ReplicationClient actors are restarted on every connection failure,
but the health endpoint must keep showing what is going on (``waiting`` for the instance lock, the last
error with its fix).  The subtree builder creates one :class:`ConnectionStatus` (and one
:class:`~sync.postgres.backoff.Backoff`, so restarts slow down instead of looping) for every incarnation.
"""

from __future__ import annotations

import threading
import time
from typing import Literal, Protocol

from sync.postgres.errors import DbConnectionError
from sync.replication.acks import AckTracker

__all__ = ["ConnectionStatus", "State"]


State = Literal["starting", "waiting", "active"]


class _Tracked(Protocol):
    """A reader loop: its ack bookkeeping exists once it is streaming."""

    @property
    def tracker(self) -> AckTracker | None: ...


class ConnectionStatus:
    """Thread-safe: written by the reader loops, read by the health endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: State = "starting"
        self._error: DbConnectionError | None = None
        self._error_at: float | None = None
        self._reader: _Tracked | None = None

    @property
    def state(self) -> State:
        return self._state

    @property
    def error(self) -> DbConnectionError | None:
        return self._error

    def set_state(self, state: State) -> None:
        with self._lock:
            self._state = state
            if state == "active":
                self._error = None
                self._error_at = None

    def fail(self, error: DbConnectionError) -> None:
        with self._lock:
            if self._state == "active":
                self._state = "starting"
            self._error = error
            self._error_at = time.time()

    def follow(self, reader: _Tracked) -> None:
        """The current client incarnation registers its reader loop (for :meth:`wal_positions`)."""
        self._reader = reader

    def wal_positions(self) -> tuple[int, int] | None:
        """``(acknowledged, server)`` WAL positions of the current reader loop, for metrics; read-only.

        ``acknowledged``: the flush LSN the client reports in its standby status updates (the newest one
        it decided on; it reaches the server with the next update, at most one status interval later).
        ``server``: the highest WAL position the server told us about (keepalive ``wal_end`` or the end of
        the last transaction received), never below ``acknowledged``.  None before the first stream.
        """
        reader = self._reader
        tracker = None if reader is None else reader.tracker
        if tracker is None:
            return None
        acknowledged = tracker.confirmed
        return acknowledged, max(tracker.received, acknowledged)

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {"status": self._state}
            if self._error is not None:
                out["error"] = {**self._error.as_dict(), "at": self._error_at}
            return out
