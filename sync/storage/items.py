"""The values exchanged with shape storage: items to append, and what a chunk read returns.

Items arrive already encoded as the exact JSON bytes the API sends (spec §5); storage never parses them.
The one exception is the ``snapshot-end`` control item, which storage writes itself when a snapshot
completes, so :func:`snapshot_end_json` lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Protocol

import orjson

from sync.offsets import LogOffset

__all__ = [
    "OP_KINDS",
    "AppendItem",
    "ChunkRead",
    "LogItem",
    "OpKind",
    "SnapshotRow",
    "WholeTransactions",
    "snapshot_end_json",
]


class OpKind(IntEnum):
    """The kind of a stored item (one byte on disk)."""

    INSERT = 1
    UPDATE = 2
    DELETE = 3
    CONTROL = 4


OP_KINDS = {
    "insert": OpKind.INSERT,
    "update": OpKind.UPDATE,
    "delete": OpKind.DELETE,
    "control": OpKind.CONTROL,
}


class AppendItem(Protocol):
    """What ``ShapeLogWriter.append`` takes: ``sync.shapes.log_items.LogItem`` fits as is."""

    @property
    def offset(self) -> LogOffset: ...

    @property
    def key(self) -> str: ...

    @property
    def operation(self) -> str: ...  # "insert" | "update" | "delete" | "control" (events, markers)

    @property
    def json(self) -> bytes: ...


class WholeTransactions(NamedTuple):
    """A part of an append (``AppendBatch.parts``, ``ShapeLogWriter.append_batch``) whose items are each a
    whole transaction of one item: the same as one ``(items[i:i + 1], True)`` part per item.

    Why: with thousands of shapes sharing a burst most shapes get one row per transaction, ten transactions
    per visit; one part for all of them spares a pair object and a list per transaction, which stayed alive
    (and were walked by the garbage collector) from the consumer's encoding to the storage's write, and the
    per-part steps on both sides.  ``complete`` is always True (the pair's shape: a part unpacks as one)."""

    items: Sequence[AppendItem]
    complete: bool = True


@dataclass(frozen=True, slots=True)
class LogItem:
    """One change of the live log: offset (``<commit_lsn>_<op>``), row key, operation, exact JSON bytes."""

    offset: LogOffset
    key: str
    operation: str
    json: bytes


class SnapshotRow(NamedTuple):
    """One row of the initial snapshot (an insert): ``(key, json)``, as ``ShapeLogEncoder.snapshot_item``."""

    key: str
    json: bytes


@dataclass(frozen=True, slots=True)
class ChunkRead:
    """The answer to ``reader.read_chunk(offset)``.

    ``body`` holds the items strictly after the requested offset up to the end of their chunk, already
    separated by commas and without brackets: the response body is ``b"[" + body + b"]"`` (or, to append a
    control item, ``b"[" + body + b"," + control + b"]"`` when ``count > 0``).  ``end_offset`` is the
    ``electric-offset`` to send.  ``up_to_date`` is True when ``end_offset`` is at or past the shape's
    latest offset at the time of the read (the API still applies "never on offset=-1").

    ``ready`` is False when the request points into a snapshot that has not produced the next chunk yet (the
    caller waits for the consumer and retries); ``out_of_bounds`` is True when the requested offset is past
    the shape's latest offset.  In both cases ``body`` is empty.
    """

    body: bytes
    count: int
    end_offset: LogOffset
    up_to_date: bool
    snapshot: bool = False
    ready: bool = True
    out_of_bounds: bool = False


def snapshot_end_json(xmin: int, xmax: int, xip_list: Sequence[int]) -> bytes:
    """The ``snapshot-end`` control item (spec §5); uint64 values are JSON strings."""
    return orjson.dumps(
        {
            "headers": {
                "control": "snapshot-end",
                "xmin": str(xmin),
                "xmax": str(xmax),
                "xip_list": [str(x) for x in xip_list],
            }
        }
    )
