"""Routes a row change to the shapes it affects, in time independent of the number of indexed shapes.

A shape whose clause has a conjunct ``col = const``, ``col IN (consts)`` or ``col = ANY(const array)`` is
filed in a hash table under that conjunct's constant(s); a change looks its column value up once per
(column, comparison type) group and evaluates the full clause only for the candidates found.  Shapes
without such a conjunct are evaluated one by one; shapes without a WHERE match every row of their table.

Inserted rows can be routed in bulk (:meth:`RoutingIndex.route_new_rows`, the ingest hot path): rows stay
the tuples replication decoded (no ``{column: text}`` mapping per row unless a clause must be evaluated),
text values already seen map to their lookup key without parsing again, and the caller learns which shapes
were matched *exactly* (a key hit on a shape whose whole clause is the indexed equality, or a shape without
a WHERE), for which its consumer need not evaluate the clause again.

Lookup keys are typed and normalised (see :class:`~sync.where.clause.EqualityFact`): a numeric column
holding ``1.0`` finds the shape ``n = 1``, a float ``-0`` finds ``f = 0``, ``NaN`` finds ``NaN``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sync.where.clause import WhereClause
from sync.where.errors import WhereEvalError, evaluation_fault

logger = logging.getLogger(__name__)

__all__ = ["RoutingIndex"]

Row = Mapping[str, str | None]
ShapeId = Hashable
S = TypeVar("S", bound=Hashable)  # a shape id
T = TypeVar("T")

_MEMO_MAX = 100_000  # text -> key entries remembered per group (cleared when full: a cache, not a leak)


@dataclass
class _Group:
    column: str
    key: Callable[[str], Any]
    # key -> the shape id itself when the key's only shape is "exact" (its whole clause is the indexed
    # fact, so a key hit is a match without evaluation: the common case, one pointer away), else a list
    # of (shape id, exact) pairs.  Shape ids are hashable, hence never lists.
    buckets: dict[Any, Any] = field(default_factory=dict)
    # text -> key for texts already parsed (keys are a pure function of the text; failures are not kept)
    memo: dict[str, Any] = field(default_factory=dict)

    def key_of(self, text: str) -> Any:
        """``key(text)``, remembered; raises WhereEvalError where Postgres would (invalid input...), and for
        any fault of ``key`` (logged): a fault costs the group's shapes, never the router."""
        key = self.memo.get(text, _EMPTY)
        if key is _EMPTY:
            try:
                key = self.key(text)
            except WhereEvalError:
                raise
            except Exception as exc:
                logger.exception("the routing key of %r for column %s failed", text[:100], self.column)
                raise evaluation_fault(exc) from exc
            memo = self.memo
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[text] = key
        return key

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


