"""Opening an existing shape log after a clean stop or a crash: validate, trim the torn tail, resume.

Rules (format in :mod:`sync.storage.format`):

* metadata must decode and carry our format version, else :class:`StorageCorrupt`;
* a snapshot that never completed means :class:`ShapeMustBeRecreated`; a completed one must be whole;
* the live log keeps the longest prefix of entries that point at existing bytes, are ordered, and (beyond
  the DURABLE marker) pass their crc, cut back to the last ``TXN_END``; bytes and chunk entries after it are
  truncated away, and chunk boundaries of the open chunk are re-derived from the threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from sync.offsets import LogOffset
from sync.storage.errors import ShapeMustBeRecreated, StorageCorrupt
from sync.storage.files import ShapeFiles
from sync.storage.format import (
    CHUNK,
    DURABLE,
    ITEM,
    TXN_END,
    ChunkEntry,
    Durable,
    ItemEntry,
    decode_meta,
    item_crc,
)
from sync.storage.positions import SeqPosition

__all__ = ["recover"]

log = logging.getLogger(__name__)
_BLOCK = 4096  # entries per read while scanning


def _entries(files: ShapeFiles, name: str, start: int, stop: int) -> Iterator[ItemEntry]:
    for lo in range(start, stop, _BLOCK):
        hi = min(stop, lo + _BLOCK)
        data = files.pread(name, lo * ITEM.size, (hi - lo) * ITEM.size)
        for fields in ITEM.iter_unpack(data):
            yield ItemEntry(*fields)


def _entry(files: ShapeFiles, name: str, i: int) -> ItemEntry:
    return ItemEntry(*ITEM.unpack(files.pread(name, i * ITEM.size, ITEM.size)))


def recover(files: ShapeFiles, chunk_bytes: int) -> tuple[dict[str, object], SeqPosition, SeqPosition]:
    """Validate and repair a shape's files; returns (metadata, log position, snapshot position)."""
    raw = files.read_meta()
    if raw is None:
        raise StorageCorrupt("metadata missing")
    meta = decode_meta(raw)
    if not meta.get("snapshot_complete"):
        raise ShapeMustBeRecreated("snapshot never completed")
    snap = _snapshot_position(files)
    log_pos = _recover_log(files, chunk_bytes)
    return meta, log_pos, snap


def _snapshot_position(files: ShapeFiles) -> SeqPosition:
    """Format 2: the snapshot has no item entries; its last chunk entry must end exactly at the JSON's end."""
    chunks, crest = divmod(files.size("snapshot.chunks"), CHUNK.size)
    if crest or chunks == 0:
        raise StorageCorrupt("snapshot files damaged")
    last = ChunkEntry(*CHUNK.unpack(files.pread("snapshot.chunks", (chunks - 1) * CHUNK.size, CHUNK.size)))
    if last.end_item == 0 or last.end_op != last.end_item - 1 or last.end_json != files.size("snapshot.json"):
        raise StorageCorrupt("snapshot chunk index does not match its JSON")
    if files.pread("snapshot.json", last.end_json - 1, 1) != b",":
        raise StorageCorrupt("snapshot JSON does not end with a separator")
    return SeqPosition(last.end_item, last.end_json, chunks, 0, LogOffset(0, last.end_op))


def _recover_log(files: ShapeFiles, chunk_bytes: int) -> SeqPosition:
    n = files.size("log.items") // ITEM.size
    json_size = files.size("log.json")
    marker = files.pread("log.durable", 0, DURABLE.size) if files.size("log.durable") >= DURABLE.size else b""
    durable = Durable.decode(marker)
    if durable.items > n:
        raise StorageCorrupt(f"log: {durable.items} items were fsynced but only {n} entries exist")
    good = durable.items
    prev = _entry(files, "log.items", good - 1) if good > 0 else ItemEntry(0, 0, 0, 0, 0, 0)
    for e in _entries(files, "log.items", good, n):
        if not _plausible(prev, e, json_size) or not _crc_ok(files, prev, e):
            break
        prev = e
        good += 1
    keep = good
    while keep > 0:
        # walk back to the last complete transaction (blocks from the end)
        lo = max(0, keep - _BLOCK)
        block = list(_entries(files, "log.items", lo, keep))
        ends = [i for i, e in enumerate(block) if e.flags & TXN_END]
        if ends:
            keep = lo + ends[-1] + 1
            break
        keep = lo
    if keep < n:
        log.warning("log: trimming torn tail: %d -> %d items", n, keep)
    last = _entry(files, "log.items", keep - 1) if keep > 0 else None
    json_len = last.json_end if last else 0
    changed = keep < n or json_size != json_len
    files.truncate("log.json", json_len)
    files.truncate("log.items", keep * ITEM.size)
    chunks, chunk_changed = _recover_chunks(files, keep, chunk_bytes)
    if changed or chunk_changed:
        files.sync(("log.json", "log.items", "log.chunks"))
    at = last.offset if last else LogOffset(0, 0)
    files.pwrite("log.durable", 0, Durable(keep, at.tx, at.op).encode())
    files.sync(("log.durable",))
    open_bytes = chunks[1]
    return SeqPosition(keep, json_len, chunks[0], open_bytes, last.offset if last else None)


def _plausible(prev: ItemEntry, e: ItemEntry, json_size: int) -> bool:
    return prev.json_end < e.json_end <= json_size and (e.tx, e.op) > (prev.tx, prev.op) and e.tx > 0


def _crc_ok(files: ShapeFiles, prev: ItemEntry, e: ItemEntry) -> bool:
    json = files.pread("log.json", prev.json_end, e.json_end - prev.json_end)
    return json.endswith(b",") and item_crc(json[:-1]) == e.crc


def _recover_chunks(files: ShapeFiles, items: int, threshold: int) -> tuple[tuple[int, int], bool]:
    """Keep chunk entries ending within the kept items; re-derive the rest.

    Returns ((chunk count, open chunk bytes), whether the file changed).
    """
    size = files.size("log.chunks")
    count = size // CHUNK.size
    while count > 0:
        e = ChunkEntry(*CHUNK.unpack(files.pread("log.chunks", (count - 1) * CHUNK.size, CHUNK.size)))
        if e.end_item <= items:
            if e.end_item == 0 or _entry(files, "log.items", e.end_item - 1).json_end != e.end_json:
                raise StorageCorrupt("log chunk index does not match its items")
            break
        count -= 1
    changed = count * CHUNK.size != size
    files.truncate("log.chunks", count * CHUNK.size)
    start = (
        ChunkEntry(*CHUNK.unpack(files.pread("log.chunks", (count - 1) * CHUNK.size, CHUNK.size)))
        if count
        else ChunkEntry(0, 0, 0, 0)
    )
    open_bytes = 0
    prev_end = start.end_json
    new: list[bytes] = []
    for i, item in enumerate(_entries(files, "log.items", start.end_item, items), start=start.end_item):
        open_bytes += item.json_end - prev_end - 1
        prev_end = item.json_end
        if open_bytes >= threshold:
            new.append(CHUNK.pack(i + 1, item.tx, item.op, item.json_end))
            open_bytes = 0
    if new:
        files.append("log.chunks", b"".join(new))
        changed = True
    return (count + len(new), open_bytes), changed
