"""Cooperative, non-blocking use of a low-level libpq connection (``psycopg.pq.PGconn``).

Why this module exists: the replication connection must be driven through psycopg's ``pq`` layer (psycopg
has no replication API), whose ``connect()`` and ``exec_()`` are blocking C calls that would freeze every
greenlet under gevent (python-stack §3).  Here a connection is opened with ``connect_start``/``connect_poll``
and commands run as ``send_query`` + ``consume_input`` loops, waiting on the socket through
:mod:`sync.runtime`, so they are cooperative under gevent and plain blocking waits on threads.

``PQconnectStart`` also resolves a host name with a blocking ``getaddrinfo`` inside libpq, so a slow DNS would
freeze the worker: :func:`connect` resolves the names first, in an OS thread (``runtime.run_blocking``), with
psycopg's own :func:`~psycopg.conninfo.conninfo_attempts` (one attempt per address, ``hostaddr`` set, ``host``
kept for TLS and ``.pgpass``), and tries the attempts in order like libpq does.

The display settings shared with snapshot sessions (architecture §4) are passed in the ``options``
connection parameter so that the walsender formats values exactly as snapshot queries do.
"""

from __future__ import annotations

import time

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_attempts, conninfo_to_dict, make_conninfo
from psycopg.pq.abc import PGconn

from sync import runtime
from sync.postgres.display import display_settings_options
from sync.postgres.errors import DbConnectionError, classify

__all__ = [
    "DISPLAY_OPTIONS",
    "REPLICATION_APPLICATION_NAME",
    "connect",
    "query",
    "replication_conninfo",
    "resolve_attempts",
    "wait_idle",
]

DISPLAY_OPTIONS = display_settings_options()  # the snapshot sessions' settings (sync.postgres.display)


REPLICATION_APPLICATION_NAME = "shapesync"
"""The replication session's ``application_name`` unless the URL sets one: what ``pg_stat_replication``
shows, and what ``synchronous_standby_names`` must not select (Postgres would hold every commit until
shapesync has it on disk)."""


def replication_conninfo(dsn: str, *, extra_options: str = "") -> str:
    """``dsn`` (keyword or URL form) with ``replication=database``, the display settings and a fallback
    ``application_name`` added."""
    params = conninfo_to_dict(dsn)
    options = " ".join(p for p in (str(params.get("options") or ""), DISPLAY_OPTIONS, extra_options) if p)
    params.pop("options", None)
    params.pop("replication", None)
    params.setdefault("fallback_application_name", REPLICATION_APPLICATION_NAME)
    return make_conninfo("", **params, replication="database", options=options)


def resolve_attempts(conninfo: str) -> list[str]:
    """The connection attempts of ``conninfo``, host names resolved to ``hostaddr`` off the hub.

    Raises :class:`DbConnectionError` when no host resolves.
    """
    try:
        attempts = runtime.run_blocking(conninfo_attempts, conninfo_to_dict(conninfo))
    except psycopg.OperationalError as exc:
        raise classify(exc) from exc
    return [make_conninfo("", **attempt) for attempt in attempts]


def connect(conninfo: str, *, timeout: float = 30.0) -> PGconn:
    """Open a connection without blocking the hub; raise :class:`DbConnectionError` on failure.

    Every address of every host is tried in turn (within ``timeout`` overall); the last error is raised.
    """
    deadline = time.monotonic() + timeout
    error: DbConnectionError | None = None
    for attempt in resolve_attempts(conninfo):
        try:
            return _connect_one(attempt, deadline, timeout)
        except DbConnectionError as exc:
            error = exc
            if time.monotonic() >= deadline:
                break
    assert error is not None  # resolve_attempts returns at least one attempt or raises
    raise error


def _connect_one(conninfo: str, deadline: float, timeout: float) -> PGconn:
    pg: PGconn = pq.PGconn.connect_start(conninfo.encode())
    try:
        status = pq.PollingStatus.WRITING
        while True:
            if status == pq.PollingStatus.FAILED or pq.ConnStatus(pg.status) == pq.ConnStatus.BAD:
                raise classify(psycopg.OperationalError(_message(pg)))
            if status == pq.PollingStatus.OK:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DbConnectionError("connection_failed", f"connecting timed out after {timeout:g} s")
            if status == pq.PollingStatus.READING:
                runtime.wait_readable(pg.socket, remaining)
            elif status == pq.PollingStatus.WRITING:
                runtime.wait_writable(pg.socket, remaining)
            status = pq.PollingStatus(pg.connect_poll())
    except BaseException:
        pg.finish()
        raise
    pg.nonblocking = 1
    return pg


def _message(pg: PGconn) -> str:
    return pg.get_error_message().strip() or "connection failed"


def wait_idle(pg: PGconn, timeout: float | None) -> None:
    """Read until the pending command's results are buffered (``is_busy()`` false)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        pg.consume_input()
        while pg.is_busy():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DbConnectionError("connection_lost", f"no answer from the server in {timeout:g} s")
            runtime.wait_readable(pg.socket, remaining)
            pg.consume_input()
    except psycopg.OperationalError as exc:
        raise classify(exc) from exc


def flush(pg: PGconn, timeout: float | None = 30.0) -> None:
    """Push queued output to the server (nonblocking ``flush`` returns 1 while data is still queued)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while pg.flush():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DbConnectionError("connection_lost", f"could not send to the server in {timeout:g} s")
            runtime.wait_writable(pg.socket, remaining)
    except psycopg.OperationalError as exc:
        raise classify(exc) from exc


def query(pg: PGconn, sql: str, *, timeout: float | None = 60.0) -> list[tuple[str | None, ...]]:
    """Run one simple-protocol command; return the rows of its last result as text.

    Errors become :class:`DbConnectionError` (the server error is chained as ``__cause__``).
    """
    try:
        pg.send_query(sql.encode())  # raises OperationalError if the connection is broken
    except psycopg.OperationalError as exc:
        raise classify(exc) from exc
    flush(pg, timeout)
    rows: list[tuple[str | None, ...]] = []
    error: Exception | None = None
    while True:
        wait_idle(pg, timeout)
        res = pg.get_result()
        if res is None:
            break
        status = pq.ExecStatus(res.status)
        if status == pq.ExecStatus.TUPLES_OK:
            rows = [
                tuple(
                    None if (v := res.get_value(r, c)) is None else bytes(v).decode()
                    for c in range(res.nfields)
                )
                for r in range(res.ntuples)
            ]
        elif status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE):
            error = psycopg.errors.error_from_result(res, encoding="utf-8")
        elif status == pq.ExecStatus.COPY_BOTH:
            raise DbConnectionError("protocol", f"unexpected COPY BOTH answer to {sql!r}")
    if error is not None:
        raise classify(error) from error
    return rows
