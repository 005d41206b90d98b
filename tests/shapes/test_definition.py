from __future__ import annotations

import threading

import msgpack
import pytest

from sync.shapes.definition import (
    HandleClock,
    ShapeDefinition,
    ShapeDefinitionError,
    normalise_where,
    split_handle,
)
from tests.shapes.helpers import Col, Table

ITEMS = Table(
    16400,
    "public",
    "items",
    (Col("id", "int8"), Col("title"), Col("Value"), Col("n", "int4")),
    ("id",),
)
NOPK = Table(16500, "public", "nopk", (Col("a"), Col("b")))
COMPOSITE = Table(16600, "s", "t", (Col("x"), Col("b"), Col("a")), ("b", "a"))


def test_missing_table_message() -> None:
    with pytest.raises(ShapeDefinitionError) as exc:
        ShapeDefinition.create(("public", "x"), None)
    assert exc.value.field == "table"
    assert exc.value.message == (
        'Table "public"."x" does not exist. '
        "If the table name contains capitals or special characters you must quote it."
    )


@pytest.mark.parametrize(
    ("table", "columns", "message"),
    [
        (ITEMS, ["title"], "The list of columns must include all primary key columns, missing: id"),
        (COMPOSITE, ["x"], "The list of columns must include all primary key columns, missing: b, a"),
        (COMPOSITE, ["x", "a"], "The list of columns must include all primary key columns, missing: b"),
        (NOPK, ["a"], "The list of columns must include all primary key columns, missing: b"),
        (ITEMS, ["id", "x"], "The following columns are not found on the table: x"),
        (ITEMS, ["id", "x", "value", "y"], "The following columns are not found on the table: x, value, y"),
    ],
)
def test_column_errors(table: Table, columns: list[str], message: str) -> None:
    with pytest.raises(ShapeDefinitionError) as exc:
        ShapeDefinition.create(("public", table.name), table, columns=columns)
    assert (exc.value.field, exc.value.message) == ("columns", message)


@pytest.mark.parametrize(("replica", "log"), [("partial", "full"), ("default", "none")])
def test_mode_errors(replica: str, log: str) -> None:
    with pytest.raises(ShapeDefinitionError) as exc:
        ShapeDefinition.create(("public", "items"), ITEMS, replica=replica, log_mode=log)
    assert exc.value.message == "is invalid"
    assert exc.value.field == ("replica" if replica != "default" else "log")


def test_columns_in_table_order_and_equal_definitions_hash_equal() -> None:
    a = ShapeDefinition.create(("public", "items"), ITEMS, columns=["n", "id", "Value"])
    b = ShapeDefinition.create(("public", "items"), ITEMS, columns=["Value", "n", "id", "n"])
    assert a.columns == ("id", "Value", "n")
    assert a == b and hash(a) == hash(b) and a.definition_hash == b.definition_hash
    c = ShapeDefinition.create(("public", "items"), ITEMS)
    assert c.columns == ("id", "title", "Value", "n") and c.all_columns
    d = ShapeDefinition.create(("public", "items"), ITEMS, columns=["id", "title", "Value", "n"])
    assert d != c  # an explicit list does not follow ALTER TABLE ADD COLUMN
    assert ShapeDefinition.create(("public", "items"), ITEMS, replica="full") != c


def test_where_and_params_normalised() -> None:
    a = ShapeDefinition.create(
        ("public", "items"), ITEMS, where="  n  >  $1\n AND title = $2 ", params={2: "x", 1: "5"}
    )
    b = ShapeDefinition.create(("public", "items"), ITEMS, where="n > $1 AND title = $2", params=["5", "x"])
    assert a == b and a.definition_hash == b.definition_hash
    assert a.where == "n > $1 AND title = $2" and a.params == ("5", "x")
    c = ShapeDefinition.create(("public", "items"), ITEMS, where="n > $1 AND title = $2", params=["6", "x"])
    assert c != a and c.definition_hash != a.definition_hash
    assert ShapeDefinition.create(("public", "items"), ITEMS, where="   ", params=["1"]).where is None
    assert ShapeDefinition.create(("public", "items"), ITEMS, where="   ", params=["1"]).params == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a  =  1", "a = 1"),
        ("a = 'x    y'", "a = 'x    y'"),
        ("a = 'it''s   ok'  and b=1", "a = 'it''s   ok' and b=1"),
        ("a = E'x\\'  y'   or b", "a = E'x\\'  y' or b"),
        ('"we  ird" = 1', '"we  ird" = 1'),
        ("a = $$  x  $$ and  b", "a = $$  x  $$ and b"),
        ("a = $t$ $$ x  $t$  and  b", "a = $t$ $$ x  $t$ and b"),
        ("a = $1  and  b = $2", "a = $1 and b = $2"),
        ("a -- comment\n = 1", "a = 1"),
        ("a /* c /* nested */ */ =1", "a =1"),
        ("\t\n", None),
    ],
)
def test_normalise_where(text: str, expected: str | None) -> None:
    assert normalise_where(text) == expected


