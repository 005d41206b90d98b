"""Where a shape log's item sequences end: :class:`SeqPosition`, :class:`SeqFiles`, and :class:`SyncPoint`.

Why this module exists: the positions are plain state shared by the writer (which advances them), the
layout functions (:mod:`sync.storage.log_layout`, :mod:`sync.storage.snapshot_writer`: they compute the next
position from one), recovery (which rebuilds one from the files) and the flush ticker (which carries sync
points); here they need nothing but the format, so every one of those imports them without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sync.offsets import LogOffset
from sync.storage.format import CHUNK, ITEM

__all__ = ["SeqFiles", "SeqPosition", "SyncPoint"]

_ITEM_SIZE = ITEM.size


class SyncPoint(NamedTuple):
    """What a group fsync started now makes durable (``ShapeLogWriter.sync_point``).  A NamedTuple: every
    flush round takes one per log with unsynced data (thousands per round with many shapes)."""

    writes: int  # the writer's write count when taken
    items: int  # live-log entries written by then
    last: LogOffset | None  # the last complete transaction's last item by then


@dataclass(slots=True)
class SeqPosition:
    """Where a sequence's files end (written, not necessarily durable or visible)."""

    items: int = 0
    json_len: int = 0
    chunks: int = 0
    open_chunk_bytes: int = 0
    last: LogOffset | None = None


class SeqFiles:
    """One item sequence of a shape log (``log`` or ``snapshot``): its file names, its position, and which
    of its files have writes not yet fsynced."""

    def __init__(self, prefix: str, pos: SeqPosition) -> None:
        self.prefix = prefix
        self.pos = pos
        self.json = prefix + ".json"
        self.items = prefix + ".items"
        self.chunks = prefix + ".chunks"
        self.dirty_names: set[str] = set()

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_names)

    def sizes(self) -> dict[str, int]:
        """The sizes of this sequence's files, which end at ``pos`` (format: :mod:`sync.storage.format`; the
        snapshot has no ``.items`` file)."""
        pos = self.pos
        sizes = {self.json: pos.json_len, self.chunks: pos.chunks * CHUNK.size}
        if self.prefix == "log":
            sizes[self.items] = pos.items * _ITEM_SIZE
        return sizes
