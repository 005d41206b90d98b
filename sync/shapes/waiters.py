"""Live waiters: requests parked until a shape has data beyond the offset they hold (hard spot 5).

A live request must not keep an actor busy while it waits.  The request creates a future, hands it to the
shape's consumer (``AwaitData``, a ``tell``) and blocks on the future itself; the consumer keeps the future
here and completes it when data past the request's offset becomes readable (written, not necessarily
fsynced), or when the shape goes away.  A waiter that times out removes itself (``CancelWait``); the
consumer also prunes waiters past their deadline whenever it adds one, so abandoned futures never pile up.

The request side is :class:`DataWaiter` (it sends ``AwaitData`` and ``CancelWait``); the consumer side is
:class:`WaiterList`, pure bookkeeping: completing a future never blocks (``ThreadingFuture.set`` only
notifies a condition), so thousands of waiters cost memory, not actor time.  The API does not park one
future per request: :mod:`sync.shapes.shared_waits` parks one shared waiter per (shape, offset).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import pykka

from sync.offsets import LogOffset

__all__ = ["AwaitData", "CancelWait", "DataWaiter", "WaitOutcome", "WaitResult", "Waiter", "WaiterList"]

WaitOutcome = Literal["data", "rotated", "stopped"]
"""``data``: the log has something past the waiter's offset; ``rotated``: the shape was invalidated or
deleted (the client must refetch: 409); ``stopped``: the shape's consumer stopped without rotating the shape
(engine shutdown or a crash; the request should answer 503/retry)."""


@dataclass(frozen=True, slots=True)
class WaitResult:
    """What a waiting request's future is completed with."""

    outcome: WaitOutcome
    latest: LogOffset | None = None  # the readable latest offset when outcome == "data"
    reason: str | None = None


class Waiter(Protocol):
    """Anything completed once with a :class:`WaitResult` (``pykka.ThreadingFuture`` fits)."""

    def set(self, value: WaitResult | None = None) -> None: ...


@dataclass(slots=True)
class _Entry:
    token: int
    after: LogOffset
    future: Waiter
    deadline: float
    seq: int  # which registration: heap items of an earlier waiter with the same token are stale


class WaiterList:
    """Waiters keyed by a token, completed in offset order; O(log n) per add, complete or prune."""

    __slots__ = ("_by_deadline", "_by_offset", "_entries", "_seq")

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        # Heap items outlive their entry (completed, cancelled); tokens are reused (``id(future)``), so each
        # item carries its registration's ``seq`` and only acts on the entry it was pushed for.
        self._by_offset: list[tuple[LogOffset, int, int]] = []
        self._by_deadline: list[tuple[float, int, int]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, token: int, after: LogOffset, future: Waiter, deadline: float) -> None:
        """Park ``future`` until data past ``after`` is readable; ``token`` identifies it for cancelling."""
        if token in self._entries:
            raise ValueError(f"waiter token {token} already registered")
        self._seq += 1
        entry = _Entry(token, after, future, deadline, self._seq)
        self._entries[token] = entry
        heapq.heappush(self._by_offset, (after, self._seq, token))
        heapq.heappush(self._by_deadline, (deadline, self._seq, token))

    def cancel(self, token: int) -> bool:
        """Forget a waiter (it timed out on its side).  True if it was still parked."""
        return self._entries.pop(token, None) is not None

    def prune(self, now: float) -> int:
        """Drop waiters whose deadline passed (their request stopped waiting).  Returns how many."""
        dropped = 0
        heap = self._by_deadline
        while heap and heap[0][0] <= now:
            _, seq, token = heapq.heappop(heap)
            if self._pop(token, seq) is not None:
                dropped += 1
        self._compact()
        return dropped

    def notify(self, latest: LogOffset) -> int:
        """Complete every waiter whose offset is below ``latest`` with ``data``.  Returns how many."""
        done = 0
        heap = self._by_offset
        result = WaitResult("data", latest)
        while heap and heap[0][0] < latest:
            _, seq, token = heapq.heappop(heap)
            entry = self._pop(token, seq)
            if entry is not None:
                entry.future.set(result)
                done += 1
        return done

    def complete_all(self, result: WaitResult) -> int:
        """Complete every waiter with ``result`` (shape rotated or consumer stopping)."""
        entries = list(self._entries.values())
        self._entries.clear()
        self._by_offset.clear()
        self._by_deadline.clear()
        for entry in entries:
            entry.future.set(result)
        return len(entries)

    def _pop(self, token: int, seq: int) -> _Entry | None:
        """Remove and return the entry of registration ``seq`` (None if that one is already gone)."""
        entry = self._entries.get(token)
        if entry is None or entry.seq != seq:
            return None
        del self._entries[token]
        return entry

    def _compact(self) -> None:
        """Rebuild the heaps when stale items dominate them (keeps memory proportional to waiters)."""
        live = len(self._entries)
        stale = max(len(self._by_offset), len(self._by_deadline))
        if stale > 64 and stale > 4 * live:
            self._by_offset = [(e.after, e.seq, t) for t, e in self._entries.items()]
            heapq.heapify(self._by_offset)
            self._by_deadline = [(e.deadline, e.seq, t) for t, e in self._entries.items()]
            heapq.heapify(self._by_deadline)


# -- the waiting side -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AwaitData:
    """tell (API): complete ``future`` with a WaitResult once data past ``after`` is readable.

    ``deadline`` (``time.monotonic()``) is when the request stops waiting; the consumer drops the waiter
    after it even if no CancelWait arrives.
    """

    after: LogOffset
    future: Waiter  # a ``pykka.ThreadingFuture`` or a shared WaitGroup (sync/shapes/shared_waits.py)
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelWait:
    """tell (API): the request waiting on ``future`` gave up (timed out or disconnected)."""

    future: Waiter


class DataWaiter:
    """The requesting side of :class:`AwaitData` (one live request): park a future in the consumer, block on
    it (cooperatively under gevent), cancel the registration if it times out.

    Raises ``pykka.ActorDeadError`` at construction if the consumer is gone (the shape was removed).
    """

    __slots__ = ("_consumer", "_done", "_future")

    def __init__(self, consumer: pykka.ActorRef[Any], after: LogOffset, timeout: float) -> None:
        self._consumer = consumer
        self._future: pykka.ThreadingFuture[WaitResult] = pykka.ThreadingFuture()
        self._done = False
        consumer.tell(AwaitData(after, self._future, time.monotonic() + timeout))

    def wait(self, timeout: float) -> WaitResult | None:
        """The result, or None on timeout (the registration is then cancelled)."""
        try:
            result = cast("WaitResult", self._future.get(timeout=timeout))
        except pykka.Timeout:
            self.cancel()
            return None
        self._done = True
        return result

    def cancel(self) -> None:
        """Withdraw the registration (idempotent; harmless after completion)."""
        if self._done:
            return
        self._done = True
        try:
            self._consumer.tell(CancelWait(self._future))
        except pykka.ActorDeadError:
            return
