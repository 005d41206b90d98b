"""What a shape reopened from its log needs before its consumer can resume (the ShapeCache's reload).

A stored shape resumes only if its log says everything the consumer's snapshot filter needs (the
snapshot's xmin/xmax/xip in the log's metadata, the WAL position recorded in the SnapshotMarks journal) and
its table still has the selected columns with the types the log was written with; otherwise the shape is
dropped and clients refetch (409).  Pure functions: no I/O beyond reading the writer's metadata.
"""

from __future__ import annotations

from sync.shapes.consumer import StoredShape
from sync.shapes.definition import ShapeDefinition
from sync.shapes.invalidation import CompiledShape
from sync.shapes.schema_check import CatalogTable, ColumnTypes, catalog_reason, labels_added
from sync.shapes.xid import PgSnapshot
from sync.storage.errors import ShapeMustBeRecreated
from sync.storage.writer import ShapeLogWriter

__all__ = ["changed_while_down", "stored_shape"]


def changed_while_down(
    definition: ShapeDefinition, compiled: CompiledShape, stored: ColumnTypes | None
) -> str | None:
    """Why a reloaded shape no longer fits its table (compiled against the catalog of now), else None."""
    if not compiled.column_types:
        return None  # the compiler gave no types (tests): nothing to compare
    now = CatalogTable(definition.relation_oid, definition.schema, definition.table, compiled.column_types)
    return catalog_reason(definition, now, stored) or labels_added(definition, stored, compiled.column_types)


def stored_shape(writer: ShapeLogWriter, wal_lsn: int | None) -> StoredShape:
    """The snapshot and last transaction a reopened log resumes from; ShapeMustBeRecreated if unknown."""
    meta = writer.metadata
    xmin, xmax, xip = meta.get("xmin"), meta.get("xmax"), meta.get("xip_list")
    if not isinstance(xmin, int) or not isinstance(xmax, int) or not isinstance(xip, list):
        raise ShapeMustBeRecreated("snapshot visibility missing from metadata")
    if wal_lsn is None:
        raise ShapeMustBeRecreated("no snapshot mark (WAL position) recorded")
    last = writer.last_offset
    snapshot = PgSnapshot(xmin, xmax, frozenset(int(x) for x in xip))
    return StoredShape(snapshot, wal_lsn, last.tx if last else 0)
