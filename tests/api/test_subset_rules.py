"""Pure tests of the subset rules (``sync/shapes/subset.py``) and of the HTTP-side parsing (``api/subset.py``).

The end-to-end behaviour is in ``test_subset.py``; these pin the rules one by one, fast.
"""

from __future__ import annotations

import pytest

from api.engine_port import InvalidRequest
from api.params import parse_shape_request
from api.subset import (
    InvalidSubset,
    apply_queryable_columns,
    parse_queryable_columns,
    subset_from_body,
    subset_from_query,
)
from sync.shapes.definition import ShapeDefinition
from sync.shapes.subset import (
    OrderItem,
    SubsetError,
    SubsetRequest,
    build_subset_query,
    parse_order_by,
    restrict_table,
    validate_subset,
)
from sync.where import compile_where
from tests.where.tables import make_table, scalar

TABLE = make_table(
    {"id": scalar("int4"), "grp": scalar("int4"), "Name": scalar("text"), "note": scalar("text")}
)
DEFINITION = ShapeDefinition.create(("public", "items"), TABLE)


def rendered(query: bytes) -> str:
    return query.decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id", (OrderItem("id"),)),
        ("id DESC", (OrderItem("id", True),)),
        (
            "grp asc nulls first, id desc nulls last",
            (OrderItem("grp", False, True), OrderItem("id", True, False)),
        ),
        (
            '"Name" DESC NULLS FIRST,"id" NULLS FIRST',
            (OrderItem("Name", True, True), OrderItem("id", False, True)),
        ),
        ("  grp ,  id  ", (OrderItem("grp"), OrderItem("id"))),
    ],
)
def test_order_by_accepts_column_refs_with_direction_and_nulls(
    text: str, expected: tuple[OrderItem, ...]
) -> None:
    assert parse_order_by(text, TABLE.by_name) == expected


@pytest.mark.parametrize(
    "text",
    [
        "id + 1",
        "lower(note)",
        "id ASC DESC",
        "id NULLS",
        "id NULLS MIDDLE",
        "id,",
        ",id",
        "id id",
        "name",  # unquoted names fold to lower case: "Name" must be quoted
        '"id',
        "id; DROP TABLE items",
        "1",
        "items.id",
        "",
    ],
)
def test_order_by_rejects_everything_else(text: str) -> None:
    with pytest.raises(SubsetError) as err:
        parse_order_by(text, TABLE.by_name)
    assert list(err.value.errors) == ["order_by"]


def test_validation_order_and_messages() -> None:
    with pytest.raises(SubsetError) as err:
        validate_subset(SubsetRequest(limit="0", offset="-1", where="nope"), TABLE)
    # number and presence rules are reported together, before order_by/where are looked at
    assert err.value.errors == {
        "limit": ["must be greater than 0"],
        "offset": ["must be greater than or equal to 0"],
        "order_by": ["order_by is required when limit or offset is present"],
    }
    with pytest.raises(SubsetError) as err:
        validate_subset(SubsetRequest(where="nope = 1", order_by="bad"), TABLE)
    assert list(err.value.errors) == ["order_by"]  # order_by is checked before where
    with pytest.raises(SubsetError) as err:
        validate_subset(SubsetRequest(where="id IN (SELECT 1)"), TABLE)
    assert err.value.errors == {"where": ["Subqueries are not allowed in subsets"]}
    with pytest.raises(SubsetError) as err:
        validate_subset(SubsetRequest(where="id = $1", params='{"1":"x"}'), TABLE)
    assert list(err.value.errors) == ["where"]


@pytest.mark.parametrize("value", ["9223372036854775808", "1" * 40, "1.5", "1e3", " ", "0x10"])
def test_limit_and_offset_must_be_bigint_integers(value: str) -> None:
    with pytest.raises(SubsetError) as err:
        validate_subset(SubsetRequest(limit=value, offset=value, order_by="id"), TABLE)
    assert err.value.errors["limit"][0] == "is invalid"
    assert err.value.errors["offset"][0] == "is invalid"


def test_params_from_a_body_are_strings() -> None:
    query = validate_subset(SubsetRequest(where="id = $1 AND note = $2", params={"1": 5, "2": "x"}), TABLE)
    assert query.where is not None
    assert query.where.evaluate({"id": "5", "note": "x"})
    assert not query.where.evaluate({"id": "6", "note": "x"})


def test_queryable_columns_restrict_where_and_order_by() -> None:
    narrow = restrict_table(TABLE, ("id", "grp"))
    assert validate_subset(SubsetRequest(where="grp = 1", order_by="id"), narrow).order_by == (
        OrderItem("id"),
    )
    for request in (SubsetRequest(where="note = 'x'"), SubsetRequest(order_by="note")):
        with pytest.raises(SubsetError):
            validate_subset(request, narrow)


def test_sql_ands_the_shape_where_and_binds_every_value() -> None:
    shape_where = compile_where("grp = 3", TABLE)
    subset = validate_subset(
        SubsetRequest(where="note = $1", params={"1": "x'); DROP TABLE items; --"}, order_by='"Name" DESC', limit="5", offset="10"),
        TABLE,
    )  # fmt: skip
    query, params = build_subset_query(DEFINITION, shape_where, subset)
    text = rendered(query)
    assert text.startswith('SELECT "id", "grp", "Name", "note" FROM ONLY "public"."items" WHERE (')
    assert ") AND (" in text
    assert text.endswith('ORDER BY "Name" DESC LIMIT %s OFFSET %s')
    assert "DROP" not in text  # the client's value is a bound parameter
    assert "x'); DROP TABLE items; --" in params
    assert params[-2:] == [5, 10]


def test_http_side_parsing() -> None:
    assert subset_from_query(()) is None
    got = subset_from_query(
        (("subset__where", "id = 1"), ("subset__limit", "3"), ("subset__where_expr", "{}"))
    )
    assert got == SubsetRequest(where="id = 1", limit="3")
    assert subset_from_body({"handle": "x"}) is None
    flat = {"where": "id = $1", "params": {"1": 2}, "limit": 5, "offset": 0, "order_by": "id"}
    expected = SubsetRequest(where="id = $1", params={"1": 2}, limit="5", offset="0", order_by="id")
    assert subset_from_body(flat) == expected
    assert subset_from_body({"subset": flat}) == expected
    with pytest.raises(InvalidSubset) as err:
        subset_from_body({"where": 5})
    assert err.value.errors == {"subset": {"where": ["is invalid"]}}  # type: ignore[comparison-overlap]
    with pytest.raises(SubsetError) as serr:
        validate_subset(subset_from_body({"limit": True, "order_by": "id"}) or SubsetRequest(), TABLE)
    assert serr.value.errors == {"limit": ["is invalid"]}


def test_queryable_columns_default_and_allow_list_for_columns() -> None:
    request = parse_shape_request({"table": "items", "offset": "-1"})
    queryable = parse_queryable_columns({"queryable_columns": 'id,"Name"'})
    assert queryable == ("id", "Name")
    assert apply_queryable_columns(request, queryable).definition.columns == '"id","Name"'
    explicit = parse_shape_request({"table": "items", "offset": "-1", "columns": "id,note"})
    with pytest.raises(InvalidRequest) as err:
        apply_queryable_columns(explicit, queryable)
    assert list(err.value.errors) == ["columns"]
    assert apply_queryable_columns(explicit, None) is explicit
