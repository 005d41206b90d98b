"""Shared helpers for the storage tests: item factories and a reader that follows the chunk chain."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from sync.offsets import LogOffset
from sync.storage import ChunkRead, LogItem, ShapeLogReader, SnapshotRow


def item(tx: int, op: int, size: int = 0) -> LogItem:
    key = f'"public"."t"/"{tx}-{op}"'
    value = {"id": f"{tx}-{op}", "pad": "x" * size}
    body = {"key": key, "value": value, "headers": {"operation": "insert", "lsn": str(tx), "op_position": op}}
    return LogItem(LogOffset(tx, op), key, "insert", orjson.dumps(body))


def txn(tx: int, n: int, size: int = 0) -> list[LogItem]:
    return [item(tx, 2 * i, size) for i in range(n)]


def row(i: int, size: int = 0) -> SnapshotRow:
    key = f'"public"."t"/"{i}"'
    return SnapshotRow(key, orjson.dumps({"key": key, "value": {"id": str(i), "pad": "y" * size}}))


def parse(read: ChunkRead) -> list[dict[str, object]]:
    items: list[dict[str, object]] = orjson.loads(b"[" + read.body + b"]")
    assert len(items) == read.count
    return items


@dataclass
class Chain:
    chunks: list[list[dict[str, object]]]
    ends: list[LogOffset]

    @property
    def items(self) -> list[dict[str, object]]:
        return [i for c in self.chunks for i in c]


def follow(reader: ShapeLogReader, start: LogOffset = LogOffset.BEFORE_ALL, limit: int = 10_000) -> Chain:
    """Read chunk after chunk, as a client does, until up-to-date."""
    chain = Chain([], [])
    offset = start
    for _ in range(limit):
        read = reader.read_chunk(offset)
        assert read.ready and not read.out_of_bounds
        chain.chunks.append(parse(read))
        chain.ends.append(read.end_offset)
        assert read.end_offset >= offset
        offset = read.end_offset
        if read.up_to_date and not offset.is_before_all and not read.snapshot:
            return chain
    raise AssertionError("chain did not end")


def log_items(chain: Chain) -> list[dict[str, object]]:
    return [i for i in chain.items if "lsn" in i.get("headers", {})]  # type: ignore[operator]


def evict(directory: Path) -> int:
    """Drop every file's pages under ``directory`` from the page cache (written back first, so they are
    clean and can go); returns the files seen."""
    seen = 0
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            seen += 1
    return seen
