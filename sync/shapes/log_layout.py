"""A shape's per-Relation layout: row keys, column positions and the plain-insert template.

Why this module exists: :mod:`sync.shapes.log_items` builds every item around what is precomputed here
once per shape and Relation message (column positions in the relation, the key function, the projection
onto the selected columns, and the insert fast path's template parts with :func:`is_plain`, the test that
a row may take it).  Keeping that precomputation apart lets ``log_items`` hold only the per-fragment loop; the
loop still reads these objects' attributes directly (no call layer per row).

The key format (spec §5): ``"schema"."table"/"v1"/"v2"``, ``.`` and ``/`` doubled inside names, ``/``
inside values, NULL as ``_``.  A key column without a value (an unresolved TOAST value) raises
:class:`IncompleteChange`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter

import orjson

from sync.replication.changes import Relation, Row, Value
from sync.shapes.definition import ShapeDefinition

__all__ = ["IncompleteChange", "Layout", "is_plain", "key_prefix", "row_key", "shared_layout"]


class IncompleteChange(Exception):
    """The change lacks the old row image or a TOASTed value needed to build the shape's items."""


def _escape_rel(name: str) -> str:
    return name.replace(".", "..").replace("/", "//")


def key_prefix(schema: str, table: str) -> str:
    """``"schema"."table"`` with ``.`` and ``/`` doubled inside the names."""
    return f'"{_escape_rel(schema)}"."{_escape_rel(table)}"'


def row_key(prefix: str, values: Iterable[str | None]) -> str:
    """``prefix/"v1"/"v2"``: ``/`` doubled inside values, NULL as ``_``."""
    parts = [prefix]
    for v in values:
        parts.append("_" if v is None else '"' + v.replace("/", "//") + '"')
    return "/".join(parts)


def _text(v: object) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise IncompleteChange("a key column has no value")


class Layout:
    """Column positions of the shape in one Relation message, and row -> key / selected-values functions."""

    __slots__ = (
        "insert_parts",
        "key",
        "key_of",
        "names",
        "pk_pos",
        "pk_sel",
        "plain_key",
        "project",
        "relation",
        "sel",
        "sel_names",
    )

    def __init__(self, relation: Relation, definition: ShapeDefinition, prefix: str) -> None:
        idx = relation.column_index
        self.relation = relation
        self.names = relation.column_names  # every column of the relation
        self.sel = tuple(idx[c] for c in definition.columns)  # selected, in definition order
        self.sel_names = definition.columns
        self.key = tuple(idx[c] for c in definition.key_columns)  # key columns, in key order
        pk = set(definition.primary_key)
        self.pk_sel = tuple(idx[c] for c in definition.columns if c in pk)
        self.pk_pos = frozenset(j for j, c in enumerate(definition.columns) if c in pk)  # in ``sel`` space
        self.project: Callable[[Row], Sequence[Value]]
        if self.sel == tuple(range(len(self.names))):
            self.project = _identity
        elif len(self.sel) == 1:
            only = self.sel[0]
            self.project = lambda row: (row[only],)
        else:
            self.project = itemgetter(*self.sel)
        self.key_of: Callable[[Row], str]
        if len(self.key) == 1 and definition.primary_key:
            k = self.key[0]
            head = prefix + '/"'

            def single(row: Row) -> str:
                v = row[k]
                if type(v) is not str:
                    raise IncompleteChange("a key column has no value")
                return head + v.replace("/", "//") + '"' if "/" in v else head + v + '"'

            self.key_of = single
        else:
            key = self.key
            self.key_of = lambda row: row_key(prefix, [_text(row[i]) for i in key])
        # The insert of plain values (see is_plain): its item up to the headers as the literal parts around
        # the slots (key value, *selected values), for a single-column key that is selected.
        self.plain_key = self.key[0] if len(self.key) == 1 and definition.primary_key else -1
        self.insert_parts: tuple[str, ...] | None = None
        if self.plain_key in self.sel:
            key_json = orjson.dumps(prefix).decode()[1:-1]  # char-wise escaping: parts escape alone
            value = ",".join(orjson.dumps(c).decode() + ':"\x00"' for c in definition.columns)
            # identifiers never hold a NUL: it marks the slots
            self.insert_parts = tuple(
                ('{"key":"' + key_json + '/\\"\x00\\"","value":{' + value + "}").split("\x00")
            )


_SHARED: dict[tuple[object, ...], Layout] = {}
_SHARED_MAX = 1024


def shared_layout(relation: Relation, definition: ShapeDefinition, prefix: str) -> Layout:
    """``Layout(relation, definition, prefix)``, shared by the shapes of one table selecting the same columns
    (thousands of ``id = k`` shapes build one, not one each: ~20 µs apiece at their first change).  A
    Layout is never modified; the key holds the Relation by identity (the decoder keeps one per table and
    session), and the Layout holds the Relation, so its id cannot be reused while cached."""
    key = (id(relation), definition.columns, definition.key_columns, definition.primary_key, prefix)
    lay = _SHARED.get(key)
    if lay is None or lay.relation is not relation:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        lay = _SHARED[key] = Layout(relation, definition, prefix)
    return lay


def _identity(row: Row) -> Row:
    return row


def is_plain(values: Sequence[Value]) -> bool:
    """Every value is a string that JSON writes as it is: no quote, backslash or control character
    (``isprintable`` is stricter than needed: what it rejects takes the general path)."""
    try:
        text = "".join(values)  # type: ignore[arg-type]  # a None or UNCHANGED_TOAST raises TypeError
    except TypeError:
        return False
    return '"' not in text and "\\" not in text and text.isprintable()
