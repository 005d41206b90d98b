"""Reads what the engine must know about a table from ``pg_catalog``, as immutable values.

The WHERE compiler needs each column's type (arrays with their element type and dimensions, enums with
their labels, domains with their base type); the ``electric-schema`` header needs the type name, the
PK position, NOT NULL and the typmod-derived modifiers (spec §4).  Everything comes from a couple of
catalog queries through psycopg; nothing here caches or watches for DDL (callers re-inspect when a
Relation message says the table changed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from sync.postgres.type_output import EnumLabels, Layouts, TypeOutput, type_outputs

__all__ = ["ColumnInfo", "TableInfo", "TableNotFound", "TypeInfo", "inspect_table"]


class TableNotFound(LookupError):
    """The relation does not exist (or is not a table/view/partitioned table)."""


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """A ``pg_type`` row, resolved: arrays carry their element, domains their base type.

    ``kind`` is ``typtype``: ``b`` base, ``e`` enum, ``d`` domain, ``c`` composite, ``r`` range,
    ``m`` multirange, ``p`` pseudo.  Arrays are base types with ``element`` set.
    """

    oid: int
    name: str
    schema: str
    kind: str
    category: str
    element: TypeInfo | None = None
    base: TypeInfo | None = None
    base_typmod: int = -1
    enum_labels: tuple[str, ...] = ()

    @property
    def is_array(self) -> bool:
        return self.element is not None

    def resolved(self) -> TypeInfo:
        """The type with domains peeled off (a domain behaves as its base type in expressions)."""
        t = self
        while t.kind == "d" and t.base is not None:
            t = t.base
        return t


_INTERVAL_FIELDS = {
    1 << 2: "YEAR",
    1 << 1: "MONTH",
    1 << 3: "DAY",
    1 << 10: "HOUR",
    1 << 11: "MINUTE",
    1 << 12: "SECOND",
    (1 << 2) | (1 << 1): "YEAR TO MONTH",
    (1 << 3) | (1 << 10): "DAY TO HOUR",
    (1 << 3) | (1 << 10) | (1 << 11): "DAY TO MINUTE",
    (1 << 3) | (1 << 10) | (1 << 11) | (1 << 12): "DAY TO SECOND",
    (1 << 10) | (1 << 11): "HOUR TO MINUTE",
    (1 << 10) | (1 << 11) | (1 << 12): "HOUR TO SECOND",
    (1 << 11) | (1 << 12): "MINUTE TO SECOND",
}


def type_modifiers(typname: str, typmod: int) -> dict[str, Any]:
    """The ``electric-schema`` modifiers for a (scalar or element) type name and ``atttypmod``."""
    if typmod < 0:
        return {}
    if typname in ("varchar", "text"):
        return {"max_length": typmod - 4}
    if typname == "bpchar":
        return {"length": typmod - 4}
    if typname in ("bit", "varbit"):
        return {"length": typmod}
    if typname in ("time", "timetz", "timestamp", "timestamptz"):
        return {"precision": typmod}
    if typname == "numeric":
        mod = typmod - 4
        scale = mod & 0x7FF
        if scale & 0x400:  # PG15 allows negative scales (11-bit two's complement)
            scale -= 0x800
        return {"precision": (mod >> 16) & 0xFFFF, "scale": scale}
    if typname == "interval":
        precision = typmod & 0xFFFF
        fields = _INTERVAL_FIELDS.get((typmod >> 16) & 0x7FFF)
        out: dict[str, Any] = {}
        if precision != 0xFFFF:
            out["precision"] = precision
        if fields is not None:
            out["fields"] = fields
        return out
    return {"type_mod": typmod}


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    name: str
    attnum: int
    type: TypeInfo
    type_mod: int
    dims: int  # attndims: declared array dimensions (0 for scalars; PG does not enforce it)
    not_null: bool
    pk_index: int | None  # 0-based position in the primary key, None if not part of it
    generated: bool
    # Every enum label the column's values may print, by pg_enum OID, and every composite type's layout (a
    # rename, an attribute added or dropped, changes how rows print: sync.postgres.type_output); empty for a
    # type that prints none.
    enum_labels: EnumLabels = ()
    layouts: Layouts = ()
    attribute_xmin: int = 0  # the xmin of its pg_attribute row (an ALTER of the column writes a new one)

    @property
    def type_name(self) -> str:
        """``typname`` as the schema header shows it: the element's name for arrays."""
        return self.type.element.name if self.type.element is not None else self.type.name

    def schema_entry(self) -> dict[str, Any]:
        """This column's value in the ``electric-schema`` header (spec §4)."""
        entry: dict[str, Any] = {"type": self.type_name}
        if self.type.is_array:
            entry["dims"] = max(self.dims, 1)
        if self.pk_index is not None:
            entry["pk_index"] = self.pk_index
        if self.not_null:
            entry["not_null"] = True
        entry.update(type_modifiers(self.type_name, self.type_mod))
        return entry


