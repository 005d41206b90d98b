"""Schema changes that no replication message reports: dropped tables, renames, type changes seen late, and a
table dropped from the stream's publication (whose changes stop coming without a word).

pgoutput sends nothing when a table is dropped, and announces a rename or an ``ALTER TABLE`` only with the
next change to the table (with no previous Relation to compare against after a restart).  Like Electric's
SchemaReconciler, the ShapeCache therefore compares every live shape with the catalog now and then (and on
reload), by table OID: :func:`catalog_reason` says why a shape must be invalidated, :class:`SchemaCatalog`
reads the few catalog facts it needs for many tables in one query.

A shape's column types (``column_types``: a :class:`ColumnType` of every table column when the shape was
compiled) are stored in its log metadata, so a type changed while the engine was down is noticed on reload.
Two things in them change what rows hold, or how they print, and send nothing at all: a renamed enum label
(``ALTER TYPE ... RENAME VALUE``) or composite type (``ALTER TYPE ... ADD ATTRIBUTE``; see
:mod:`sync.postgres.type_output`), and a table rewritten by an ``ALTER COLUMN ... TYPE ... USING`` to the
same type (its rows are never decoded).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

from sync.postgres.kept_connection import KeptConnection
from sync.postgres.type_output import (
    EnumLabels,
    Layouts,
    TypeOutput,
    changed_layout,
    renamed_label,
    type_outputs,
)
from sync.replication.tables import FILTERED_SQL, PUBLISHES_EVERY_OPERATION_SQL
from sync.shapes.definition import ShapeDefinition
from sync.where.interning import shared

__all__ = [
    "CatalogTable",
    "ColumnType",
    "ColumnTypes",
    "SchemaCatalog",
    "catalog_reason",
    "column_types_from_meta",
    "column_types_to_meta",
    "labels_added",
    "table_column_types",
]

logger = logging.getLogger(__name__)


class ColumnType(NamedTuple):
    """A column as a shape's checks compare it (stored in the log's metadata: an array)."""

    name: str
    type_oid: int
    typmod: int
    enum_labels: EnumLabels = ()  # every enum label its values may print (sync.postgres.type_output)
    # (the table's relfilenode, the column's pg_attribute row's xmin) when read, (0, 0) unknown: both
    # changed means the table was rewritten by an ALTER of this column (see catalog_reason)
    rewrite: tuple[int, int] = (0, 0)
    # pg_attribute.attnum (0 unknown): another under the same name means the name now labels other values
    # (columns renamed in a ring, or dropped and added again), and a rename sends nothing for existing rows
    attnum: int = 0
    layouts: Layouts = ()  # every composite type its values may print, with its attributes (type_output)


ColumnTypes = tuple[ColumnType, ...]  # in attnum order

_QUERY = """
SELECT c.oid::bigint, n.nspname, c.relname,
       coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
       coalesce(array_agg(a.atttypid::bigint ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
       coalesce(array_agg(a.atttypmod ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
       %(publication)s::text IS NULL OR EXISTS (  -- what it publishes, however it was told to
           SELECT 1 FROM pg_publication_tables pt
           WHERE pt.pubname = %(publication)s AND pt.schemaname = n.nspname AND pt.tablename = c.relname),
       %(publication)s::text IS NULL OR EXISTS (  -- every operation (missing publication: see above)
           SELECT 1 FROM pg_publication p WHERE p.pubname = %(publication)s
           AND @PUBLISHES_EVERY_OPERATION@),
       %(publication)s::text IS NOT NULL AND EXISTS (  -- a row filter or column list
           SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
           WHERE p.pubname = %(publication)s AND pr.prrelid = c.oid AND @FILTERED@),
       c.relfilenode::bigint,
       coalesce(array_agg(a.xmin::text::bigint ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
       coalesce(array_agg(a.attnum::int ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = ANY(%(oids)s::oid[])
GROUP BY c.oid, n.nspname, c.relname
""".replace("@PUBLISHES_EVERY_OPERATION@", PUBLISHES_EVERY_OPERATION_SQL).replace("@FILTERED@", FILTERED_SQL)


@dataclass(frozen=True, slots=True)
class CatalogTable:
    """A table as the catalog has it now."""

    oid: int
    schema: str
    name: str
    columns: ColumnTypes
    # Why the stream's publication may not send all of the table's changes (None: it does, or none was
    # named): not a member, not every operation published, or a row filter or column list on the table.
    unpublished: str | None = None


def table_column_types(info: Any) -> ColumnTypes:
    """The :class:`ColumnType` of each of an inspector ``TableInfo``'s columns.

    The tuple is shared by every shape compiled against an equal table (each keeps it while it lives).
    """
    return shared(
        tuple(
            ColumnType(
                c.name,
                int(c.type.oid),
                int(c.type_mod),
                tuple(c.enum_labels),
                (int(info.relfilenode), int(c.attribute_xmin)),
                int(c.attnum),
                tuple(c.layouts),
            )
            for c in info.columns
        )
    )


def column_types_to_meta(types: ColumnTypes) -> list[list[object]]:
    return [
        [
            c.name,
            c.type_oid,
            c.typmod,
            [list(e) for e in c.enum_labels],
            list(c.rewrite),
            c.attnum,
            [list(e) for e in c.layouts],
        ]
        for c in types
    ]


def column_types_from_meta(value: object) -> ColumnTypes | None:
    """The stored column types, or None when the metadata has none (logs written before they were kept).
    Entries stored before the enum labels, the rewrite marks, the attnums or the layouts were have none (what
    they would tell is then not noticed)."""
    if not isinstance(value, list | tuple):  # a list when read back, a tuple as created
        return None
    out: list[ColumnType] = []
    for entry in value:
        name, oid, mod, *rest = entry
        labels = tuple((int(e), str(label)) for e, label in rest[0]) if rest else ()
        rewrite = (int(rest[1][0]), int(rest[1][1])) if len(rest) > 1 else (0, 0)
        attnum = int(rest[2]) if len(rest) > 2 else 0
        layouts = tuple((int(e), str(layout)) for e, layout in rest[3]) if len(rest) > 3 else ()
        out.append(ColumnType(str(name), int(oid), int(mod), labels, rewrite, attnum, layouts))
    return shared(tuple(out))  # one object for the shapes of a table reloaded alike


def catalog_reason(
    definition: ShapeDefinition, table: CatalogTable | None, stored: ColumnTypes | None
) -> str | None:
    """Why the shape must be invalidated given its table's catalog entry (None: dropped), else None.

    ``stored`` are the column types recorded when the shape was created (None: unknown, not compared).
    Only what the shape reads matters: a nullability change or a column added beside a column list is fine.
    """
    d = definition
    label = f"{d.schema}.{d.table}"
    if table is None:
        return f"table {label} was dropped"
    if (table.schema, table.name) != (d.schema, d.table):
        return f"table {label} was renamed to {table.schema}.{table.name}"
    if table.unpublished is not None:  # changed from outside: changes since then never came, or not all
        return f"table {label} {table.unpublished}"
    now = {c.name: c for c in table.columns}
    needed = d.read_columns
    missing = sorted(c for c in needed if c not in now)
    if missing:
        return f"column(s) {', '.join(missing)} of {label} are gone"
    if d.all_columns and tuple(c.name for c in table.columns) != d.columns:
        return f"the columns of {label} changed"
    if stored is None:
        return None
    read = _read_pairs(stored, now, needed)
    for then, cur in sorted(read, key=lambda pair: pair[0].name):
        if (then.type_oid, then.typmod) != (cur.type_oid, cur.typmod):
            return f"column {then.name} of {label} changed type"
    for then, cur in read:  # another attnum under the name
        if then.attnum and cur.attnum not in (then.attnum, 0):
            return (
                f"column {then.name} of {label} is another column now (renamed, or dropped and added again)"
            )
    for then, cur in read:
        if _rewritten(then.rewrite, cur.rewrite):
            return f"column {then.name} of {label} was rewritten by ALTER TABLE (its values may differ)"
    for then, cur in read:
        renamed = renamed_label(then.enum_labels, cur.enum_labels) if then.enum_labels else None
        if renamed is not None:
            old, new = renamed
            if new is None:
                return f"enum label {old!r} of column {then.name} of {label} is gone"
            return f"enum label {old!r} of column {then.name} of {label} was renamed to {new!r}"
    for then, cur in read:
        if then.layouts and changed_layout(then.layouts, cur.layouts):
            return (
                f"a composite type of column {then.name} of {label} has other attributes now (ALTER TYPE): "
                "its values print otherwise"
            )
    return None


def _read_pairs(
    stored: ColumnTypes, now: Mapping[str, ColumnType], needed: frozenset[str]
) -> list[tuple[ColumnType, ColumnType]]:
    """``(as stored, as now)`` of each stored column the shape reads that the table still has, in attnum
    order."""
    return [(then, now[then.name]) for then in stored if then.name in needed and then.name in now]


def _rewritten(then: tuple[int, int], now: tuple[int, int]) -> bool:
    """Whether a column's values may have changed with no change replicated: an ``ALTER COLUMN ... TYPE``
    to the same type ``USING`` an expression rewrites the table (a new relfilenode) and the column's catalog
    row, and a rewrite's rows are never decoded.  A rewrite alone (``VACUUM FULL``, ``CLUSTER``) keeps every
    value, and a column's row changed alone (``SET NOT NULL``) rewrites nothing: neither counts."""
    return then != (0, 0) and now[0] != then[0] and now[1] != then[1]


class SchemaCatalog:
    """Reads tables by OID over one lazily opened autocommit connection (re-opened after an error), and
    whether each is in ``publication`` (the stream's).

    Used from one background loop at a time (the ShapeCache's schema check, or its reload).
    """

    def __init__(self, dsn: str, *, publication: str | None = None, connect_timeout: float = 10.0) -> None:
        self._publication = publication
        # one cut while it sat idle between checks is replaced at once, rather than leave the shapes
        # unchecked for another interval
        self._conn = KeptConnection(dsn, connect_timeout=connect_timeout, name="schema catalog")

    def tables(self, oids: Iterable[int]) -> dict[int, CatalogTable]:
        """The tables among ``oids`` that exist; raises ``psycopg.Error`` if Postgres cannot answer."""
        wanted = sorted(set(oids))
        if not wanted:
            return {}
        rows, outputs = self._conn.run(lambda conn: self._read(conn, wanted))
        return {int(r[0]): _table(r, outputs) for r in rows}

    def _read(
        self, conn: psycopg.Connection[Any], oids: list[int]
    ) -> tuple[list[Any], dict[int, TypeOutput]]:
        rows = conn.execute(_QUERY, {"oids": oids, "publication": self._publication}).fetchall()
        return rows, type_outputs(conn, (int(o) for r in rows for o in r[4]))

    def ping(self) -> None:
        """Ask Postgres something; raises ``psycopg.Error`` if it cannot answer."""
        self._conn.run(lambda conn: conn.execute("SELECT 1"))

    def close(self) -> None:
        self._conn.close()


def _table(row: Sequence[Any], outputs: Mapping[int, TypeOutput]) -> CatalogTable:
    names: Sequence[str] = row[3]
    oids: Sequence[int] = row[4]
    mods: Sequence[int] = row[5]
    relfilenode = int(row[9])
    xmins: Sequence[int] = row[10]
    attnums: Sequence[int] = row[11]
    none = TypeOutput()
    columns = tuple(
        ColumnType(n, int(o), int(m), out.labels, (relfilenode, int(x)), int(a), out.layouts)
        for n, o, m, x, a in zip(names, oids, mods, xmins, attnums, strict=True)
        for out in (outputs.get(int(o), none),)
    )
    return CatalogTable(int(row[0]), str(row[1]), str(row[2]), columns, _unpublished(row[6], row[7], row[8]))


def _unpublished(member: bool, every_operation: bool, filtered: bool) -> str | None:
    if not member:
        return "was removed from the publication"
    if not every_operation:
        return "is in a publication that no longer publishes insert, update, delete and truncate"
    if filtered:
        return "is published with a row filter or column list"
    return None


def labels_added(definition: ShapeDefinition, stored: ColumnTypes | None, now: ColumnTypes) -> str | None:
    """Why a shape reloaded after a restart must refetch although :func:`catalog_reason` keeps it: an enum
    label its columns may print was added since the shape was created.  While shapesync runs, the checker
    records additions as it sees them (:class:`~sync.shapes.schema_checker.SchemaChecker`), so that a later
    rename of such a label is told; across a restart only the labels of the shape's creation are known, and
    an added label renamed while shapesync was down (a deploy's migration, say) looks like an addition."""
    if not stored:
        return None
    for then, cur in _read_pairs(stored, {c.name: c for c in now}, definition.read_columns):
        added = sorted(set(cur.enum_labels) - set(then.enum_labels)) if then.enum_labels else []
        if added:
            table = f"{definition.schema}.{definition.table}"
            return (
                f"enum label {added[0][1]!r} of column {then.name} of {table} was added since the shape was "
                "created (it may have been renamed since: not known across a restart)"
            )
    return None


def check_shapes(
    shapes: Iterable[tuple[str, ShapeDefinition]],
    tables: Mapping[int, CatalogTable],
    stored: Mapping[str, ColumnTypes],
) -> list[tuple[str, str]]:
    """``(handle, reason)`` for every shape that the catalog says must be invalidated.

    Shapes that differ only in their WHERE (10,000 ``id = k`` shapes of one table) get one verdict: the
    reason depends only on their ``schema_aspects`` and stored types, and the check runs in one go on the
    worker's event loop (~8 µs a shape without the memo: 80 ms of 10,000 shapes every check interval, ~10 ms
    with it).  Stored types count by identity: they are shared tuples (:func:`table_column_types`,
    :func:`column_types_from_meta`), and hashing them for each shape would cost, with a large enum's labels
    in them, more than the verdict."""
    out = []
    verdicts: dict[tuple[object, ...], str | None] = {}
    for handle, d in shapes:
        types = stored.get(handle)
        key = (d.schema_aspects, id(types))  # ``stored`` keeps them alive meanwhile
        try:
            reason = verdicts[key]
        except KeyError:
            reason = verdicts[key] = catalog_reason(d, tables.get(d.relation_oid), types)
        if reason is not None:
            out.append((handle, reason))
    return out
