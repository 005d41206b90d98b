"""The enum labels a column's values may print, read from the catalog by type.

Why this module exists: ``ALTER TYPE ... RENAME VALUE`` changes how every existing row holding that value
prints, and it changes nothing else a sync engine can see: no row is written (so nothing is replicated), the
type keeps its OID and the column its type.  A shape whose log holds the old label would serve it for ever.
So a shape records, when it is compiled, the labels its columns may print (:func:`enum_labels`, through
:mod:`sync.postgres.inspector`), and the catalog check compares them with the catalog's
(:mod:`sync.shapes.schema_check`).  One query serves both, so the two readings cannot differ.

A type prints an enum's labels when it is the enum, or reaches it through an array's element, a domain's
base type, a range's subtype, a multirange's range or a composite type's attributes, at any depth.  Labels
are keyed by the ``pg_enum`` row's OID, which a rename keeps; ``ADD VALUE`` adds a key and prints nothing
new for rows that exist, so only a changed label of a recorded key invalidates.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

__all__ = ["ENUM_LABELS_SQL", "EnumLabels", "enum_labels", "renamed_label"]

EnumLabels = tuple[tuple[int, str], ...]  # (pg_enum OID, label), by OID

ENUM_LABELS_SQL = """
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
SELECT r.root::bigint, e.oid::bigint, e.enumlabel::text
FROM reach r JOIN pg_catalog.pg_enum e ON e.enumtypid = r.typ
ORDER BY 1, 2
"""


def enum_labels(conn: psycopg.Connection[Any], type_oids: Iterable[int]) -> dict[int, EnumLabels]:
    """For each of ``type_oids`` whose values may print an enum label, every such label by OID (types
    that print none are left out)."""
    wanted = sorted(set(type_oids))
    if not wanted:
        return {}
    found: dict[int, list[tuple[int, str]]] = {}
    for root, oid, label in conn.execute(ENUM_LABELS_SQL, (wanted,)):
        found.setdefault(int(root), []).append((int(oid), str(label)))
    return {root: tuple(labels) for root, labels in found.items()}


def renamed_label(before: EnumLabels, now: EnumLabels) -> tuple[str, str | None] | None:
    """The first label of ``before`` that ``now`` prints otherwise: ``(old, new)`` (new None: the value is
    gone, its type with it), or None when every recorded label prints as it did."""
    current = dict(now)
    for oid, label in before:
        if current.get(oid) != label:
            return label, current.get(oid)
    return None
