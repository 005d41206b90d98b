"""An in-memory implementation of the :class:`api.engine_port.ShapeEngine` port, plus a test driver.

A fake of our own component (allowed by the house rules): HTTP handling stays real Falcon.  It models what
the protocol tests need: tables of rows, shapes keyed by definition, a snapshot split into chunks (the last
one ends with ``snapshot-end``), a log of single-row transactions at ``<lsn>_0`` closed into chunks every
``log_chunk_items`` items, rotation (TRUNCATE/DELETE) and waiters completed like a consumer would.

The driver methods (``create_table``, ``insert``, ``truncate``) form the :class:`Backend` protocol of
``conftest.py`` so the same tests can later run against the real engine + Postgres.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

import orjson

from api.engine_port import (
    EngineStatus,
    InvalidRequest,
    LogChunk,
    ShapeDefinition,
    ShapeGone,
    SnapshotFailed,
    WaitOutcome,
)
from sync.offsets import LogOffset

SCHEMA = '{"id":{"type":"int4","pk_index":0,"not_null":true},"title":{"type":"text"}}'


class FakeWaiter:
    def __init__(self, engine: FakeEngine, shape: FakeShape, offset: LogOffset) -> None:
        self._engine = engine
        self._shape = shape
        self.offset = offset
        self._event = threading.Event()
        self.outcome = WaitOutcome.TIMEOUT

    def complete(self, outcome: WaitOutcome) -> None:
        if not self._event.is_set():
            self.outcome = outcome
            self._event.set()

    def wait(self, timeout: float) -> WaitOutcome:
        self._event.wait(timeout)
        return self.outcome

    def cancel(self) -> None:
        with self._engine.lock:
            if self in self._shape.waiters:
                self._shape.waiters.remove(self)


@dataclass
class FakeShape:
    handle: str
    definition: ShapeDefinition
    snapshot_chunks: list[list[bytes]]
    log: list[tuple[LogOffset, bytes]] = field(default_factory=list)
    log_chunk_ends: list[LogOffset] = field(default_factory=list)
    waiters: list[FakeWaiter] = field(default_factory=list)

    @property
    def latest(self) -> LogOffset:
        return self.log[-1][0] if self.log else LogOffset.SNAPSHOT_END


def _key(table: str, row: dict[str, str]) -> str:
    return f'"public"."{table}"/"{row["id"]}"'


def snapshot_item(table: str, row: dict[str, str]) -> bytes:
    return orjson.dumps(
        {
            "key": _key(table, row),
            "value": row,
            "headers": {"operation": "insert", "relation": ["public", table]},
        }
    )


class FakeEngine:
    """The port over dictionaries; thread-safe enough for a test client plus writer threads."""

    def __init__(self, *, snapshot_chunk_rows: int = 3, log_chunk_items: int = 4) -> None:
        self.lock = threading.RLock()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.shapes: dict[str, FakeShape] = {}
        self.by_definition: dict[ShapeDefinition, str] = {}
        self.snapshot_chunk_rows = snapshot_chunk_rows
        self.log_chunk_items = log_chunk_items
        self.engine_status: EngineStatus = "active"
        self.global_lsn = 0
        self.fail_snapshots = False
        self.waiter_registered = threading.Event()
        self._ids = itertools.count(1)
        self._lsns = itertools.count(1000, 1000)

    # ------------------------------------------------------------------------------------------ port

    def status(self) -> EngineStatus:
        return self.engine_status

    def _validate(self, definition: ShapeDefinition) -> None:
        table = definition.table.removeprefix("public.")
        if table not in self.tables:
            raise InvalidRequest(
                {
                    "table": [
                        f'Table "public"."{table}" does not exist. If the table name contains capitals or '
                        "special characters you must quote it."
                    ]
                }
            )
        if definition.where == "1 x 1":
            raise InvalidRequest({"where": ['At location 17: syntax error at or near "x"']})

    def get_or_create(self, definition: ShapeDefinition) -> str:
        with self.lock:
            self._validate(definition)
            handle = self.by_definition.get(definition)
            if handle is not None:
                return handle
            table = definition.table.removeprefix("public.")
            handle = f"{abs(hash(definition)) % 10_000_000}-{next(self._ids)}"
            rows = [snapshot_item(table, row) for row in self.tables[table]]
            n = self.snapshot_chunk_rows
            chunks = [rows[i : i + n] for i in range(0, len(rows), n)] or [[]]
            chunks[-1] = [
                *chunks[-1],
                b'{"headers":{"control":"snapshot-end","xmin":"1","xmax":"1","xip_list":[]}}',
            ]
            self.shapes[handle] = FakeShape(handle, definition, chunks)
            self.by_definition[definition] = handle
            return handle

    def find(self, definition: ShapeDefinition) -> str | None:
        with self.lock:
            self._validate(definition)
            return self.by_definition.get(definition)

    def exists(self, handle: str) -> bool:
        return handle in self.shapes

    def delete(self, handle: str) -> bool:
        with self.lock:
            shape = self.shapes.pop(handle, None)
            if shape is None:
                return False
            self.by_definition.pop(shape.definition, None)
            for waiter in list(shape.waiters):
                waiter.complete(WaitOutcome.ROTATED)
            return True

    def _shape(self, handle: str) -> FakeShape:
        shape = self.shapes.get(handle)
        if shape is None:
            raise ShapeGone(handle)
        return shape

    def latest_offset(self, handle: str) -> LogOffset:
        with self.lock:
            return self._shape(handle).latest

    def read(self, handle: str, offset: LogOffset, *, per_item: bool = False) -> LogChunk:
        with self.lock:
            shape = self._shape(handle)
            if self.fail_snapshots and offset.is_before_all:
                raise SnapshotFailed("Snapshot query failed, please retry")
            last_chunk = len(shape.snapshot_chunks) - 1
            if offset.is_before_all or (offset.is_snapshot and offset.op < last_chunk):
                k = 0 if offset.is_before_all else offset.op + 1
                items = shape.snapshot_chunks[k]
                end = LogOffset.snapshot_chunk(k)
            else:
                after = [(o, item) for o, item in shape.log if o > offset]
                if not after:
                    return LogChunk(shape.latest, shape.latest, True, [])
                first = after[0][0]
                end = next((e for e in shape.log_chunk_ends if e >= first), shape.latest)
                items = [item for o, item in after if o <= end]
            pieces = list(items) if per_item else [b",".join(items)] if items else []
            return LogChunk(end, shape.latest, not items, pieces)

    def await_snapshot_start(self, handle: str) -> None:
        with self.lock:  # the fake's snapshots exist from creation on
            self._shape(handle)
            if self.fail_snapshots:
                raise SnapshotFailed("Snapshot query failed, please retry")

    def schema_header(self, handle: str) -> str:
        with self.lock:
            self._shape(handle)
            return SCHEMA

    def wait_for_change(self, handle: str, offset: LogOffset) -> FakeWaiter:
        with self.lock:
            shape = self._shape(handle)
            waiter = FakeWaiter(self, shape, offset)
            if shape.latest > offset:
                waiter.complete(WaitOutcome.NEW_DATA)
            else:
                shape.waiters.append(waiter)
                self.waiter_registered.set()
            return waiter

    def global_last_seen_lsn(self) -> int:
        return self.global_lsn

    # ---------------------------------------------------------------------------------------- driver

    def create_table(self, rows: list[dict[str, str]]) -> str:
        with self.lock:
            name = f"items_{next(self._ids)}"
            self.tables[name] = [dict(r) for r in rows]
            return name

    def insert(self, table: str, row: dict[str, str]) -> None:
        with self.lock:
            self.tables[table].append(dict(row))
            lsn = next(self._lsns)
            self.global_lsn = lsn
            for shape in self.shapes.values():
                if shape.definition.table.removeprefix("public.") != table:
                    continue
                offset = LogOffset(lsn, 0)
                headers = {
                    "operation": "insert",
                    "relation": ["public", table],
                    "lsn": str(lsn),
                    "op_position": 0,
                    "txids": [lsn // 1000],
                    "last": True,
                }
                shape.log.append(
                    (offset, orjson.dumps({"key": _key(table, row), "value": row, "headers": headers}))
                )
                since_chunk = [
                    o for o, _ in shape.log if not shape.log_chunk_ends or o > shape.log_chunk_ends[-1]
                ]
                if len(since_chunk) >= self.log_chunk_items:
                    shape.log_chunk_ends.append(offset)
                for waiter in list(shape.waiters):
                    if offset > waiter.offset:
                        waiter.complete(WaitOutcome.NEW_DATA)

    def truncate(self, table: str) -> None:
        with self.lock:
            self.tables[table].clear()
            for handle, shape in list(self.shapes.items()):
                if shape.definition.table.removeprefix("public.") == table:
                    self.delete(handle)

    def stop(self) -> None:
        with self.lock:
            for shape in self.shapes.values():
                for waiter in list(shape.waiters):
                    waiter.complete(WaitOutcome.STOPPED)
