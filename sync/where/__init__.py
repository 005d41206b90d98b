"""The WHERE language of shapes: parse, validate, evaluate with Postgres semantics, generate safe SQL.

Public API::

    clause = compile_where(text, table, params)     # table: sync.postgres.inspector.TableInfo
    clause.evaluate(row) -> bool                     # row: {column: Postgres text | None}; TRUE only
    clause.columns -> frozenset[str]                 # the columns the clause reads
    referenced_columns(text) -> frozenset[str]       # the same, from the text alone (no catalog)
    remember_columns(text, clause.columns)           # ...recorded for a shape's clause (no parse again)
    clause.to_sql() -> (sql, params)                 # psycopg %s placeholders, constants bound + cast
    clause.equality_facts()                          # indexable conjuncts, for RoutingIndex

    RoutingIndex().add(shape_id, table_key, clause | None); .remove(shape_id)
    RoutingIndex().affected(table_key, new_row, old_row, errors=None) -> set[shape_id]
        # shapes whose clause is TRUE for either row; a shape whose clause fails on a row is included
        # (its consumer then fails the same way) and its error recorded in ``errors``; never raises

Rows are ``{column: Postgres text | None}`` as replication delivers them (bool ``t``/``f`` or
``true``/``false``), complete for the columns the clause reads, unchanged-TOAST values resolved.
``to_sql()`` escapes ``%`` for psycopg: always execute it with its params list (even when empty).

Errors: :class:`WhereError` (``.messages``: the strings of the HTTP 400 body ``errors.where``) when the
clause is rejected; :class:`WhereEvalError` (``.message``: Postgres' text) when evaluating a row fails
where Postgres would raise (integer overflow, division by zero, invalid cast input...).  Evaluation errors
are never swallowed: Postgres would fail the snapshot query for that row too, so the caller decides
(the shape consumer should invalidate the shape).

Text semantics are those of the C collation (code-point order, ASCII-only case mapping); the generated SQL
pins ``COLLATE "C"`` where it matters so that snapshots and live evaluation always agree.
"""

from __future__ import annotations

from sync.where.clause import WhereClause, compile_where
from sync.where.errors import WhereError, WhereEvalError
from sync.where.index import RoutingIndex
from sync.where.parse import referenced_columns, remember_columns

__all__ = [
    "RoutingIndex",
    "WhereClause",
    "WhereError",
    "WhereEvalError",
    "compile_where",
    "referenced_columns",
    "remember_columns",
]
