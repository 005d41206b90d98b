"""Transaction ids and snapshots: which replicated transactions a shape's initial snapshot already contains.

The snapshot records ``pg_current_snapshot()``, whose xids are 64-bit (``xid8``: epoch << 32 | xid), while
pgoutput's Begin carries the 32-bit xid.  A 32-bit xid is widened to the 64-bit xid closest to the
snapshot's ``xmax``: Postgres keeps every live xid within 2^31 of the next one (wraparound protection), so
the transactions that can reach a new shape are all within that window and the widening is exact, across
an epoch boundary too.

A transaction is in the snapshot (already visible, so dropped from the log) when
``xid < xmin or (xid < xmax and xid not in xip)``.  Note that since PG 14 ``xmax`` is the latest completed
xid + 1, so a transaction still running at snapshot time may have ``xid >= xmax`` without being in ``xip``.

When to stop filtering: Electric stops at the first transaction with ``xid >= xmax``.  That is unsafe: a
commit record is written before the backend leaves the proc array, so a transaction T1 (xid >= xmax, not
visible) can precede in the WAL a transaction T2 that the snapshot sees; stopping at T1 would duplicate
T2.  Instead, the snapshot records ``pg_current_wal_insert_lsn()`` in the same statement as
``pg_current_snapshot()``: every visible transaction's commit record was inserted before it, so the first
transaction whose commit LSN is at or past that position ends the filtering for good (transactions arrive in
commit-LSN order).  Until then, each transaction is judged by visibility alone.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PgSnapshot", "SnapshotFilter", "widen_xid"]

_MOD = 1 << 32
_HALF = 1 << 31


def widen_xid(xid: int, reference: int) -> int:
    """The 64-bit xid whose low 32 bits are ``xid`` and which lies within 2^31 of ``reference`` (an xid8)."""
    diff = (xid - reference) % _MOD
    if diff >= _HALF:
        diff -= _MOD
    return reference + diff


@dataclass(frozen=True, slots=True)
class PgSnapshot:
    """``pg_snapshot`` / ``txid_snapshot`` values, 64-bit."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> PgSnapshot:
        """``"xmin:xmax:xip1,xip2"`` (the text output of ``pg_current_snapshot()``)."""
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"not a pg_snapshot: {text!r}")
        try:
            xmin, xmax = int(parts[0]), int(parts[1])
            xip = frozenset(int(x) for x in parts[2].split(",")) if parts[2] else frozenset()
        except ValueError:
            raise ValueError(f"not a pg_snapshot: {text!r}") from None
        if not xmin <= xmax or any(not xmin <= x < xmax for x in xip):
            raise ValueError(f"inconsistent pg_snapshot: {text!r}")
        return cls(xmin, xmax, xip)

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(str(x) for x in sorted(self.xip))}"

    @property
    def xip_sorted(self) -> list[int]:
        return sorted(self.xip)

    def is_visible(self, xid8: int) -> bool:
        """Whether a transaction with this 64-bit xid is committed in the snapshot (if it commits)."""
        return xid8 < self.xmin or (xid8 < self.xmax and xid8 not in self.xip)

    def sees(self, xid: int) -> bool:
        """:meth:`is_visible` for a replicated transaction's 32-bit xid (widened next to ``xmax``)."""
        return self.is_visible(widen_xid(xid, self.xmax))


class SnapshotFilter:
    """Decides, per incoming transaction (in commit order), whether the snapshot already holds it.

    ``wal_lsn`` is ``pg_current_wal_insert_lsn()`` read in the snapshot's first statement.  ``keep(xid,
    commit_lsn)`` takes each transaction's 32-bit xid and commit LSN once; ``active`` turns False for good at
    the first transaction committed at or past ``wal_lsn``, after which everything is kept unchecked.
    """

    __slots__ = ("active", "snapshot", "wal_lsn")

    def __init__(self, snapshot: PgSnapshot, wal_lsn: int, active: bool = True) -> None:
        self.snapshot = snapshot
        self.wal_lsn = wal_lsn
        self.active = active

    def keep(self, xid: int, commit_lsn: int) -> bool:
        if not self.active:
            return True
        if commit_lsn >= self.wal_lsn:
            self.active = False
            return True
        return not self.snapshot.sees(xid)
