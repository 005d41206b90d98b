"""Which LSN may be acknowledged to Postgres: the durability bookkeeping of the ShapeLogCollector.

Architecture hard spot 2: the flush LSN sent to Postgres is the end LSN of the newest transaction such that
it and every transaction before it have been made durable by every shape it was routed to.  Shapes a
transaction did not touch never hold it back, and a transaction routed to no shape is durable at once.

Each routed transaction is registered with, per affected shape, the offset of its last item in that
shape's log.  A shape's storage reports durable offsets in increasing order; a transaction is settled once
every one of its shapes reported an offset at or past its own.  Registering keeps the transaction's shapes
as they are (no work per shape); the oldest pending transaction is checked shape by shape, and a check
stops at the first shape not durable yet and resumes there at the next report.  Each (transaction, shape)
pair is therefore looked at once when it settles, and each report costs O(1) besides: no scan over all
shapes or all pending transactions, and no per-shape queue (with thousands of shapes per transaction, the
queues were most of the collector's per-row bookkeeping).

A shape that disappears (deleted, invalidated, crashed) is removed: the transactions registered until then
stop waiting for it (its log is gone, so nothing of it needs replaying); one registered later, after the
handle was registered again, waits for it as for any shape.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from sync.offsets import INF, LogOffset

__all__ = ["FlushTracker"]

_M = INF + 1  # an offset as one int: tx * _M + op orders as (tx, op) does (op <= INF)
_BEFORE_ALL = LogOffset.BEFORE_ALL.tx * _M + LogOffset.BEFORE_ALL.op


def _key(offset: LogOffset) -> int:
    return offset.tx * _M + offset.op


class _Txn:
    """A registered transaction: its shapes, each to reach ``key`` (or its own in ``keys``)."""

    __slots__ = ("blocking", "end_lsn", "key", "keys", "left", "seq")

    def __init__(
        self, end_lsn: int, seq: int, shapes: Iterable[str], key: int, keys: dict[str, int] | None
    ) -> None:
        self.end_lsn = end_lsn
        self.seq = seq  # registration order (a removed shape no longer pins those registered before)
        self.key = key
        self.keys = keys
        self.left: Iterator[str] = iter(shapes)  # the shapes not checked yet
        self.blocking: str | None = None  # the shape the last check stopped at (not durable then)


class FlushTracker:
    """Pure state machine; the collector actor owns one."""

    def __init__(self, acked_lsn: int = 0) -> None:
        self._pending: deque[_Txn] = deque()
        self._durable: dict[str, int] = {}  # offset keys
        self._removed: dict[str, int] = {}  # handle -> seq of the last transaction registered at its removal
        self._seq = 0
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

    def register(self, end_lsn: int, last_offsets: dict[str, LogOffset]) -> int:
        """A committed transaction was routed; ``last_offsets`` maps each affected shape to the offset of the
        transaction's last item in its log.  Returns the (possibly advanced) ackable LSN."""
        keys = {handle: _key(offset) for handle, offset in last_offsets.items()}
        return self._add(end_lsn, keys, 0, keys)

    def register_commit(self, commit_lsn: int, handles: Iterable[str]) -> int:
        """``register(commit_lsn, {h: LogOffset(commit_lsn, 0) for h in handles})``: how the collector
        registers a transaction (its shapes report it durable as ``<commit_lsn>_0`` at the latest).  The
        tracker keeps a copy of ``handles``."""
        return self._add(commit_lsn, list(handles), commit_lsn * _M, None)

    def durable(self, handle: str, offset: LogOffset) -> int:
        """Shape ``handle`` has made everything up to ``offset`` durable.  Returns the ackable LSN."""
        key = _key(offset)
        if key > self._durable.get(handle, _BEFORE_ALL):
            self._durable[handle] = key
        return self._advance()

    def remove_shape(self, handle: str) -> int:
        """Forget a shape: it no longer pins anything.  Returns the ackable LSN."""
        self._durable.pop(handle, None)
        if self._pending:
            self._removed[handle] = self._seq
        return self._advance()

    def _add(self, end_lsn: int, shapes: Iterable[str], key: int, keys: dict[str, int] | None) -> int:
        if end_lsn < self._last_end:
            msg = f"transactions must be registered in commit order ({end_lsn} < {self._last_end})"
            raise ValueError(msg)
        self._last_end = end_lsn
        self._seq += 1
        self._pending.append(_Txn(end_lsn, self._seq, shapes, key, keys))
        return self._advance()

    def _settled_for(self, txn: _Txn, handle: str) -> bool:
        key = txn.key if txn.keys is None else txn.keys[handle]
        return self._durable.get(handle, _BEFORE_ALL) >= key or self._removed.get(handle, -1) >= txn.seq

    def _advance(self) -> int:
        pending = self._pending
        while pending:
            txn = pending[0]
            blocking = txn.blocking
            if blocking is not None:
                if not self._settled_for(txn, blocking):
                    break
                txn.blocking = None
            if not self._check(txn):
                break
            self._acked = pending.popleft().end_lsn
        if not pending and self._removed:
            self._removed.clear()  # no transaction registered before a removal is left
        return self._acked

    def _check(self, txn: _Txn) -> bool:
        """Whether every shape of ``txn`` not checked yet is durable for it; else stop at the first that is
        not (``txn.blocking``)."""
        durable = self._durable.get
        removed = self._removed
        if txn.keys is None:
            key = txn.key
            for handle in txn.left:
                if durable(handle, _BEFORE_ALL) < key and not (removed and self._settled_for(txn, handle)):
                    txn.blocking = handle
                    return False
            return True
        for handle in txn.left:
            if not self._settled_for(txn, handle):
                txn.blocking = handle
                return False
        return True
