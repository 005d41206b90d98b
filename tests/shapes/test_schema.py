from __future__ import annotations

from typing import Any

import orjson
import psycopg
import pytest

from sync.shapes.definition import ShapeDefinition, ShapeDefinitionError
from sync.shapes.resolver import ShapeRequest, ShapeRequestError, ShapeResolver
from sync.shapes.schema import schema_header, shape_schema
from tests.shapes.helpers import read_table


def test_schema_header_from_the_catalog(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
        conn.execute("CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)")
        conn.execute(
            """CREATE TABLE s (
                 b int8 NOT NULL, a text, vc varchar(10), bp char(4), num numeric(10,2), num_any numeric,
                 ts timestamp(3), tstz timestamptz, t time(0), ttz timetz(6),
                 iv_ms interval minute to second(2), iv_h interval hour, iv_p interval(4), iv interval,
                 ia int4[], ta2 text[][], en mood NOT NULL, ena mood[], dom posint, bits bit(3), vb varbit(5),
                 f float8, js jsonb, u uuid,
                 PRIMARY KEY (b, a))"""
        )
        table = read_table(conn, "public", "s")
    assert table is not None
    definition = ShapeDefinition.create(("public", "s"), table)
    expected: dict[str, Any] = {
        "b": {"type": "int8", "pk_index": 0, "not_null": True},
        "a": {"type": "text", "pk_index": 1, "not_null": True},
        "vc": {"type": "varchar", "max_length": 10},
        "bp": {"type": "bpchar", "length": 4},
        "num": {"type": "numeric", "precision": 10, "scale": 2},
        "num_any": {"type": "numeric"},
        "ts": {"type": "timestamp", "precision": 3},
        "tstz": {"type": "timestamptz"},
        "t": {"type": "time", "precision": 0},
        "ttz": {"type": "timetz", "precision": 6},
        "iv_ms": {"type": "interval", "precision": 2, "fields": "MINUTE TO SECOND"},
        "iv_h": {"type": "interval", "fields": "HOUR"},
        "iv_p": {"type": "interval", "precision": 4},
        "iv": {"type": "interval"},
        "ia": {"type": "int4", "dims": 1},
        "ta2": {"type": "text", "dims": 2},
        "en": {"type": "mood", "not_null": True},
        "ena": {"type": "mood", "dims": 1},
        "dom": {"type": "posint"},
        "bits": {"type": "bit", "length": 3},
        "vb": {"type": "varbit", "length": 5},
        "f": {"type": "float8"},
        "js": {"type": "jsonb"},
        "u": {"type": "uuid"},
    }
    assert shape_schema(definition, table) == expected
    assert list(shape_schema(definition, table)) == list(expected)  # table order
    header = schema_header(definition, table)
    assert orjson.loads(header) == expected and " " not in header.replace("MINUTE TO SECOND", "")
    subset = ShapeDefinition.create(("public", "s"), table, columns=["a", "b", "vc"])
    assert list(shape_schema(subset, table)) == ["b", "a", "vc"]


def test_resolver_renders_a_header_again_only_for_a_new_catalog_entry(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE h (id int PRIMARY KEY, vc varchar(10))")
        table = read_table(conn, "public", "h")
        assert table is not None
        definition = ShapeDefinition.create(("public", "h"), table)
        resolver = ShapeResolver(db_dsn)
        try:
            first = resolver.schema_header(definition)
            assert orjson.loads(first)["vc"] == {"type": "varchar", "max_length": 10}
            assert resolver.schema_header(definition) is first  # same catalog entry: the kept header
            conn.execute("ALTER TABLE h ALTER COLUMN vc TYPE varchar(20)")
            assert resolver.schema_header(definition) is first  # the entry is kept until told otherwise
            resolver.forget("public", "h")  # what a Relation message for the table does
            assert orjson.loads(resolver.schema_header(definition))["vc"] == {
                "type": "varchar",
                "max_length": 20,
            }
        finally:
            resolver.close()


def test_resolver_compiles_a_where_once_per_catalog_entry(db_dsn: str) -> None:
    """A new shape's WHERE is compiled when its request is validated and again when the ShapeCache builds it:
    the second use shares the first's clause, while the table's catalog entry is the same object."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE w (id int PRIMARY KEY, n int)")
        resolver = ShapeResolver(db_dsn)
        try:
            definition, clause = resolver.resolve(ShapeRequest("w", where="n > $1", params=("5",)))
            assert clause is not None
            assert resolver.compile(definition).routing_clause is clause
            _, other_clause = resolver.resolve(ShapeRequest("w", where="n > $1", params=("6",)))
            assert other_clause is not None and other_clause is not clause  # params are part of the key
            assert other_clause.evaluate({"id": "1", "n": "6"}) is False
            assert clause.evaluate({"id": "1", "n": "6"}) is True
            resolver.forget("public", "w")  # a new catalog entry: compiled again
            assert resolver.compile(definition).routing_clause is not clause
        finally:
            resolver.close()


def test_resolver_refuses_a_partitioned_table_and_drops_a_shape_stored_on_one(db_dsn: str) -> None:
    """A partitioned table's changes come under its partitions' names, so no log of its own would move: a
    request is a 400, and a shape stored on one earlier no longer compiles (reloading drops it: 409).  Its
    partitions are tables like any other."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE pt (id int PRIMARY KEY) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (100)")
        parent = read_table(conn, "public", "pt")
        assert parent is not None
        resolver = ShapeResolver(db_dsn)
        try:
            with pytest.raises(ShapeRequestError) as err:
                resolver.resolve(ShapeRequest("pt"))
            message = 'Table "public"."pt" is partitioned: shapes of partitioned tables are not supported yet'
            assert err.value.errors["table"][0].startswith(message)
            with pytest.raises(ShapeDefinitionError):
                resolver.compile(ShapeDefinition.create(("public", "pt"), parent))
            partition, _ = resolver.resolve(ShapeRequest("pt1"))
            resolver.compile(partition)
        finally:
            resolver.close()
