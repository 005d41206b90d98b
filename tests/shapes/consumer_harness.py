"""A small shape engine for tests: real Postgres, real collector, storage, consumers and snapshot pool.

Replication comes from a SQL-interface slot (``pg_logical_slot_get_binary_changes`` + the pgoutput decoder)
whose session uses the engine's display settings, so values are what the streaming client would deliver.
The routing index is brute force (the real one is tested against the same contract).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pykka
from psycopg import sql
from psycopg.conninfo import make_conninfo

from supervisors import start_child
from sync.offsets import LogOffset
from sync.replication.changes import TransactionFragment
from sync.shapes.collector import ShapeBatch, ShapeChanges, ShapeLogCollector, ShapeRun
from sync.shapes.consumer import Consumer, StoredShape
from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import key_prefix, row_key
from sync.shapes.shape_supervisor import ShapeSupervisor, shape_spec
from sync.shapes.snapshot import raw_text_cursor, snapshot_query
from sync.shapes.snapshot_marks import SnapshotMarks
from sync.shapes.snapshot_messages import SnapshotRequest
from sync.shapes.snapshot_pool import SnapshotPool, StartSnapshot
from sync.storage.reader import ShapeLogReader
from sync.storage.storage import FileStorage
from sync.storage.storage_actor import StorageActor
from tests.fixtures.sessions import SESSION_OPTIONS
from tests.replication.sqlslot import SqlSlot
from tests.shapes.helpers import read_table

Row = Mapping[str, str | None]
Pred = Callable[[Row], bool]


class BruteIndex:
    """The collector's routing contract by brute force (thread-safe enough: used by the collector only)."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[str, str], Pred | None]] = {}

    def add(self, shape_id: str, table_key: tuple[str, str], clause: Any) -> None:
        self.shapes[shape_id] = (table_key, clause)

    def remove(self, shape_id: str) -> None:
        self.shapes.pop(shape_id, None)

    def affected(self, table_key: tuple[str, str], new_row: Row | None, old_row: Row | None) -> set[str]:
        out = set()
        for sid, (key, clause) in self.shapes.items():
            if key != table_key:
                continue
            if clause is None or any(r is not None and clause(r) for r in (new_row, old_row)):
                out.add(sid)
        return out

    def route_new_rows(
        self,
        table_key: tuple[str, str],
        columns: Mapping[str, int],
        rows: Sequence[Sequence[str | None]],
        items: Sequence[Any],
        *,
        out: dict[str, list[Any]],
        inexact: set[str],
    ) -> None:
        """Inserted rows in bulk, by brute force: every shape with a clause evaluated it (none is exact)."""
        for row, item in zip(rows, items, strict=True):
            for sid in self.affected(table_key, {c: row[i] for c, i in columns.items()}, None):
                out.setdefault(sid, []).append(item)
                if self.shapes[sid][1] is not None:
                    inexact.add(sid)


@dataclass
class ShapeUnderTest:
    handle: str
    definition: ShapeDefinition
    predicate: Pred | None
    where_sql: sql.Composable | None
    where_params: tuple[Any, ...] = ()
    storage: pykka.ActorRef[Any] | None = None
    consumer: pykka.ActorRef[Any] | None = None
    reader: ShapeLogReader | None = None