def test_dict_round_trip_through_msgpack() -> None:
    d = ShapeDefinition.create(
        ("s", "t"), COMPOSITE, columns=["a", "b"], where="x = $1", params=["q"], replica="full"
    )
    blob = msgpack.packb(d.to_dict())
    back = ShapeDefinition.from_dict(msgpack.unpackb(blob))
    assert back == d and back.definition_hash == d.definition_hash
    assert d.key_columns == ("b", "a")
    nopk = ShapeDefinition.create(("public", "nopk"), NOPK)
    assert nopk.key_columns == ("a", "b")
    with pytest.raises(ValueError, match="format"):
        ShapeDefinition.from_dict({**d.to_dict(), "v": 99})


def test_definition_hash_is_stable() -> None:
    # Pinned: the hash feeds handles and on-disk names, so it must not drift between releases by accident.
    d = ShapeDefinition.create(("public", "items"), ITEMS, columns=["id"])
    assert d.definition_hash == ShapeDefinition.from_dict(d.to_dict()).definition_hash
    assert 0 <= d.definition_hash < 2**32
    assert d.definition_hash == PINNED_HASH


PINNED_HASH = 940578274


def test_handles_unique_and_monotonic_across_threads() -> None:
    clock = HandleClock()
    d = ShapeDefinition.create(("public", "items"), ITEMS)
    handles: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        local = [clock.new_handle(d) for _ in range(2000)]
        with lock:
            handles.extend(local)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(handles)) == 8000
    h, us = split_handle(handles[0])
    assert h == d.definition_hash and us > 1_700_000_000_000_000


def test_handle_clock_observes_reloaded_handles() -> None:
    clock = HandleClock()
    d = ShapeDefinition.create(("public", "items"), ITEMS)
    future = f"{d.definition_hash}-{2**60}"
    clock.observe(future)
    assert split_handle(clock.new_handle(d))[1] == 2**60 + 1
    for bad in ["", "1", "a-1", "1-", "1-2-3", "-1"]:
        with pytest.raises(ValueError, match="handle"):
            split_handle(bad)


def test_generated_columns_rejected() -> None:
    gen = Table(16700, "public", "g", (Col("id"), Col("a"), Col("twice", generated=True)), ("id",))
    ok = ShapeDefinition.create(("public", "g"), gen, columns=["id", "a"])
    assert ok.columns == ("id", "a")
    for columns in (None, ["id", "twice"]):
        with pytest.raises(ShapeDefinitionError) as exc:
            ShapeDefinition.create(("public", "g"), gen, columns=columns)
        assert (exc.value.field, exc.value.message) == (
            "columns",
            "The following columns are generated and cannot be included in a shape: twice",
        )
    # nor read by the WHERE: the log would have no value to judge a change by (PG < 18)
    with pytest.raises(ShapeDefinitionError) as exc:
        ShapeDefinition.create(
            ("public", "g"), gen, columns=["id", "a"], where='a > 1 AND "TWICE" > 2 OR twice < 0'
        )
    assert (exc.value.field, exc.value.message) == (
        "where",
        "The following columns are generated and cannot be used in a shape's where clause: twice",
    )
    assert ShapeDefinition.create(("public", "g"), gen, columns=["id", "a"], where="a > 1").where == "a > 1"


def test_the_columns_a_shape_reads_include_its_where_columns() -> None:
    """Selected, key and WHERE columns: the ones whose loss or retyping invalidates the shape; and part of
    what the schema checks group shapes by."""
    d = ShapeDefinition.create(
        ("public", "items"), ITEMS, columns=["id", "title"], where='"Value" > 1 OR n IS NULL'
    )
    assert d.where_columns == {"Value", "n"}
    assert d.read_columns == {"id", "title", "Value", "n"}
    plain = ShapeDefinition.create(("public", "items"), ITEMS, columns=["id", "title"])
    assert plain.where_columns == frozenset() and plain.read_columns == {"id", "title"}
    assert d.schema_aspects != plain.schema_aspects


def test_stored_form_is_the_dict_form_with_shared_tuples() -> None:
    one = ShapeDefinition.create(("public", "items"), ITEMS, where="id = $1", params=["1"])
    two = ShapeDefinition.create(("public", "items"), ITEMS, where="id = $1", params=["2"])
    assert one.columns is two.columns and one.primary_key is two.primary_key  # one copy per table
    stored = one.to_stored()
    assert msgpack.unpackb(msgpack.packb(stored)) == one.to_dict()  # the same bytes on disk
    assert ShapeDefinition.from_dict(stored) == one
    assert stored["columns"] is two.to_stored()["columns"]
