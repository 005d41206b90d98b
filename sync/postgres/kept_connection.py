"""One autocommit connection kept between uses: opened when first needed, replaced once it broke.

Why this module exists: the publication manager and the schema catalog each keep a connection of their own
between uses that may be minutes apart.  Meanwhile the server or the network may cut it (a Postgres
restart, ``idle_session_timeout``, a proxy's idle timeout), and its next use fails although the database
is up.  :meth:`KeptConnection.run` then runs the step once more on a new connection; callers pass only
steps that are safe to run twice (reads, idempotent statements).  A connection that just opened is not
retried: its failure says something about the database, not about idleness.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

__all__ = ["KeptConnection"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class KeptConnection:
    """Used from one thread or greenlet at a time."""

    def __init__(self, dsn: str, *, connect_timeout: float, name: str) -> None:
        self._dsn = dsn
        self._timeout = max(1, int(connect_timeout))
        self._name = name  # for the log
        self._conn: psycopg.Connection[Any] | None = None

    def run(self, step: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``step(connection)``'s result.  Any exception of it closes the connection (the next use opens
        another); one raised on a connection that had served earlier and is now broken runs ``step`` once
        more, on a new connection."""
        reused = self._conn is not None and not self._conn.closed
        conn = self._connection()
        try:
            return step(conn)
        except Exception as exc:
            cut = conn.broken or conn.closed
            self.close()
            if not (reused and cut):
                raise
            logger.info("%s: the connection was cut while idle (%s): once more on a new one", self._name, exc)
        conn = self._connection()
        try:
            return step(conn)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._timeout)
        return self._conn
