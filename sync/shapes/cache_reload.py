"""Reopening the stored shapes at the ShapeCache's start: which logs can resume, and dropping the others.

Why this module exists: the storage directory is the shape index (a log's metadata holds its handle,
definition and snapshot visibility; the WAL position read with each snapshot is in the SnapshotMarks
journal).  At start every log is reopened (a torn tail is trimmed); one that cannot be opened, whose
snapshot never completed, that has no mark, whose definition no longer compiles or whose table changed
while we were down is deleted: clients get 409 and a new shape.  The cache then publishes the tables of
the others and starts their subtrees.  This module does the storage side, off the actor file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import psycopg

from sync import runtime
from sync.shapes.consumer import StoredShape
from sync.shapes.definition import ShapeDefinition
from sync.shapes.invalidation import CompiledShape
from sync.shapes.resolver import CatalogUnavailable
from sync.shapes.schema_check import ColumnTypes, SchemaCatalog, column_types_from_meta
from sync.shapes.snapshot_marks import SnapshotMarks
from sync.shapes.stored import changed_while_down, stored_shape
from sync.storage.errors import ShapeMustBeRecreated
from sync.storage.storage import Storage
from sync.storage.writer import ShapeLogWriter

__all__ = ["RELOAD_KEEPS", "DatabaseDown", "Reopened", "reopen_stored", "wait_for_database"]

logger = logging.getLogger(__name__)

RELOAD_WAIT_S = 20.0  # waited for Postgres to answer, then the cache fails its start
# Kinds of a publish step's error (DbConnectionError.kind) that say nothing about the shape, only that
# Postgres did not answer: the reload stops with every log kept, as when the catalog stops answering.
RELOAD_KEEPS = frozenset({"connection_failed", "connection_lost"})


class DatabaseDown(RuntimeError):
    """Postgres does not answer, so stored shapes cannot be reloaded; their logs are kept for later."""


def wait_for_database(catalog: SchemaCatalog, budget: float = RELOAD_WAIT_S) -> None:
    """Return once Postgres answers; raise :class:`DatabaseDown` after ``budget`` seconds.

    Reloading a shape compiles it against the catalog and publishes its table.  Started while Postgres was
    down (a host reboot, a compose file that starts both at once), the reload took every shape for one
    that no longer compiles and deleted its log: every client had to refetch everything.  Waiting a little
    covers the common race; past it the cache's start fails with its logs intact, and the supervisor (or
    the next start) tries again."""
    deadline = time.monotonic() + budget
    while True:
        try:
            catalog.ping()
            return
        except Exception as exc:  # psycopg errors, and anything the connection attempt raises
            if time.monotonic() >= deadline:
                msg = f"the database does not answer ({exc}): stored shapes are kept for a later start"
                raise DatabaseDown(msg) from exc
            logger.info("waiting for the database before reloading stored shapes (%s)", exc)
            runtime.sleep(0.5)


@dataclass(frozen=True, slots=True)
class Reopened:
    """A stored shape that can resume: its log (open), what its consumer resumes from, its column types."""

    handle: str
    definition: ShapeDefinition
    compiled: CompiledShape
    writer: ShapeLogWriter
    stored: StoredShape
    types: ColumnTypes | None  # as recorded when the shape was created (None: not recorded)


def reopen_stored(
    storage: Storage,
    handles: Iterable[str],
    marks: SnapshotMarks,
    compile_shape: Callable[[ShapeDefinition], CompiledShape],
    catalog: SchemaCatalog | None = None,
) -> Iterator[Reopened]:
    """Each of ``handles`` whose log can resume, reopened, one at a time; the others' logs are deleted.

    With a ``catalog`` (naming the stream's publication), a shape whose table left the publication while
    we were down is deleted too: the cache would add the table back, and the changes made in between would
    never come (Postgres decides what a publication sends as of each change)."""
    unpublished = _membership(catalog)
    for handle in handles:
        try:
            writer = storage.open(handle)
        except (ShapeMustBeRecreated, OSError) as exc:
            logger.warning("shape %s cannot be resumed (%s): deleted", handle, exc)
            storage.delete(handle)
            continue
        try:
            stored_definition = cast("dict[str, Any]", writer.metadata["definition"])
            definition = ShapeDefinition.from_dict(stored_definition)
            compiled = compile_shape(definition)
            stored = stored_shape(writer, marks.get(handle))
            types = column_types_from_meta(stored_definition.get("column_types"))
            changed = changed_while_down(definition, compiled, types)
            if changed is None:
                changed = unpublished(definition.relation_oid)
            if changed is not None:
                raise ShapeMustBeRecreated(changed)
        except CatalogUnavailable as exc:  # Postgres stopped answering: keep every log for a later start
            writer.abort()
            raise DatabaseDown(f"the catalog is unavailable ({exc}): stored shapes are kept") from exc
        except Exception as exc:  # any doubt about a stored shape: drop it, clients refetch
            logger.warning("shape %s cannot be reloaded (%r): deleted", handle, exc)
            writer.abort()
            storage.delete(handle)
            continue
        yield Reopened(handle, definition, compiled, writer, stored, types)


def _membership(catalog: SchemaCatalog | None) -> Callable[[int], str | None]:
    """Why the publication may have missed a table's changes (by OID) while we were down, asked once per
    table; None when it did not, or when it cannot be told (no catalog, or Postgres did not answer: the
    periodic schema check looks again later)."""
    known: dict[int, str | None] = {}

    def unpublished(oid: int) -> str | None:
        if catalog is None:
            return None
        if oid not in known:
            try:
                table = catalog.tables([oid]).get(oid)
            except psycopg.Error as exc:
                logger.warning("publication membership of table %d unknown (%s): kept", oid, exc)
                return None
            # a dropped table fails its compile already
            known[oid] = None if table is None else table.unpublished
        reason = known[oid]
        return None if reason is None else f"while the engine was down, its table {reason}"

    return unpublished
