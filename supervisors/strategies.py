"""Restart strategies and restart intensity: the pure decision part of a supervisor.

Why this module exists: keeping "which children does a crash affect" and "have we restarted too often"
free of actors makes them trivially testable. Names are Erlang/OTP's (see
https://learnyousomeerlang.com/supervisors and the OTP ``supervisor`` manual):

- ``one_for_one``: only the crashed child is restarted; its siblings are independent.
- ``one_for_all``: every child is stopped (reverse start order) and all are restarted (start order);
  for siblings that cannot work without each other.
- ``rest_for_one``: the crashed child and every child started *after* it are restarted; for chains
  where later children depend on earlier ones.

Restart intensity: more than ``max_restarts`` restarts within ``max_seconds`` means restarting does not
help; the supervisor then fails itself and its parent decides (escalation).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ONE_FOR_ALL",
    "ONE_FOR_ONE",
    "REST_FOR_ONE",
    "OneForAll",
    "OneForOne",
    "RestForOne",
    "RestartIntensity",
    "Strategy",
]


class Strategy:
    """Decides which children are restarted when one of them crashes."""

    name = "strategy"

    def affected(self, order: Iterable[str], failed: str) -> list[str]:
        """The ids to stop and restart (in start order), ``failed`` included. ``order`` is every
        child id in start order; one_for_one never iterates it (O(1) for dynamic supervisors)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class OneForOne(Strategy):
    """Restart only the child that crashed."""

    name = "one_for_one"

    def affected(self, order: Iterable[str], failed: str) -> list[str]:
        return [failed]


class OneForAll(Strategy):
    """Restart every child when one crashes."""

    name = "one_for_all"

    def affected(self, order: Iterable[str], failed: str) -> list[str]:
        return list(order)


class RestForOne(Strategy):
    """Restart the crashed child and every child started after it."""

    name = "rest_for_one"

    def affected(self, order: Iterable[str], failed: str) -> list[str]:
        ids = list(order)
        return ids[ids.index(failed) :]


ONE_FOR_ONE: Strategy = OneForOne()
ONE_FOR_ALL: Strategy = OneForAll()
REST_FOR_ONE: Strategy = RestForOne()


class RestartIntensity:
    """Sliding window of restart times: at most ``max_restarts`` within ``max_seconds``."""

    __slots__ = ("_times", "max_restarts", "max_seconds")

    def __init__(self, max_restarts: int = 3, max_seconds: float = 5.0) -> None:
        if max_restarts < 0 or max_seconds <= 0:
            msg = "max_restarts must be >= 0 and max_seconds > 0"
            raise ValueError(msg)
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self._times: list[float] | None = None  # created on the first restart (one per supervisor)

    def allow(self, now: float) -> bool:
        """Record one restart at ``now`` (monotonic seconds); False if the limit is exceeded."""
        times = self._times
        if times is None:
            times = self._times = []
        expired = 0
        while expired < len(times) and now - times[expired] > self.max_seconds:
            expired += 1
        if expired:
            del times[:expired]
        times.append(now)
        return len(times) <= self.max_restarts
