"""The start of a snapshot: its transaction, snapshot, WAL position and the table's columns in one round
trip, taken again while the snapshot does not see a transaction the collector already routed.

Why a module of its own: this is where the snapshot joins the replication stream (architecture §3, hard
spot 3), apart from the streaming of rows that follows (:mod:`sync.shapes.snapshot_worker`).  Why the
retry: :mod:`sync.shapes.routed_history`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import psycopg

from sync import runtime
from sync.shapes.routed_history import unseen
from sync.shapes.snapshot import BEGIN_SNAPSHOT, SNAPSHOT_INFO_QUERY, parse_lsn
from sync.shapes.snapshot_messages import SnapshotRequest
from sync.shapes.snapshot_sql import table_query_of
from sync.shapes.xid import PgSnapshot

__all__ = ["BEGIN_AND_INFO", "UNSEEN_WAIT_S", "ConnectionLost", "begin_snapshot"]

logger = logging.getLogger(__name__)

BEGIN_AND_INFO: Final = f"{BEGIN_SNAPSHOT}; {SNAPSHOT_INFO_QUERY}"
# A snapshot that does not see a transaction already routed is taken again after this pause, doubling up to
# the most: the transaction's backend is about to leave the proc array (or waits for a standby).
_UNSEEN_PAUSE_S: Final = 0.002
_UNSEEN_MAX_PAUSE_S: Final = 0.25
UNSEEN_WAIT_S = 60.0
"""How long a snapshot waits for such a transaction before the shape fails (a commit held by a standby
that is gone would hold every new shape of the stream until then)."""


class ConnectionLost(Exception):
    """The snapshot's first statement found the connection broken: nothing was started, retry elsewhere."""

    def __init__(self, error: psycopg.OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


def begin_snapshot(
    conn: psycopg.Connection[Any], request: SnapshotRequest, must_see: tuple[int, ...]
) -> tuple[PgSnapshot, int, list[tuple[Any, ...]] | None]:
    """Start the snapshot's transaction: the snapshot, the WAL position read with it, the table's size and
    columns, in one round trip (the simple query protocol runs them in order; the first result is BEGIN's).

    A snapshot that does not see a transaction of ``must_see`` (routed before the shape registered, still
    running for Postgres: :mod:`sync.shapes.routed_history`) is given up and taken again after a pause, for
    up to :data:`UNSEEN_WAIT_S`."""
    pause, deadline = _UNSEEN_PAUSE_S, time.monotonic() + UNSEEN_WAIT_S
    while True:
        try:
            cur = conn.execute(f"{BEGIN_AND_INFO}; {table_query_of(conn, request.definition)}")
        except psycopg.OperationalError as exc:
            if conn.broken:  # nothing started yet: the caller may retry on a new connection
                raise ConnectionLost(exc) from exc
            raise
        row = cur.fetchone() if cur.nextset() else None
        assert row is not None
        table_rows = cur.fetchall() if cur.nextset() else None
        snapshot = PgSnapshot.parse(str(row[0]))
        missing = unseen(snapshot, must_see)
        if not missing:
            return snapshot, parse_lsn(str(row[1])), table_rows
        conn.execute("ROLLBACK")
        xids = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        if time.monotonic() >= deadline:
            msg = (
                f"{len(missing)} transactions (xid {xids}) were replicated but are still running for"
                f" Postgres after {UNSEEN_WAIT_S:g} s (a commit waiting for a synchronous standby?)"
            )
            raise TimeoutError(msg)
        if pause == _UNSEEN_PAUSE_S:
            logger.info(
                "shape %s: snapshot waits for %d transactions (xid %s), replicated but not yet visible",
                request.handle,
                len(missing),
                xids,
            )
        must_see = tuple(missing)
        runtime.sleep(pause)
        pause = min(pause * 2, _UNSEEN_MAX_PAUSE_S)
