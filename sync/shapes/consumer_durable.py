"""What a consumer reports as durable itself, when its collector gave it no report sink.

Why a module of its own: with a sink (``DurableReports``, what the ShapeLogCollector answers
``RegisterShape`` with) the storage reports straight to the collector and settles transactions that added
nothing to the log.  Without one, the storage reports to the consumer (``StorageDurable``) and the consumer
forwards ``ShapeDurable``; an empty transaction is then settled here, as ``<commit_lsn>_0``, once everything
appended before it is durable, so a transaction dropped by the snapshot filter never pins the
acknowledgement.  Pure bookkeeping: the :class:`~sync.shapes.consumer.Consumer` actor sends what it returns.
"""

from __future__ import annotations

from sync.offsets import LogOffset

__all__ = ["DirectDurability"]


class DirectDurability:
    """The offsets a consumer without a report sink reports to the collector."""

    __slots__ = ("_pending_empty", "durable")

    def __init__(self) -> None:
        self.durable = LogOffset.BEFORE_ALL  # what the storage reported durable
        self._pending_empty: tuple[int, LogOffset | None] | None = None

    def settle_empty(self, commit_lsn: int, appended: LogOffset | None) -> LogOffset | None:
        """A transaction of ``commit_lsn`` added nothing to the log, which ends at ``appended``: the offset to
        report now, or None when it must wait until ``appended`` is durable."""
        if appended is None or appended <= self.durable:
            return LogOffset(commit_lsn, 0)
        self._pending_empty = (commit_lsn, appended)
        return None

    def stored(self, offset: LogOffset) -> LogOffset:
        """The storage made everything up to ``offset`` durable: the offset to report."""
        self.durable = durable = max(self.durable, offset)
        settled = durable
        pending = self._pending_empty
        if pending is not None and (pending[1] is None or pending[1] <= durable):
            settled = max(settled, LogOffset(pending[0], 0))
            self._pending_empty = None
        return settled
