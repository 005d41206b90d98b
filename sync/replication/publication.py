"""The PublicationManager actor: tables enter and leave the publication as shapes need them.

Why this module exists: the shape engine must not race two ``ALTER PUBLICATION`` statements or hold a
connection per shape; this actor serialises the steps of :mod:`sync.replication.tables` on one connection
of its own (cooperative under gevent: high-level psycopg, never ``pgconn.exec_()``), keeps the reference
counts, and answers every request with a value: ``None`` on success, the :class:`DbConnectionError` that
explains the failure otherwise (errors are part of its contract, so it does not crash on them).

A table whose last shape went away stays published for ``unpublish_grace`` seconds: when every shape of a
table is invalidated at once (a TRUNCATE, a column change) its clients come back within a second or two for
new shapes, and removing the table only to add it again took the table's SHARE lock again (queueing its
writers behind whatever writer was in flight) for nothing; nor does an LRU eviction followed by a new shape
of the same table.  While it stays, re-adding it is one catalog look.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pykka

from supervisors import SupervisedActor
from sync import runtime
from sync.postgres.errors import DbConnectionError, classify
from sync.postgres.kept_connection import KeptConnection
from sync.replication.tables import LockedOut, TableName, TableRefs, publish_table, unpublish_table

__all__ = ["AddTable", "PublicationManager", "RemoveTable", "TableName"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AddTable:
    """Ask -> ``DbConnectionError | None``: ``owner`` (a shape handle) needs ``table`` published.

    ``sent_at`` (``time.monotonic()`` when the message was made) lets one catalog check answer every
    request for the table sent before that check finished (see :meth:`PublicationManager._attempt`)."""

    table: TableName
    owner: str
    sent_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class RemoveTable:
    """Ask -> ``DbConnectionError | None``: ``owner`` no longer needs ``table``."""

    table: TableName
    owner: str


@dataclass(frozen=True, slots=True)
class _Expire:
    """tell (to itself): ``table``'s grace, started at ``since``, is over."""

    table: TableName
    since: float


class PublicationManager(SupervisedActor):
    """Adds and removes tables in the stream's publication, reference-counted by shape.

    Owns:       one autocommit connection (reopened after a failure); the table -> owners counts; per
                table, when its last successful check finished.
    Receives:   AddTable, RemoveTable (ask) -> DbConnectionError | None; _Expire (tell, from its timers).
    Sends:      _Expire to itself, ``unpublish_grace`` after a table lost its last owner.
    Crashes on: nothing expected: database errors are returned to the asker.
    """

    def __init__(
        self,
        dsn: str,
        publication: str,
        *,
        lock_timeout: float = 5.0,
        connect_timeout: float = 30.0,
        unpublish_grace: float = 0.0,
    ) -> None:
        super().__init__()
        self._publication = publication
        self._lock_timeout = lock_timeout
        self._grace = unpublish_grace
        self._idle: dict[TableName, float] = {}  # tables without owners kept published: since when
        # The steps are idempotent: one that found the connection cut since its last use (a restart,
        # ``idle_session_timeout``, a proxy's idle timeout) runs again on a new one rather than fail the
        # shape that came first.
        self._conn = KeptConnection(dsn, connect_timeout=connect_timeout, name=f"publication {publication}")
        self.refs = TableRefs()
        # table -> time.monotonic() when a check found it (or made it) published with REPLICA IDENTITY FULL;
        # only for tables with owners (removing the last one forgets it)
        self._checked: dict[TableName, float] = {}
        # table -> the transactions whose locks on it made the last try fail (LockedOut): not waited behind
        # again while they last
        self._blockers: dict[TableName, frozenset[str]] = {}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, AddTable):
            self._idle.pop(message.table, None)
            checked = self._checked.get(message.table)
            if checked is None or message.sent_at > checked:
                # A request sent after the last check finished checks again, so a table dropped from the
                # publication from outside is still repaired by the next shape that needs it.  One sent while
                # a check of the table was running or before is answered by that check: a burst of new shapes
                # on one table (16 built at once) used to queue here for one catalog round trip each, ~60 ms
                # per shape under load.
                error = self._attempt(message.table, add=True)
                if error is not None:
                    return error
                self._checked[message.table] = time.monotonic()
            self.refs.add(message.table, message.owner)
            return None
        if isinstance(message, RemoveTable):
            if not self.refs.remove(message.table, message.owner):
                return None  # others still need the table
            self._checked.pop(message.table, None)
            if self._grace <= 0:
                return self._attempt(message.table, add=False)
            since = self._idle[message.table] = time.monotonic()
            runtime.spawn(self._expire_later, _Expire(message.table, since), name="unpublish-grace")
            return None
        if isinstance(message, _Expire):
            if self._idle.get(message.table) == message.since and not self.refs.holders(message.table):
                del self._idle[message.table]
                self._attempt(message.table, add=False)
            return None
        logger.warning("%s: unexpected message %r", self, message)
        return None

    def on_stop(self) -> None:
        self._conn.close()

    def _expire_later(self, message: _Expire) -> None:
        runtime.sleep(self._grace)
        # stopped meanwhile: the table stays published (a later shape of it removes it in time)
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    def _attempt(self, table: TableName, *, add: bool) -> DbConnectionError | None:
        """Publish or unpublish ``table`` now: None, or the classified error (logged)."""
        try:
            self._conn.run(lambda conn: self._step(conn, table, add=add))
        except (psycopg.Error, DbConnectionError) as exc:
            error = classify(exc)
            if isinstance(exc, LockedOut):
                self._blockers[table] = exc.blockers
            logger.warning("publication %s: %s", self._publication, error.message)
            return error
        self._blockers.pop(table, None)
        return None

    def _step(self, conn: psycopg.Connection[Any], table: TableName, *, add: bool) -> None:
        if add:
            blockers = self._blockers.get(table, frozenset())
            publish_table(conn, self._publication, table, lock_timeout=self._lock_timeout, blockers=blockers)
        else:
            unpublish_table(conn, self._publication, table, lock_timeout=self._lock_timeout)
