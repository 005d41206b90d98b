"""relation_change_reasons: one verdict per distinct definition aspect, equal to relation_change_reason's."""

from __future__ import annotations

from sync.replication.changes import Column, Relation
from sync.shapes.definition import ShapeDefinition
from sync.shapes.invalidation import relation_change_reason, relation_change_reasons

INT, TEXT = 23, 25


def _relation(oid: int, name: str, columns: list[tuple[str, int]]) -> Relation:
    cols = tuple(Column(n, t, -1, n == "id") for n, t in columns)
    return Relation(oid, "public", name, "f", cols)


def _shape(
    oid: int, table: str, columns: tuple[str, ...], *, all_columns: bool = False, where: str | None = None
) -> ShapeDefinition:
    return ShapeDefinition(
        schema="public",
        table=table,
        relation_oid=oid,
        columns=columns,
        primary_key=("id",),
        all_columns=all_columns,
        where=where,
        params=("1",) if where else (),
    )


def test_each_verdict_equals_the_single_shape_verdict() -> None:
    previous = _relation(10, "t", [("id", INT), ("a", INT), ("b", INT)])
    # b changed type and c was added
    relation = _relation(10, "t", [("id", INT), ("a", INT), ("b", TEXT), ("c", INT)])
    shapes = [
        _shape(10, "t", ("id", "a", "b"), all_columns=True),  # columns changed
        _shape(10, "t", ("id", "a")),  # survives
        _shape(10, "t", ("id", "a"), where="a = $1"),  # same aspects, another shape: survives
        _shape(10, "t", ("id", "a", "b")),  # b changed type
        _shape(10, "t", ("id", "a", "b"), where="a = $1"),  # b changed type
        _shape(11, "t", ("id", "a")),  # re-created
        _shape(10, "old", ("id", "a")),  # renamed
        _shape(10, "t", ("id", "z")),  # z is gone
        _shape(99, "u", ("id", "b")),  # another table: not considered
    ]
    named = [(f"h{i}", d) for i, d in enumerate(shapes)]

    got = relation_change_reasons(named, relation, previous)

    expected = []
    for handle, d in named:
        if d.relation_oid != relation.oid and d.table != relation.name:
            continue
        reason = relation_change_reason(d, relation, previous)
        if reason is not None:
            expected.append((handle, reason))
    assert got == expected
    assert [h for h, _ in got] == ["h0", "h3", "h4", "h5", "h6", "h7"]


def test_without_previous_relation_only_the_columns_count() -> None:
    relation = _relation(10, "t", [("id", INT), ("a", TEXT)])
    shapes = [("x", _shape(10, "t", ("id", "a"))), ("y", _shape(10, "t", ("id", "a"), where="a = $1"))]
    assert relation_change_reasons(shapes, relation, None) == []
