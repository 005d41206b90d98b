"""The shape Consumer's messages and what it is started with, importable without the actor (the cache,
the API adapter and the tests use them).
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.offsets import LogOffset
from sync.shapes.xid import PgSnapshot
from sync.storage.reader import ShapeLogReader

__all__ = ["ConsumerInfo", "GetConsumerInfo", "RotateShape", "StorageDurable", "StoredShape"]


@dataclass(frozen=True, slots=True)
class StorageDurable:
    """tell (the shape's StorageActor ``on_durable``): everything up to ``offset`` is fsynced."""

    offset: LogOffset


@dataclass(frozen=True, slots=True)
class RotateShape:
    """ask (ShapeCache) -> None: the shape is invalidated or deleted: wake waiters with ``rotated``, stop
    writing, and delete the log when ``delete_log``.  The cache then terminates the shape's subtree."""

    reason: str
    delete_log: bool = True


@dataclass(frozen=True, slots=True)
class GetConsumerInfo:
    """ask -> ConsumerInfo."""


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    handle: str
    reader: ShapeLogReader
    snapshot_complete: bool
    held_transactions: int
    waiters: int
    failed: str | None


@dataclass(frozen=True, slots=True)
class StoredShape:
    """What a reopened log tells its new consumer: the snapshot it was built from (with the WAL position read
    with it, from :class:`~sync.shapes.snapshot_marks.SnapshotMarks`) and its last transaction."""

    snapshot: PgSnapshot
    wal_lsn: int
    last_tx: int
