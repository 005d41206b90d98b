"""The messages between a snapshot worker and the actors of its shape, and the request it works on.

Why a separate module: the consumer, the pool and the worker all speak them; the worker's module
(:mod:`sync.shapes.snapshot_worker`) holds the work itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pykka
from psycopg import sql

from sync.shapes.definition import ShapeDefinition
from sync.shapes.xid import PgSnapshot

__all__ = [
    "MarkJournal",
    "PrepareSnapshot",
    "SnapshotCompleted",
    "SnapshotFailed",
    "SnapshotProgress",
    "SnapshotRequest",
    "SnapshotStarted",
]


class MarkJournal(Protocol):
    """Where a worker records the WAL position read with its snapshot
    (:class:`~sync.shapes.snapshot_marks.SnapshotMarks`): ``record`` before the rows, ``sync`` (every mark
    recorded before it durable) before the snapshot is recorded complete."""

    def record(self, handle: str, wal_lsn: int) -> None: ...

    def sync(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Everything a worker needs to snapshot one shape: rows go to ``storage`` (the shape's StorageActor),
    ``consumer`` receives the Snapshot* messages."""

    handle: str
    definition: ShapeDefinition
    storage: pykka.ActorRef[Any]
    consumer: pykka.ActorRef[Any]
    where_sql: sql.Composable | None = None
    where_params: Sequence[Any] = field(default=())
    marks: MarkJournal | None = None  # where the WAL position read with the snapshot is recorded


@dataclass(frozen=True, slots=True)
class PrepareSnapshot:
    """ask (worker -> consumer) -> tuple[int, ...]: register with the collector now; the snapshot starts
    after, and must see the transactions whose xids the answer holds (:mod:`sync.shapes.routed_history`)."""


@dataclass(frozen=True, slots=True)
class SnapshotStarted:
    """tell (worker -> consumer): the snapshot's visibility and ``pg_current_wal_insert_lsn()`` read with it;
    rows are being written."""

    snapshot: PgSnapshot
    wal_lsn: int


@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    """tell (worker -> consumer): ``rows`` rows are written so far (snapshot chunks may have closed)."""

    rows: int


@dataclass(frozen=True, slots=True)
class SnapshotCompleted:
    """tell (worker -> consumer): every row and ``snapshot-end`` are written and fsynced."""

    rows: int


@dataclass(frozen=True, slots=True)
class SnapshotFailed:
    """tell (worker/pool -> consumer): the snapshot could not be taken; the shape must be invalidated."""

    reason: str
