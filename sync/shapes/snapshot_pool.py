"""``SnapshotPool``: bounded concurrency for initial snapshots.

A snapshot is a long read on its own connection (two for a large table, see
:mod:`sync.shapes.snapshot_blocks`); running too many at once would exhaust Postgres connections and starve
replication, so at most ``size`` run at a time and the rest queue in arrival order.
The pool actor only dispatches: each snapshot runs in a worker spawned for it
(:func:`sync.shapes.snapshot_worker.take_snapshot`, a greenlet under gevent), which reports back with
``WorkerDone`` and hands its connection back for reuse.  The inbox is never blocked by a snapshot.

A worker hands its slot and connection back as soon as it has read the last row and ended the
transaction, then waits for storage to write and fsync the rest (``WorkerFinished`` when done): a held
connection would idle through that wait (~22 ms of a ~59 ms small snapshot, measured while 1,000 shapes
were created).  At most ``size`` workers finish that way at once (each holds at most
``STORE_AHEAD_BYTES`` of appends in storage); past that they keep their slot to the end, as before.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg
import pykka

from supervisors import SupervisedActor
from sync import runtime
from sync.shapes.snapshot_blocks import DEFAULT_PAGES
from sync.shapes.snapshot_messages import SnapshotRequest
from sync.shapes.snapshot_worker import FRESH_S, take_snapshot

__all__ = ["GetPoolStatus", "PoolStatus", "SnapshotPool", "StartSnapshot", "WorkerDone", "WorkerFinished"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StartSnapshot:
    """tell (Consumer): take this shape's snapshot when a slot is free."""

    request: SnapshotRequest


@dataclass(frozen=True, slots=True)
class WorkerDone:
    """tell (worker -> pool): a snapshot ended, or with ``finishing`` read its last row and now waits for
    storage (a WorkerFinished follows); ``conn`` is reusable, or None."""

    conn: psycopg.Connection[Any] | None
    finishing: bool = False


@dataclass(frozen=True, slots=True)
class WorkerFinished:
    """tell (worker -> pool): a snapshot that handed its slot back early (``WorkerDone(finishing=True)``)
    ended."""


@dataclass(frozen=True, slots=True)
class GetPoolStatus:
    """ask -> PoolStatus."""


@dataclass(frozen=True, slots=True)
class PoolStatus:
    running: int
    queued: int
    idle_connections: int
    completed: int
    finishing: int = 0  # rows all read, waiting for storage to make them durable (slot handed back)


class SnapshotPool(SupervisedActor):
    """Runs at most ``size`` snapshots at once.

    Owns:       the queue of waiting requests, the idle snapshot connections, the running and finishing
                counts.
    Receives:   StartSnapshot (tell); WorkerDone / WorkerFinished (tell, from its workers); GetPoolStatus
                (ask) -> PoolStatus.
    Sends:      nothing itself; spawns one worker per snapshot, which tells the consumer
                SnapshotStarted / SnapshotCompleted / SnapshotFailed.
    Crashes on: nothing expected; idle connections are closed on stop and running workers finish alone.
    """

    def __init__(
        self,
        dsn: str,
        *,
        size: int = 8,
        fetch_rows: int = 1000,
        storage_timeout: float = 60.0,
        pages: int = DEFAULT_PAGES,
    ) -> None:
        super().__init__()
        if size < 1:
            raise ValueError("snapshot pool size must be >= 1")
        self._dsn = dsn
        self._size = size
        self._fetch_rows = fetch_rows
        self._timeout = storage_timeout
        self._pages = pages  # heap pages per snapshot query (sync.shapes.snapshot_blocks)
        self._queue: deque[SnapshotRequest] = deque()
        self._idle: list[tuple[psycopg.Connection[Any], float]] = []  # with when it was handed back
        self._running = 0
        self._finishing = 0  # handed their slot back, still waiting for storage: at most ``size`` of them
        self._completed = 0

    def on_receive(self, message: Any) -> Any:
        match message:
            case StartSnapshot(request):
                self._queue.append(request)
                self._pump()
            case WorkerDone(conn, finishing):
                self._running -= 1
                if finishing:
                    self._finishing += 1
                else:
                    self._completed += 1
                if conn is not None:
                    self._idle.append((conn, time.monotonic()))
                self._pump()
            case WorkerFinished():
                self._finishing -= 1
                self._completed += 1
                self._pump()
            case GetPoolStatus():
                return PoolStatus(
                    self._running, len(self._queue), len(self._idle), self._completed, self._finishing
                )
            case _:
                msg = f"{type(self).__name__}: unexpected message {message!r}"
                raise TypeError(msg)
        return None

    def on_stop(self) -> None:
        self._close_idle()

    def on_failure(self, *exc_info: Any) -> None:
        self._close_idle()

    def _pump(self) -> None:
        while self._queue and self._running < self._size:
            request = self._queue.popleft()
            conn, since = self._idle.pop() if self._idle else (None, 0.0)
            fresh = time.monotonic() - since < FRESH_S
            early = self._finishing < self._size  # may hand its slot back before storage is done
            self._running += 1
            runtime.spawn(self._work, request, conn, fresh, early, name=f"snapshot-{request.handle}")
        # connections beyond what can run at once are not kept
        while len(self._idle) > self._size - self._running:
            self._idle.pop()[0].close()

    def _work(
        self, request: SnapshotRequest, conn: psycopg.Connection[Any] | None, fresh: bool, early: bool
    ) -> None:
        kept: psycopg.Connection[Any] | None = None
        released = False

        def release(done: psycopg.Connection[Any]) -> None:  # rows read: the slot and connection go back
            nonlocal released
            released = True
            try:
                self.actor_ref.tell(WorkerDone(done, finishing=True))
            except pykka.ActorDeadError:  # the pool stopped meanwhile: nobody will reuse the connection
                done.close()

        try:
            kept = take_snapshot(
                self._dsn,
                conn,
                request,
                fetch_rows=self._fetch_rows,
                timeout=self._timeout,
                pages=self._pages,
                fresh=fresh,
                release=release if early else None,
            )
        finally:  # the slot is given back whatever happened (even a killed worker)
            try:
                self.actor_ref.tell(WorkerFinished() if released else WorkerDone(kept))
            except pykka.ActorDeadError:  # the pool stopped meanwhile: nobody will reuse the connection
                if kept is not None:
                    kept.close()

    def _close_idle(self) -> None:
        for conn, _ in self._idle:
            conn.close()
        self._idle.clear()
