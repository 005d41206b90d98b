"""Unquoted names in a WHERE fold as Postgres folds them: ASCII ``A-Z`` only.

``str.lower`` folded every letter, so ``Äpfel > 1`` read the column ``äpfel`` (or was refused as an unknown
reference) where Postgres reads ``Äpfel``: the shape followed another column than the one its clause names
in SQL, or a valid clause got a 400.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from sync.postgres.inspector import inspect_table
from sync.where import WhereError, compile_where, referenced_columns
from sync.where.clause import compile_for_columns


def test_only_ascii_letters_fold_in_names_of_columns_and_functions() -> None:
    columns = {"id": "int4", "Äpfel": "int4", "äpfel": "int4", "straße": "text"}
    assert compile_for_columns("ÄPFEL > 1", columns, {}, {}).columns == {"Äpfel"}
    assert compile_for_columns('"äpfel" > 1', columns, {}, {}).columns == {"äpfel"}
    assert compile_for_columns("LOWER(STRAßE) = 'x'", columns, {}, {}).columns == {"straße"}
    assert referenced_columns("Äpfel > 1 OR ÄPFEL < 0") == {"Äpfel"}
    enums: dict[str, tuple[str, ...]] = {"enum:public.Äfarbe": ("rot",), "enum:public.äfarbe": ("grün",)}
    typed = compile_for_columns("f = 'rot'::ÄFARBE", {"id": "int4", "f": "enum:public.Äfarbe"}, enums, {})
    assert typed.evaluate({"id": "1", "f": "rot"})
    with pytest.raises(WhereError, match='unknown reference "Äpfel"'):
        compile_for_columns("Äpfel > 1", {"id": "int4", "äpfel": "int4"}, {}, {})


def test_the_engine_reads_the_column_postgres_reads(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute('CREATE TABLE t (id int PRIMARY KEY, Äpfel int, "äpfel" int)')  # "Äpfel", "äpfel"
        conn.execute("INSERT INTO t VALUES (1, 5, 0), (2, 0, 5)")
        clause = compile_where("Äpfel > 1", inspect_table(conn, "public", "t"))
        text, params = clause.to_sql()
        ours: list[Any] = conn.execute(f"SELECT id FROM t WHERE {text}", params).fetchall()
        theirs = conn.execute("SELECT id FROM t WHERE Äpfel > 1").fetchall()
    assert ours == theirs == [(1,)]
    assert clause.evaluate({"id": "1", "Äpfel": "5", "äpfel": "0"})
    assert not clause.evaluate({"id": "2", "Äpfel": "0", "äpfel": "5"})
