"""Which LSN the client may report as flushed: pure bookkeeping (architecture §6, hard spot 2).

Why this module exists: acknowledging too far loses data after a crash (Postgres would not resend it);
never advancing pins WAL on the server forever.  The rules, after Electric's FlushTracker:

* the downstream's ``AckLsn(commit_lsn)`` makes everything up to that commit durable: flush = lsn + 1
  (decoding restarts after a transaction whose commit LSN is below the confirmed position);
* when every transaction handed downstream is durable and no transaction is being received, the client
  may acknowledge the ``wal_end`` of the last keepalive, so traffic on unpublished tables never pins the
  slot;
* the reported position never moves backwards and never drops below the slot's confirmed position.
"""

from __future__ import annotations

__all__ = ["AckTracker"]


class AckTracker:
    __slots__ = ("confirmed", "delivered", "durable", "received", "wal_end")

    def __init__(self, *, confirmed: int, processed: int = 0, durable: int = 0) -> None:
        self.confirmed = confirmed  # the slot's confirmed_flush_lsn: already acknowledged
        self.delivered = processed  # commit LSN of the last transaction handed downstream (or processed)
        self.durable = durable  # commit LSN of the last transaction the downstream made durable
        self.received = confirmed  # highest WAL position seen (the 'write' field)
        self.wal_end = 0  # wal_end of the last keepalive

    def on_delivered(self, commit_lsn: int, end_lsn: int) -> None:
        """The commit fragment of a transaction was handed downstream."""
        self.delivered = max(self.delivered, commit_lsn)
        self.received = max(self.received, end_lsn)

    def on_ack(self, commit_lsn: int) -> None:
        self.durable = max(self.durable, commit_lsn)

    def on_keepalive(self, wal_end: int) -> None:
        self.wal_end = max(self.wal_end, wal_end)
        self.received = max(self.received, wal_end)

    @property
    def nothing_pending(self) -> bool:
        return self.durable >= self.delivered

    def flush_lsn(self, *, in_transaction: bool) -> int:
        """The position to report as flushed (and applied) now."""
        flush = self.confirmed
        if self.durable:
            flush = max(flush, self.durable + 1)
        if not in_transaction and self.durable >= self.delivered:
            flush = max(flush, self.wal_end)
        self.confirmed = flush
        return flush
