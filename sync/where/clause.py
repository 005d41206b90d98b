"""A compiled WHERE clause: validated tree, fast evaluator, canonical SQL and routing facts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sync.postgres.inspector import ColumnInfo, TableInfo, TypeInfo
from sync.where import ast as a
from sync.where.arrays import flatten
from sync.where.casts import cast_fn
from sync.where.comparisons import cmp_key
from sync.where.errors import WhereError, WhereEvalError, evaluation_fault
from sync.where.evaluate import Fn, Row, compile_node
from sync.where.interning import shared, shared_mapping
from sync.where.parse import build_tree
from sync.where.sqlgen import render
from sync.where.values import parser

logger = logging.getLogger(__name__)

__all__ = ["EqualityFact", "WhereClause", "column_type", "compile_where", "table_types"]

SUPPORTED = frozenset(
    {
        "int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar", "bpchar", "name", "bool",
        "uuid", "date", "time", "timestamp", "timestamptz", "interval",
    }
)  # fmt: skip


def _scalar(t: TypeInfo) -> str:
    t = t.resolved()
    if t.kind == "e":
        return f"enum:{t.schema}.{t.name}"
    if t.name in SUPPORTED and t.schema == "pg_catalog":
        return t.name
    return f"other:{t.name}"


def column_type(col: ColumnInfo) -> str:
    """Our type name for a catalog column (domains resolve to their base type)."""
    t = col.type.resolved()
    if t.element is not None:
        return _scalar(t.element) + "[]"
    return _scalar(t)


def table_types(table: TableInfo) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Column types and enum labels of ``table`` as the compiler wants them."""
    columns: dict[str, str] = {}
    enums: dict[str, tuple[str, ...]] = {}
    for col in table.columns:
        columns[col.name] = column_type(col)
        t = col.type.resolved()
        t = (t.element or t).resolved()
        if t.kind == "e":
            enums[f"enum:{t.schema}.{t.name}"] = t.enum_labels
    return columns, enums


@dataclass(frozen=True, slots=True)
class EqualityFact:
    """A conjunct ``column = const`` / ``IN (consts)`` / ``= ANY(const array)`` of the clause.

    ``key(text)`` maps a row's text value to the lookup key (parsed, cast to ``cmp_type``, normalised so
    that values Postgres considers equal have equal keys: ``1.0 = 1`` numerics, ``NaN``, ``-0``...).
    ``group`` identifies how the key is computed: facts of one group share a hash table.
    """

    column: str
    group: tuple[str, str, str]  # (column, column type, comparison type)
    keys: frozenset[Any]
    key: Callable[[str], Any] = field(compare=False, repr=False)
    whole: bool = False  # the fact is the entire clause: a key hit is a match, no evaluation needed


@dataclass(frozen=True, slots=True)
class WhereClause:
    """A validated WHERE clause, ready to evaluate rows and to render SQL.

    ``columns``: the column names the clause reads (rows need only these).  ``param_types``: the type each
    ``$n`` was bound as.  ``tree``: the typed expression (see :mod:`sync.where.ast`).
    """

    text: str
    tree: a.Node
    columns: frozenset[str]
    param_types: Mapping[int, str] = field(compare=False)  # derived from tree and params
    enums: Mapping[str, tuple[str, ...]] = field(repr=False, compare=False)
    column_types: Mapping[str, str] = field(repr=False, compare=False)
    _fn: Fn = field(repr=False, compare=False)

    def evaluate(self, row: Row) -> bool:
        """True only when the clause is TRUE for ``row`` (column name -> Postgres text, None = NULL).

        Raises :class:`~sync.where.errors.WhereEvalError` where Postgres would raise (overflow...), and when
        the row has no value for a column the clause reads: a change made after the column was dropped
        reaches the shapes before the schema change invalidates them, and must not crash their router.
        Any other exception is a fault of the evaluator: logged, and raised as a WhereEvalError too, so that
        it costs the one shape (invalidated by its consumer) and not the router every shape depends on.
        """
        try:
            return self._fn(row) is True
        except KeyError as exc:
            raise WhereEvalError(f'column "{exc.args[0]}" does not exist') from None
        except WhereEvalError:
            raise
        except Exception as exc:
            logger.exception("evaluating WHERE %r failed", self.text)
            raise evaluation_fault(exc) from exc

    def to_sql(self) -> tuple[str, list[str | None]]:
        """``(sql, params)`` for psycopg: ``%s`` placeholders, each cast to its type, ``%`` escaped."""
        params: list[str | None] = []

        mark = "\x00p\x00"

        def literal(text: str | None, sql_type: str) -> str:
            params.append(text)
            return f"CAST({mark} AS {sql_type})" if sql_type else mark

        sql = render(self.tree, literal).replace("%", "%%").replace(mark, "%s")
        return sql, params

    def to_sql_inline(self) -> str:
        """The same SQL with constants inlined as quoted literals (for logs and round-trip tests)."""

        def literal(text: str | None, sql_type: str) -> str:
            quoted = "NULL" if text is None else "'" + text.replace("'", "''") + "'"
            return f"CAST({quoted} AS {sql_type})" if sql_type else quoted

        return render(self.tree, literal)

    def equality_facts(self) -> list[EqualityFact]:
        """The indexable conjuncts of the clause (empty if none)."""
        if not isinstance(self.tree, a.And):
            fact = _fact(self.tree, self.enums)
            return [] if fact is None else [replace(fact, whole=True)]
        facts = []
        for c in self.tree.args:
            fact = _fact(c, self.enums)
            if fact is not None:
                facts.append(fact)
        return facts


