"""Shared live waits: every request parked past the same offset of the same shape waits on ONE registration.

Why: a popular shape has thousands of clients long-polling at the same offset (issue 7).  One
:class:`~sync.shapes.waiters.DataWaiter` each means thousands of ``AwaitData`` tells, thousands of entries in
the consumer's :class:`~sync.shapes.waiters.WaiterList`, and on a change thousands of
``ThreadingFuture.set`` calls made one by one by the consumer before the first response can start.  Here the
first request at ``(consumer, offset)`` registers one :class:`WaitGroup` (it has the ``set`` of a future) and
the next ones join it; on a change the consumer completes that one group, which sets one event all members
wait on (under gevent: one hub callback wakes them all, the same path as the HTTP stack's own floor).

Lifetime: the group is registered with a deadline ``budget`` seconds away, so a request may join only
within ``join_window`` seconds of its creation (it then still waits at most ``budget - join_window``); later
requests start a fresh group.  The last member to give up cancels the registration (``CancelWait``); a
completed group is withdrawn at once so later requests register afresh (the consumer then answers at once
if data is already there).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from sync import runtime
from sync.offsets import LogOffset
from sync.shapes.waiters import AwaitData, CancelWait, WaitResult

__all__ = ["SharedWaiter", "SharedWaits", "WaitGroup"]


class WaitGroup:
    """One registration in a consumer shared by the requests parked past ``after``; completed once."""

    __slots__ = ("_event", "_owner", "after", "cancelled", "consumer", "created", "members", "result")

    def __init__(
        self, owner: SharedWaits, consumer: pykka.ActorRef[Any], after: LogOffset, now: float
    ) -> None:
        self._owner = owner
        self._event = runtime.Event()
        self.consumer = consumer
        self.after = after
        self.created = now
        self.members = 0
        self.cancelled = False
        self.result: WaitResult | None = None

    def set(self, value: WaitResult | None = None) -> None:
        """Called by the consumer (the :class:`~sync.shapes.waiters.Waiter` protocol): wake every member."""
        self.result = value
        self._owner._withdraw(self)
        self._event.set()

    def wait(self, timeout: float) -> WaitResult | None:
        if self._event.wait(timeout):
            return self.result
        return None


class SharedWaits:
    """The open groups of one process, keyed by ``(consumer, offset)``."""

    def __init__(
        self, *, budget: float, join_window: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if not 0 < join_window < budget:
            raise ValueError("join_window must be positive and below budget")
        self._groups: dict[tuple[str, LogOffset], WaitGroup] = {}
        self._budget = budget
        self._join_window = join_window
        self._monotonic = monotonic
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._groups)

    def join(self, consumer: pykka.ActorRef[Any], after: LogOffset) -> SharedWaiter:
        """Wait for data past ``after`` (at most ``budget - join_window`` seconds from now).

        Raises ``pykka.ActorDeadError`` if the consumer is gone (the shape was removed)."""
        key = (consumer.actor_urn, after)
        now = self._monotonic()
        with self._lock:
            group = self._groups.get(key)
            if group is not None and now - group.created <= self._join_window:
                group.members += 1
                return SharedWaiter(self, group)
            group = WaitGroup(self, consumer, after, now)
            group.members = 1
            self._groups[key] = group
        try:
            consumer.tell(AwaitData(after, group, now + self._budget))
        except pykka.ActorDeadError:
            self._withdraw(group)
            raise
        return SharedWaiter(self, group)

    def _withdraw(self, group: WaitGroup) -> None:
        """No new member for ``group`` (completed, cancelled or its consumer died)."""
        key = (group.consumer.actor_urn, group.after)
        with self._lock:
            if self._groups.get(key) is group:
                del self._groups[key]

    def _leave(self, group: WaitGroup) -> None:
        """A member gave up; the last one withdraws the registration from the consumer."""
        if group.result is not None:
            return  # completed: nothing to withdraw, the count no longer matters (the common case)
        with self._lock:
            group.members -= 1
            last = group.members == 0 and group.result is None and not group.cancelled
            if last:
                group.cancelled = True
                key = (group.consumer.actor_urn, group.after)
                if self._groups.get(key) is group:
                    del self._groups[key]
        if last:
            try:
                group.consumer.tell(CancelWait(group))
            except pykka.ActorDeadError:
                return


class SharedWaiter:
    """One request's membership in a :class:`WaitGroup` (the same interface as ``DataWaiter``)."""

    __slots__ = ("_done", "_group", "_owner")

    def __init__(self, owner: SharedWaits, group: WaitGroup) -> None:
        self._owner = owner
        self._group = group
        self._done = False

    def wait(self, timeout: float) -> WaitResult | None:
        """The result, or None on timeout (the membership is then given up)."""
        result = self._group.wait(timeout)
        if result is None:
            self.cancel()
        return result

    def cancel(self) -> None:
        """Give up the membership (idempotent; harmless after completion)."""
        if self._done:
            return
        self._done = True
        self._owner._leave(self._group)
