"""Subset connections kept out of the pool between requests while requests keep coming.

Why: ``ConnectionPool.getconn`` + ``putconn`` cost the HTTP worker ~30 µs per subset (locks, stats, state
checks, logging calls) out of a ~1 ms request, on its critical path.  A connection a request gives back is
kept here, still checked out of the pool, and the next request takes it with one list pop; the pool stays
the only place connections are opened, counted and bounded (``max_size``), so concurrency is bounded as
before.  Three rules keep the pool's guarantees:

* a request waiting in ``getconn`` (the pool exhausted) is never starved: while one waits, connections go
  back to the pool, which hands them to it;
* a kept connection idle for ``max_idle`` goes back to the pool (a sweeper runs every ``max_idle / 2``),
  where the pool's own ``max_idle`` closes it: an idle service holds no more connections than before;
* a connection not idle (in a transaction, failed, closed) always goes back to the pool, which checks it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from sync.runtime import Event, Handle, spawn

__all__ = ["KeptConnections"]

C = TypeVar("C", bound="psycopg.Connection[Any]")


class KeptConnections(Generic[C]):
    """Thread/greenlet-safe.  ``get``/``put`` in place of the pool's ``getconn``/``putconn``; ``close``
    before closing the pool."""

    def __init__(self, pool: ConnectionPool[C], max_idle: float) -> None:
        self._pool = pool
        self._max_idle = max_idle
        self._kept: list[tuple[C, float]] = []  # (connection, when it was given back), newest last
        self._waiting = 0  # requests in pool.getconn
        self._lock = threading.Lock()
        self._closed = False
        self._stop = Event()
        self._sweeper: Handle | None = None

    def get(self, timeout: float) -> C:
        """The newest kept connection, else the pool's (raises PoolTimeout as ``getconn`` does)."""
        with self._lock:
            if self._kept:
                return self._kept.pop()[0]
            self._waiting += 1
        try:
            return self._pool.getconn(timeout=timeout)
        finally:
            with self._lock:
                self._waiting -= 1

    def put(self, conn: C) -> None:
        """Keep ``conn`` for the next request, or give it back to the pool (see the module's rules)."""
        if not conn.closed and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            with self._lock:
                if not self._waiting and not self._closed:
                    self._kept.append((conn, time.monotonic()))
                    if self._sweeper is None:
                        self._sweeper = spawn(self._sweep, name="subset-kept-connections")
                    return
        self._pool.putconn(conn)

    def __len__(self) -> int:
        return len(self._kept)

    def _sweep(self) -> None:
        while not self._stop.wait(self._max_idle / 2):
            self._give_back(time.monotonic() - self._max_idle)

    def _give_back(self, given_before: float) -> None:
        with self._lock:
            stale = [conn for conn, at in self._kept if at <= given_before]
            self._kept = [(conn, at) for conn, at in self._kept if at > given_before]
        for conn in stale:
            self._pool.putconn(conn)

    def close(self) -> None:
        """Give every kept connection back and stop keeping any (call before the pool's ``close``)."""
        with self._lock:
            self._closed = True
        self._stop.set()
        self._give_back(float("inf"))
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.join(5.0)
