"""What decides how a column's values print, beyond its type's OID: enum labels and composite layouts.

Why this module exists: two catalog changes alter how every existing row holding a value prints, and change
nothing else a sync engine can see: no row is written (so nothing is replicated), the type keeps its OID
and the column its type.

* ``ALTER TYPE ... RENAME VALUE`` renames an enum label;
* ``ALTER TYPE ... ADD ATTRIBUTE`` / ``DROP ATTRIBUTE`` (or ``ALTER TABLE`` of a table whose row type a
  column holds) changes a composite type's attributes: ``(1)`` prints ``(1,)`` after an attribute is added.

A shape whose log holds the old text would serve it for ever.  So a shape records, when it is compiled, the
labels and layouts its columns' values may print (:func:`type_outputs`, through
:mod:`sync.postgres.inspector`), and the catalog check compares them with the catalog's
(:mod:`sync.shapes.schema_check`).  One query serves both, so the two readings cannot differ.

A type prints an enum's labels, or a composite's attributes, when it is that type, or reaches it through
an array's element, a domain's base type, a range's subtype, a multirange's range or a composite type's
attributes, at any depth.  Labels are keyed by the ``pg_enum`` row's OID, which a rename keeps; ``ADD
VALUE`` adds a key and prints nothing new for rows that exist, so only a changed label of a recorded key
invalidates.  A layout is keyed by the composite type's OID and is its attributes' types and typmods in
order (names do not print); any change to a recorded one invalidates.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import psycopg

__all__ = [
    "TYPE_OUTPUTS_SQL",
    "EnumLabels",
    "Layouts",
    "TypeOutput",
    "changed_layout",
    "renamed_label",
    "type_outputs",
]

EnumLabels = tuple[tuple[int, str], ...]  # (pg_enum OID, label), by OID
Layouts = tuple[tuple[int, str], ...]  # (composite type OID, its attributes' "type:typmod,..."), by OID


class TypeOutput(NamedTuple):
    """What a type's printed values depend on besides its OID (both empty for most types)."""

    labels: EnumLabels = ()
    layouts: Layouts = ()


TYPE_OUTPUTS_SQL = """
WITH RECURSIVE reach(root, typ) AS (
    SELECT t, t FROM unnest(%s::oid[]) AS t
  UNION
    SELECT r.root, dep.typ
    FROM reach r
    JOIN pg_catalog.pg_type t ON t.oid = r.typ
    CROSS JOIN LATERAL (
        SELECT t.typelem WHERE t.typelem <> 0
        UNION ALL SELECT t.typbasetype WHERE t.typbasetype <> 0
        UNION ALL SELECT g.rngsubtype FROM pg_catalog.pg_range g WHERE g.rngtypid = t.oid
        UNION ALL SELECT g.rngtypid FROM pg_catalog.pg_range g  -- multiranges: PG >= 14, read as on older
                  WHERE (pg_catalog.to_jsonb(g) ->> 'rngmultitypid')::oid = t.oid
        UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a
                  WHERE t.typrelid <> 0 AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
    ) AS dep(typ)
)
SELECT r.root::bigint, false, e.oid::bigint, e.enumlabel::text
FROM reach r JOIN pg_catalog.pg_enum e ON e.enumtypid = r.typ
UNION ALL
SELECT r.root::bigint, true, t.oid::bigint, coalesce((
    SELECT pg_catalog.string_agg(a.atttypid::text || ':' || a.atttypmod::text, ',' ORDER BY a.attnum)
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), '')
FROM reach r JOIN pg_catalog.pg_type t ON t.oid = r.typ AND t.typrelid <> 0
ORDER BY 1, 2, 3
"""


def type_outputs(conn: psycopg.Connection[Any], type_oids: Iterable[int]) -> dict[int, TypeOutput]:
    """For each of ``type_oids`` whose values may print an enum label or a composite value, every such
    label and layout by OID (the other types are left out)."""
    wanted = sorted(set(type_oids))
    if not wanted:
        return {}
    found: dict[int, tuple[list[tuple[int, str]], list[tuple[int, str]]]] = {}
    for root, composite, oid, text in conn.execute(TYPE_OUTPUTS_SQL, (wanted,)):
        found.setdefault(int(root), ([], []))[1 if composite else 0].append((int(oid), str(text)))
    return {root: TypeOutput(tuple(labels), tuple(layouts)) for root, (labels, layouts) in found.items()}


def renamed_label(before: EnumLabels, now: EnumLabels) -> tuple[str, str | None] | None:
    """The first label of ``before`` that ``now`` prints otherwise: ``(old, new)`` (new None: the value is
    gone, its type with it), or None when every recorded label prints as it did."""
    current = dict(now)
    for oid, label in before:
        if current.get(oid) != label:
            return label, current.get(oid)
    return None


def changed_layout(before: Layouts, now: Layouts) -> bool:
    """Whether a composite type of ``before`` has other attributes ``now`` (or is gone)."""
    current = dict(now)
    return any(current.get(oid) != layout for oid, layout in before)
