"""Compiled clauses of one table share their immutable metadata, and ``col op const`` stays exact."""

from __future__ import annotations

import pytest

from sync.where import WhereEvalError, compile_where
from sync.where.interning import shared, shared_mapping
from tests.where.tables import make_table, scalar

TABLE = make_table({"id": scalar("int4"), "f": scalar("float8"), "t": scalar("text")})


def test_clauses_differing_in_constants_share_their_metadata() -> None:
    one, two = compile_where("id = 1", TABLE), compile_where("id = 2", TABLE)
    assert one.columns is two.columns
    assert one.column_types is two.column_types
    assert one.param_types is two.param_types
    assert one.enums is two.enums
    assert dict(one.column_types) == {"id": "int4"}
    with pytest.raises(TypeError):
        one.column_types["id"] = "text"  # type: ignore[index]  # read-only: shared by every shape


def test_shared_returns_one_canonical_object_per_value() -> None:
    a, b = tuple("xy"), tuple("xy")  # equal, built separately
    assert a is not b
    assert shared(a) is shared(b)
    assert shared((1,)) == (1,) and shared((True,)) == (True,)
    assert shared_mapping({"k": 1}) is shared_mapping({"k": 1})


@pytest.mark.parametrize(
    ("text", "row", "expected"),
    [
        ("id = 5", {"id": "5"}, True),
        ("id = 5", {"id": "6"}, False),
        ("id = 5", {"id": None}, False),
        ("5 < id", {"id": "6"}, True),
        ("5 < id", {"id": "4"}, False),
        ("id < 5", {"id": "4"}, True),
        ("t = 'a'", {"t": "a"}, True),
        ("'a' < t", {"t": "b"}, True),
        ("'b' < t", {"t": "a"}, False),
        ("t = 'a'", {"t": None}, False),
        ("f > 1.5", {"f": "NaN"}, True),
    ],
)
def test_column_against_constant(text: str, row: dict[str, str | None], expected: bool) -> None:
    assert compile_where(text, TABLE).evaluate(row) is expected


def test_column_against_constant_raises_where_postgres_does() -> None:
    with pytest.raises(WhereEvalError, match="out of range for type integer"):
        compile_where("id = 5", TABLE).evaluate({"id": "99999999999"})
    with pytest.raises(WhereEvalError, match="out of range for type integer"):
        compile_where("5 = id", TABLE).evaluate({"id": "99999999999"})
