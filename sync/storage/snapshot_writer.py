"""Bulk appends to a shape's snapshot sequence: whole blocks of items, never one item at a time.

Why: an initial snapshot is up to millions of rows written once, in order, and read only chunk by chunk
(format version 2 keeps no per-item entry for the snapshot, see :mod:`sync.storage.format`).  So a block of
items arrives as one ``bytes`` (items separated by :data:`SEP`, as the snapshot query's ``string_agg``
builds it, with its item count) and costs a few C-level passes: ``count``/``find`` to place the chunk
closes, one ``replace`` of the separators by the ``,`` the JSON file wants.  Python never touches an item.

Pure: no files, no state beyond the :class:`~sync.storage.writer.SeqPosition` it is handed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from sync.offsets import LogOffset
from sync.storage.format import CHUNK

if TYPE_CHECKING:
    from sync.storage.writer import SeqPosition

__all__ = ["SEP", "BlockWrite", "join_items", "layout_block"]

# ASCII record separator: JSON never contains it raw (control characters are escaped inside strings).
SEP: Final = b"\x1e"


class BlockWrite:
    """What to append for one block: the JSON file bytes and the chunk entries closed by the block."""

    __slots__ = ("chunks", "json")

    def __init__(self, json: bytes, chunks: bytes) -> None:
        self.json = json
        self.chunks = chunks


def join_items(jsons: Sequence[bytes]) -> bytes:
    """A block of separate item JSONs (for callers holding a list)."""
    return SEP.join(jsons)


def _cut(block: bytes, p: int, need: int) -> tuple[int, int]:
    """The end (exclusive) of the item whose bytes bring the item bytes counted from ``p`` to ``need``, and
    the separators in ``[p, end)``.  The caller made sure the block holds that many item bytes from ``p``."""
    q = p + need
    seps = block.count(SEP, p, q)
    while (q - p) - seps < need:  # each round adds exactly the deficit; stops once a range has no SEP
        nq = q + need - ((q - p) - seps)
        seps += block.count(SEP, q, nq)
        q = nq
    # byte q-1 is an item byte: its item ends at the next separator (or the block's end)
    end = block.find(SEP, q)
    if end < 0:
        end = len(block)
    else:
        seps += block.count(SEP, q, end)  # 0: find stopped at the first one
    return end, seps


def layout_block(block: bytes, count: int, pos: SeqPosition, threshold: int) -> BlockWrite:
    """Lay out ``count`` (> 0) items, ``block`` = their JSONs joined by :data:`SEP`, after ``pos``;
    advances ``pos`` (items, json_len, chunks, open_chunk_bytes, last).

    A chunk closes after the item that brings the sum of its items' JSON lengths (separators excluded) to
    >= ``threshold`` (the same rule as the live log's).  ``count`` must be exact (it is trusted, not
    recounted: that would be a full pass); a block found to hold more items raises ValueError.
    """
    size = len(block)
    if count <= 0 or not block or block.startswith(SEP) or block.endswith(SEP):
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
        end, seps = _cut(block, p, max(need, 1))
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
    return BlockWrite(block.replace(SEP, b",") + b",", b"".join(entries))
