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
* a connection not idle (in a transaction, failed, closed) always goes back to the pool, which checks it;
  one put back ``unsettled`` (its statement's end still on the wire) is settled first.

A connection put back unsettled is settled by :meth:`KeptConnections.settle_kept` once the request's answer
has left (the raw answer's close hook: ``SubsetRunner.settle_pending``, handed to ``api/subset.py`` with the
subset's result), off the request's critical path; failing that, before its next use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from supervisors.stripes import native_lock
from sync.runtime import Event, Handle, spawn

__all__ = ["KeptConnections"]

logger = logging.getLogger(__name__)

C = TypeVar("C", bound="psycopg.Connection[Any]")


class KeptConnections(Generic[C]):
    """Thread/greenlet-safe.  ``get``/``put`` in place of the pool's ``getconn``/``putconn``; ``close``
    before closing the pool.

    A connection may be put back ``unsettled`` (the end of its last statement still to be read, see
    :func:`~sync.shapes.subset_exec.execute_early`): ``settle(conn)`` is called on it before it is used
    again or given back to the pool (off the request that put it back); one that fails to settle is closed.
    """

    def __init__(
        self, pool: ConnectionPool[C], max_idle: float, settle: Callable[[C], None] | None = None
    ) -> None:
        self._pool = pool
        self._max_idle = max_idle
        self._settle = settle
        # (connection, when it was given back, unsettled), newest last
        self._kept: list[tuple[C, float, bool]] = []
        self._waiting = 0  # requests in pool.getconn
        # an OS-thread lock under gevent too (~1 µs less per acquire than gevent's, three or four acquires
        # per subset): no critical section here switches greenlets (list operations, the clock, and
        # spawning the sweeper, which starts a greenlet without switching to it)
        self._lock = native_lock()
        self._closed = False
        self._stop = Event()
        self._sweeper: Handle | None = None

    def get(self, timeout: float) -> C:
        """The newest kept connection (settled), else the pool's (raises PoolTimeout as ``getconn`` does)."""
        while True:
            with self._lock:
                if not self._kept:
                    self._waiting += 1
                    break
                conn, _, unsettled = self._kept.pop()
            if not unsettled or self._settled(conn):
                return conn
            self._pool.putconn(conn)  # closed: the pool discards it
        try:
            return self._pool.getconn(timeout=timeout)
        finally:
            with self._lock:
                self._waiting -= 1

    def put(self, conn: C, *, unsettled: bool = False) -> None:
        """Keep ``conn`` for the next request, or give it back to the pool (see the module's rules)."""
        if not conn.closed and (unsettled or conn.pgconn.transaction_status == pq.TransactionStatus.IDLE):
            with self._lock:
                if not self._waiting and not self._closed:
                    self._kept.append((conn, time.monotonic(), unsettled))
                    if self._sweeper is None:
                        self._sweeper = spawn(self._sweep, name="subset-kept-connections")
                    return
        if unsettled:
            self._settled(conn)
        self._pool.putconn(conn)

    def __len__(self) -> int:
        return len(self._kept)

    def _settled(self, conn: C) -> bool:
        """Settle ``conn``; False (and the connection closed) when that failed."""
        if self._settle is None or conn.closed:
            return not conn.closed
        try:
            self._settle(conn)
        except psycopg.Error as exc:
            logger.warning("a subset connection failed to settle: %r", exc)
            conn.close()
            return False
        return True

    def settle_kept(self) -> None:
        """Settle the kept connections put back unsettled (each out of the list while it settles, so no
        request takes it meanwhile); one that fails to settle is closed and given back to the pool."""
        with self._lock:
            pending = [entry for entry in self._kept if entry[2]]
            if not pending:
                return
            self._kept = [entry for entry in self._kept if not entry[2]]
        for conn, at, _ in pending:
            if self._settled(conn):
                with self._lock:
                    if not self._waiting and not self._closed:
                        self._kept.append((conn, at, False))
                        continue
            self._pool.putconn(conn)

    def _sweep(self) -> None:
        while not self._stop.wait(self._max_idle / 2):
            self._give_back(time.monotonic() - self._max_idle)

    def _give_back(self, given_before: float) -> None:
        with self._lock:
            stale = [(conn, unsettled) for conn, at, unsettled in self._kept if at <= given_before]
            self._kept = [entry for entry in self._kept if entry[1] > given_before]
        for conn, unsettled in stale:
            if unsettled:
                self._settled(conn)
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
