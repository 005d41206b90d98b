"""The catalog inspector reports types, arrays, enums, domains, PK order, NOT NULL and modifiers."""

from __future__ import annotations

import psycopg
import pytest

from sync.postgres.inspector import TableNotFound, inspect_table, type_modifiers


def test_inspects_mixed_table(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        conn.execute("CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)")
        conn.execute(
            """CREATE TABLE "My Items" (
                b text NOT NULL, a int8, v varchar(12), c char(3), n numeric(10, 2), t timestamptz(3),
                i interval minute to second(2), m mood, ms mood[], p posint, pa posint[],
                grid int4[][], g int8 GENERATED ALWAYS AS (a * 2) STORED,
                PRIMARY KEY (b, a))"""
        )
        table = inspect_table(conn, "public", "My Items")
        with pytest.raises(TableNotFound):
            inspect_table(conn, "public", "nope")

    assert table.name == "My Items" and table.schema == "public"
    assert table.pk == ("b", "a")
    cols = table.by_name
    assert [c.name for c in table.columns][:3] == ["b", "a", "v"]
    assert cols["b"].schema_entry() == {"type": "text", "pk_index": 0, "not_null": True}
    assert cols["a"].schema_entry() == {"type": "int8", "pk_index": 1, "not_null": True}
    assert cols["v"].schema_entry() == {"type": "varchar", "max_length": 12}
    assert cols["c"].schema_entry() == {"type": "bpchar", "length": 3}
    assert cols["n"].schema_entry() == {"type": "numeric", "precision": 10, "scale": 2}
    assert cols["t"].schema_entry() == {"type": "timestamptz", "precision": 3}
    assert cols["i"].schema_entry() == {"type": "interval", "precision": 2, "fields": "MINUTE TO SECOND"}
    assert cols["m"].type.kind == "e" and cols["m"].type.enum_labels == ("sad", "ok", "happy")
    assert cols["ms"].schema_entry() == {"type": "mood", "dims": 1}
    assert cols["ms"].type.element is not None and cols["ms"].type.element.enum_labels[2] == "happy"
    assert cols["p"].type.kind == "d" and cols["p"].type.resolved().name == "int4"
    assert cols["pa"].type.element is not None and cols["pa"].type.element.resolved().name == "int4"
    assert cols["grid"].dims == 2 and cols["grid"].schema_entry() == {"type": "int4", "dims": 2}
    assert cols["g"].generated and not cols["a"].generated
    assert cols["a"].type.oid == 20 and cols["a"].type_mod == -1


def test_modifier_table() -> None:
    assert type_modifiers("int4", -1) == {}
    assert type_modifiers("bit", 5) == {"length": 5}
    assert type_modifiers("interval", 0x7FFF0000 | 0xFFFF) == {}
    assert type_modifiers("mytype", 7) == {"type_mod": 7}
