"""What the ShapeLogCollector needs to route a change of one table: the routing index's contract, the
table's shapes and the columns their clauses read, and rows turned into ``{column: text}`` for them.

Pure (no actor): the collector owns one :class:`TableRouting` per table it routes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sync.replication.changes import UNCHANGED_TOAST, Change, Relation, Row

__all__ = ["ALL_COLUMNS", "ShapeRouting", "TableKey", "TableRouting", "TextRow", "clause_columns", "text_row"]

TableKey = tuple[str, str]
TextRow = Mapping[str, str | None]


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
