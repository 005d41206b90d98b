"""Opening damaged or unfinished shapes: torn tails are trimmed, doubtful metadata invalidates the shape."""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import msgpack
import pytest

from sync.offsets import LogOffset
from sync.storage import FileStorage, ShapeGone, ShapeMustBeRecreated, StorageCorrupt
from sync.storage.format import ITEM
from tests.storage.helpers import follow, item, row, txn


def shape_dir(s: FileStorage, handle: str = "h") -> Path:
    return s.shapes_dir / handle


def make(s: FileStorage, txns: int = 5) -> None:
    w = s.create("h", {"t": 1})
    w.append_snapshot([row(i) for i in range(3)])
    w.complete_snapshot(1, 2, [])
    for t in range(1, txns + 1):
        w.append(txn(t, 3, size=50), complete=True)
    w.close()


def test_incomplete_snapshot_must_be_recreated(file_storage: FileStorage) -> None:
    w = file_storage.create("h", {})
    w.append_snapshot([row(i) for i in range(3)])
    w.close()
    with pytest.raises(ShapeMustBeRecreated, match="snapshot never completed") as exc:
        file_storage.open("h")
    assert not isinstance(exc.value, StorageCorrupt)


@pytest.mark.parametrize(
    "damage",
    ["missing", "empty", "magic", "bitflip", "truncated", "version"],
)
def test_bad_metadata_is_corrupt(file_storage: FileStorage, damage: str) -> None:
    make(file_storage)
    meta = shape_dir(file_storage) / "meta.bin"
    data = meta.read_bytes()
    if damage == "missing":
        meta.unlink()
    elif damage == "empty":
        meta.write_bytes(b"")
    elif damage == "magic":
        meta.write_bytes(b"XXXX" + data[4:])
    elif damage == "bitflip":
        meta.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    elif damage == "truncated":
        meta.write_bytes(data[:-5])
    else:
        payload = msgpack.packb({**msgpack.unpackb(data[8:]), "version": 99})
        meta.write_bytes(b"SSMD" + zlib.crc32(payload).to_bytes(4, "little") + payload)
    with pytest.raises(StorageCorrupt, match="version 99" if damage == "version" else "metadata"):
        file_storage.open("h")


def test_damaged_snapshot_is_corrupt(file_storage: FileStorage) -> None:
    make(file_storage)
    os.truncate(shape_dir(file_storage) / "snapshot.json", 10)
    with pytest.raises(StorageCorrupt):
        file_storage.open("h")


