"""Database errors that say what to do next.

Why this module exists: a libpq or server error ("FATAL: must be superuser or replication role to start
walsender", SQLSTATE 53400, a dropped socket ...) means nothing to an operator reading the health endpoint.
:func:`classify` turns any exception met while talking to Postgres into a :class:`DbConnectionError` with a
stable ``kind``, a message that names the fix, and ``retry_may_fix`` (a connection loss heals by retrying;
``wal_level = replica`` does not, so it is retried slowly and reported loudly), after Electric's
``DbConnectionError``.
"""

from __future__ import annotations

import psycopg
import psycopg.errors as pg_errors

__all__ = ["DbConnectionError", "classify"]


class DbConnectionError(Exception):
    """A classified database problem.

    ``kind`` is one of: ``connection_failed``, ``connection_lost``, ``auth``, ``database_missing``,
    ``wal_level``, ``replication_privilege``, ``slot_limit``, ``slot_not_ours``, ``publication_not_ours``,
    ``lock_timeout``, ``query_failed``, ``protocol``; from the publication steps also ``table_missing``,
    ``table_privilege``, ``publication_missing``.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        retry_may_fix: bool = True,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_may_fix = retry_may_fix
        self.sqlstate = sqlstate

    @property
    def misconfiguration(self) -> bool:
        """An operator must change something; retrying quickly would only spam the logs."""
        return not self.retry_may_fix

    def as_dict(self) -> dict[str, object]:
        """For the health endpoint."""
        return {"kind": self.kind, "message": self.message, "retry_may_fix": self.retry_may_fix}

    def __repr__(self) -> str:
        return f"DbConnectionError({self.kind!r}, {self.message!r})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def classify(exc: BaseException) -> DbConnectionError:
    """Map any exception from a database interaction to a :class:`DbConnectionError` (idempotent)."""
    if isinstance(exc, DbConnectionError):
        return exc
    text = str(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    low = text.lower()
    if "must be superuser or replication role" in low or "permission denied to start" in low:
        return DbConnectionError(
            "replication_privilege",
            "the database user lacks the REPLICATION attribute: run "
            "ALTER ROLE <user> WITH REPLICATION (and allow 'replication' connections in pg_hba.conf)",
            retry_may_fix=False,
            sqlstate=sqlstate,
        )
    if "pg_hba.conf" in low and "replication" in low:
        return DbConnectionError(
            "replication_privilege",
            "pg_hba.conf does not allow a replication connection for this user/host: add a "
            f"'host replication <user> ...' line ({_first_line(exc)})",
            retry_may_fix=False,
            sqlstate=sqlstate,
        )
    if isinstance(exc, pg_errors.InvalidPassword | pg_errors.InvalidAuthorizationSpecification) or (
        "password authentication failed" in low
    ):
        return DbConnectionError("auth", f"authentication failed: {_first_line(exc)}", retry_may_fix=False)
    if isinstance(exc, pg_errors.InvalidCatalogName) or ("database" in low and "does not exist" in low):
        return DbConnectionError(
            "database_missing", f"the database does not exist: {_first_line(exc)}", retry_may_fix=False
        )
    if isinstance(exc, pg_errors.ConfigurationLimitExceeded) or "replication slots are in use" in low:
        return DbConnectionError(
            "slot_limit",
            "no free replication slot: raise max_replication_slots (and max_wal_senders) or drop unused "
            f"slots ({_first_line(exc)})",
            retry_may_fix=False,
            sqlstate=sqlstate,
        )
    if isinstance(exc, pg_errors.LockNotAvailable):
        return DbConnectionError(
            "lock_timeout",
            f"could not lock in time (a long-running transaction holds the table): {_first_line(exc)}",
            sqlstate=sqlstate,
        )
    if isinstance(exc, psycopg.OperationalError | OSError | EOFError | ConnectionError):
        kind = "connection_lost" if "closed" in low or "terminat" in low else "connection_failed"
        return DbConnectionError(kind, _first_line(exc), sqlstate=sqlstate)
    if isinstance(exc, psycopg.Error):
        return DbConnectionError("query_failed", _first_line(exc), sqlstate=sqlstate)
    return DbConnectionError("protocol", f"{type(exc).__name__}: {_first_line(exc)}")