@dataclass
class Harness:
    dsn: str
    root: Path
    max_held: int = 10_000
    hold_snapshots: bool = False
    acks: list[int] = field(default_factory=list)
    invalidated: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)
    held: queue.Queue[SnapshotRequest] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.slot = SqlSlot(make_conninfo(self.dsn, options=SESSION_OPTIONS))
        self.index: Any = self.make_index()
        self._ack_cond = threading.Condition()
        self.collector = ShapeLogCollector.start(self.index, on_ack=self.on_ack)
        self.pool = SnapshotPool.start(self.dsn, size=2, fetch_rows=7, pages=1)  # several ranges, 2 lanes
        self.shapes_sup = ShapeSupervisor.start()
        self.storage = FileStorage(self.root, "stack", chunk_bytes=1000)
        self.last_commit_lsn = 0
        self.marks = SnapshotMarks()

    # -- wiring -------------------------------------------------------------------------------------------

    def make_index(self) -> Any:
        return BruteIndex()

    def on_ack(self, lsn: int) -> None:
        with self._ack_cond:
            self.acks.append(lsn)
            self._ack_cond.notify_all()

    def wait_acked(self, lsn: int, timeout: float = 10.0) -> None:
        with self._ack_cond:
            ok = self._ack_cond.wait_for(lambda: bool(self.acks) and self.acks[-1] >= lsn, timeout)
        assert ok, f"ack did not reach {lsn}: {self.acks[-3:]}"

    def start_snapshot(self, request: SnapshotRequest) -> None:
        if self.hold_snapshots:
            self.held.put(request)
        else:
            self.pool.tell(StartSnapshot(request))

    def release_snapshot(self) -> None:
        self.pool.tell(StartSnapshot(self.held.get(timeout=5)))

    def definition(
        self,
        table: str,
        *,
        replica: str = "default",
        columns: list[str] | None = None,
        where: str | None = None,
        params: tuple[str, ...] = (),
        log_mode: str = "full",
    ) -> ShapeDefinition:
        info = read_table(self.conn, "public", table)
        return ShapeDefinition.create(
            ("public", table),
            info,
            columns=columns,
            where=where,
            params=params,
            replica=replica,
            log_mode=log_mode,
        )

    def start_shape(self, shape: ShapeUnderTest, stored: StoredShape | None = None) -> ShapeUnderTest:
        if stored is None:
            writer = self.storage.create(shape.handle, shape.definition.to_dict())
        else:
            writer = self.storage.open(shape.handle)

        def start_storage(on_durable: Callable[[LogOffset], None]) -> pykka.ActorRef[Any]:
            ref = StorageActor.start(writer, self.storage, on_durable=on_durable, flush_interval=0.01)
            shape.storage = ref
            return ref

        def start_consumer(storage: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
            ref = Consumer.start(
                shape.handle,
                shape.definition,
                storage=storage,
                collector=self.collector,
                start_snapshot=self.start_snapshot,
                on_invalidate=lambda h, r: self.invalidated.put((h, r)),
                stored=stored,
                marks=self.marks,
                routing_clause=shape.predicate,
                predicate=shape.predicate,
                where_sql=shape.where_sql,
                where_params=shape.where_params,
                max_held=self.max_held,
                ask_timeout=10,
            )
            shape.consumer = ref
            return ref

        start_child(
            self.shapes_sup,
            shape_spec(shape.handle, start_storage=start_storage, start_consumer=start_consumer),
            timeout=10,
        )
        shape.reader = writer.reader()
        return shape

    # -- replication ----------------------------------------------------------------------------------

    def feed(self, collector: pykka.ActorRef[Any] | None = None) -> list[TransactionFragment]:
        """Decode what the slot captured and hand every fragment to the collector, in order."""
        frags = [e for e in self.slot.decode(max_batch=3) if isinstance(e, TransactionFragment)]
        for f in frags:
            (collector or self.collector).ask(f, timeout=10)
            if f.commit:
                self.last_commit_lsn = f.commit_lsn
        return frags

    def sync_all(self) -> None:
        """Feed and wait until every shape made every transaction durable (the ack reached the last one)."""
        self.feed()
        if self.last_commit_lsn:
            self.wait_acked(self.last_commit_lsn)

    # -- checking -------------------------------------------------------------------------------------

    def expected(self, shape: ShapeUnderTest) -> dict[str, dict[str, str | None]]:
        d = shape.definition
        with psycopg.connect(self.dsn, options=SESSION_OPTIONS) as conn:
            cur = raw_text_cursor(conn)
            cur.execute(snapshot_query(d, shape.where_sql), tuple(shape.where_params))
            rows = cur.fetchall()
        prefix = key_prefix(d.schema, d.table)
        out = {}
        for r in rows:
            value = dict(zip(d.columns, r, strict=True))
            out[row_key(prefix, [value[c] for c in d.key_columns])] = value
        return out

    def stop(self) -> None:
        for ref in (self.shapes_sup, self.pool, self.collector):
            ref.stop(timeout=10)
        self.slot.close()
        self.conn.close()


def read_log(reader: ShapeLogReader) -> list[dict[str, Any]]:
    """Every item of a shape (snapshot then log), following chunks as a client would."""
    items: list[dict[str, Any]] = []
    offset = LogOffset.BEFORE_ALL
    for _ in range(100_000):
        chunk = reader.read_chunk(offset)
        assert chunk.ready, "snapshot not complete"
        if chunk.count:
            items.extend(orjson.loads(b"[" + chunk.body + b"]"))
        if chunk.count == 0 or chunk.end_offset == offset:
            return items
        offset = chunk.end_offset
    raise AssertionError("log did not end")


def apply_item(rows: dict[str, dict[str, str | None]], item: dict[str, Any]) -> str | None:
    """Apply one log item to a client's copy (``rows``: key -> values), as a client does; returns the gap
    (a change of a missing key) or duplicate (an insert of a present key) it reveals, else None."""
    op = item["headers"].get("operation")
    if op is None:  # a control message
        return None
    key = item["key"]
    if op == "insert":
        present = key in rows
        rows[key] = dict(item["value"])
        return f"duplicate insert of {key}" if present else None
    if op == "update":
        missing = key not in rows
        rows.setdefault(key, {}).update(item["value"])
        return f"update of missing {key}" if missing else None
    return f"delete of missing {key}" if rows.pop(key, None) is None else None


def replay(items: list[dict[str, Any]]) -> dict[str, dict[str, str | None]]:
    """Apply items strictly: an insert of a present key (duplicate) or a change of a missing one (gap) fails."""
    rows: dict[str, dict[str, str | None]] = {}
    for item in items:
        error = apply_item(rows, item)
        assert error is None, error
    return rows


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def routed_changes(message: Any) -> list[ShapeChanges]:
    """What a consumer was told, as ``ShapeChanges`` in order (a ``ShapeRun`` stands for one per
    transaction; a ``ShapeBatch`` for its messages)."""
    parts = message.messages if isinstance(message, ShapeBatch) else (message,)
    return [m for p in parts for m in (p.as_changes() if isinstance(p, ShapeRun) else [p])]