FIRST_NORMAL_OID = 16384  # Postgres' FirstNormalObjectId: below it, what initdb created (system catalogs)
_UNPUBLISHABLE_KINDS = {"v": "views", "m": "materialized views", "f": "foreign tables"}
_UNPUBLISHABLE_PERSISTENCE = {"u": "unlogged tables", "t": "temporary tables"}


@dataclass(frozen=True, slots=True)
class TableInfo:
    oid: int
    schema: str
    name: str
    columns: tuple[ColumnInfo, ...]
    kind: str = "r"  # pg_class.relkind: r table, p partitioned table, v view, m materialized view, f foreign
    persistence: str = "p"  # pg_class.relpersistence: p permanent, u unlogged, t temporary
    relfilenode: int = 0  # a rewrite of the table (ALTER ... TYPE ... USING, VACUUM FULL) gives a new one
    by_name: dict[str, ColumnInfo] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not self.by_name:
            self.by_name.update({c.name: c for c in self.columns})

    @property
    def pk(self) -> tuple[str, ...]:
        """PK column names in index order (empty when the table has no primary key)."""
        keyed = sorted((c for c in self.columns if c.pk_index is not None), key=lambda c: c.pk_index or 0)
        return tuple(c.name for c in keyed)

    def column(self, name: str) -> ColumnInfo | None:
        return self.by_name.get(name)

    def unpublishable(self) -> str | None:
        """What kind of relation logical replication does not publish this is (``"views"``...), or None for
        a table that it does: Postgres' ``is_publishable_class``."""
        if self.kind in _UNPUBLISHABLE_KINDS:
            return _UNPUBLISHABLE_KINDS[self.kind]
        if self.persistence in _UNPUBLISHABLE_PERSISTENCE:
            return _UNPUBLISHABLE_PERSISTENCE[self.persistence]
        if self.oid < FIRST_NORMAL_OID:
            return "system tables"
        return None


_COLUMNS_SQL = """
SELECT c.oid, n.nspname, c.relname, a.attname, a.attnum, a.atttypid, a.atttypmod, a.attndims,
       a.attnotnull, a.attgenerated <> '',
       array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1),
       c.relkind::text, c.relpersistence::text, c.relfilenode::bigint, a.xmin::text::bigint
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY a.attnum
"""

_TYPES_SQL = """
SELECT t.oid, t.typname, tn.nspname, t.typtype, t.typcategory,
       CASE WHEN t.typlen = -1 AND t.typelem <> 0 AND t.typcategory = 'A' THEN t.typelem ELSE 0 END,
       t.typbasetype, t.typtypmod,
       (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
FROM pg_type t JOIN pg_namespace tn ON tn.oid = t.typnamespace
WHERE t.oid = ANY(%s)
"""


def _load_types(conn: psycopg.Connection[Any], oids: set[int]) -> dict[int, TypeInfo]:
    rows: dict[int, tuple[Any, ...]] = {}
    pending = set(oids)
    while pending:
        fetched = conn.execute(_TYPES_SQL, (list(pending),)).fetchall()
        pending = set()
        for row in fetched:
            rows[row[0]] = row
            for dep in (row[5], row[6]):
                if dep and dep not in rows:
                    pending.add(dep)
    built: dict[int, TypeInfo] = {}

    def build(oid: int) -> TypeInfo:
        if oid in built:
            return built[oid]
        _, name, schema, kind, category, elem, base, base_typmod, labels = rows[oid]
        info = TypeInfo(
            oid=oid,
            name=name,
            schema=schema,
            kind=kind,
            category=category,
            element=build(elem) if elem else None,
            base=build(base) if base else None,
            base_typmod=base_typmod,
            enum_labels=tuple(labels or ()),
        )
        built[oid] = info
        return info

    return {oid: build(oid) for oid in oids}


def inspect_table(conn: psycopg.Connection[Any], schema: str, name: str) -> TableInfo:
    """Read ``schema.name``'s columns and types; raise :class:`TableNotFound` if it does not exist."""
    rows = conn.execute(_COLUMNS_SQL, (schema, name)).fetchall()
    if not rows:
        raise TableNotFound(f"{schema}.{name}")
    types = _load_types(conn, {r[5] for r in rows})
    outputs = type_outputs(conn, types)
    none = TypeOutput()
    columns = tuple(
        ColumnInfo(
            name=r[3],
            attnum=r[4],
            type=types[r[5]],
            type_mod=r[6],
            dims=r[7],
            not_null=bool(r[8]),
            pk_index=r[10],
            generated=bool(r[9]),
            enum_labels=outputs.get(r[5], none).labels,
            layouts=outputs.get(r[5], none).layouts,
            attribute_xmin=r[14],
        )
        for r in rows
    )
    first = rows[0]
    return TableInfo(
        oid=first[0],
        schema=first[1],
        name=first[2],
        columns=columns,
        kind=first[11],
        persistence=first[12],
        relfilenode=first[13],
    )
