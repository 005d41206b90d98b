"""The WHERE language: which clauses are accepted, and the exact error text of those that are not."""

from __future__ import annotations

import pytest

from sync.where import WhereError, compile_where
from tests.where.language_cases import ACCEPTED
from tests.where.tables import ITEMS

REJECTED = [
    # syntax errors: location = byte offset in "SELECT 1 WHERE <where>" (libpg_query's cursor)
    ("1 x 1", 'At location 17: syntax error at or near "x"'),
    ("id = 1 x", 'At location 22: syntax error at or near "x"'),
    ("1=1) OR (1=1", 'At location 18: syntax error at or near ")"'),
    ("id = 1 AND", "At location 25: syntax error at end of input"),
    ("NOT", "At location 18: syntax error at end of input"),
    ("id IN ()", 'At location 22: syntax error at or near ")"'),
    ("SELECT", 'At location 15: syntax error at or near "SELECT"'),
    ("SELECT 1", 'At location 15: syntax error at or near "SELECT"'),
    ("'abc", 'At location 15: unterminated quoted string at or near "\'abc"'),
    ('"unterminated', 'At location 15: unterminated quoted identifier at or near ""unterminated"'),
    ("id = $$abc", 'At location 20: unterminated dollar-quoted string at or near "$$abc"'),
    ("/* unterminated", 'At location 15: unterminated /* comment at or near "/* unterminated"'),
    ("é x", 'At location 18: syntax error at or near "x"'),  # byte offsets, as libpg_query
    # statement splitting and trailing clauses
    ("id = 1; drop table items", 'unescaped ";" causing statement split'),
    ("id = 1 ORDER BY id", "malformed query ending with SQL clauses"),
    ("id = 1 LIMIT 1", "malformed query ending with SQL clauses"),
    ("id = 1 UNION SELECT 1", "malformed query ending with SQL clauses"),
    # semantic errors: location = byte offset in the clause
    ("foo = 1", "At location 0: unknown reference foo"),
    ('"Foo" = 1', 'At location 0: unknown reference "Foo"'),
    ("id = 1 AND items.id = 1", "At location 11: unknown reference items.id"),
    ("f(1)", "At location 0: unknown or unsupported function f/1"),
    ("pg_sleep(1) IS NULL", "At location 0: unknown or unsupported function pg_sleep/1"),
    ("now() > at", "At location 0: unknown or unsupported function now/0"),
    ("sum(id) > 1", "At location 0: unknown or unsupported function sum/1"),
    ("id > 0 AND lower(title, 2) = 'a'", "At location 11: unknown or unsupported function lower/2"),
    ("upper() = 'x'", "At location 0: unknown or unsupported function upper/0"),
    ("price ^ 2 > 1", "At location 6: numeric ^ numeric is not supported: cast an operand to float8"),
    ("count(*) > 1", "At location 0: aggregation is not supported in this context"),
    ("public.lower(title) = 'a'", "At location 0: unknown or unsupported function public.lower"),
    ("id = $2", "At location 5: parameter $2 was not provided"),
    ("$1 = id AND $1 = title", "At location 15: type conflict for $1: int4 and text"),
    ("id + 1", "WHERE clause must return a boolean"),
    ("title", "WHERE clause must return a boolean"),
    (
        "id IN (SELECT id FROM items)",
        "At location 3: only `value IN (SELECT ...)` sublinks are supported right now",
    ),
    ("EXISTS (SELECT 1)", "At location 0: only `value IN (SELECT ...)` sublinks are supported right now"),
    ("id == 1", "At location 3: unknown binary operator =="),
    ("id ~ 'a'", "At location 3: unknown binary operator ~"),
    ("doc->>'a' = 'b'", "At location 3: unknown binary operator ->>"),
    ("CASE WHEN done THEN true END", "At location 0: CaseExpr is not supported in this context"),
    ("(id, big) IN ((1, 2))", "At location 1: RowExpr is not supported in this context"),
    ("x'1F' = 'a'", "At location 0: BitString values are not supported"),
    ("B'101' = 'a'", "At location 0: BitString values are not supported"),
    ("id = 'abc'", 'At location 3: invalid input syntax for type integer: "abc"'),
    ("status = 'nope'", 'At location 7: invalid input value for enum mood: "nope"'),
    ("status < 'ok'", "At location 7: operator does not exist: mood < unknown"),
    ("title = 1", "At location 6: operator does not exist: text = int4"),
    ("day > '2020-13-01'", 'At location 4: date/time field value out of range: "2020-13-01"'),
    ("uid = 'not-a-uuid'", 'At location 4: invalid input syntax for type uuid: "not-a-uuid"'),
    ("1/0 = id", "At location 1: division by zero"),
    ("id = 2147483647 + 1", "At location 16: integer out of range"),
    ("title LIKE 'a' ESCAPE 'xy'", "At location 0: invalid escape string"),
    ("title[1] = 'a'", "At location 0: cannot subscript type text because it does not support subscripting"),
    ("ARRAY[] = nums", "At location 0: cannot determine type of empty array"),
    ("id = ANY(title)", "At location 3: op ANY/ALL (array) requires array on right side, not text"),
    ("done AND id", "At location 5: argument of AND must be type boolean, not type int4"),
    ("NOT id", "At location 4: argument of NOT must be type boolean, not type int4"),
    ("id IS TRUE", "At location 3: argument of IS TRUE must be type boolean, not type int4"),
    ("id::mood = 'a'", "At location 2: cannot cast type int4 to mood"),
    (
        "nums = '{{{{{{{1}}}}}}}'",
        "At location 5: number of array dimensions (7) exceeds the maximum allowed (6)",
    ),
]


