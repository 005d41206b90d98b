"""``lean_lane.split_params``: the lane's split of a query string at its one ``subset__params=`` field.

It finds the field with ``find`` instead of splitting every field; the lane's memo and the resource's are
keyed by the rest it returns, so it must give exactly what splitting on ``&`` and joining the other fields
gives, for any query string (empty fields, a field at either end, look-alike keys, a second field).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from api.lean_lane import params_value, split_params
from api.params import parse_query

FIELD = "subset__params="


def reference(query_string: str) -> tuple[str, str] | None:
    fields = query_string.split("&")
    at = [i for i, field in enumerate(fields) if field.startswith(FIELD)]
    if len(at) != 1:
        return None
    field = fields.pop(at[0])
    return "&".join(fields), field


PIECES = st.sampled_from(
    [
        "",
        "&",
        "=",
        "a=1",
        "subset__params",
        "subset__params=",
        "subset__params=%7B%221%22%3A+%2242%22%7D",
        "subset__params==&",
        "xsubset__params=1",
        "subset%5F_params=2",
        "subset__where=id+%3D+%241",
    ]
)


@given(st.lists(st.tuples(PIECES, st.sampled_from(["", "&", "&&"])), max_size=6))
def test_split_params_equals_splitting_every_field(parts: list[tuple[str, str]]) -> None:
    query_string = "".join(piece + sep for piece, sep in parts)
    assert split_params(query_string) == reference(query_string)


@given(st.text(alphabet="s_ubpram=&%x1", max_size=40))
def test_split_params_on_any_text(query_string: str) -> None:
    assert split_params(query_string) == reference(query_string)


def test_split_params_examples() -> None:
    assert split_params("a=1&subset__params=x&b=2") == ("a=1&b=2", "subset__params=x")
    assert split_params("subset__params=x") == ("", "subset__params=x")
    assert split_params("subset__params=x&b=2") == ("b=2", "subset__params=x")
    assert split_params("a=1&subset__params=x") == ("a=1", "subset__params=x")
    assert split_params("a=1&subset__params=x&subset__params=y") is None
    assert split_params("subset__params=x&subset__params=y") is None
    assert split_params("a=1&xsubset__params=x") is None


@given(st.text(alphabet='{}":,1a +%2B7%E9%zz=é\x00', max_size=40))
def test_params_value_decodes_as_parse_query(value: str) -> None:
    field = FIELD + value
    assert params_value(field) == parse_query(field)[FIELD[:-1]]


def test_params_value_examples() -> None:
    assert params_value(FIELD + "%7B%221%22%3A+%2242%22%7D") == '{"1": "42"}'
    assert params_value(FIELD + '{"1":"a,b"}') == '{"1":"a,b"}'
    assert params_value(FIELD) == ""
