"""The narrow interface the HTTP layer needs from the shape engine, and the errors the engine may raise.

Why a port: the Falcon resources must not know about actors, storage files or replication.  They call the
handful of methods below; the engine side (ShapeCache, consumers, storage readers) implements them over the
real actors, and the API tests implement them with an in-memory fake.  Every method is called from a request
greenlet (or a plain thread in tests): a method may block cooperatively (e.g. on a pykka future with a
timeout) but must never make a request hold an actor busy while it waits for data -- that is what
:meth:`ShapeEngine.wait_for_change` and its :class:`ChangeWaiter` are for.

Offsets follow spec §3 (:class:`sync.offsets.LogOffset`).  Items are stored as exact JSON objects and reach
the client as stored: :class:`LogChunk` hands out raw bytes, never decoded rows.

Error hierarchy (all raised by the engine, mapped to HTTP in ``api/errors.py``)::

    ShapeEngineError
    ├─ InvalidRequest          400 {"message":"Invalid request","errors":{...}}  (also raised by params)
    ├─ ShapeGone               the handle was rotated/deleted under us -> 409 must-refetch
    ├─ StackNotReady           503 {"message": reason}, retry-after (5 by default)
    │  └─ SnapshotBusy         503 too many concurrent subset snapshots, retry-after 1
    ├─ DatabaseUnreachable     503 {"code":"database_unreachable",...}, retry-after 10
    ├─ ShapeCreationFailed     503 {"message":"Failed to create shape, please retry"}, retry-after 1
    └─ SnapshotFailed          503 {"message": ...}, retry-after 10
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from sync.offsets import LogOffset
from sync.shapes.subset import SubsetRequest

__all__ = [
    "AttachedEngine",
    "ChangeWaiter",
    "DatabaseUnreachable",
    "EngineStatus",
    "InvalidRequest",
    "LogChunk",
    "ShapeCreationFailed",
    "ShapeDefinition",
    "ShapeEngine",
    "ShapeEngineError",
    "ShapeGone",
    "SnapshotBusy",
    "SnapshotFailed",
    "StackNotReady",
    "SubsetRequest",
    "SubsetSnapshot",
    "WaitOutcome",
]

EngineStatus = Literal["active", "waiting", "starting"]
Replica = Literal["default", "full"]
LogMode = Literal["full", "changes_only"]


# --------------------------------------------------------------------------------------------- errors


class ShapeEngineError(Exception):
    """Root of the errors the engine raises towards the API."""


class InvalidRequest(ShapeEngineError):
    """A client mistake in the shape definition or the query: 400 with ``errors`` keyed by parameter.

    ``errors`` maps a parameter name to its messages, e.g. ``{"where": ["At location 17: ..."]}``.
    """

    def __init__(self, errors: Mapping[str, Sequence[str]], message: str = "Invalid request") -> None:
        super().__init__(message, dict(errors))
        self.message = message
        self.errors: dict[str, list[str]] = {k: list(v) for k, v in errors.items()}


class ShapeGone(ShapeEngineError):
    """The shape ``handle`` no longer exists (rotated, deleted, invalidated) while serving a request."""

    def __init__(self, handle: str) -> None:
        super().__init__(handle)
        self.handle = handle


class StackNotReady(ShapeEngineError):
    """The engine cannot serve yet (starting, waiting for the lock, or down); 503 ``{"message": reason}``."""

    def __init__(self, reason: str = "Stack not ready", retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class SnapshotBusy(StackNotReady):
    """Every subset snapshot slot stayed busy for the queue timeout (spec §9: bounded concurrency)."""

    def __init__(self, reason: str = "Too many concurrent subset snapshots, please retry") -> None:
        super().__init__(reason, retry_after=1)


class DatabaseUnreachable(ShapeEngineError):
    """Postgres cannot be reached to resolve or create the shape; 503 with retry-after 10."""


class ShapeCreationFailed(ShapeEngineError):
    """Creating the shape failed for a transient reason; 503 with retry-after 1."""


class SnapshotFailed(ShapeEngineError):
    """The snapshot query of the shape failed; 503 with retry-after 10 and ``{"message": message}``."""

    def __init__(self, message: str = "Snapshot query failed, please retry") -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ShapeDefinition:
    """The definition part of a request, as text: the engine parses and validates it against the catalog.

    ``params`` holds the values of ``$1..$n`` in order (their numbering was already checked).  ``columns``
    is the raw ``columns`` parameter (quoted names keep case, the engine splits and validates it).
    """

    table: str
    where: str | None = None
    params: tuple[str, ...] = ()
    columns: str | None = None
    replica: Replica = "default"
    log_mode: LogMode = "full"
    compaction: bool = False


@dataclass(frozen=True, slots=True)
class LogChunk:
    """What :meth:`ShapeEngine.read` returns: the items after an offset up to the end of its chunk.

    ``end_offset``    the offset of the last item the chunk covers (the ``electric-offset`` header); when
                      the range is empty it is the shape's latest offset as of the read.
    ``latest_offset`` the shape's latest offset at the time of the read (to decide ``up-to-date``).
    ``is_empty``      True when ``pieces`` yields no item at all.
    ``pieces``        the items as stored, JSON bytes.  Unless ``per_item`` was requested, concatenating
                      the pieces gives ``item1,item2,...,itemN`` (already comma-separated, no leading or
                      trailing comma); with ``per_item`` each piece is exactly one JSON object.  May be lazy
                      (read from disk while the response is written); the range is fixed at ``read`` time.
                      A ``snapshot-end`` control item stored in the log is simply one of the items.
    """

    end_offset: LogOffset
    latest_offset: LogOffset
    is_empty: bool
    pieces: Iterable[bytes]


@dataclass(frozen=True, slots=True)
class SubsetSnapshot:
    """What :meth:`ShapeEngine.subset_snapshot` returns: the whole JSON body and the ``electric-offset``;
    ``after``, if set, is run once the answer has been written (work kept off the request's path; it never
    raises)."""

    body: bytes
    offset: LogOffset
    after: Callable[[], None] | None = None


class WaitOutcome(enum.Enum):
    """How a :class:`ChangeWaiter` completed."""

    NEW_DATA = "new_data"  # the shape's latest offset moved past the waited offset
    TIMEOUT = "timeout"  # nothing happened within the timeout
    ROTATED = "rotated"  # the shape was invalidated/deleted: the client must refetch (409)
    STOPPED = "stopped"  # the engine is shutting down: answer 503 so the client retries elsewhere/later


class ChangeWaiter(Protocol):
    """A future-like registration in a shape consumer's waiter list (architecture §6.5).

    Creating it costs the engine one list entry; waiting on it blocks only the calling greenlet.
    """

    def wait(self, timeout: float) -> WaitOutcome:
        """Block (cooperatively) until the waiter completes or ``timeout`` seconds pass.

        Returns the outcome; TIMEOUT when nothing happened.  Safe to call once.
        """
        ...

    def cancel(self) -> None:
        """Remove the registration (idempotent); always called by the API when it stops waiting."""
        ...


class ShapeEngine(Protocol):
    """The engine operations the shape resource uses.  Every method is documented with its errors."""

    def status(self) -> EngineStatus:
        """'active' when shapes can be served and created, 'waiting' (another instance holds the lock:
        existing shapes are served read-only) or 'starting'.  Never raises."""
        ...

    def get_or_create(self, definition: ShapeDefinition) -> str:
        """Return the handle of the live shape for ``definition``, creating the shape (and starting its
        snapshot) if there is none.  Returns without waiting for the snapshot.

        Raises InvalidRequest (400: table/where/columns/params errors with Electric's exact messages),
        StackNotReady, DatabaseUnreachable, ShapeCreationFailed.  Called on every shape request (live ones
        included): the lookup of an existing shape should not need an actor round trip."""
        ...

    def find(self, definition: ShapeDefinition) -> str | None:
        """Like :meth:`get_or_create` but never creates: the live handle for ``definition`` or None.

        Raises InvalidRequest for a definition that does not validate, StackNotReady, DatabaseUnreachable."""
        ...

    def exists(self, handle: str) -> bool:
        """True if ``handle`` names a live (not rotated/deleted) shape.  Never raises."""
        ...

    def delete(self, handle: str) -> bool:
        """Invalidate and delete the shape ``handle`` (waiters complete with ROTATED).  False if unknown."""
        ...

    def latest_offset(self, handle: str) -> LogOffset:
        """The offset of the last item in the shape's log, ``0_inf`` while it has none: also while its
        snapshot runs or before it is taken (see :meth:`await_snapshot_start`).  Raises ShapeGone."""
        ...

    def read(self, handle: str, offset: LogOffset, *, per_item: bool = False) -> LogChunk:
        """Items strictly after ``offset`` up to the end of the chunk containing the next item.

        ``offset=-1`` gives snapshot chunk 0 (ending at ``0_0``), ``0_k`` the next snapshot chunk while
        there are any, then the main log.  For a snapshot chunk that is still being written this waits
        (cooperatively, bounded) for it to complete.  An offset past the latest gives an empty chunk
        (``end_offset == latest_offset``); the API then waits for the shape to catch up or answers 400.
        This is the hot path of every shape request: serve it from shared read-only state, not an actor ask.
        Raises ShapeGone, SnapshotFailed, StackNotReady."""
        ...

    def await_snapshot_start(self, handle: str) -> None:
        """Return once the shape's snapshot has been taken (its first chunk is readable): every transaction
        committed after that is in the log, so ``offset=now`` and subsets of a new shape leave no gap.
        Waits as ``read`` does for a snapshot chunk.  Raises ShapeGone, SnapshotFailed, StackNotReady."""
        ...

    def schema_header(self, handle: str) -> str:
        """The ``electric-schema`` header value (compact JSON) for the shape's selected columns, from the
        current catalog (it may change on a nullability-only ALTER).  Raises ShapeGone."""
        ...

    def wait_for_change(self, handle: str, offset: LogOffset) -> ChangeWaiter:
        """Register interest in items after ``offset``.  The waiter completes with NEW_DATA at once if the
        shape's latest offset is already past ``offset`` (registration and check are atomic in the shape's
        consumer), later when data lands, ROTATED if the shape goes away, STOPPED at engine shutdown.
        Raises ShapeGone if the handle is already gone."""
        ...

    def subset_snapshot(
        self,
        handle: str,
        subset: SubsetRequest,
        *,
        request_offset: LogOffset | None,
        queryable_columns: tuple[str, ...] | None = None,
    ) -> SubsetSnapshot:
        """Spec §9: the shape's rows matching ``subset`` in one REPEATABLE READ snapshot, as the body
        ``{"metadata":{...},"data":[...]}``.  ``request_offset`` is the client's log offset (None for
        ``-1``/``now``): it is echoed as ``electric-offset``; without one the shape's latest offset read
        *before* the snapshot is used, so the client resumes the log from a point the snapshot covers.

        Raises InvalidRequest (``errors.subset.<field>``, or ``errors.queryable_columns``), ShapeGone,
        SnapshotBusy (all subset slots busy), SnapshotFailed, DatabaseUnreachable."""
        ...

    def global_last_seen_lsn(self) -> int:
        """An LSN (as an integer) up to which every shape's log holds every transaction: the engine has fully
        processed them (written where readers see them), not just received or routed them."""
        ...


class AttachedEngine:
    """Base of the HTTP objects that reach the engine through ``_provider``, which returns None until one
    is attached (e.g. before gunicorn's ``post_worker_init``): ``_engine`` is it, or 503 "Stack not ready"."""

    _provider: Callable[[], ShapeEngine | None]

    @property
    def _engine(self) -> ShapeEngine:
        engine = self._provider()
        if engine is None:
            raise StackNotReady("Stack not ready", retry_after=5)
        return engine
