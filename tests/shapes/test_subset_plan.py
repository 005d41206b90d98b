"""Subset plans (sync/shapes/subset_plan.py): a plan reused for a request must give exactly the query and
values a full validation gives, and every request a full validation refuses must still be refused."""

from __future__ import annotations

import dataclasses

import pytest

from sync.shapes.definition import ShapeDefinition
from sync.shapes.subset import (
    SubsetError,
    SubsetRequest,
    build_subset_query,
    restrict_table,
    validate_subset,
)
from sync.shapes.subset_plan import PlannedQuery, SubsetPlans
from sync.where import compile_where
from tests.where.tables import make_table, scalar

TABLE = make_table({"id": scalar("int4"), "grp": scalar("int4"), "name": scalar("text")})
DEFINITION = ShapeDefinition.create(("public", "items"), TABLE)
SHAPE_WHERE = compile_where("grp > $1", TABLE, {1: "0"})


def full(request: SubsetRequest, queryable: tuple[str, ...] | None = None) -> PlannedQuery:
    """What validating from scratch gives."""
    subset = validate_subset(request, restrict_table(TABLE, queryable))
    return PlannedQuery(*build_subset_query(DEFINITION, SHAPE_WHERE, subset))


def plan(
    plans: SubsetPlans, request: SubsetRequest, queryable: tuple[str, ...] | None = None
) -> PlannedQuery:
    return plans.plan("h1", DEFINITION, SHAPE_WHERE, TABLE, queryable, request)


def req(params: str, where: str = "grp = $1 AND name <> $2", **kw: str) -> SubsetRequest:
    return SubsetRequest(
        where=where, params=params, order_by=kw.get("order_by", "id"), limit=kw.get("limit", "50")
    )


def test_a_plan_binds_other_values_as_validation_would() -> None:
    plans = SubsetPlans()
    first = plan(plans, req('{"1":"1","2":"a"}'))
    assert first == full(req('{"1":"1","2":"a"}')) and len(plans) == 1
    for params in ('{"1":"2","2":"b"}', '{"2":"it\'s","1":"+07"}', '{"1":3,"2":true}'):
        assert plan(plans, req(params)) == full(req(params))
    assert plan(plans, req('{"1":"2","2":"b"}')).params == ["0", "2", "b", 50]
    assert len(plans) == 1


@pytest.mark.parametrize(
    "params",
    [
        '{"1":"x","2":"a"}',  # not an int4
        '{"1":"1"}',  # $2 not provided
        '{"1":"1","2":"a","3":"c"}',  # $3 not used
        '{"1":"1","3":"a"}',  # not numbered from 1
        '{"a":"1","2":"a"}',  # not a number
        "[1,2]",  # not an object
        "{",  # not JSON
        '{"1":"1\\u0000","2":"a"}',  # NUL
    ],
)
def test_requests_validation_refuses_are_still_refused(params: str) -> None:
    plans = SubsetPlans()
    plan(plans, req('{"1":"1","2":"a"}'))
    with pytest.raises(SubsetError) as expected:
        full(req(params))
    with pytest.raises(SubsetError) as got:
        plan(plans, req(params))
    assert got.value.errors == expected.value.errors


def test_other_texts_queryable_columns_and_handles_are_other_plans() -> None:
    plans = SubsetPlans()
    plan(plans, req('{"1":"1","2":"a"}'))
    other_order = req('{"1":"1","2":"a"}', order_by="id DESC")
    assert plan(plans, other_order) == full(other_order)
    other_limit = req('{"1":"1","2":"a"}', limit="5")
    assert plan(plans, other_limit) == full(other_limit)
    with pytest.raises(SubsetError):  # name is not queryable: a plan of all columns must not answer
        plan(plans, req('{"1":"1","2":"a"}'), ("id", "grp"))
    assert plans.plan("h2", DEFINITION, None, TABLE, None, req('{"1":"1","2":"a"}')).params == ["1", "a", 50]
    assert len(plans) == 4


def test_a_changed_catalog_entry_validates_again() -> None:
    plans = SubsetPlans()
    plan(plans, req('{"1":"1","2":"a"}'))
    renamed = make_table({"id": scalar("int4"), "grp": scalar("int4"), "title": scalar("text")})
    with pytest.raises(SubsetError, match="name"):
        plans.plan("h1", DEFINITION, SHAPE_WHERE, renamed, None, req('{"1":"1","2":"a"}'))
    same_content = dataclasses.replace(TABLE)  # another entry (e.g. read again): validated again, same query
    assert plans.plan("h1", DEFINITION, SHAPE_WHERE, same_content, None, req('{"1":"2","2":"a"}')) == full(
        req('{"1":"2","2":"a"}')
    )


def test_clauses_whose_values_matter_are_validated_every_time() -> None:
    plans = SubsetPlans()
    folded = req('{"1":"1"}', where="id = $1 + 1")
    assert plan(plans, folded) == full(folded) and len(plans) == 0
    overflow = req('{"1":"2147483647"}', where="id = $1 + 1")
    with pytest.raises(SubsetError, match="out of range"):
        plan(plans, overflow)


def test_without_a_where_or_without_values() -> None:
    plans = SubsetPlans()
    for request in (
        SubsetRequest(order_by="id", limit="3"),
        SubsetRequest(order_by="id", limit="3", params='{"1":"x"}'),  # no where: params only need be JSON
        SubsetRequest(where="grp = 2", order_by="name"),
    ):
        assert plan(plans, request) == full(request)
        assert plan(plans, request) == full(request)
    with pytest.raises(SubsetError):
        plan(plans, SubsetRequest(order_by="id", limit="3", params="{"))
    with pytest.raises(SubsetError, match="not used"):
        plan(plans, SubsetRequest(where="grp = 2", order_by="name", params='{"1":"1"}'))


def test_plans_are_bounded() -> None:
    plans = SubsetPlans(size=2)
    for limit in ("1", "2", "3"):
        plan(plans, req('{"1":"1","2":"a"}', limit=limit))
    assert len(plans) == 2


@pytest.mark.parametrize(
    "params",
    [
        '{"1":"2","2":"b"}',  # what a client sends: the plain decode
        '{"2":"b","1":"2"}',
        '{"1":"+07","2":"it\'s"}',
        '{"1":3,"2":true}',  # not text: the general path stringifies them
        '{"1":"1","2":null}',
        '{"01":"1","2":"a"}',  # a key the general path numbers as 1
        '{"1":"x","2":"a"}',  # refused: None, full validation answers
        '{"1":"1"}',
        '{"1":"1","2":"a","3":"c"}',
        '{"1":"1","3":"a"}',
        "[1,2]",
        "{",
        '{"1":"1\\u0000","2":"a"}',
    ],
)
def test_a_kept_plan_binds_as_the_plans_do(params: str) -> None:
    plans = SubsetPlans()
    plan(plans, req('{"1":"1","2":"a"}'))
    kept = plans.kept("h1", TABLE, None, req('{"1":"1","2":"a"}'))
    assert kept is not None
    bound = kept.bind(params)
    try:
        expected: PlannedQuery | None = full(req(params))
    except SubsetError:
        expected = None
    if bound is None:  # the full path decides: it must refuse, or the template cannot take the values
        assert expected is None or plans._bind("h1", TABLE, None, req(params)) is None
    else:
        assert bound == expected
