"""The routing index returns exactly the shapes whose clause is TRUE for the old or the new row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.where import RoutingIndex, WhereClause, WhereError, WhereEvalError, compile_where
from tests.where.tables import MOOD, array_of, make_table, scalar

TABLE = make_table(
    {
        "id": scalar("int4"),
        "n": scalar("numeric"),
        "f": scalar("float8"),
        "t": scalar("text"),
        "s": MOOD,
        "a": array_of(scalar("int4")),
    }
)

CLAUSES = [
    "id = {i}",
    "id = {i} AND t = '{w}'",
    "t = '{w}' AND id > {i}",
    "id IN ({i}, {j}, NULL)",
    "id = ANY('{{{i},{j}}}')",
    "n = {i}",
    "n = {i}.0",
    "n IN ({i}.00, 2.5)",
    "id = {i}.0",
    "f = {i}",
    "f = 'NaN'",
    "f = '-0'",
    "s = '{m}'",
    "t = '{w}'",
    "t LIKE '{w}%'",
    "id > {i} OR t = '{w}'",
    "a @> '{{{i}}}'",
    "id IS NULL",
    "{i} = id AND n IS NOT NULL",
    "",
]
ints = st.integers(-3, 3)
words = st.sampled_from(["a", "b", "ab", ""])
moods = st.sampled_from(MOOD.enum_labels)


@st.composite
def clause_texts(draw: st.DrawFn) -> str:
    template = draw(st.sampled_from(CLAUSES))
    return template.format(i=draw(ints), j=draw(ints), w=draw(words), m=draw(moods))


@st.composite
def rows(draw: st.DrawFn) -> dict[str, str | None]:
    def maybe(s: st.SearchStrategy[str]) -> str | None:
        return draw(st.one_of(st.none(), s))

    return {
        "id": maybe(ints.map(str)),
        "n": maybe(st.sampled_from(["1", "1.0", "1.00", "-2", "2.5", "0", "NaN", "3.000"])),
        "f": maybe(st.sampled_from(["1", "-0", "0", "NaN", "2", "-3", "Infinity"])),
        "t": maybe(words),
        "s": maybe(moods),
        "a": maybe(st.sampled_from(["{}", "{1}", "{1,2,NULL}", "{-3,3}"])),
    }


def _true_or_error(clause: WhereClause, row: dict[str, str | None]) -> bool:
    try:
        return clause.evaluate(row)
    except WhereEvalError:
        return True  # routed, so that the consumer meets the error


def _compile(text: str):  # type: ignore[no-untyped-def]
    return None if text == "" else compile_where(text, TABLE, {})


def _indexed(shapes: list[str], removed: set[int]) -> tuple[RoutingIndex, dict[int, WhereClause | None]]:
    """An index of the shapes whose clause compiles (shape id = position), less the ``removed`` ones."""
    index = RoutingIndex()
    clauses: dict[int, WhereClause | None] = {}
    for sid, text in enumerate(shapes):
        try:
            clauses[sid] = _compile(text)
        except WhereError:
            continue
        index.add(sid, "items", clauses[sid])
    for sid in removed:
        index.remove(sid)
        clauses.pop(sid, None)
    return index, clauses


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shapes=st.lists(clause_texts(), min_size=1, max_size=25),
    changes=st.lists(
        st.tuples(st.one_of(st.none(), rows()), st.one_of(st.none(), rows())), min_size=1, max_size=5
    ),
    removed=st.sets(st.integers(0, 24), max_size=5),
)
def test_affected_matches_brute_force(
    shapes: list[str],
    changes: list[tuple[dict[str, str | None] | None, dict[str, str | None] | None]],
    removed: set[int],
) -> None:
    index, clauses = _indexed(shapes, removed)
    for new, old in changes:
        expected = {
            sid
            for sid, clause in clauses.items()
            if clause is None or any(r is not None and _true_or_error(clause, r) for r in (new, old))
        }
        if new is None and old is None:
            expected = {sid for sid, clause in clauses.items() if clause is None}
        assert index.affected("items", new, old) == expected
        assert index.affected("other", new, old) == set()


def test_equality_keys_are_normalised_by_type() -> None:
    index = RoutingIndex()
    index.add("n=1", "items", _compile("n = 1"))
    index.add("n=1.0", "items", _compile("n = 1.0"))
    index.add("id=1.0", "items", _compile("id = 1.0"))
    index.add("f=0", "items", _compile("f = 0"))
    index.add("f=nan", "items", _compile("f = 'NaN'"))
    index.add("n=nan", "items", _compile("n = 'NaN'"))
    index.add("all", "items", None)
    assert index.affected("items", {"n": "1.000", "id": None, "f": None}) == {"n=1", "n=1.0", "all"}
    assert index.affected("items", {"n": None, "id": "1", "f": "-0"}) == {"id=1.0", "f=0", "all"}
    assert index.affected("items", {"n": "NaN", "id": None, "f": "NaN"}) == {"f=nan", "n=nan", "all"}
    assert index.affected("items", {"n": "2", "id": "2", "f": "1"}) == {"all"}


def test_old_and_new_rows_both_count_and_remove_works() -> None:
    index = RoutingIndex()
    index.add(1, "items", _compile("id = 1 AND t = 'a'"))
    index.add(2, "items", _compile("id = 2"))
    index.add(3, "items", _compile("t LIKE 'a%'"))
    moved = {"id": "2", "t": "b"}, {"id": "1", "t": "a"}
    assert index.affected("items", *moved) == {1, 2, 3}
    index.remove(1)
    index.remove(3)
    assert index.affected("items", *moved) == {2}
    index.remove(2)
    assert len(index) == 0 and index.affected("items", *moved) == set()


def test_evaluation_errors_are_reported_per_shape() -> None:
    index = RoutingIndex()
    index.add("overflow", "items", _compile("id * 1000000000 > 0"))
    index.add("fine", "items", _compile("id = 5"))
    errors: dict[object, WhereEvalError] = {}
    # the failing shape is routed the change (its consumer fails the same way and invalidates it)
    assert index.affected("items", {"id": "5"}, None, errors) == {"fine", "overflow"}
    assert list(errors) == ["overflow"] and errors["overflow"].message == "integer out of range"
    assert index.affected("items", {"id": "6"}) == {"overflow"}
    with pytest.raises(WhereEvalError, match="integer out of range"):
        compile_where("id * 1000000000 > 0", TABLE, {}).evaluate({"id": "6"})


COLUMNS = ("id", "n", "f", "t", "s", "a")


def _bulk_cases(clauses: st.SearchStrategy[str], max_rows: int) -> Callable[[Callable[..., None]], Any]:
    """The bulk-routing property tests' examples: up to 25 shapes of ``clauses`` (some removed again) and up
    to ``max_rows`` new rows."""
    return lambda test: settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )(
        given(
            shapes=st.lists(clauses, min_size=1, max_size=25),
            new_rows=st.lists(rows(), min_size=1, max_size=max_rows),
            removed=st.sets(st.integers(0, 24), max_size=5),
        )(test)
    )


def _routed_twice_as_affected(
    index: RoutingIndex, new_rows: list[dict[str, str | None]]
) -> list[tuple[dict[object, list[int]], set[object]]]:
    """``route_new_rows`` of ``new_rows`` twice (the second time every text's key comes from the memo),
    each time asserted equal to ``affected`` row by row; returns both (routed, inexact) pairs."""
    tuples = [tuple(r[c] for c in COLUMNS) for r in new_rows]
    positions = {c: i for i, c in enumerate(COLUMNS)}
    expected: dict[object, list[int]] = {}
    for i, row in enumerate(new_rows):
        for sid in sorted(index.affected("items", row)):  # type: ignore[type-var]
            expected.setdefault(sid, []).append(i)
    results = []
    for _ in range(2):
        out: dict[object, list[int]] = {}
        inexact: set[object] = set()
        index.route_new_rows("items", positions, tuples, range(len(tuples)), out=out, inexact=inexact)
        assert out == expected
        results.append((out, inexact))
    return results


@_bulk_cases(clause_texts(), max_rows=6)
def test_bulk_routing_of_inserted_rows_matches_affected(
    shapes: list[str], new_rows: list[dict[str, str | None]], removed: set[int]
) -> None:
    index, clauses = _indexed(shapes, removed)
    for out, inexact in _routed_twice_as_affected(index, new_rows):
        for sid, hits in out.items():
            if sid in inexact:
                continue
            # exact: the clause holds for every routed row without raising, no evaluation needed
            clause = clauses[sid]  # type: ignore[index]
            assert clause is None or all(clause.evaluate(new_rows[i]) for i in hits)
    tuples = [tuple(r[c] for c in COLUMNS) for r in new_rows]
    positions = {c: i for i, c in enumerate(COLUMNS)}
    absent: dict[object, list[int]] = {}
    index.route_new_rows("other", positions, tuples, range(len(tuples)), out=absent, inexact=set())
    assert absent == {}


def test_bulk_routing_reports_exact_matches_and_errors() -> None:
    index = RoutingIndex()
    index.add("id=5", "items", _compile("id = 5"))
    index.add("id=5 and t", "items", _compile("id = 5 AND t = 'a'"))
    index.add("overflow", "items", _compile("id * 1000000000 > 0"))
    index.add("all", "items", None)
    positions = {"id": 0, "t": 1}
    rows_ = [("5", "a"), ("5", "b"), ("6", "a")]
    out: dict[object, list[object]] = {}  # row positions, then the items of the second call
    inexact: set[object] = set()
    errors: dict[object, WhereEvalError] = {}
    index.route_new_rows("items", positions, rows_, [0, 1, 2], out=out, inexact=inexact, errors=errors)
    assert out == {"id=5": [0, 1], "id=5 and t": [0], "overflow": [0, 1, 2], "all": [0, 1, 2]}
    assert inexact == {"id=5 and t", "overflow"}
    assert list(errors) == ["overflow"]
    # a text that cannot be parsed for the group reaches every shape of the group, none of them exactly
    out.clear()
    inexact.clear()
    index.route_new_rows("items", {"id": 0}, [("x",)], ["r"], out=out, inexact=inexact)
    assert out == {"id=5": ["r"], "id=5 and t": ["r"], "overflow": ["r"], "all": ["r"]}
    assert inexact == {"id=5", "id=5 and t", "overflow"}


@st.composite
def id_clause_texts(draw: st.DrawFn) -> str:
    """Clauses filed under the one ``id`` group: exact (the whole clause is the equality) or not."""
    template = draw(
        st.sampled_from(
            ["id = {i}", "id IN ({i}, {j})", "id = {i} AND t = '{w}'", "id = {i} AND 1 / (id - {j}) > 0"]
        )
    )
    return template.format(i=draw(ints), j=draw(ints), w=draw(words))


@_bulk_cases(id_clause_texts(), max_rows=8)
def test_bulk_routing_with_one_indexed_column_matches_affected(
    shapes: list[str], new_rows: list[dict[str, str | None]], removed: set[int]
) -> None:
    """Only ``id = k``-like shapes (one group, no unindexed shape, none without WHERE): the fast path of
    ``route_new_rows`` (remembered texts, single exact shapes) gives what ``affected`` gives, row by row,
    unknown texts, several shapes per key, clauses to evaluate and evaluation errors included."""
    index, clauses = _indexed(shapes, removed)
    for out, inexact in _routed_twice_as_affected(index, new_rows):
        for sid, hits in out.items():
            clause = clauses[sid]  # type: ignore[index]
            if sid not in inexact:
                assert clause is not None and all(clause.evaluate(new_rows[i]) for i in hits)
