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

from sync.offsets import INF, LogOffset

__all__ = ["FlushTracker"]

_M = INF + 1  # an offset as one int: tx * _M + op orders as (tx, op) does (op <= INF)
_BEFORE_ALL = LogOffset.BEFORE_ALL.tx * _M + LogOffset.BEFORE_ALL.op


def _key(offset: LogOffset) -> int:
    return offset.tx * _M + offset.op


class _Txn:
    __slots__ = ("end_lsn", "waiting")

    def __init__(self, end_lsn: int) -> None:
        self.end_lsn = end_lsn
        self.waiting = 0  # (shape, offset) entries not durable yet


class FlushTracker:
    """Pure state machine; the collector actor owns one.

    With thousands of shapes a transaction is registered with thousands of them, so the per-pair bookkeeping
    allocates nothing the cyclic garbage collector tracks: offsets are kept as ints, a transaction counts the
    shapes it waits on, and each shape's queue holds ``offset, txn`` pairs flattened (two entries per pair).
    """

    def __init__(self, acked_lsn: int = 0) -> None:
        self._pending: deque[_Txn] = deque()
        self._per_shape: dict[str, deque[int | _Txn]] = {}  # offset key, txn, offset key, txn, ...
        self._durable: dict[str, int] = {}  # offset keys
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
        txn = self._begin(end_lsn)
        for handle, offset in last_offsets.items():
            self._wait(txn, handle, _key(offset))
        self._pending.append(txn)
        return self._advance()

    def register_commit(self, commit_lsn: int, handles: Iterable[str]) -> int:
        """``register(commit_lsn, {h: LogOffset(commit_lsn, 0) for h in handles})``: how the collector
        registers a transaction (its shapes report it durable as ``<commit_lsn>_0`` at the latest)."""
        txn = self._begin(commit_lsn)
        key = commit_lsn * _M
        for handle in handles:
            self._wait(txn, handle, key)
        self._pending.append(txn)
        return self._advance()

    def durable(self, handle: str, offset: LogOffset) -> int:
        """Shape ``handle`` has made everything up to ``offset`` durable.  Returns the ackable LSN."""
        key = _key(offset)
        if key > self._durable.get(handle, _BEFORE_ALL):
            self._durable[handle] = key
        queue = self._per_shape.get(handle)
        if queue:
            popleft = queue.popleft
            while queue and queue[0] <= key:  # type: ignore[operator]  # even entries are keys
                popleft()
                popleft().waiting -= 1  # type: ignore[union-attr]  # odd entries are txns
        return self._advance()

    def remove_shape(self, handle: str) -> int:
        """Forget a shape: it no longer pins anything.  Returns the ackable LSN."""
        self._durable.pop(handle, None)
        queue = self._per_shape.pop(handle, None)
        if queue:
            for txn in list(queue)[1::2]:
                txn.waiting -= 1  # type: ignore[union-attr]  # odd entries are txns
        return self._advance()

    def _begin(self, end_lsn: int) -> _Txn:
        if end_lsn < self._last_end:
            msg = f"transactions must be registered in commit order ({end_lsn} < {self._last_end})"
            raise ValueError(msg)
        self._last_end = end_lsn
        return _Txn(end_lsn)

    def _wait(self, txn: _Txn, handle: str, key: int) -> None:
        if self._durable.get(handle, _BEFORE_ALL) >= key:
            return  # already reported durable (a storage may fsync before the collector registers)
        queue = self._per_shape.get(handle)
        if queue is None:
            queue = self._per_shape[handle] = deque()
        queue.append(key)
        queue.append(txn)
        txn.waiting += 1

    def _advance(self) -> int:
        pending = self._pending
        while pending and not pending[0].waiting:
            self._acked = pending.popleft().end_lsn
        return self._acked
