"""A row without a column the clause reads (a change made after the column was dropped, before the shape
is invalidated), or a fault of the evaluator itself: an evaluation error, never a crash of the router."""

from __future__ import annotations

import dataclasses

import pytest

import sync.where.parse as parse_module
from sync.where import RoutingIndex, WhereEvalError, referenced_columns, remember_columns
from sync.where.clause import compile_for_columns

COLUMNS = {"id": "int4", "label": "text", "value": "int4"}


def test_evaluating_a_row_without_a_read_column_is_an_evaluation_error() -> None:
    clause = compile_for_columns("label LIKE 'row%' AND value > 1", COLUMNS, {}, {})
    assert clause.evaluate({"id": "1", "label": "row 1", "value": "2"})
    with pytest.raises(WhereEvalError, match='column "label" does not exist'):
        clause.evaluate({"id": "1", "value": "2"})


def test_the_router_includes_the_shape_and_records_why() -> None:
    index = RoutingIndex()
    index.add("reads-label", "t", compile_for_columns("label LIKE 'row%'", COLUMNS, {}, {}))
    index.add("reads-value", "t", compile_for_columns("value > 1", COLUMNS, {}, {}))
    errors: dict[object, WhereEvalError] = {}
    assert index.affected("t", {"id": "1", "value": "2"}, None, errors) == {"reads-label", "reads-value"}
    assert list(errors) == ["reads-label"]


def test_the_columns_a_clause_text_reads_come_from_its_compilation_or_its_syntax() -> None:
    text = 'value > 1 AND ("Odd" IS NULL OR true)'
    clause = compile_for_columns(text, {**COLUMNS, "Odd": "text"}, {}, {})
    remember_columns(text, clause.columns)  # what the resolver does for a shape's clause
    assert referenced_columns(text) == clause.columns
    assert referenced_columns("lower(label) = 'x' OR id = $1") == {"label", "id"}  # from the syntax alone


def test_the_record_of_clause_columns_is_bounded_by_the_text_it_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parse_module, "_REFERENCED", {})
    monkeypatch.setattr(parse_module, "_referenced_chars", 0)
    monkeypatch.setattr(parse_module, "_REFERENCED_MAX_CHARS", 100)
    for k in range(30):  # 30 distinct texts of 9-10 characters: past 100 characters, it starts again
        remember_columns(f"id = {k:04d}", frozenset({"id"}))
    assert 0 < len(parse_module._REFERENCED) <= 11
    assert sum(map(len, parse_module._REFERENCED)) <= 100


def test_a_fault_of_the_evaluator_is_an_evaluation_error_of_its_shape_only() -> None:
    """Any exception but WhereEvalError is a bug of ours: it must cost the shape whose clause met it (the
    router includes it, its consumer invalidates it), not the router that every shape depends on."""

    def broken(row: object) -> bool:
        raise ZeroDivisionError("a bug")

    index = RoutingIndex()
    faulty = dataclasses.replace(compile_for_columns("label LIKE 'row%'", COLUMNS, {}, {}), _fn=broken)
    with pytest.raises(WhereEvalError, match="could not be evaluated"):
        faulty.evaluate({"id": "1", "label": "row 1", "value": "2"})
    index.add("faulty", "t", faulty)
    index.add("fine", "t", compile_for_columns("value > 1", COLUMNS, {}, {}))
    errors: dict[object, WhereEvalError] = {}
    assert index.affected("t", {"id": "1", "label": "x", "value": "2"}, None, errors) == {"faulty", "fine"}
    assert list(errors) == ["faulty"]

    keyed = RoutingIndex()
    keyed.add("k", "t", compile_for_columns("id = 1", COLUMNS, {}, {}))
    (group,) = keyed._tables["t"].groups.values()
    group.key = broken  # a fault of the routing key's parser
    assert keyed.affected("t", {"id": "1", "label": "x", "value": "2"}, None, errors) == {"k"}
