"""When a shape's log has grown too long for its own good: rotated (a new handle; clients refetch).

Why this module exists: a shape's log only grows.  On a busy table it holds every change since the shape was
created (a shape of a table updated 1,000 times a second gains ~25 GB a day), it fills the disk, and a new
client replays all of it after the snapshot.  Electric has no answer to this either (its users' #4470,
#1582: "logs replay every update").  With ``shapes.log_rotate_ratio`` set, a shape whose log has grown past
that many times its snapshot (and past ``shapes.log_rotate_min_mb``) is invalidated like a TRUNCATE would
invalidate it: its clients get 409 and refetch a fresh snapshot of what the shape holds now, and its files
are deleted.  A client then never downloads more than about ``(ratio + 1)`` snapshots' worth; the cost is
one refetch per client per rotation, which the floor keeps rare for small shapes, and which grows rarer as
the new snapshots grow with an insert-only table.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.storage.errors import ShapeGone
from sync.storage.reader import ShapeLogReader

__all__ = ["LogRotation", "SizeWatch"]


@dataclass(frozen=True, slots=True)
class LogRotation:
    """Rotate once the log's JSON bytes reach ``max(min_bytes, ratio * the snapshot's JSON bytes)``."""

    ratio: float
    min_bytes: int

    @classmethod
    def of(cls, ratio: float, min_mb: int) -> LogRotation | None:
        """The settings' rule (None when ``ratio`` is 0: never)."""
        return cls(ratio, min_mb * 1024 * 1024) if ratio > 0 else None

    def limit(self, snapshot_bytes: int) -> int:
        return max(self.min_bytes, int(self.ratio * snapshot_bytes))

    def reason(self, log_bytes: int, snapshot_bytes: int) -> str:
        return (
            f"its log reached {log_bytes} bytes, over {self.ratio:g} times its snapshot's {snapshot_bytes} "
            "(shapes.log_rotate_ratio): clients refetch a fresh snapshot"
        )


class SizeWatch:
    """A consumer's check of its log's size after each append: one read of the log's size until it reaches
    the floor (or the limit computed there from the completed snapshot's size)."""

    __slots__ = ("_at", "_rotation")

    def __init__(self, rotation: LogRotation) -> None:
        self._rotation = rotation
        self._at = rotation.min_bytes  # log bytes from which to look again

    def due(self, reader: ShapeLogReader) -> str | None:
        """The reason to rotate the shape now, else None (once given, never again)."""
        if not self._at:
            return None
        try:
            log = reader.log_json_bytes()
            if log < self._at or not reader.snapshot_complete:
                return None
            snapshot = reader.snapshot_json_bytes()
        except ShapeGone:
            return None
        limit = self._rotation.limit(snapshot)
        if log < limit:
            self._at = limit
            return None
        self._at = 0
        return self._rotation.reason(log, snapshot)
