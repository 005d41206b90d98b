"""The replication connection: setup commands and the COPY BOTH protocol, over ``psycopg.pq``.

Why this module exists: psycopg has no replication API, so the walsender protocol is spoken here at the
``pq`` level (python-stack §1): ``IDENTIFY_SYSTEM``, publication and slot management, ``START_REPLICATION``,
XLogData / keepalive frames and standby status updates.  Every call is non-blocking with cooperative waits
(:mod:`sync.postgres.connect`).  A :class:`ReplicationStream` is used by one reader loop only, which is what
serialises the libpq calls on its connection.

Setup order (Electric's, electric-architecture §2): the publication must exist before the slot, because
decoding reads the publication through the historic catalog; a publication created after the slot fails
the stream with ``publication ... does not exist``.  So a newly created publication forces a new slot.
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass

import psycopg
from psycopg import pq, sql
from psycopg.pq.abc import PGconn

from sync import runtime
from sync.postgres.connect import connect, flush, query, replication_conninfo, wait_idle
from sync.postgres.errors import DbConnectionError, classify
from sync.postgres.lsn import format_lsn, parse_lsn
from sync.replication.tables import EVERY_OPERATION, PUBLISHES_EVERY_OPERATION_SQL

__all__ = ["ReplicationStream", "SlotState", "StreamEnded", "SystemInfo", "now_pg_us"]

logger = logging.getLogger(__name__)

XLOG_HEADER = struct.Struct("!QQq")  # after 'w': start, wal_end, send_time; payload from byte 25
KEEPALIVE = struct.Struct("!QqB")  # after 'k': wal_end, send_time, reply_requested
_STATUS = struct.Struct("!cQQQqB")
_PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 in µs since 1970-01-01


def now_pg_us() -> int:
    """Now, in µs since 2000-01-01 (the protocol's clock)."""
    return time.time_ns() // 1000 - _PG_EPOCH_OFFSET_US


class StreamEnded(DbConnectionError):
    """The server ended the COPY BOTH stream (walsender terminated, server shutdown)."""


@dataclass(frozen=True, slots=True)
class SystemInfo:
    system_id: str
    timeline: int
    xlogpos: int
    dbname: str


@dataclass(frozen=True, slots=True)
class SlotState:
    confirmed_flush_lsn: int
    recreated: str | None  # why the slot was (re)created now, None if it was reused


def _lit(value: str) -> str:
    return sql.Literal(value).as_string(None)


def _ident(value: str) -> str:
    return sql.Identifier(value).as_string(None)


class ReplicationStream:
    """One ``replication=database`` connection, from setup to streaming."""

    def __init__(self, pg: PGconn) -> None:
        self.pg = pg
        self.streaming = False

    @classmethod
    def open(cls, dsn: str, *, timeout: float = 30.0, extra_options: str = "") -> ReplicationStream:
        return cls(connect(replication_conninfo(dsn, extra_options=extra_options), timeout=timeout))

    def close(self) -> None:
        self.pg.finish()

    @property
    def backend_pid(self) -> int:
        return int(self.pg.backend_pid)

    def query(self, text: str, *, timeout: float | None = 60.0) -> list[tuple[str | None, ...]]:
        return query(self.pg, text, timeout=timeout)

    # -- setup -----------------------------------------------------------------------------------------
    def identify_system(self) -> SystemInfo:
        (row,) = self.query("IDENTIFY_SYSTEM")
        system_id, timeline, xlogpos, dbname = row
        return SystemInfo(str(system_id), int(str(timeline)), parse_lsn(str(xlogpos)), str(dbname))

    def show(self, name: str) -> str:
        return str(self.query(f"SHOW {name}")[0][0])

    def check_wal_level(self) -> None:
        level = self.show("wal_level")
        if level != "logical":
            raise DbConnectionError(
                "wal_level",
                f"wal_level is {level!r}: logical replication needs wal_level = logical "
                "(ALTER SYSTEM SET wal_level = logical; then restart Postgres)",
                retry_may_fix=False,
            )

    def wal_sender_timeout(self) -> float:
        """Seconds (0 = disabled)."""
        rows = self.query(
            "SELECT setting::float8 * CASE unit WHEN 'ms' THEN 0.001 WHEN 's' THEN 1 ELSE 1 END "
            "FROM pg_settings WHERE name = 'wal_sender_timeout'"
        )
        return float(str(rows[0][0])) if rows else 60.0

    def ensure_publication(self, name: str) -> str | None:
        """Create the (empty) publication if missing; why every shape must refetch, or None.

        An existing publication must be ours (owned by us, or we are superuser) so that tables can be added.
        One that no longer publishes insert, update, delete and truncate (altered from outside) is set back:
        changes it left out are lost, so every shape must refetch, as when it is re-created.
        """
        rows = self.query(
            f"SELECT {PUBLISHES_EVERY_OPERATION_SQL}, "
            "pg_has_role(current_user, p.pubowner, 'USAGE') OR "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
            f"FROM pg_publication p WHERE p.pubname = {_lit(name)}"
        )
        if not rows:
            self.query(f"CREATE PUBLICATION {_ident(name)}")
            logger.info("created publication %s", name)
            return "publication was re-created"
        publishes_all, ours = rows[0]
        if ours != "t":
            raise DbConnectionError(
                "publication_not_ours",
                f"publication {name!r} exists but is owned by another role, so tables cannot be added to "
                f"it: drop it, or change its owner to this user (ALTER PUBLICATION {name} OWNER TO ...)",
                retry_may_fix=False,
            )
        if publishes_all != "t":
            self.query(f"ALTER PUBLICATION {_ident(name)} SET (publish = {_lit(EVERY_OPERATION)})")
            logger.warning("publication %s did not publish every operation: set back", name)
            return "publication did not publish insert, update, delete and truncate"
        return None

    def ensure_slot(self, slot: str, *, reset: str | None, release_timeout: float = 5.0) -> SlotState:
        """Reuse the permanent slot, or (re)create it; see :class:`SlotState`."""
        reason: str | None = None
        row = self._slot_row(slot)
        if row is not None:
            plugin, database, confirmed, active_pid, wal_status = row
            me = self.query("SELECT current_database()")[0][0]
            if plugin != "pgoutput" or database != me:
                raise DbConnectionError(
                    "slot_not_ours",
                    f"replication slot {slot!r} exists for plugin {plugin!r} in database {database!r}; "
                    f"expected pgoutput in {me!r}: drop it (SELECT pg_drop_replication_slot('{slot}')) "
                    "or choose another replication.stream_id",
                    retry_may_fix=False,
                )
            if active_pid is not None:
                self._release(slot, int(active_pid), release_timeout)
                released = self._slot_row(slot)  # where the released walsender left it
                if released is not None:
                    confirmed, wal_status = released[2], released[4]
            if reset is not None:  # the publication's doing: changes were lost
                reason = reset
            elif wal_status == "lost" or confirmed is None:
                reason = "slot was invalidated (max_slot_wal_keep_size exceeded)"
            if reason is None:
                return SlotState(parse_lsn(str(confirmed)), None)
            logger.warning("dropping replication slot %s: %s", slot, reason)
            self.query(f"DROP_REPLICATION_SLOT {_ident(slot)} WAIT")
        else:
            reason = "slot did not exist"
        rows = self.query(f"CREATE_REPLICATION_SLOT {_ident(slot)} LOGICAL pgoutput NOEXPORT_SNAPSHOT")
        logger.info("created replication slot %s at %s (%s)", slot, rows[0][1], reason)
        return SlotState(parse_lsn(str(rows[0][1])), reason)

    def _slot_row(self, slot: str) -> tuple[str | None, ...] | None:
        rows = self.query(
            "SELECT plugin, database, confirmed_flush_lsn, active_pid, wal_status "
            f"FROM pg_replication_slots WHERE slot_name = {_lit(slot)}"
        )
        return rows[0] if rows else None

    def _release(self, slot: str, pid: int, timeout: float) -> None:
        """The slot is streamed by another walsender although we hold the instance lock: that is a dead
        instance's walsender that has not noticed yet.  Give it ``timeout`` seconds, then terminate it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self._slot_row(slot)
            if row is None or row[3] is None:
                return
            runtime.sleep(0.1)
        logger.warning("terminating stale walsender %d that still holds slot %s", pid, slot)
        self.query(f"SELECT pg_terminate_backend({int(pid)})")
        deadline = time.monotonic() + timeout
        while (row := self._slot_row(slot)) is not None and row[3] is not None:
            if time.monotonic() > deadline:
                raise DbConnectionError("connection_failed", f"slot {slot} still in use by pid {row[3]}")
            runtime.sleep(0.05)

    # -- streaming -------------------------------------------------------------------------------------
    def start(self, slot: str, publication: str, lsn: int, *, messages: bool = False) -> None:
        """``START_REPLICATION`` (pgoutput protocol version 1) and wait for COPY BOTH mode."""
        opts = f"proto_version '1', publication_names {_lit(_ident(publication))}"
        if messages:
            opts += ", messages 'true'"
        cmd = f"START_REPLICATION SLOT {_ident(slot)} LOGICAL {format_lsn(lsn)} ({opts})"
        try:
            self.pg.send_query(cmd.encode())
        except psycopg.OperationalError as exc:
            raise classify(exc) from exc
        flush(self.pg)
        wait_idle(self.pg, 60.0)
        res = self.pg.get_result()
        if res is None or pq.ExecStatus(res.status) != pq.ExecStatus.COPY_BOTH:
            error = (
                psycopg.errors.error_from_result(res, encoding="utf-8")
                if res is not None
                else psycopg.OperationalError("no result")
            )
            raise classify(error) from error
        self.streaming = True

    def send_status(self, write: int, flush_lsn: int, apply: int, *, reply: bool = False) -> None:
        """Standby status update ('r'): what we received, made durable and applied."""
        msg = _STATUS.pack(b"r", write, flush_lsn, apply, now_pg_us(), 1 if reply else 0)
        try:
            self.pg.put_copy_data(msg)
        except psycopg.OperationalError as exc:
            raise classify(exc) from exc
        flush(self.pg)

    def ended(self) -> StreamEnded:
        """After ``get_copy_data`` returned -1/-2: the reason the server gave, as an exception."""
        message = "replication stream ended"
        try:
            res = self.pg.get_result()
            if res is not None and pq.ExecStatus(res.status) == pq.ExecStatus.FATAL_ERROR:
                message = (res.error_message or b"").decode(errors="replace").strip() or message
            elif self.pg.get_error_message():
                message = self.pg.get_error_message().strip()
        except psycopg.OperationalError as exc:
            message = str(exc).strip() or message
        self.streaming = False
        return StreamEnded("connection_lost", message)
