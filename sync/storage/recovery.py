"""Opening an existing shape log after a clean stop or a crash: validate, trim the torn tail, resume.

Rules (format in :mod:`sync.storage.format`):

* metadata must decode and carry our format version, else :class:`StorageCorrupt`;
* a snapshot that never completed means :class:`ShapeMustBeRecreated`; a completed one must be whole;
* the live log keeps the longest prefix of entries that point at existing bytes, are ordered, and (beyond
  the DURABLE marker) belong to a whole record (``REC_END``) that passes its crc, cut back to the last
  ``TXN_END``; bytes and chunk entries after it are truncated away, and chunk boundaries of the open chunk
  are re-derived from the threshold.  A record cut short gets ``REC_END`` and the crc of what is kept on its
  new last entry, fsynced before the truncation (so that every kept entry is in a whole record at every
  step: a later recovery, from an older marker, validates it again).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator

from sync.offsets import LogOffset
from sync.storage.errors import ShapeMustBeRecreated, StorageCorrupt
from sync.storage.files import ShapeFiles
from sync.storage.format import (
    CHUNK,
    DURABLE,
    ITEM,
    REC_END,
    TXN_END,
    ChunkEntry,
    Durable,
    ItemEntry,
    decode_meta,
)
from sync.storage.writer import SeqPosition

__all__ = ["recover"]

log = logging.getLogger(__name__)
_BLOCK = 4096  # entries per read while scanning
_CRC_READ = 4 << 20  # JSON bytes per read while checking a record's crc
_NONE = ItemEntry(0, 0, 0, 0, 0, 0)  # the entry before entry 0


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
    keep = _validated(files, durable.items, n, json_size)
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
    if last is not None and not last.flags & REC_END:
        last = _close_record(files, keep, last)
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


def _validated(files: ShapeFiles, trusted: int, n: int, json_size: int) -> int:
    """Entries from 0 that may be kept: the ``trusted`` first (fsynced, says the marker), then every whole
    record after them whose entries are plausible and whose JSON passes the record's crc."""
    start = _record_start(files, trusted)
    prev = _entry(files, "log.items", start - 1) if start > 0 else _NONE
    record_json = prev.json_end  # where the current record's JSON begins
    good = trusted
    i = start
    for e in _entries(files, "log.items", start, n):
        if not _plausible(prev, e, json_size):
            break
        prev = e
        i += 1
        if e.flags & REC_END:
            if i > good:
                if not _crc_ok(files, record_json, e):
                    break
                good = i
            record_json = e.json_end
    return good


def _record_start(files: ShapeFiles, i: int) -> int:
    """The first entry of the record holding entry ``i``: the one after the last ``REC_END`` before it."""
    while i > 0:
        lo = max(0, i - _BLOCK)
        block = list(_entries(files, "log.items", lo, i))
        for j in range(len(block) - 1, -1, -1):
            if block[j].flags & REC_END:
                return lo + j + 1
        i = lo
    return 0


def _plausible(prev: ItemEntry, e: ItemEntry, json_size: int) -> bool:
    return prev.json_end < e.json_end <= json_size and (e.tx, e.op) > (prev.tx, prev.op) and e.tx > 0


def _record_crc(files: ShapeFiles, start: int, end: int) -> tuple[int, bytes]:
    """crc32 of ``log.json[start:end]`` (read in pieces) and its last byte."""
    crc = 0
    tail = b""
    for lo in range(start, end, _CRC_READ):
        data = files.pread("log.json", lo, min(end, lo + _CRC_READ) - lo)
        crc = zlib.crc32(data, crc)
        tail = data[-1:]
    return crc, tail


def _crc_ok(files: ShapeFiles, start: int, e: ItemEntry) -> bool:
    crc, tail = _record_crc(files, start, e.json_end)
    return tail == b"," and crc == e.crc


def _close_record(files: ShapeFiles, keep: int, last: ItemEntry) -> ItemEntry:
    """Entry ``keep - 1`` (``last``) ends the log but not its record (a transaction after it in the record
    was left incomplete): make it the end of a record of what is kept, durably, before anything is cut."""
    start = _record_start(files, keep - 1)
    begin = _entry(files, "log.items", start - 1).json_end if start > 0 else 0
    crc, _ = _record_crc(files, begin, last.json_end)
    closed = last._replace(crc=crc, flags=last.flags | REC_END)
    files.pwrite("log.items", (keep - 1) * ITEM.size, ITEM.pack(*closed))
    files.sync(("log.items",))
    return closed


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
