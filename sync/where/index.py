"""Routes a row change to the shapes it affects, in time independent of the number of indexed shapes.

A shape whose clause has a conjunct ``col = const``, ``col IN (consts)`` or ``col = ANY(const array)`` is
filed in a hash table under that conjunct's constant(s); a change looks its column value up once per
(column, comparison type) group and evaluates the full clause only for the candidates found.  Shapes
without such a conjunct are evaluated one by one; shapes without a WHERE match every row of their table.

Lookup keys are typed and normalised (see :class:`~sync.where.clause.EqualityFact`): a numeric column
holding ``1.0`` finds the shape ``n = 1``, a float ``-0`` finds ``f = 0``, ``NaN`` finds ``NaN``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.where.clause import WhereClause
from sync.where.errors import WhereEvalError

__all__ = ["RoutingIndex"]

Row = Mapping[str, str | None]
ShapeId = Hashable


@dataclass
class _Group:
    column: str
    key: Callable[[str], Any]
    # key -> the shape id itself when the key's only shape is "exact" (its whole clause is the indexed
    # fact, so a key hit is a match without evaluation: the common case, one pointer away), else a list
    # of (shape id, exact) pairs.  Shape ids are hashable, hence never lists.
    buckets: dict[Any, Any] = field(default_factory=dict)

    def insert(self, key: Any, sid: ShapeId, exact: bool) -> None:
        current = self.buckets.get(key, _EMPTY)
        if current is _EMPTY and exact:
            self.buckets[key] = sid
        else:
            self.buckets[key] = [*_items(current), (sid, exact)]

    def delete(self, key: Any, sid: ShapeId) -> None:
        current = self.buckets.get(key, _EMPTY)
        rest = [item for item in _items(current) if item[0] != sid]
        if not rest:
            self.buckets.pop(key, None)
        elif len(rest) == 1 and rest[0][1]:
            self.buckets[key] = rest[0][0]
        else:
            self.buckets[key] = rest


_EMPTY = object()


def _items(bucket: Any) -> list[tuple[ShapeId, bool]]:
    if bucket is _EMPTY:
        return []
    if type(bucket) is list:
        return bucket
    return [(bucket, True)]


@dataclass
class _Table:
    groups: dict[tuple[str, str, str], _Group] = field(default_factory=dict)
    others: set[ShapeId] = field(default_factory=set)
    everything: set[ShapeId] = field(default_factory=set)


@dataclass(slots=True)
class _Entry:  # one per shape: slots and a tuple of keys keep it small
    table_key: Hashable
    clause: WhereClause | None
    group: tuple[str, str, str] | None = None
    keys: tuple[Any, ...] = ()


class RoutingIndex:
    """Shape filter for one stack: ``add``/``remove`` shapes, ask which ones a change ``affected``."""

    def __init__(self) -> None:
        self._tables: dict[Hashable, _Table] = {}
        self._shapes: dict[ShapeId, _Entry] = {}

    def __len__(self) -> int:
        return len(self._shapes)

    def add(self, shape_id: ShapeId, table_key: Hashable, clause: WhereClause | None) -> None:
        if shape_id in self._shapes:
            self.remove(shape_id)
        table = self._tables.setdefault(table_key, _Table())
        entry = _Entry(table_key, clause)
        self._shapes[shape_id] = entry
        if clause is None:
            table.everything.add(shape_id)
            return
        facts = clause.equality_facts()
        if not facts:
            table.others.add(shape_id)
            return
        fact = min(facts, key=lambda f: len(f.keys))
        group = table.groups.get(fact.group)
        if group is None:
            group = table.groups[fact.group] = _Group(fact.column, fact.key)
        for k in fact.keys:
            group.insert(k, shape_id, fact.whole)
        entry.group, entry.keys = fact.group, tuple(fact.keys)

    def remove(self, shape_id: ShapeId) -> None:
        entry = self._shapes.pop(shape_id, None)
        if entry is None:
            return
        table = self._tables[entry.table_key]
        table.everything.discard(shape_id)
        table.others.discard(shape_id)
        if entry.group is not None:
            group = table.groups[entry.group]
            for k in entry.keys:
                group.delete(k, shape_id)
            if not group.buckets:
                del table.groups[entry.group]
        if not (table.groups or table.others or table.everything):
            del self._tables[entry.table_key]

    def affected(
        self,
        table_key: Hashable,
        new_row: Row | None,
        old_row: Row | None = None,
        errors: dict[ShapeId, WhereEvalError] | None = None,
    ) -> set[ShapeId]:
        """Shapes whose clause is TRUE for ``new_row`` or ``old_row`` (either may be None).

        Rows map column names to Postgres text (None for NULL) and must hold every column the clauses
        read, with unchanged-TOAST values already resolved.  A shape whose clause raises
        :class:`WhereEvalError` on a row (overflow, invalid input...) is *included*, so that its consumer
        meets the same error when it evaluates the change and invalidates the shape; the exceptions are
        also recorded in ``errors`` when given.  This method never raises for a bad row.
        """
        table = self._tables.get(table_key)
        if table is None:
            return set()
        out = set(table.everything)
        for row in (new_row, old_row):
            if row is None:
                continue
            for group in table.groups.values():
                text = row.get(group.column)
                if text is None:
                    continue
                try:
                    key = group.key(text)
                except WhereEvalError as exc:
                    self._fail_group(group, exc, out, errors)
                    continue
                bucket = group.buckets.get(key, _EMPTY)
                if bucket is _EMPTY:
                    continue
                if type(bucket) is not list:
                    out.add(bucket)
                    continue
                for sid, exact in bucket:
                    if exact:
                        out.add(sid)  # key equality is the clause's equality (see EqualityFact)
                    elif sid not in out:
                        self._check(sid, row, out, errors)
            for sid in table.others:
                if sid not in out:
                    self._check(sid, row, out, errors)
        return out

    def _check(
        self, sid: ShapeId, row: Row, out: set[ShapeId], errors: dict[ShapeId, WhereEvalError] | None
    ) -> None:
        clause = self._shapes[sid].clause
        assert clause is not None
        try:
            if clause.evaluate(row):
                out.add(sid)
        except WhereEvalError as exc:
            out.add(sid)
            if errors is not None:
                errors[sid] = exc

    @staticmethod
    def _fail_group(
        group: _Group, exc: WhereEvalError, out: set[ShapeId], errors: dict[ShapeId, WhereEvalError] | None
    ) -> None:
        for bucket in group.buckets.values():
            for sid, _ in _items(bucket):
                out.add(sid)
                if errors is not None:
                    errors[sid] = exc
