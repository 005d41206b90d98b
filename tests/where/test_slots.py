"""Slot templates (sync/where/slots.py): a clause compiled once, its $n values bound again per request,
must give exactly what compiling it with those values gives, or nothing (then the caller compiles)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.where import WhereError, compile_where
from sync.where.slots import slot_template
from tests.where.tables import ITEMS

TEMPLATED = [
    ("id = $1", {1: "5"}),
    ("id = $1::int", {1: "5"}),
    ("$1 = id", {1: "5"}),
    ("id = $1 AND title = $2", {1: "5", 2: "x"}),
    ("id = $1 OR id = $1", {1: "3"}),
    ("id IN ($1, $2)", {1: "5", 2: "6"}),
    ("id = ANY($1)", {1: "{1,2}"}),
    ("id BETWEEN $1 AND $2", {1: "3", 2: "9"}),
    ("status = $1", {1: "ok"}),
    ("id IS DISTINCT FROM $1", {1: "4"}),
    ("price > $1 AND at < $2 AND day >= $3", {1: "1.50", 2: "2024-01-01 00:00:00+00", 3: "2024-01-01"}),
    (
        "title > $1 AND score <= $2 AND uid = $3",
        {1: "m", 2: "1e3", 3: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
    ),
]

# the values may change the tree (folding, AND/OR simplification) or be checked at compile time
NOT_TEMPLATED = [
    ("id = $1 + 1", {1: "5"}),
    ("done AND $1", {1: "true"}),
    ("title LIKE $1", {1: "a%"}),
    ("$1 = $2", {1: "1", 2: "1"}),
    ("id = $1 OR $2", {1: "1", 2: "false"}),
    ("coalesce($1, title) = 'x'", {1: "a"}),
    ("id BETWEEN SYMMETRIC $1 AND $2", {1: "1", 2: "5"}),
    ("code = $1::varchar(2)", {1: "ab"}),
]


@pytest.mark.parametrize(("text", "values"), TEMPLATED)
def test_bound_with_its_own_values_the_template_is_the_clauses_sql(text: str, values: dict[int, str]) -> None:
    clause = compile_where(text, ITEMS, values)
    template = slot_template(clause, values)
    assert template is not None
    assert (template.sql, template.bind(values)) == clause.to_sql()


@pytest.mark.parametrize(("text", "values"), NOT_TEMPLATED)
def test_values_that_may_shape_the_clause_give_no_template(text: str, values: dict[int, str]) -> None:
    assert slot_template(compile_where(text, ITEMS, values), values) is None


def test_other_values_bind_as_compiling_them_would() -> None:
    text = "price > $1 AND at < $2 AND id IN ($3, $3)"
    first = {1: "1.50", 2: "2024-01-01 00:00:00+00", 3: "7"}
    template = slot_template(compile_where(text, ITEMS, first), first)
    assert template is not None
    other = {1: "001.5000", 2: "2024-06-01 12:00:00+02", 3: "+8"}
    assert (template.sql, template.bind(other)) == compile_where(text, ITEMS, other).to_sql()
    assert template.bind(other) == ["1.5000", "2024-06-01 10:00:00+00", "8", "8"]  # canonical text


@pytest.mark.parametrize(
    "values",
    [
        {1: "x"},  # not an int4: the compiler's error, not a template's
        {1: "99999999999"},  # out of range
        {1: "1\x00"},  # NUL
        {1: "1", 2: "2"},  # one value too many: "was not used"
        {},  # $1 missing
    ],
)
def test_values_the_compiler_refuses_bind_to_nothing(values: dict[int, str]) -> None:
    template = slot_template(compile_where("id = $1", ITEMS, {1: "5"}), {1: "5"})
    assert template is not None
    assert template.bind(values) is None
    with pytest.raises(WhereError):
        compile_where("id = $1", ITEMS, values)


@given(st.text(max_size=20), st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_any_text_and_int_bind_like_the_compiler(text: str, number: int) -> None:
    clause_text = "title = $1 AND id <> $2"
    seed = {1: "a", 2: "1"}
    template = slot_template(compile_where(clause_text, ITEMS, seed), seed)
    assert template is not None
    values = {1: text, 2: str(number)}
    bound = template.bind(values)
    try:
        expected = compile_where(clause_text, ITEMS, values).to_sql()
    except WhereError:
        assert bound is None
    else:
        assert (template.sql, bound) == expected