def _column_side(
    node: a.Node, enums: Mapping[str, tuple[str, ...]]
) -> tuple[str, str, Callable[[str], Any]] | None:
    """(column, column type, text -> comparison-typed value) if ``node`` is a (maybe cast) column."""
    if isinstance(node, a.Col):
        return node.name, node.type, parser(node.type, dict(enums))
    if isinstance(node, a.Cast) and isinstance(node.arg, a.Col) and node.length is None:
        col = node.arg
        p = parser(col.type, dict(enums))
        conv = cast_fn(col.type, node.type, None, dict(enums))
        if conv is None:
            return None
        c = conv
        return col.name, col.type, lambda s: c(p(s))
    return None


def _fact(node: a.Node, enums: Mapping[str, tuple[str, ...]]) -> EqualityFact | None:
    values: list[Any]
    if isinstance(node, a.Call) and node.op == "=" and len(node.args) == 2:
        left, right = node.args
        if isinstance(left, a.Const):
            left, right = right, left
        if not isinstance(right, a.Const):
            return None
        side, cmp_type, values = _column_side(left, enums), node.argtypes[0], [right.value]
    elif isinstance(node, a.InList) and all(isinstance(i, a.Const) for i in node.items):
        side, cmp_type = _column_side(node.arg, enums), node.cmp_type
        values = [i.value for i in node.items if isinstance(i, a.Const)]
    elif isinstance(node, a.AnyAll) and node.op == "=" and not node.all and isinstance(node.array, a.Const):
        side, cmp_type = _column_side(node.left, enums), node.cmp_type
        values = [] if node.array.value is None else flatten(node.array.value)
    else:
        return None
    if side is None:
        return None
    column, col_type, to_value = side
    group = shared((column, col_type, cmp_type))  # the routing index keeps it per shape
    norm = cmp_key(cmp_type)
    if norm is None:
        return EqualityFact(column, group, frozenset(v for v in values if v is not None), to_value)
    n = norm
    keys = frozenset(n(v) for v in values if v is not None)
    return EqualityFact(column, group, keys, lambda text: n(to_value(text)))


def compile_where(text: str, table: TableInfo, params: Mapping[int, str] | None = None) -> WhereClause:
    """Parse, validate and compile ``text`` for ``table``; raise :class:`WhereError` if not accepted."""
    columns, enums = table_types(table)
    return compile_for_columns(text, columns, enums, params or {})


def compile_for_columns(
    text: str,
    columns: Mapping[str, str],
    enums: dict[str, tuple[str, ...]],
    params: Mapping[int, str],
) -> WhereClause:
    try:
        tree, param_types = build_tree(text, columns, enums, params)
        used = a.columns_of(tree)
        fn = compile_node(tree, enums)
    except WhereEvalError as exc:  # e.g. an invalid constant LIKE escape
        raise WhereError([f"At location 0: {exc.message}"]) from None
    except RecursionError:  # a safety net: syntax.MAX_NESTING / MAX_OPERATORS keep clauses far from it
        raise WhereError(["At location 0: expression too deeply nested"]) from None
    # Thousands of shapes of one table differ in their constants only: their column sets and type maps are
    # shared (read-only) instead of copied per shape.
    return WhereClause(
        text=text,
        tree=tree,
        columns=shared(used),
        param_types=shared_mapping(param_types),
        enums=shared_mapping(enums),
        column_types=shared_mapping({c: columns[c] for c in used}),
        _fn=fn,
    )
