"""Exponential restart backoff shared by the actors of one connection subtree.

Why this module exists: a supervisor restarts a crashed actor at once, and its restart intensity would
soon give up on a database that is down for a minute.  The subtree builder creates one :class:`Backoff`
that outlives the actors; each incarnation sleeps :meth:`Backoff.delay` before connecting, records its
failure, and the reader resets it once streaming has been stable for a while.
"""

from __future__ import annotations

from sync.postgres.errors import DbConnectionError

__all__ = ["Backoff"]


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
