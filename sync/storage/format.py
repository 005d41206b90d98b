"""On-disk format of a shape log: enough to write an independent reader from this docstring alone.

Layout (``FileStorage(root, stack_id)``)::

    <root>/<stack_id>/shapes/<handle>/
        meta.bin           metadata, written at creation and rewritten in place at completion (2)
        log.json           live-log items' JSON, each followed by one ``,`` byte        append-only
        log.items          one 32-byte ITEM entry per item                              append-only (1)
        log.chunks         one 32-byte CHUNK entry per closed chunk                     append-only
        log.durable        one 32-byte DURABLE marker, overwritten in place
        snapshot.json      snapshot items' JSON, each followed by one ``,`` byte       append-only
        snapshot.chunks    one 32-byte CHUNK entry per closed snapshot chunk            append-only
    <root>/<stack_id>/trash/<handle>.<hex>/    deleted shapes, removed in the background

(2) Only its rewrite when the snapshot completes is fsynced (then the directory, then its parent): before
that nothing of the log is trusted, and a torn rewrite fails the checksum (rule 1 below), which drops the
log exactly like an incomplete one.

All integers are little-endian.  The live log and the snapshot are two independent *sequences*;
``<seq>`` below is ``log`` or ``snapshot``.  The live log has the three files ``.json``, ``.items``,
``.chunks``; the snapshot only ``.json`` and ``.chunks``.

Version 3 (this one) differs from version 2 only in the live log: there is no ``log.keys`` file (an item's
key is inside its JSON, ``"key":...``, and nothing but recovery ever read the stored copy), the ITEM entry
has no ``key_end`` field (32 bytes instead of 40) and its crc covers the JSON alone; the empty
``snapshot.keys``/``snapshot.items`` files of version 2 are no longer created.  Older logs are not read:
their ``meta.bin`` version differs, so they are dropped at start and their clients refetch (409).

ITEM entry (``<QQQIBBxx``, 32 bytes, live log only), item ``i`` (0-based) at byte ``32*i`` of ``log.items``:
``tx u64, op u64, json_end u64, crc u32, kind u8, flags u8, 2 pad bytes``.  (32 bytes divide a page: an
entry never straddles two pages, so a crash cannot leave half of one written with the other half.)

* The item's JSON is ``<seq>.json[json_end(i-1) : json_end(i) - 1]`` (``json_end(-1) = 0``); the byte at
  ``json_end(i) - 1`` is the ``,`` separator.  So items ``i..j`` are served as the single byte range
  ``[json_end(i-1), json_end(j) - 1)``, already comma-separated: the response is ``[`` + range + ``]``.
* ``crc = zlib.crc32(json)`` (the JSON without its separator).  ``kind`` is
  :class:`~sync.storage.items.OpKind` (1 insert, 2 update, 3 delete, 4 control).
* ``flags`` bit 0 (``TXN_END``): the item is the last one of a complete transaction.  (1) The only in-place
  write into ``.items``: when a transaction ends with an empty fragment, the flags byte (byte 29) of its
  last, not-yet-committed entry is set afterwards.
* Live-log offsets are ``<tx>_<op>`` with ``tx`` = commit LSN (> 0), strictly increasing.

Snapshot (since version 2): items are addressed by chunk only (snapshot chunk ``k`` ends at offset
``0_k``), so ``snapshot.json`` holds their JSON, each followed by ``,``, and ``snapshot.chunks`` the chunk
entries; there is no per-item entry, key or crc (an initial sync of millions of rows is written as whole
blocks: see :mod:`sync.storage.snapshot_writer`).  Item ``i`` of the snapshot has the position ``op = i``
(``tx = 0``).  Its integrity rests on the fsync of both files before ``snapshot_complete`` is recorded in
``meta.bin``; on open, the last chunk entry must end exactly at the end of ``snapshot.json``, on a ``,``.

CHUNK entry (``<QQQQ``, 32 bytes), chunk ``k`` at byte ``32*k`` of ``<seq>.chunks``:
``end_item u64`` (items before the chunk end, exclusive), ``end_tx u64, end_op u64`` (offset of the chunk's
last item; ``0, end_item - 1`` in the snapshot), ``end_json u64`` (``json_end`` of that item: the end of its
``,``).  Chunk ``k`` holds items
``[end_item(k-1), end_item(k))``.  A chunk closes after the item that brings the sum of its items' JSON
lengths (separators excluded) to >= the threshold (spec §3), so chunks may split a transaction.  The last,
still open chunk of a sequence has no entry.  The snapshot's final chunk is closed whatever its size and
ends with the ``snapshot-end`` control item.

DURABLE marker (``<QQQI4x``, 32 bytes) at byte 0 of ``log.durable``: ``items u64`` (entries known fsynced,
with their JSON), ``tx u64, op u64`` (offset of the last complete transaction's last item then; 0_0
if none), ``crc u32`` of the first 24 bytes.  Written (without its own fsync) only after the files it covers
were fsynced, so it never claims more than what is durable.  Invalid or missing means 0.

``meta.bin``: magic ``b"SSMD"``, ``crc32(payload) u32``, then the msgpack payload: a map with ``version``
(= :data:`FORMAT_VERSION`), ``handle``, ``definition`` (opaque, from the caller), ``created_at`` (unix s),
``snapshot_complete`` (bool), ``xmin``, ``xmax`` (int or nil), ``xip_list`` (list of int).

Reading rules (what a reader does):

1. Trust nothing when ``meta.bin`` is missing, fails its magic/crc/msgpack checks, or has another version.
2. The snapshot is valid only when ``snapshot_complete`` is true; its files were fsynced before that.
3. The live log ends at the last entry with ``TXN_END`` whose bytes exist; entries after the DURABLE
   marker's ``items`` must also pass their crc.  Everything after that end is a torn tail (the writer trims
   it on open).  Chunk entries past the end are dropped; the open chunk is re-derived from the threshold.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import msgpack

from sync.offsets import LogOffset
from sync.storage.errors import StorageCorrupt

__all__ = [
    "CHUNK",
    "DURABLE",
    "FILES",
    "FORMAT_VERSION",
    "ITEM",
    "SEQUENCES",
    "TXN_END",
    "ChunkEntry",
    "Durable",
    "ItemEntry",
    "decode_meta",
    "encode_meta",
]

FORMAT_VERSION = 3  # 2: the snapshot sequence has no item entries or keys; 3: nor has the live log keys
ITEM = struct.Struct("<QQQIBBxx")
CHUNK = struct.Struct("<QQQQ")
DURABLE = struct.Struct("<QQQI4x")
TXN_END = 1
SEQUENCES = ("log", "snapshot")
FILES = ("log.json", "log.items", "log.chunks", "log.durable", "snapshot.json", "snapshot.chunks")
_META_MAGIC = b"SSMD"
_CRC = struct.Struct("<I")


class ItemEntry(NamedTuple):
    tx: int
    op: int
    json_end: int
    crc: int
    kind: int
    flags: int

    @property
    def offset(self) -> LogOffset:
        return LogOffset(self.tx, self.op)


class ChunkEntry(NamedTuple):
    end_item: int
    end_tx: int
    end_op: int
    end_json: int

    @property
    def end_offset(self) -> LogOffset:
        return LogOffset(self.end_tx, self.end_op)


class Durable(NamedTuple):
    items: int
    tx: int
    op: int

    def encode(self) -> bytes:
        head = struct.pack("<QQQ", self.items, self.tx, self.op)
        return DURABLE.pack(self.items, self.tx, self.op, zlib.crc32(head))

    @classmethod
    def decode(cls, data: bytes) -> Durable:
        if len(data) != DURABLE.size:
            return cls(0, 0, 0)
        items, tx, op, crc = DURABLE.unpack(data)
        if zlib.crc32(data[:24]) != crc:
            return cls(0, 0, 0)
        return cls(items, tx, op)


def item_crc(json: bytes) -> int:
    return zlib.crc32(json)


def encode_meta(meta: dict[str, object]) -> bytes:
    payload: bytes = msgpack.packb({**meta, "version": FORMAT_VERSION}, use_bin_type=True)
    return _META_MAGIC + _CRC.pack(zlib.crc32(payload)) + payload


def decode_meta(data: bytes) -> dict[str, object]:
    """Decode ``meta.bin``; any doubt raises :class:`StorageCorrupt`."""
    if len(data) < 8 or data[:4] != _META_MAGIC:
        raise StorageCorrupt("metadata: bad magic")
    payload = data[8:]
    if _CRC.unpack(data[4:8])[0] != zlib.crc32(payload):
        raise StorageCorrupt("metadata: checksum mismatch")
    try:
        meta = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:
        raise StorageCorrupt(f"metadata: undecodable ({exc})") from exc
    if not isinstance(meta, dict):
        raise StorageCorrupt("metadata: not a map")
    if meta.get("version") != FORMAT_VERSION:
        raise StorageCorrupt(f"metadata: format version {meta.get('version')!r}, expected {FORMAT_VERSION}")
    return meta
