"""Shared helpers for the storage tests: item factories and a reader that follows the chunk chain."""

from __future__ import annotations

import struct
import zlib
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
    items = orjson.loads(b"[" + read.body + b"]")
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


def log_index(directory: Path) -> list[tuple[int, int, int, int, int]]:
    """A log's ITEM entries without their record framing (``tx, op, json_end, kind, TXN_END flag``), after
    checking that framing independently of the storage code: every entry is in a record ended by a
    ``REC_END`` (flags bit 1) entry whose crc is that of the record's JSON, separators included (format 4).
    Two logs given the same items in different appends have the same index, not the same bytes."""
    json = (directory / "log.json").read_bytes()
    data = (directory / "log.items").read_bytes()
    out: list[tuple[int, int, int, int, int]] = []
    start = 0
    for tx, op, json_end, crc, kind, flags in struct.iter_unpack("<QQQIBBxx", data):
        out.append((tx, op, json_end, kind, flags & 1))
        if flags & 2:
            assert crc == zlib.crc32(json[start:json_end]) and json[json_end - 1 : json_end] == b","
            start = json_end
        else:
            assert crc == 0
    assert start == (out[-1][2] if out else 0), "the last entry does not end a record"
    return out
