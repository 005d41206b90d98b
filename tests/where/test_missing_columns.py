"""A row without a column the clause reads (a change made after the column was dropped, before the shape
is invalidated): an evaluation error like Postgres', never a crash of the router."""

from __future__ import annotations

import pytest

from sync.where import RoutingIndex, WhereEvalError, referenced_columns
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


def test_compiling_records_the_columns_a_clause_text_reads() -> None:
    text = 'value > 1 AND "Odd" IS NULL'
    compile_for_columns(text, {**COLUMNS, "Odd": "text"}, {}, {})
    assert referenced_columns(text) == {"value", "Odd"}
    assert referenced_columns("lower(label) = 'x' OR id = $1") == {"label", "id"}  # from the syntax alone
