"""What the ShapeLogCollector needs to route a change of one table: the routing index's contract, the
registered shapes (:class:`ShapeRoute`), the table's shapes and the columns their clauses read, rows turned
into ``{column: text}`` for them, and :func:`route_changes`, which routes a transaction fragment's changes
to the shapes they reach.

Pure (no actor): the collector owns one :class:`TableRouting` per table it routes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pykka

from sync.replication.changes import UNCHANGED_TOAST, Change, Delete, Insert, Relation, Row, Truncate, Update

__all__ = [
    "ALL_COLUMNS",
    "ShapeRoute",
    "ShapeRouting",
    "TableKey",
    "TableRouting",
    "TextRow",
    "clause_columns",
    "route_changes",
    "text_row",
]

TableKey = tuple[str, str]
TextRow = Mapping[str, str | None]


@dataclass(slots=True)
class ShapeRoute:
    """A registered shape: where its changes go, and what its consumer's inbox holds (``qsize``, looked up
    once; None if that inbox cannot say)."""

    handle: str
    table: TableKey
    consumer: pykka.ActorRef[Any]
    columns: frozenset[str] | None  # the columns the shape's WHERE reads; None without a WHERE
    qsize: Callable[[], int] | None = field(init=False)

    def __post_init__(self) -> None:
        qsize = getattr(self.consumer.actor_inbox, "qsize", None)
        self.qsize = qsize if callable(qsize) else None


class ShapeRouting(Protocol):
    """The routing index (``sync.where.index.RoutingIndex``) as the collector uses it."""

    def add(self, shape_id: str, table_key: TableKey, clause: Any) -> None: ...

    def remove(self, shape_id: str) -> None: ...

    def affected(self, table_key: TableKey, new_row: TextRow | None, old_row: TextRow | None) -> set[str]: ...

    def route_new_rows(
        self,
        table_key: TableKey,
        columns: Mapping[str, int],
        rows: Sequence[Row],
        items: Sequence[Change],
        *,
        out: dict[str, list[Change]],
        inexact: set[str],
    ) -> None: ...


@dataclass(slots=True)
class TableRouting:
    """What routing a change of one table needs: its shapes and the columns their clauses read.

    With no clause on the table every change reaches every shape, and no row is turned into a mapping.
    Otherwise only the columns some clause reads are (``RoutingIndex.affected`` needs no others).
    """

    shapes: set[str] = field(default_factory=set)
    filtered: int = 0  # shapes with a WHERE clause
    column_refs: dict[str, int] = field(default_factory=dict)  # column -> clauses reading it
    # (relation, positions of the read columns in it, the same as a mapping), rebuilt when the relation or
    # the column set changes
    layout: tuple[Relation, tuple[tuple[str, int], ...], dict[str, int]] | None = None

    def add(self, columns: frozenset[str] | None) -> None:
        if columns is None:
            return
        self.filtered += 1
        for c in columns:
            n = self.column_refs.get(c, 0)
            self.column_refs[c] = n + 1
            if not n:
                self.layout = None

    def discard(self, columns: frozenset[str] | None) -> None:
        if columns is None:
            return
        self.filtered -= 1
        for c in columns:
            n = self.column_refs[c] - 1
            if n:
                self.column_refs[c] = n
            else:
                del self.column_refs[c]
                self.layout = None

    def positions(self, relation: Relation) -> tuple[tuple[str, int], ...]:
        """``(column, position in the row)`` of the columns the clauses read."""
        layout = self.layout
        if layout is None or layout[0] is not relation:
            layout = self._layout(relation)
        return layout[1]

    def columns(self, relation: Relation) -> dict[str, int]:
        """The same as :meth:`positions`, as ``{column: position}`` (for ``route_new_rows``)."""
        layout = self.layout
        if layout is None or layout[0] is not relation:
            layout = self._layout(relation)
        return layout[2]

    def _layout(self, relation: Relation) -> tuple[Relation, tuple[tuple[str, int], ...], dict[str, int]]:
        idx = relation.column_index
        if ALL_COLUMNS.isdisjoint(self.column_refs):
            pos = tuple((c, idx[c]) for c in sorted(self.column_refs) if c in idx)
        else:
            pos = tuple((c.name, i) for i, c in enumerate(relation.columns))
        self.layout = layout = (relation, pos, dict(pos))
        return layout


def text_row(
    positions: tuple[tuple[str, int], ...], row: Row, fallback: Row | None = None
) -> dict[str, str | None]:
    """The columns at ``positions`` of a row as ``{column: text}``; unchanged TOAST values come from
    ``fallback`` (the old image)."""
    out: dict[str, str | None] = {}
    for name, i in positions:
        v = row[i]
        if v is UNCHANGED_TOAST:
            w = fallback[i] if fallback is not None else None
            out[name] = None if w is UNCHANGED_TOAST else w
        else:
            out[name] = v
    return out


def clause_columns(clause: Any) -> frozenset[str] | None:
    """The columns a compiled clause reads (every column when it does not say); None without a clause."""
    if clause is None:
        return None
    columns = getattr(clause, "columns", None)
    return frozenset(columns) if columns is not None else ALL_COLUMNS


ALL_COLUMNS: frozenset[str] = frozenset({"*"})  # marker: the clause's columns are unknown


def route_changes(
    index: ShapeRouting, by_table: Mapping[TableKey, TableRouting], changes: Sequence[Change]
) -> tuple[dict[str, list[Change]], set[str]]:
    """The changes each shape receives, in order, and the shapes whose consumer must check some routed
    insert against its WHERE (the others were matched exactly: see ``RoutingIndex.route_new_rows``).
    Consecutive inserts of one relation are routed in bulk."""
    per_shape: dict[str, list[Change]] = {}
    inexact: set[str] = set()
    run: list[Insert] = []
    run_rel: Relation | None = None
    for change in changes:
        if change.__class__ is Insert:
            rel = change.relation
            if rel is not run_rel:
                if run:
                    _route_inserts(index, by_table, run, per_shape, inexact)
                run = []
                run_rel = rel
            run.append(change)
            continue
        if run:
            _route_inserts(index, by_table, run, per_shape, inexact)
            run = []
            run_rel = None
        for handle in _affected(index, by_table, change):
            per_shape.setdefault(handle, []).append(change)
    if run:
        _route_inserts(index, by_table, run, per_shape, inexact)
    return per_shape, inexact


def _affected(index: ShapeRouting, by_table: Mapping[TableKey, TableRouting], change: Change) -> set[str]:
    if isinstance(change, Truncate):
        out: set[str] = set()
        for rel in change.relations:
            routing = by_table.get((rel.schema, rel.name))
            if routing is not None:
                out |= routing.shapes
        return out
    rel = change.relation
    key = (rel.schema, rel.name)
    routing = by_table.get(key)
    if routing is None:
        return set()
    if not routing.filtered:
        return routing.shapes  # no WHERE on this table: every change reaches every shape
    pos = routing.positions(rel)
    if isinstance(change, Update):
        old = text_row(pos, change.old) if change.old is not None else None
        return index.affected(key, text_row(pos, change.new, change.old), old)
    if isinstance(change, Delete):
        return index.affected(key, None, text_row(pos, change.old))
    return set()  # inserts go through _route_inserts


def _route_inserts(
    index: ShapeRouting,
    by_table: Mapping[TableKey, TableRouting],
    run: list[Insert],
    per_shape: dict[str, list[Change]],
    inexact: set[str],
) -> None:
    """Route consecutive inserts of one relation; shapes whose consumer must evaluate its WHERE for some of
    them are added to ``inexact``."""
    rel = run[0].relation
    key = (rel.schema, rel.name)
    routing = by_table.get(key)
    if routing is None:
        return
    if not routing.filtered:  # no WHERE on this table: every insert reaches every shape
        for handle in routing.shapes:
            found = per_shape.get(handle)
            if found is None:
                per_shape[handle] = [*run]
            else:
                found.extend(run)
        return
    rows = [change.new for change in run]
    index.route_new_rows(key, routing.columns(rel), rows, run, out=per_shape, inexact=inexact)
