"""The shapes the ShapeCache is building: one build per definition, a bounded number at once.

Why this module exists: the bookkeeping of concurrent creation is pure logic, kept out of the actor file.
Every request for a definition being built waits for that one build (its waiter joins the build); builds
start in request order, at most ``limit`` at once; a shape invalidated while it is still being built is
marked doomed and removed as soon as it is built.  No I/O, no actors: the waiters are opaque here (the
cache's futures).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sync.shapes.definition import ShapeDefinition

__all__ = ["Builds", "Finished"]

W = TypeVar("W")


@dataclass(slots=True)
class _Build(Generic[W]):
    handle: str
    waiters: list[W]


@dataclass(frozen=True, slots=True)
class Finished(Generic[W]):
    """What a finished build leaves to do: answer ``waiters``; remove the shape if ``doomed`` (the reason)."""

    waiters: list[W] = field(default_factory=list)
    doomed: str | None = None


class Builds(Generic[W]):
    """Builds reserved (by definition), queued and running."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._pending: dict[ShapeDefinition, _Build[W]] = {}
        self._queued: deque[tuple[str, ShapeDefinition]] = deque()
        self._running = 0
        self._doomed: dict[str, str] = {}  # handles invalidated while still being built

    def __len__(self) -> int:
        """Shapes reserved and not built yet (they count against ``max_shapes``)."""
        return len(self._pending)

    def join(self, definition: ShapeDefinition, waiter: W) -> bool:
        """Add ``waiter`` to the build of ``definition`` if one is under way; False if there is none."""
        build = self._pending.get(definition)
        if build is None:
            return False
        build.waiters.append(waiter)
        return True

    def reserve(self, handle: str, definition: ShapeDefinition, waiter: W) -> None:
        """Queue a new build of ``definition`` as ``handle``, ``waiter`` its first waiter."""
        self._pending[definition] = _Build(handle, [waiter])
        self._queued.append((handle, definition))

    def startable(self) -> list[tuple[str, ShapeDefinition]]:
        """The queued builds to start now (counted as running from here)."""
        started: list[tuple[str, ShapeDefinition]] = []
        while self._queued and self._running < self._limit:
            started.append(self._queued.popleft())
            self._running += 1
        return started

    def finished(self, definition: ShapeDefinition, handle: str) -> Finished[W]:
        """The build of ``handle`` ended (built or failed): a slot is free (see :meth:`startable`)."""
        self._running -= 1
        build = self._pending.pop(definition, None)
        return Finished(build.waiters if build is not None else [], self._doomed.pop(handle, None))

    def doom(self, handle: str, reason: str) -> bool:
        """Mark ``handle`` for removal once built; False if it is not being built."""
        if not any(b.handle == handle for b in self._pending.values()):
            return False
        self._doomed[handle] = reason
        return True

    def drain(self) -> list[W]:
        """Every waiter of every build, forgetting the builds (the cache is stopping)."""
        waiters = [w for b in self._pending.values() for w in b.waiters]
        self._pending.clear()
        return waiters
