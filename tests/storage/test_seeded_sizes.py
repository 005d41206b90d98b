"""The writer seeds its files' sizes from the positions it was given (no ``fstat`` per file's first use):
after a clean stop, a crash or a torn tail those must be the files' sizes once recovery trimmed them, or
appended bytes would land beside the entries that point at them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sync.offsets import LogOffset
from sync.storage import FileStorage, MemoryStorage, ShapeLogWriter, Storage
from sync.storage.files import DiskFiles, MemoryFiles
from sync.storage.format import CHUNK, FILES, ITEM
from tests.storage.helpers import follow, row, txn

_SIZED = [name for name in FILES if name != "log.durable"]


def _made(s: Storage, txns: int) -> ShapeLogWriter:
    w = s.create("h", {})
    w.append_snapshot([row(i, size=40) for i in range(30)])
    w.complete_snapshot(1, 2, [])
    for t in range(1, txns + 1):
        w.append(txn(t, 3, size=150), complete=True)  # ~600 bytes per transaction: chunks of 1000 close
    return w


def _assert_sizes_match(s: FileStorage, w: ShapeLogWriter) -> None:
    files = w.files
    assert isinstance(files, DiskFiles)
    d = s.shapes_dir / "h"
    for name in _SIZED:
        assert files.size(name) == (d / name).stat().st_size, name


def _damage(d: Path, how: str) -> None:
    if how == "items_cut":  # a half-written entry, and the marker as if nothing were fsynced
        (d / "log.durable").write_bytes(b"")
        os.truncate(d / "log.items", (d / "log.items").stat().st_size - ITEM.size - 5)
    elif how == "json_garbage":  # bytes written after the last entry that points at any
        with (d / "log.json").open("ab") as f:
            f.write(b'{"torn":' * 50)
    elif how == "chunk_garbage":  # a chunk entry written for items that were lost
        with (d / "log.chunks").open("ab") as f:
            f.write(CHUNK.pack(10_000, 99, 0, 10**9))
    elif how == "json_cut":  # entries pointing past the JSON's end
        (d / "log.durable").write_bytes(b"")
        os.truncate(d / "log.json", (d / "log.json").stat().st_size - 20)


@pytest.mark.parametrize(
    "how", ["clean", "uncommitted", "items_cut", "json_garbage", "chunk_garbage", "json_cut"]
)
def test_reopened_appends_land_where_the_entries_point(file_storage: FileStorage, how: str) -> None:
    w = _made(file_storage, txns=6)
    assert w.flush() == LogOffset(6, 4)
    if how == "uncommitted":
        w.append(txn(7, 2, size=700), complete=False)  # closes a chunk inside the open transaction
        w.abort()
    else:
        w.close()
    _damage(file_storage.shapes_dir / "h", how)
    w = file_storage.open("h")
    _assert_sizes_match(file_storage, w)
    kept = w.last_offset
    assert kept is not None and kept.tx >= 4
    w.append(txn(20, 2, size=300), complete=True)
    w.append_batch([(txn(21, 3, size=300), True)])
    _assert_sizes_match(file_storage, w)
    w.close()
    w = file_storage.open("h")
    assert w.last_offset == LogOffset(21, 4)
    tail = list(follow(w.reader(), kept).items)
    assert [it["headers"]["lsn"] for it in tail] == ["20", "20", "21", "21", "21"]  # type: ignore[index]
    _assert_sizes_match(file_storage, w)
    w.close()


def test_a_new_log_seeds_empty_files(file_storage: FileStorage) -> None:
    w = file_storage.create("h", {})
    _assert_sizes_match(file_storage, w)
    w.complete_snapshot(1, 2, [])
    w.append(txn(1, 2), complete=True)
    w.close()
    w = file_storage.open("h")
    _assert_sizes_match(file_storage, w)
    w.close()


def test_an_unseeded_file_is_asked_its_size(tmp_path: Path) -> None:
    (tmp_path / "log.json").write_bytes(b"abc,")
    files = DiskFiles(str(tmp_path))
    files.append("log.json", b"de,")
    assert files.size("log.json") == 7
    files.pwrite("log.durable", 0, b"x" * 32)  # a size never asked stays unknown: asked when needed
    assert files.size("log.durable") == 32
    files.close()
    assert (tmp_path / "log.json").read_bytes() == b"abc,de,"


def test_memory_files_refuse_a_wrong_seed() -> None:
    files = MemoryFiles()
    files.append("log.json", b"abc,")
    files.seed_sizes({"log.json": 4, "log.items": 0})
    with pytest.raises(ValueError, match="seeded size 5"):
        files.seed_sizes({"log.json": 5})


def test_memory_storage_reopens_through_the_same_check() -> None:
    s = MemoryStorage(chunk_bytes=1000)
    w = _made(s, txns=3)
    w.append(txn(4, 2, size=700), complete=False)
    w.abort()
    w = s.open("h")  # recovery trims the open transaction; the seeded sizes are checked against the bytes
    assert w.last_offset == LogOffset(3, 4)
