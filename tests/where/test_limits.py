"""How long or deep a WHERE clause may be: within ``MAX_NESTING`` / ``MAX_OPERATORS`` a clause compiles and
evaluates from any caller's stack depth (a request handler, an actor of the collector), or is refused with a
400's ``WhereError``; beyond them it is refused before sqlglot parses it.  Never a ``RecursionError``: in a
request that was a 500, in the collector (which evaluates clauses) it would be a crash."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from sync.where import WhereError
from sync.where.clause import compile_for_columns
from sync.where.syntax import MAX_NESTING, MAX_OPERATORS

COLUMNS = {"id": "int4", "t": "text", "b": "bool"}
ROW = {"id": "1", "t": "x", "b": "t"}
CALLER_FRAMES = 300  # far deeper than any actor or request handler that compiles or evaluates a clause

N = MAX_OPERATORS
WITHIN: dict[str, str] = {
    "OR chain": " OR ".join(["id = 1"] * (N // 2)),
    "AND chain in parentheses": "(" * MAX_NESTING + " AND ".join(["id = 1"] * (N // 2)) + ")" * MAX_NESTING,
    "IN list of 5,000": "id IN (" + ", ".join(str(i) for i in range(5000)) + ")",
    "NOT chain": "NOT " * (N - 1) + "b",
    "sum chain": "id = " + " + ".join(["id"] * (N - 1)),
    "minus signs": "id = " + "- " * (N - 1) + "id",
    "concatenation": "t = " + " || ".join(["t"] * (N - 1)),
    "nested functions": "t = " + "lower(" * MAX_NESTING + "t" + ")" * MAX_NESTING,
    "nested casts": "id = " + "CAST(" * MAX_NESTING + "id" + " AS int)" * MAX_NESTING,
    "cast chain": "id = id" + "::int" * (N // 3),  # two operator tokens each
}
BEYOND: dict[str, tuple[str, str]] = {
    "parentheses": ("(" * (MAX_NESTING + 1) + "id = 1" + ")" * (MAX_NESTING + 1), "nested deeper than"),
    "unbalanced parentheses": ("(" * 5000 + "1", "nested deeper than"),
    "brackets": ("id = ANY(" + "ARRAY[" * MAX_NESTING + "1" + "]" * MAX_NESTING + ")", "nested deeper than"),
    "OR chain": (" OR ".join(["id = 1"] * (N // 2 + 1)), "operators in one clause"),
    "NOT chain": ("NOT " * 5000 + "b", "operators in one clause"),
}


def _from_deep_stack(frames: int, fn: Callable[[], str]) -> str:
    return _from_deep_stack(frames - 1, fn) if frames else fn()


def _compile_and_evaluate(text: str) -> str:
    try:
        clause = compile_for_columns(text, COLUMNS, {}, {})
    except WhereError as exc:
        return f"refused: {exc.messages[0]}"
    clause.evaluate(ROW)
    return "ok"


@pytest.mark.parametrize("text", WITHIN.values(), ids=WITHIN.keys())
def test_within_the_limits_a_clause_compiles_and_evaluates_or_is_refused_from_any_depth(text: str) -> None:
    for frames in (0, CALLER_FRAMES):
        outcome = _from_deep_stack(frames, lambda: _compile_and_evaluate(text))  # a RecursionError fails
        assert outcome == "ok" or outcome.startswith("refused: At location 0: expression too deeply nested")


def test_realistic_long_clauses_compile_from_deep_stacks() -> None:
    for name in (
        "OR chain",
        "AND chain in parentheses",
        "IN list of 5,000",
        "nested functions",
        "cast chain",
    ):
        assert _from_deep_stack(CALLER_FRAMES, partial(_compile_and_evaluate, WITHIN[name])) == "ok", name


@pytest.mark.parametrize(("text", "message"), BEYOND.values(), ids=BEYOND.keys())
def test_beyond_the_limits_a_clause_is_refused_before_parsing(text: str, message: str) -> None:
    with pytest.raises(WhereError) as err:
        compile_for_columns(text, COLUMNS, {}, {})
    assert message in err.value.messages[0]
    assert err.value.messages[0].startswith("At location ")


def test_a_deeply_nested_array_value_is_refused_at_postgres_limit() -> None:
    deep = "{" * 5000 + "1" + "}" * 5000  # a parameter or a literal: Postgres allows 6 dimensions
    for text, params in (("id = ANY($1)", {1: deep}), (f"id = ANY('{deep}'::int4[])", {})):
        with pytest.raises(WhereError) as err:
            compile_for_columns(text, COLUMNS, {}, params)
        assert "number of array dimensions (7) exceeds the maximum allowed (6)" in err.value.messages[0]