@pytest.mark.parametrize("cut", [1, ITEM.size - 1, ITEM.size, 3 * ITEM.size + 7])
def test_torn_items_tail_is_trimmed_to_a_transaction(file_storage: FileStorage, cut: int) -> None:
    make(file_storage, txns=5)
    d = shape_dir(file_storage)
    (d / "log.durable").write_bytes(b"")  # as if the tail was never fsynced
    items = d / "log.items"
    os.truncate(items, items.stat().st_size - cut)
    w = file_storage.open("h")
    kept = (15 * ITEM.size - cut) // ITEM.size
    assert w.last_offset == LogOffset(kept // 3, 4)
    assert (d / "log.json").stat().st_size == w.state.view.log_json
    chain = follow(w.reader(), LogOffset(0, 0))
    assert chain.ends[-1] == LogOffset(kept // 3, 4)
    w.append(txn(9, 1), complete=True)
    w.close()
    assert file_storage.open("h").last_offset == LogOffset(9, 0)


def test_bytes_missing_behind_entries_are_trimmed(file_storage: FileStorage) -> None:
    make(file_storage, txns=4)
    d = shape_dir(file_storage)
    (d / "log.durable").write_bytes(b"")
    os.truncate(d / "log.json", (d / "log.json").stat().st_size - 20)
    assert file_storage.open("h").last_offset == LogOffset(3, 4)


def test_crc_catches_garbage_beyond_the_durable_marker(file_storage: FileStorage) -> None:
    w = file_storage.create("h", {})
    w.complete_snapshot(1, 2, [])
    w.append(txn(1, 2), complete=True)
    assert w.flush() == LogOffset(1, 2)
    w.append(txn(2, 2), complete=True)  # written, not fsynced
    w.abort()  # a crash: no flush
    d = shape_dir(file_storage)
    data = bytearray((d / "log.json").read_bytes())
    data[-5] ^= 0x20  # power loss left garbage in the unflushed part
    (d / "log.json").write_bytes(bytes(data))
    w2 = file_storage.open("h")
    assert w2.last_offset == LogOffset(1, 2)
    assert follow(w2.reader(), LogOffset(0, 0)).ends == [LogOffset(1, 2)]


def test_delete_renames_then_removes(file_storage: FileStorage) -> None:
    make(file_storage)
    w = file_storage.open("h")
    r = w.reader()
    assert file_storage.disk_usage("h") > 0
    w.mark_deleted()
    w.close()
    file_storage.delete("h")
    assert file_storage.handles() == []
    assert file_storage.disk_usage("h") == 0
    with pytest.raises(ShapeGone):
        r.read_chunk(LogOffset(0, 0))
    deadline = time.monotonic() + 5
    while any(file_storage.trash_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(file_storage.trash_dir.iterdir())
    make(file_storage)  # the handle directory is free again at once
    assert file_storage.handles() == ["h"]


def test_purge_trash(file_storage: FileStorage) -> None:
    (file_storage.trash_dir / "old.1234").mkdir()
    (file_storage.trash_dir / "old.1234" / "log.json").write_bytes(b"x")
    file_storage.purge_trash()
    assert not any(file_storage.trash_dir.iterdir())


def test_reader_never_served_after_deletion_in_memory() -> None:
    from sync.storage import MemoryStorage  # noqa: PLC0415

    s = MemoryStorage(chunk_bytes=100)
    w = s.create("h", {})
    w.complete_snapshot(1, 2, [])
    w.append([item(3, 0)], complete=True)
    r = w.reader()
    w.mark_deleted()
    s.delete("h")
    with pytest.raises(ShapeGone):
        r.latest_offset()
    assert s.handles() == [] and s.disk_usage("h") == 0


def test_format_3_files_read_as_the_format_docstring_says(file_storage: FileStorage) -> None:
    """An independent reading of the live log: no keys file, 32-byte entries, crc of the JSON alone."""
    make(file_storage, txns=2)
    d = shape_dir(file_storage)
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["meta.bin", "log.json", "log.items", "log.chunks", "log.durable", "snapshot.json", "snapshot.chunks"]
    )
    data = (d / "log.items").read_bytes()
    body = (d / "log.json").read_bytes()
    assert len(data) == 6 * 32
    prev_end = 0
    for i in range(6):
        tx, op, json_end, crc, kind, flags = struct.unpack_from("<QQQIBBxx", data, 32 * i)
        json = body[prev_end : json_end - 1]
        assert body[json_end - 1 : json_end] == b","
        assert (tx, op, kind) == (i // 3 + 1, 2 * (i % 3), 1)
        assert crc == zlib.crc32(json) and f'"id":"{tx}-{op}"'.encode() in json
        assert flags == (1 if i % 3 == 2 else 0)
        prev_end = json_end
    assert prev_end == len(body)


def test_a_log_of_format_version_2_is_not_resumed(file_storage: FileStorage) -> None:
    make(file_storage)
    meta = shape_dir(file_storage) / "meta.bin"
    payload = msgpack.packb({**msgpack.unpackb(meta.read_bytes()[8:]), "version": 2})
    meta.write_bytes(b"SSMD" + zlib.crc32(payload).to_bytes(4, "little") + payload)
    with pytest.raises(StorageCorrupt, match="version 2, expected 3"):  # the shape cache drops it: 409
        file_storage.open("h")
