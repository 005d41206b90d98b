"""State of the Connection subtree that outlives its actors: the status shown by the health endpoint.

Why this module exists: the Lock and ReplicationClient actors are restarted on every connection failure,
but the health endpoint must keep showing what is going on (``waiting`` for the instance lock, the last
error with its fix).  The subtree builder creates one :class:`ConnectionStatus` (and one
:class:`~sync.postgres.backoff.Backoff`, so restarts slow down instead of looping) for every incarnation.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

from sync.postgres.errors import DbConnectionError

__all__ = ["ConnectionStatus", "State"]


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
