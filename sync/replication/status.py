"""State of the Connection subtree that outlives its actors: status for health, restart backoff.

Why this module exists: the Lock and ReplicationClient actors are restarted on every connection failure,
but the health endpoint must keep showing what is going on (``waiting`` for the instance lock, the last
error with its fix) and restarts must slow down exponentially instead of looping.  The subtree builder
creates one :class:`ConnectionStatus` and one :class:`Backoff` and hands them to every incarnation.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

from sync.postgres.errors import DbConnectionError

__all__ = ["Backoff", "ConnectionStatus", "State"]

State = Literal["starting", "waiting", "active"]


class ConnectionStatus:
    """Thread-safe: written by the reader loops, read by the health endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: State = "starting"
        self._error: DbConnectionError | None = None
        self._error_at: float | None = None

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

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {"status": self._state}
            if self._error is not None:
                out["error"] = {**self._error.as_dict(), "at": self._error_at}
            return out


class Backoff:
    """Delay before the next (re)start: 0 the first time, then ``base`` doubling up to ``cap``;
    at least ``slow`` after a misconfiguration (retry_may_fix false); reset by :meth:`succeeded`."""

    def __init__(self, *, base: float = 1.0, cap: float = 10.0, slow: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.slow = slow
        self._failures = 0
        self._misconfigured = False

    def delay(self) -> float:
        if self._failures == 0:
            return 0.0
        d: float = min(self.cap, self.base * 2.0 ** (self._failures - 1))
        return max(d, self.slow) if self._misconfigured else d

    def failed(self, error: DbConnectionError) -> None:
        self._failures += 1
        self._misconfigured = error.misconfiguration

    def succeeded(self) -> None:
        self._failures = 0
        self._misconfigured = False
