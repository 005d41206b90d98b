"""Which LSN may be acknowledged to Postgres: the durability bookkeeping of the ShapeLogCollector.

Architecture hard spot 2: the flush LSN sent to Postgres is the end LSN of the newest transaction such that
it and every transaction before it have been made durable by every shape it was routed to.  Shapes a
transaction did not touch never hold it back, and a transaction routed to no shape is durable at once.

Each routed transaction is registered with, per affected shape, the offset of its last item in that
shape's log.  A shape's storage reports durable offsets in increasing order; every registered transaction
of that shape at or below the reported offset is then settled for that shape.  All operations are O(1)
amortised per (transaction, shape) pair: no scan over all shapes or all pending transactions.

A shape that disappears (deleted, invalidated, crashed) is removed: its pending entries stop pinning the
acknowledgement (its log is gone, so nothing of it needs replaying).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sync.offsets import LogOffset

__all__ = ["FlushTracker"]


@dataclass(slots=True)
class _Txn:
    end_lsn: int
    waiting_on: set[str] = field(default_factory=set)


class FlushTracker:
    """Pure state machine; the collector actor owns one."""

    def __init__(self, acked_lsn: int = 0) -> None:
        self._pending: deque[_Txn] = deque()
        self._per_shape: dict[str, deque[tuple[LogOffset, _Txn]]] = {}
        self._durable: dict[str, LogOffset] = {}
        self._acked = acked_lsn
        self._last_end = acked_lsn

    @property
    def ackable_lsn(self) -> int:
        """The highest end LSN all of whose transactions (and all earlier ones) are durable everywhere."""
        return self._acked

    @property
    def last_end_lsn(self) -> int:
        """End LSN of the newest transaction registered."""
        return self._last_end

    @property
    def idle(self) -> bool:
        """Nothing is waiting for durability: the replication client may acknowledge up to the server's
        ``wal_end`` for traffic that did not reach us (other tables, other databases)."""
        return not self._pending

    def pending_shapes(self) -> Iterable[str]:
        return (h for h, q in self._per_shape.items() if q)

    def register(self, end_lsn: int, last_offsets: dict[str, LogOffset]) -> int:
        """A committed transaction was routed; ``last_offsets`` maps each affected shape to the offset of the
        transaction's last item in its log.  Returns the (possibly advanced) ackable LSN."""
        if end_lsn < self._last_end:
            msg = f"transactions must be registered in commit order ({end_lsn} < {self._last_end})"
            raise ValueError(msg)
        self._last_end = end_lsn
        txn = _Txn(end_lsn)
        for handle, offset in last_offsets.items():
            if self._durable.get(handle, LogOffset.BEFORE_ALL) >= offset:
                continue  # already reported durable (a storage may fsync before the collector registers)
            txn.waiting_on.add(handle)
            self._per_shape.setdefault(handle, deque()).append((offset, txn))
        self._pending.append(txn)
        return self._advance()

    def durable(self, handle: str, offset: LogOffset) -> int:
        """Shape ``handle`` has made everything up to ``offset`` durable.  Returns the ackable LSN."""
        if offset > self._durable.get(handle, LogOffset.BEFORE_ALL):
            self._durable[handle] = offset
        queue = self._per_shape.get(handle)
        while queue and queue[0][0] <= offset:
            _, txn = queue.popleft()
            txn.waiting_on.discard(handle)
        return self._advance()

    def remove_shape(self, handle: str) -> int:
        """Forget a shape: it no longer pins anything.  Returns the ackable LSN."""
        self._durable.pop(handle, None)
        for _, txn in self._per_shape.pop(handle, ()):
            txn.waiting_on.discard(handle)
        return self._advance()

    def _advance(self) -> int:
        while self._pending and not self._pending[0].waiting_on:
            self._acked = self._pending.popleft().end_lsn
        return self._acked