@pytest.mark.parametrize(("clause", "message"), REJECTED)
def test_rejected_with_exact_message(clause: str, message: str) -> None:
    params = {1: "5"} if "$1" in clause else {}
    with pytest.raises(WhereError) as info:
        compile_where(clause, ITEMS, params)
    assert info.value.messages == [message]


@pytest.mark.parametrize(("clause", "sql", "params"), ACCEPTED)
def test_accepted_with_canonical_sql(clause: str, sql: str, params: list[str | None]) -> None:
    compiled = compile_where(clause, ITEMS, {1: "5"} if "$1" in clause else {})
    assert compiled.to_sql() == (sql, params)


def test_unused_parameter_is_rejected() -> None:
    with pytest.raises(WhereError) as info:
        compile_where("id = $1", ITEMS, {1: "5", 2: "x"})
    assert info.value.messages == ["parameter value for $2 was not used"]


def test_columns_lists_only_referenced_columns() -> None:
    clause = compile_where("id = 1 AND lower(title) LIKE 'a%' AND \"Weird Name\" IS NULL", ITEMS, {})
    assert clause.columns == frozenset({"id", "title", "Weird Name"})
    assert clause.param_types == {}
    assert compile_where("id = $1 OR $1 < id", ITEMS, {1: "7"}).param_types == {1: "int4"}


def test_evaluation_is_three_valued_and_true_only() -> None:
    clause = compile_where("id > 1 OR title = 'x'", ITEMS, {})
    assert clause.evaluate({"id": "2", "title": None}) is True
    assert clause.evaluate({"id": None, "title": "y"}) is False  # NULL OR FALSE -> NULL -> not matched
    assert clause.evaluate({"id": "0", "title": "y"}) is False
    assert compile_where("NOT (id > 1)", ITEMS, {}).evaluate({"id": None}) is False
    assert compile_where("id IS NULL", ITEMS, {}).evaluate({"id": None}) is True


@pytest.mark.parametrize(
    ("clause", "expected"),
    [  # each checked against Postgres 15 with id = 3
        ("'a' || 1 + 2 = 'a3'", True),
        ("1 + 2 || 'a' = '3a'", True),
        ("id & 1 + 2 = 3", True),
        ("2 ^ 3 ^ 2 = 512", False),
        ("-2 ^ 2 = 4", True),
        ("- id ^ 2 = 9", True),
        ("|/ 16 + 9 = 5", True),
        ("~ id & 1 = 0", True),
        ("NOT id = 3", False),
        ("id IS NULL = false", True),
        ("id = 3 IS TRUE", True),
        ("done OR done AND false", True),
    ],
)
def test_operator_precedence_follows_postgres(clause: str, expected: bool) -> None:
    assert compile_where(clause, ITEMS, {}).evaluate({"id": "3", "done": "t"}) is expected


def test_comparisons_do_not_associate() -> None:
    with pytest.raises(WhereError) as info:
        compile_where("id < big = true", ITEMS, {})
    assert info.value.messages == ['At location 24: syntax error at or near "="']


def test_compiled_clauses_are_values() -> None:
    text = "id = 1 AND title LIKE 'a%' AND span > '1 day' AND score IN (1.5, 2)"
    first, second = compile_where(text, ITEMS, {}), compile_where(text, ITEMS, {})
    assert first == second and hash(first) == hash(second)
    assert first != compile_where("id = 2", ITEMS, {})
