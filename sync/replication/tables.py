"""Publication membership of tables: reference counts and the SQL steps, without the actor.

Why this module exists: shapes come and go, a table belongs in the publication while at least one shape
reads it, and every published table needs ``REPLICA IDENTITY FULL`` (old rows on UPDATE/DELETE, unchanged
TOAST values; electric-architecture §2).  The steps are idempotent (they read the catalog first, so they
also repair a publication edited from outside) and each runs in its own transaction with ``SET LOCAL
lock_timeout``, so an application transaction holding a lock on the table makes the step fail with a
clear ``lock_timeout`` error instead of hanging the engine (and queueing every other query on that table
behind our ACCESS EXCLUSIVE request).

Adding a table to the publication waits for the table's writers (``LOCK TABLE ... IN SHARE MODE``, or the
ACCESS EXCLUSIVE lock of ``REPLICA IDENTITY FULL``): pgoutput publishes a change as of when it was made,
so a writer in flight across the ``ADD TABLE`` would otherwise be lost to the shape whose snapshot
follows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from sync.postgres.errors import DbConnectionError, classify

__all__ = [
    "EVERY_OPERATION",
    "FILTERED_SQL",
    "PUBLISHES_EVERY_OPERATION_SQL",
    "LockedOut",
    "TableName",
    "TableRefs",
    "publish_table",
    "unpublish_table",
]


@dataclass(frozen=True, slots=True, order=True)
class TableName:
    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    def sql(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))

    def only(self) -> psycopg.sql.Composed:  # (``sql`` here is the method above)
        """``ONLY schema.name``: the table without the tables that inherit from it (``INHERITS``).  Added to
        a publication without ONLY, those came along with it, and an UPDATE or DELETE of one without a
        replica identity (no primary key, not FULL) then failed in the application; their changes were
        published under their own names, which no shape of this table follows."""
        return sql.SQL("ONLY {}").format(self.sql())


@dataclass(slots=True)
class TableRefs:
    """Which owners (shape handles) need which table."""

    owners: dict[TableName, set[str]] = field(default_factory=dict)

    def holders(self, table: TableName) -> set[str]:
        return self.owners.get(table, set())

    def add(self, table: TableName, owner: str) -> None:
        self.owners.setdefault(table, set()).add(owner)

    def remove(self, table: TableName, owner: str) -> bool:
        """Forget ``owner``; True when nobody needs the table any more."""
        owners = self.owners.get(table)
        if owners is None:
            return False
        owners.discard(owner)
        if owners:
            return False
        del self.owners[table]
        return True


EVERY_OPERATION = "insert, update, delete, truncate"  # what the stream's publication must publish
# The catalog's side of it, as SQL over ``pg_publication p`` and ``pg_publication_rel pr``: the publication
# publishes every operation; the table is published with a row filter or column list.  Those two columns
# exist from Postgres 15 on: read through ``to_jsonb`` so that the query runs on older servers too.
PUBLISHES_EVERY_OPERATION_SQL = "p.pubinsert AND p.pubupdate AND p.pubdelete AND p.pubtruncate"
FILTERED_SQL = "(to_jsonb(pr) ->> 'prqual' IS NOT NULL OR to_jsonb(pr) ->> 'prattrs' IS NOT NULL)"
# Whether the publication sends the table's changes by itself (FOR ALL TABLES, FOR TABLES IN SCHEMA), over
# ``pg_class c``, ``pg_namespace n`` and the publication's name as ``%(pub)s``.
_PUBLISHED_SQL = (
    "SELECT 1 FROM pg_publication_tables pt "
    "WHERE pt.pubname = %(pub)s AND pt.schemaname = n.nspname AND pt.tablename = c.relname"
)


def _timeout_sql(lock_timeout: float) -> sql.Composed:
    return sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{max(1, int(lock_timeout * 1000))}ms"))


def _run(
    conn: psycopg.Connection[Any], table: TableName, what: str, steps: list[sql.Composed], publication: str
) -> None:
    try:
        with conn.transaction():
            for step in steps:
                conn.execute(step)
    except psycopg.errors.LockNotAvailable as exc:
        raise DbConnectionError(
            "lock_timeout",
            f"could not {what} {table}: another transaction holds a lock on it (lock_timeout expired); "
            "it will be retried when a shape needs the table again",
            sqlstate=exc.sqlstate,
        ) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise DbConnectionError(
            "table_missing", f"table {table} does not exist", retry_may_fix=False, sqlstate=exc.sqlstate
        ) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DbConnectionError(
            "table_privilege",
            f"could not {what} {table}: {str(exc).strip()}. shapesync's database role must own the table, "
            f"or the table's owner sets it up once: ALTER TABLE {table} REPLICA IDENTITY FULL; "
            f"ALTER PUBLICATION {publication} ADD TABLE {table} (shapesync then leaves it published)",
            retry_may_fix=False,
            sqlstate=exc.sqlstate,
        ) from exc
    except psycopg.errors.UndefinedObject as exc:
        raise DbConnectionError(
            "publication_missing",
            f"could not {what} {table}: {str(exc).strip()} (the replication client creates it on start)",
            sqlstate=exc.sqlstate,
        ) from exc
    except psycopg.Error as exc:
        raise classify(exc) from exc


class LockedOut(DbConnectionError):
    """Publishing the table waited ``lock_timeout`` in vain, or would have: ``blockers`` are the
    transactions (``pg_locks.virtualtransaction``) holding a lock the step waits behind."""

    def __init__(self, message: str, blockers: frozenset[str]) -> None:
        super().__init__("lock_timeout", message)
        self.blockers = blockers


def publish_table(
    conn: psycopg.Connection[Any],
    publication: str,
    table: TableName,
    *,
    lock_timeout: float,
    blockers: frozenset[str] = frozenset(),
) -> None:
    """Make ``table`` REPLICA IDENTITY FULL and a member of ``publication`` that sends every change of it
    (no-op if already so): a publication altered from outside to leave out operations, or to filter the
    table's rows or columns, is set back (the shapes it starved were invalidated by the schema check).

    A table the publication takes in already (``FOR ALL TABLES``, ``FOR TABLES IN SCHEMA``: an operator's
    choice) is not added: Postgres refuses to, and its changes are sent anyway.

    Raises :class:`LockedOut` at once, queueing no lock request, when a transaction that holds a lock the
    first step would wait behind is older than ``lock_timeout`` or among ``blockers`` (those that made an
    earlier try time out: a transaction's start is visible only to privileged roles); and after
    ``lock_timeout`` when the step waited in vain."""
    row = conn.execute(
        f"SELECT c.relreplident, pr.oid IS NOT NULL OR EXISTS ({_PUBLISHED_SQL}), {FILTERED_SQL}, "
        f"coalesce({PUBLISHES_EVERY_OPERATION_SQL}, true), c.oid "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_publication p ON p.pubname = %(pub)s "
        "LEFT JOIN pg_publication_rel pr ON pr.prpubid = p.oid AND pr.prrelid = c.oid "
        "WHERE n.nspname = %(schema)s AND c.relname = %(name)s",
        {"pub": publication, "schema": table.schema, "name": table.name},
    ).fetchone()
    if row is None:
        raise DbConnectionError("table_missing", f"table {table} does not exist", retry_may_fix=False)
    replident, member, filtered, every_operation, oid = row
    pub = sql.Identifier(publication)
    changes: list[sql.Composed] = []
    if not every_operation:
        every = sql.Literal(EVERY_OPERATION)
        changes.append(sql.SQL("ALTER PUBLICATION {} SET (publish = {})").format(pub, every))
    if filtered:
        changes.append(sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(pub, table.only()))
    if filtered or not member:
        changes.append(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(pub, table.only()))
    # A change is published or not as of when it is made, not when its transaction commits.  A writer that
    # changed the table before it is published, and commits after the new shape's snapshot, would be in
    # neither: the first step waits for the table's writers to finish (they are then in the snapshot) and
    # holds new ones back until the table is published (their changes are then sent).
    if replident != "f":  # its ACCESS EXCLUSIVE lock does both
        first = sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(table.only())
        conflicts = _CONFLICT_ALL
    elif changes:
        first = sql.SQL("LOCK TABLE {} IN SHARE MODE").format(table.only())
        conflicts = _CONFLICT_SHARE
    else:
        return
    holders = _holders(conn, oid, conflicts, lock_timeout)
    long = [pid for vxid, pid, old in holders if old or vxid in blockers]
    if long:
        raise LockedOut(
            f"could not publish {table}: the transaction of backend {long[0]} has held a lock on it for "
            "longer than lock_timeout; not queueing behind it (the table's writers would queue behind us); "
            "it will be retried when a shape needs the table again",
            frozenset(vxid for vxid, _, _ in holders),
        )
    try:
        _run(conn, table, "publish", [_timeout_sql(lock_timeout), first, *changes], publication)
    except DbConnectionError as exc:
        if exc.kind != "lock_timeout":
            raise
        now = frozenset(vxid for vxid, _, _ in _holders(conn, oid, conflicts, lock_timeout))
        raise LockedOut(exc.message, now) from exc


# The lock modes a request for ACCESS EXCLUSIVE, and for SHARE, waits behind.
_CONFLICT_ALL = [
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
]
_CONFLICT_SHARE = _CONFLICT_ALL[2:4] + _CONFLICT_ALL[5:]
_HOLDERS_SQL = """
SELECT l.virtualtransaction, l.pid,
       coalesce(a.xact_start < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => %s), false)
FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.relation = %s AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
  AND l.mode = ANY(%s)
  -- autovacuum gives way to a lock request after deadlock_timeout, unless it prevents wraparound
  AND NOT coalesce(
      a.backend_type = 'autovacuum worker' AND a.query NOT LIKE '%%(to prevent wraparound)%%', false)
"""


def _holders(
    conn: psycopg.Connection[Any], oid: int, conflicts: list[str], lock_timeout: float
) -> list[tuple[str, int, bool]]:
    """The transactions holding a lock on the table that a request conflicting with ``conflicts`` waits
    behind: ``(virtualtransaction, pid, older than lock_timeout)`` (the age is known only where this role
    may see the transaction's start).  Waiting behind one holds the table's writers back too: a client
    retrying its shape every second kept them stalled for as long as a batch job held the table.  A
    younger holder is waited for (``lock_timeout`` at most): writers come and go on a busy table; and so
    is an autovacuum worker (it is cancelled for us), unless it runs to prevent wraparound."""
    rows = conn.execute(_HOLDERS_SQL, (lock_timeout, oid, conflicts)).fetchall()
    return [(str(vxid), int(pid), bool(old)) for vxid, pid, old in rows]


def unpublish_table(
    conn: psycopg.Connection[Any], publication: str, table: TableName, *, lock_timeout: float
) -> None:
    """Remove ``table`` from ``publication`` if it was added to it (its replica identity is left as is); one
    the publication takes in by itself (``FOR ALL TABLES``, ``FOR TABLES IN SCHEMA``) stays, and so does a
    table this role does not own: it could not add it back for the next shape (its owner set it up for us)."""
    row = conn.execute(
        "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_publication_rel pr "
        "JOIN pg_publication p ON p.oid = pr.prpubid "
        "JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE p.pubname = %s AND n.nspname = %s AND c.relname = %s",
        (publication, table.schema, table.name),
    ).fetchone()
    if row is None or not row[0]:
        return
    drop = sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(sql.Identifier(publication), table.only())
    _run(conn, table, "unpublish", [_timeout_sql(lock_timeout), drop], publication)
