"""Oracle property test: our evaluator agrees with Postgres itself on random clauses over random rows.

For each random row (NULLs, extremes, Unicode, NaN/Infinity, BC dates, empty arrays...) the row is inserted
into a real table, read back as text with the engine's display settings, and each random clause is
evaluated three ways: by our compiled evaluator, by Postgres on the user's text, and by Postgres on the SQL
we generate.  All three must give the same three-valued result, or all must fail (overflow, division by
zero...).  The default run is a fixed (derandomized) sample of 200 rows with 10-20 clauses each (~3,000 clauses), so that
``make test`` is reproducible; ``SHAPESYNC_ORACLE_EXAMPLES=<n>`` explores ``n`` fresh random rows instead.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sync.postgres.inspector import TableInfo, inspect_table
from sync.where import WhereError, WhereEvalError, compile_where
from tests.where.oracle_gen import bool_expr
from tests.where.oracle_values import COLUMNS, DDL, VALUES, rows

EXAMPLES = int(os.environ.get("SHAPESYNC_ORACLE_EXAMPLES", "200"))
EXPLORE = "SHAPESYNC_ORACLE_EXAMPLES" in os.environ
SETTINGS = [
    "SET DateStyle = 'ISO, DMY'",
    "SET TimeZone = 'UTC'",
    "SET IntervalStyle = 'iso_8601'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
]
ERROR = "error"
COLS = list(VALUES)


@pytest.fixture
def oracle_conn(db_dsn: str) -> Any:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for stmt in SETTINGS + DDL:
            conn.execute(stmt)
        yield conn


def _pg_batch(conn: psycopg.Connection[Any], exprs: list[tuple[str, list[Any] | None]]) -> list[Any]:
    """Evaluate each ``(sql, params)`` as a SELECT-list item over the single row of ``t``."""
    if not exprs:
        return []
    if all(p is not None for _, p in exprs):
        sql = "SELECT " + ", ".join(f"({s})" for s, _ in exprs) + " FROM t"
        params: list[Any] | None = [x for _, p in exprs for x in (p or [])]
        try:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return list(row)
        except psycopg.Error:
            pass
    out = []
    for sql, params in exprs:
        try:
            row = conn.execute(f"SELECT ({sql}) FROM t", params).fetchone()
            assert row is not None
            out.append(row[0])
        except (psycopg.DataError, psycopg.errors.FeatureNotSupported):
            out.append(ERROR)
        except psycopg.Error as exc:
            out.append(f"{ERROR}: {type(exc).__name__}: {exc}")
    return out


def _ours(text: str, table: TableInfo, row: dict[str, str | None]) -> tuple[Any, Any]:
    try:
        clause = compile_where(text, table, {})
    except WhereError as exc:
        return f"{ERROR}: {exc.messages}", None
    try:
        return clause._fn(row), clause
    except WhereEvalError:
        return ERROR, clause


@settings(
    max_examples=EXAMPLES,
    derandomize=not EXPLORE,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking costs minutes of DB round trips
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(row=rows, exprs=st.lists(bool_expr(), min_size=10, max_size=20))
def test_evaluator_agrees_with_postgres(
    oracle_conn: psycopg.Connection[Any], row: dict[str, str | None], exprs: list[str]
) -> None:
    conn = oracle_conn
    conn.execute("TRUNCATE t")
    conn.execute(
        f"INSERT INTO t ({', '.join(COLS)}) VALUES ({', '.join(f'%s::{_sqltype(c)}' for c in COLS)})",
        [row[c] for c in COLS],
    )
    texts = conn.execute(f"SELECT {', '.join(f'{c}::text' for c in COLS)} FROM t").fetchone()
    assert texts is not None
    as_text = dict(zip(COLS, texts, strict=True))
    table = inspect_table(conn, "public", "t")

    ours = [_ours(e, table, as_text) for e in exprs]
    raw = _pg_batch(conn, [(e, None) for e in exprs])
    gen_inputs = [(c.to_sql() if c is not None else ("NULL", [])) for _, c in ours]
    generated = _pg_batch(conn, [(s, list(p)) for s, p in gen_inputs])
    for expr, (mine, clause), pg_raw, pg_gen in zip(exprs, ours, raw, generated, strict=True):
        context = f"\nclause: {expr}\nrow: {as_text}\nours: {mine!r}\npostgres: {pg_raw!r}"
        if clause is None:
            # compile-time rejection: only acceptable when Postgres fails on this row too
            assert isinstance(mine, str) and pg_raw == ERROR, context
            continue
        assert _same(mine, pg_raw), context
        sql = clause.to_sql_inline()
        assert _same(mine, pg_gen), context + f"\ngenerated: {sql}\npostgres on generated: {pg_gen!r}"


def _same(mine: object, pg: object) -> bool:
    if mine == ERROR or (isinstance(pg, str) and pg.startswith(ERROR)):
        return mine == ERROR and pg == ERROR
    return mine is pg or mine == pg


def _sqltype(col: str) -> str:
    return COLUMNS[col]
