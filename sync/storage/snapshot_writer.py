"""Bulk appends to a shape's snapshot sequence: whole blocks of items, never one item at a time.

Why: an initial snapshot is up to millions of rows written once, in order, and read only chunk by chunk
(format version 2 keeps no per-item entry for the snapshot, see :mod:`sync.storage.format`).  So a block of
items arrives as one ``bytes`` with its item count, already joined by the ``,`` the JSON file wants (the
snapshot worker's blocks, told apart by :data:`ITEM_BOUNDARY`) or by :data:`SEP` (then replaced), and costs
a few C-level passes: ``count``/``find`` of the boundary to place the chunk closes (a 10-byte marker is
found several times faster than a 1-byte one is counted).  Python never touches an item.

Pure: no files, no state beyond the :class:`~sync.storage.positions.SeqPosition` it is handed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

from sync.offsets import LogOffset
from sync.storage.format import CHUNK
from sync.storage.positions import SeqPosition

__all__ = [
    "ITEM_BOUNDARY",
    "SEP",
    "SEP_BOUNDARY",
    "BlockWrite",
    "Boundary",
    "join_items",
    "layout_block",
    "split_items",
]

# ASCII record separator: JSON never contains it raw (control characters are escaped inside strings).
SEP: Final = b"\x1e"


class Boundary(NamedTuple):
    """How items are told apart in a block: every 1-byte separator between two items sits at offset ``at``
    of an occurrence of ``marker``, and ``marker`` occurs nowhere else in the block."""

    marker: bytes
    at: int


SEP_BOUNDARY: Final = Boundary(SEP, 0)
# Snapshot items are objects ``{"key":…,"value":{…},"headers":{…}}``: ``}}`` ends an item only (values and
# names are JSON strings, where a ``"`` is always escaped), so ``}},{"key":`` is found between items only.
ITEM_BOUNDARY: Final = Boundary(b'}},{"key":', 2)


class BlockWrite:
    """What to append for one block: the JSON file bytes (the trailing ``,`` excluded) and the chunk
    entries closed by the block."""

    __slots__ = ("chunks", "json")

    def __init__(self, json: bytes, chunks: bytes) -> None:
        self.json = json
        self.chunks = chunks


def join_items(jsons: Sequence[bytes]) -> bytes:
    """A block of separate item JSONs (for callers holding a list), to lay out with :data:`SEP_BOUNDARY`."""
    return SEP.join(jsons)


def split_items(block: bytes, boundary: Boundary = ITEM_BOUNDARY) -> list[bytes]:
    """The items of a block (the inverse of joining them; for checks and tests)."""
    marker, at = boundary
    left, right = marker[:at], marker[at + 1 :]
    parts = block.split(marker)
    last = len(parts) - 1
    return [(right if i else b"") + part + (left if i < last else b"") for i, part in enumerate(parts)]


def _seps(block: bytes, boundary: Boundary, lo: int, hi: int) -> int:
    """Separators at positions in ``[lo, hi)``: the markers starting in ``[lo - at, hi - at)``."""
    if hi <= lo:
        return 0
    marker, at = boundary
    return block.count(marker, max(0, lo - at), hi - at + len(marker) - 1)


def _cut(block: bytes, boundary: Boundary, p: int, need: int) -> tuple[int, int]:
    """The end (exclusive) of the item whose bytes bring the item bytes counted from ``p`` to ``need``, and
    the separators in ``[p, end)``.  The caller made sure the block holds that many item bytes from ``p``."""
    q = p + need
    seps = _seps(block, boundary, p, q)
    while (q - p) - seps < need:  # each round adds exactly the deficit; stops once a range has no separator
        nq = q + need - ((q - p) - seps)
        seps += _seps(block, boundary, q, nq)
        q = nq
    # byte q-1 is an item byte: its item ends at the next separator (or the block's end)
    found = block.find(boundary.marker, max(0, q - boundary.at))
    end = len(block) if found < 0 else found + boundary.at
    return end, seps + _seps(block, boundary, q, end)  # 0 more: the first separator from q is at end


def layout_block(
    block: bytes, count: int, pos: SeqPosition, threshold: int, boundary: Boundary = SEP_BOUNDARY
) -> BlockWrite:
    """Lay out ``count`` (> 0) items, ``block`` = their JSONs joined as ``boundary`` says (by :data:`SEP`
    for :data:`SEP_BOUNDARY`, replaced by ``,`` here; by ``,`` already otherwise), after ``pos``; advances
    ``pos`` (items, json_len, chunks, open_chunk_bytes, last).

    A chunk closes after the item that brings the sum of its items' JSON lengths (separators excluded) to
    >= ``threshold`` (the same rule as the live log's).  ``count`` must be exact (it is trusted, not
    recounted: that would be a full pass); a block found to hold more items raises ValueError.
    """
    size = len(block)
    if count <= 0 or not block or (boundary.marker == SEP and (block.startswith(SEP) or block.endswith(SEP))):
        raise ValueError("a snapshot block needs items, without leading or trailing separators")
    entries: list[bytes] = []
    base_items = pos.items
    base_json = pos.json_len
    open_bytes = pos.open_chunk_bytes
    p = 0  # start of the first item not yet in a closed chunk
    done = 0  # items before p
    while True:
        remaining = (size - p) - (count - 1 - done)  # item bytes from p (separators left: count-1-done)
        need = threshold - open_bytes
        if remaining < need:
            open_bytes += remaining
            break
        end, seps = _cut(block, boundary, p, max(need, 1))
        done += seps + 1
        if done > count or (end == size and done != count):
            raise ValueError(f"snapshot block does not hold {count} items")
        last = base_items + done - 1
        entries.append(CHUNK.pack(last + 1, 0, last, base_json + end + 1))
        open_bytes = 0
        if end == size:
            break
        p = end + 1
    pos.items = base_items + count
    pos.json_len = base_json + size + 1
    pos.chunks += len(entries)
    pos.open_chunk_bytes = open_bytes
    pos.last = LogOffset(0, pos.items - 1)
    json = block.replace(SEP, b",") if boundary.marker == SEP else block
    return BlockWrite(json, b"".join(entries))