def _put(out: dict[S, list[T]], sid: S, item: T) -> None:
    found = out.get(sid)
    if found is None:
        out[sid] = [item]
    else:
        found.append(item)


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
                    key = group.key_of(text)
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

    def route_new_rows(
        self,
        table_key: Hashable,
        columns: Mapping[str, int],
        rows: Sequence[Sequence[str | None]],
        items: Sequence[T],
        *,
        out: dict[S, list[T]],
        inexact: set[S],
        errors: dict[S, WhereEvalError] | None = None,
    ) -> None:
        """Route inserted rows in bulk: for each ``rows[i]`` append ``items[i]`` to ``out[sid]`` (in row
        order) for every shape ``affected(table_key, row)`` would return, ``row`` being ``{column:
        rows[i][columns[column]]}``.  ``columns`` must hold every column the clauses read; values are
        text or None (an insert has no unchanged-TOAST value).

        A shape routed a row other than by an exact match (its clause was evaluated, or raised) is added
        to ``inexact``; every other shape in ``out`` got only rows its clause is TRUE for without any
        evaluation, so its consumer may skip the clause for these rows.  Never raises for a bad row.
        """
        table = self._tables.get(table_key)
        if table is None:
            return
        groups = [(columns[g.column], g) for g in table.groups.values() if g.column in columns]
        everything: set[Any] = table.everything  # shape ids are the caller's S
        others: set[Any] = table.others
        if len(groups) == 1 and not everything and not others:
            # one indexed column and nothing else (thousands of ``col = k`` shapes): a row whose text is
            # remembered and whose key's bucket is one exact shape is a dict lookup and an append; any
            # other row takes the general path
            pos, group = groups[0]
            memo, buckets = group.memo, group.buckets
            for row, item in zip(rows, items, strict=True):
                text = row[pos]
                if text is None:
                    continue
                bucket = buckets.get(memo.get(text, _EMPTY), _EMPTY)
                if bucket is _EMPTY and text in memo:
                    continue  # a key no shape is filed under
                if bucket is _EMPTY or type(bucket) is list:
                    self._route_row(row, item, groups, everything, others, columns, out, inexact, errors)
                    continue
                found = out.get(bucket)
                if found is None:
                    out[bucket] = [item]
                else:
                    found.append(item)
            return
        for row, item in zip(rows, items, strict=True):
            self._route_row(row, item, groups, everything, others, columns, out, inexact, errors)

    def _route_row(  # noqa: PLR0917 - route_new_rows' values, positionally, per row
        self,
        row: Sequence[str | None],
        item: T,
        groups: list[tuple[int, _Group]],
        everything: set[Any],
        others: set[Any],
        columns: Mapping[str, int],
        out: dict[S, list[T]],
        inexact: set[S],
        errors: dict[S, WhereEvalError] | None,
    ) -> None:
        """One row of :meth:`route_new_rows`."""
        for sid in everything:
            _put(out, sid, item)
        for pos, group in groups:
            text = row[pos]
            if text is None:
                continue
            key = group.memo.get(text, _EMPTY)
            if key is _EMPTY:
                try:
                    key = group.key_of(text)
                except WhereEvalError as exc:
                    hit: set[Any] = set()
                    self._fail_group(group, exc, hit, errors)  # type: ignore[arg-type]
                    for sid in hit:
                        _put(out, sid, item)
                    inexact |= hit
                    continue
            bucket = group.buckets.get(key, _EMPTY)
            if bucket is _EMPTY:
                continue
            if type(bucket) is not list:  # one exact shape (the common case)
                _put(out, bucket, item)
                continue
            mapping: dict[str, str | None] | None = None
            for sid, exact in bucket:
                if exact:
                    _put(out, sid, item)
                    continue
                if mapping is None:
                    mapping = {c: row[i] for c, i in columns.items()}
                if self._holds(sid, mapping, errors):
                    _put(out, sid, item)
                    inexact.add(sid)
        if others:
            mapping = {c: row[i] for c, i in columns.items()}
            for sid in others:
                if self._holds(sid, mapping, errors):
                    _put(out, sid, item)
                    inexact.add(sid)

    def _holds(self, sid: Any, row: Row, errors: dict[Any, WhereEvalError] | None) -> bool:
        """Whether the shape's clause is TRUE for ``row``, or raises (recorded in ``errors``)."""
        clause = self._shapes[sid].clause
        assert clause is not None
        try:
            return clause.evaluate(row)
        except WhereEvalError as exc:
            if errors is not None:
                errors[sid] = exc
            return True

    def _check(
        self, sid: ShapeId, row: Row, out: set[ShapeId], errors: dict[ShapeId, WhereEvalError] | None
    ) -> None:
        if self._holds(sid, row, errors):
            out.add(sid)

    @staticmethod
    def _fail_group(
        group: _Group, exc: WhereEvalError, out: set[ShapeId], errors: dict[ShapeId, WhereEvalError] | None
    ) -> None:
        for bucket in group.buckets.values():
            for sid, _ in _items(bucket):
                out.add(sid)
                if errors is not None:
                    errors[sid] = exc
