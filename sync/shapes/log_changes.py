"""The general path of spec §5: updates, deletes, moves in and out of a WHERE, key changes, TOAST.

Why this module exists: :class:`~sync.shapes.log_items.ShapeLogEncoder` inlines inserts (the hot path) in
its fragment loop and hands every other change to the rules here, which decide what the change means for
the shape: nothing, an insert, an update (changed columns, ``old_value`` with ``replica=full``), a delete,
or a delete + insert pair for a key change.  They are a base class of the encoder, so each call stays one
method call on the encoder, as before the split.  The result is the parts of each item
(``_Encoded``: offset, key, operation, value part, extra) that the encoder wraps with headers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import orjson

from sync.offsets import LogOffset
from sync.replication.changes import UNCHANGED_TOAST, Delete, Insert, Row, Update
from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_layout import IncompleteChange, Layout, key_prefix

__all__ = ["ChangeRules", "Operation", "Predicate"]

Operation = Literal["insert", "update", "delete"]
Predicate = Callable[[Mapping[str, str | None]], bool]

_NONE_UNRESOLVED: set[int] = set()  # shared, never mutated
_Encoded = tuple[LogOffset, str, Operation, bytes, bytes]  # offset, key, operation, value part, extra


class ChangeRules:
    """Spec §5 for one shape's non-insert changes (and inserts outside the encoder's inlined loop)."""

    def __init__(self, definition: ShapeDefinition, where: Predicate | None = None) -> None:
        self.definition = definition
        self._where = where
        self._full = definition.replica == "full"
        self._has_pk = bool(definition.primary_key)
        self._prefix = key_prefix(definition.schema, definition.table)

    def _encode(self, lay: Layout, change: Insert | Update | Delete, lsn: int) -> list[_Encoded]:
        where = self._where
        if isinstance(change, Insert):
            row = change.new
            if where is not None and not where(_mapping(lay, row)):
                return []
            return [(LogOffset(lsn, change.op), self._key(lay, row), "insert", self._value(lay, row), b"")]
        if isinstance(change, Delete):
            old = change.old
            full_old = change.old_kind == "O"
            if where is not None:
                if not full_old:
                    raise IncompleteChange(
                        f"{self._prefix}: DELETE without the old row, cannot evaluate WHERE"
                    )
                if not where(_mapping(lay, old)):
                    return []
            return [
                (
                    LogOffset(lsn, change.op),
                    self._key(lay, old),
                    "delete",
                    self._delete_value(lay, old, full_old),
                    b"",
                )
            ]
        return self._update(lay, change, lsn)

    def _update(self, lay: Layout, change: Update, lsn: int) -> list[_Encoded]:
        old_full = change.old if change.old_kind == "O" else None
        new = change.new
        unresolved: set[int] = _NONE_UNRESOLVED
        if UNCHANGED_TOAST in new:
            new, unresolved = _fill_toast(new, old_full)
        where = self._where
        if where is not None:
            if old_full is None:
                raise IncompleteChange(f"{self._prefix}: UPDATE without the old row, cannot evaluate WHERE")
            if unresolved:
                raise IncompleteChange(f"{self._prefix}: UPDATE with an unresolved TOAST value")
            old_in = where(_mapping(lay, old_full))
            new_in = where(_mapping(lay, new))
            if not old_in and not new_in:
                return []
        else:
            old_in = new_in = True
        op = change.op
        key_source = change.old if change.old is not None else new
        if unresolved and any(i in unresolved for i in lay.key):
            raise IncompleteChange(f"{self._prefix}: UPDATE with an unresolved TOAST key value")
        new_key = lay.key_of(new)
        if not new_in:
            old = old_full if old_full is not None else key_source
            value = self._delete_value(lay, old, old_full is not None)
            return [(LogOffset(lsn, op), lay.key_of(old), "delete", value, b"")]
        if not old_in:
            self._require_full(unresolved)
            return [(LogOffset(lsn, op), new_key, "insert", self._value(lay, new), b"")]
        old_key = lay.key_of(key_source)
        if old_key != new_key:
            self._require_full(unresolved)
            old = old_full if old_full is not None else key_source
            del_value = self._delete_value(lay, old, old_full is not None)
            return [
                (
                    LogOffset(lsn, op),
                    old_key,
                    "delete",
                    del_value,
                    b',"key_change_to":' + orjson.dumps(new_key),
                ),
                (
                    LogOffset(lsn, op + 1),
                    new_key,
                    "insert",
                    self._value(lay, new),
                    b',"key_change_from":' + orjson.dumps(old_key),
                ),
            ]
        if old_full is not None and not unresolved:
            # the common case: compare the selected values as tuples, in C
            new_p = lay.project(new)
            old_p = lay.project(old_full)
            if new_p == old_p:
                return []
            names = lay.sel_names
            if self._full:
                old_value = {names[j]: old_p[j] for j in range(len(names)) if new_p[j] != old_p[j]}
                value = b"".join(
                    (
                        b',"value":',
                        orjson.dumps(dict(zip(names, new_p, strict=True))),
                        b',"old_value":',
                        orjson.dumps(old_value),
                    )
                )
            else:
                keep = lay.pk_pos
                value = b',"value":' + orjson.dumps(
                    {names[j]: new_p[j] for j in range(len(names)) if j in keep or new_p[j] != old_p[j]}
                )
            return [(LogOffset(lsn, op), new_key, "update", value, b"")]
        # no usable old row: what changed is unknown, send every known column
        if self._full:
            self._require_full(unresolved)
            return [(LogOffset(lsn, op), new_key, "update", self._value(lay, new), b"")]
        known = {lay.names[i]: new[i] for i in lay.sel if i not in unresolved}
        return [(LogOffset(lsn, op), new_key, "update", b',"value":' + orjson.dumps(known), b"")]

    def _require_full(self, unresolved: set[int]) -> None:
        if unresolved:
            raise IncompleteChange(
                f"{self._prefix}: UPDATE with an unresolved TOAST value needs the full row"
            )

    def _key(self, lay: Layout, row: Row) -> str:
        return lay.key_of(row)

    def _value(self, lay: Layout, row: Row) -> bytes:
        return b',"value":' + orjson.dumps(dict(zip(lay.sel_names, lay.project(row), strict=True)))

    def _delete_value(self, lay: Layout, old: Row, full_old: bool) -> bytes:
        if self._full or not self._has_pk:
            if not full_old:
                raise IncompleteChange(f"{self._prefix}: DELETE without the old row, cannot send it in full")
            return self._value(lay, old)
        return b',"value":' + orjson.dumps({lay.names[i]: old[i] for i in lay.pk_sel})


def _mapping(lay: Layout, row: Row) -> Mapping[str, str | None]:
    return dict(zip(lay.names, row, strict=True))  # type: ignore[arg-type]  # no UNCHANGED_TOAST left here


def _fill_toast(new: Row, old: Row | None) -> tuple[Row, set[int]]:
    filled = list(new)
    unresolved: set[int] = set()
    for i, v in enumerate(new):
        if v is UNCHANGED_TOAST:
            prev = old[i] if old is not None else UNCHANGED_TOAST
            if prev is UNCHANGED_TOAST:
                unresolved.add(i)
            else:
                filled[i] = prev
    return tuple(filled), unresolved
