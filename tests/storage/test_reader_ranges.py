"""Closed snapshot chunks described as file ranges (``ShapeLogReader.snapshot_range``, served with
``sendfile``): the same bytes as ``read_chunk``, only for large closed chunks of real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sync.offsets import LogOffset
from sync.storage import FileStorage, MemoryStorage, ShapeLogReader
from sync.storage.errors import ShapeGone
from sync.storage.reader import FILE_RANGE_MIN, FileRange, PathFiles
from sync.storage.writer import ShapeLogWriter
from tests.storage.helpers import row

CHUNK_BYTES = FILE_RANGE_MIN + 50_000


class _PathReader:
    """Real files that say where they are (:class:`PathFiles`)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def path(self, name: str) -> str:
        return str(self._dir / name)

    def pread(self, name: str, pos: int, size: int) -> bytes:
        fd = os.open(self.path(name), os.O_RDONLY)
        try:
            return os.pread(fd, size, pos)
        finally:
            os.close(fd)

    def close(self) -> None:
        return None


def _shape(tmp_path: Path, rows: int) -> tuple[FileStorage, ShapeLogWriter, ShapeLogReader]:
    storage = FileStorage(tmp_path, "stack", chunk_bytes=CHUNK_BYTES)
    writer = storage.create("h-1", {"table": "t"})
    writer.append_snapshot([row(i, 600) for i in range(rows)])
    files = _PathReader(storage.shapes_dir / "h-1")
    assert isinstance(files, PathFiles)
    return storage, writer, ShapeLogReader(writer.state, files)


def _snapshot_offsets(reader: ShapeLogReader) -> list[LogOffset]:
    offsets = [LogOffset.BEFORE_ALL]
    while True:
        read = reader.read_chunk(offsets[-1], body=False)
        if not read.ready or not read.snapshot or read.end_offset == LogOffset.SNAPSHOT_END:
            return offsets
        offsets.append(read.end_offset)


def test_closed_snapshot_chunks_as_file_ranges_hold_the_bytes_read_chunk_reads(tmp_path: Path) -> None:
    _, writer, reader = _shape(tmp_path, 2000)
    writer.complete_snapshot(10, 12, [11])
    ranges = 0
    for offset in _snapshot_offsets(reader):
        read = reader.read_chunk(offset)
        if not read.snapshot or not read.count:
            continue
        where = reader.snapshot_range(offset)
        if len(read.body) < FILE_RANGE_MIN:
            assert where is None
            continue
        assert isinstance(where, FileRange)
        ranges += 1
        assert len(where) == where.size == len(read.body)
        assert where.read() == read.body
        assert b"".join(where) == read.body  # what a server that cannot send files writes
    assert ranges >= 3


def test_no_range_for_an_open_chunk_the_log_or_files_without_paths(tmp_path: Path) -> None:
    _, _, reader = _shape(tmp_path, 2000)
    offsets = _snapshot_offsets(reader)  # before completion: up to the last closed chunk
    assert len(offsets) >= 3
    assert reader.snapshot_range(offsets[0]) is not None
    assert reader.snapshot_range(offsets[-1]) is None  # the chunk after it is still open
    assert reader.snapshot_range(LogOffset.SNAPSHOT_END) is None
    assert reader.snapshot_range(LogOffset(5, 0)) is None
    memory = MemoryStorage(chunk_bytes=CHUNK_BYTES).create("h-2", {"table": "t"})
    memory.append_snapshot([row(i, 600) for i in range(2000)])
    assert memory.reader().read_chunk(LogOffset.BEFORE_ALL).count > 0
    assert memory.reader().snapshot_range(LogOffset.BEFORE_ALL) is None  # bytes in memory: read them


def test_a_deleted_shape_has_no_range_and_a_range_of_a_removed_file_fails(tmp_path: Path) -> None:
    storage, _, reader = _shape(tmp_path, 2000)
    where = reader.snapshot_range(LogOffset.BEFORE_ALL)
    assert where is not None
    storage.delete("h-1")
    with pytest.raises(ShapeGone):
        reader.snapshot_range(LogOffset.BEFORE_ALL)
    storage.purge_trash()
    with pytest.raises(OSError):
        where.read()
