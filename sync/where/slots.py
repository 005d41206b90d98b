"""A compiled clause's SQL with its ``$n`` values as slots, bound again per request without compiling.

Why: a subset request (spec §9) sends the same WHERE text again and again with other ``$n`` values
(``account_id = $1``), and compiling it (building and typing the tree, folding, the evaluator closure) cost
the HTTP worker more than the query costs Postgres.  A clause compiled once with some values gives a
:class:`SlotTemplate` when the values cannot have changed anything but the constants themselves; binding
other values then only parses and formats each value with its type, exactly as the compiler does.

When is the template the compiler's answer for any values?  A ``$n`` is an untyped literal typed by its
context, never by its value; its value can only matter where the compiler folds or simplifies constants.
So a template is only made when every occurrence of every ``$n`` in the text is still a constant of the
tree (nothing was folded or dropped, which would change the tree's shape with the values), and each sits
directly in a comparison (``=``, ``<>``, ``<``, ``>``, ``<=``, ``>=``, ``IN``, ``ANY``/``ALL``, ``IS
DISTINCT FROM``): nothing there is evaluated at compile time.  Anything else (LIKE patterns, arithmetic,
AND/OR operands...) gives None and the caller compiles per request as before.

:meth:`SlotTemplate.bind` returns None for any value the compiler would not take as it is (a parse error,
a NUL character): the caller then compiles the slow way, which raises the clause's own error.  The SQL is
the one :meth:`~sync.where.clause.WhereClause.to_sql` renders (psycopg ``%s`` placeholders, constants
bound): client text never reaches Postgres as SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from sync.where import ast as a
from sync.where.clause import WhereClause
from sync.where.errors import WhereError
from sync.where.formatting import formatter
from sync.where.sqlgen import render
from sync.where.syntax import parse_text
from sync.where.values import parser

__all__ = ["SlotTemplate", "slot_template"]

_COMPARISONS = frozenset(("=", "<>", "<", ">", "<=", ">="))
_MARK = "\x00p\x00"


@dataclass(frozen=True, slots=True)
class _Slot:
    """Placeholder ``index`` of the SQL takes ``$param``, parsed and formatted as the compiler does."""

    index: int
    param: int
    parse: Callable[[str], Any]
    format: Callable[[Any], str]


@dataclass(frozen=True, slots=True)
class SlotTemplate:
    """``sql`` (psycopg ``%s`` placeholders, ``%`` escaped) and its values with the ``$n`` slots open."""

    sql: str
    fixed: tuple[str | None, ...]
    slots: tuple[_Slot, ...]
    params: int  # the number of $n values the clause takes ($1..$params)

    def bind(self, values: Mapping[int, str]) -> list[str | None] | None:
        """The placeholder values for ``values`` ($n -> text), or None when the clause compiled with them
        might differ from this template or fail (the caller compiles them to find out)."""
        if len(values) != self.params:
            return None
        out = list(self.fixed)
        try:
            for slot in self.slots:
                text = values[slot.param]
                if "\x00" in text:
                    return None
                value = slot.parse(text)
                out[slot.index] = None if value is None else slot.format(value)
        except Exception:  # any refusal (WhereEvalError, ValueError...) goes the slow way
            return None
        return out


def _occurrences(text: str) -> dict[int, int] | None:
    """How many times each ``$n`` appears in ``text`` (None if one cannot be read as the compiler reads
    it)."""
    try:
        tree = parse_text(text).tree
    except WhereError:
        return None
    counts: dict[int, int] = {}
    for e in tree.find_all(exp.Parameter, exp.Placeholder):
        raw = e.this.this if isinstance(e.this, exp.Literal) else None
        if raw is None or not str(raw).isdigit():
            return None
        n = int(str(raw))
        counts[n] = counts.get(n, 0) + 1
    return counts


def _param_consts(node: a.Node, parent: a.Node | None, found: dict[int, int]) -> bool:
    """Count the constants that came from a ``$n``; False if one sits anywhere but in a comparison."""
    if isinstance(node, a.Const):
        if node.param is None:
            return True
        found[node.param] = found.get(node.param, 0) + 1
        return (
            isinstance(parent, a.InList | a.AnyAll | a.Distinct)
            or (isinstance(parent, a.Call) and parent.op in _COMPARISONS and len(parent.args) == 2)
        )  # fmt: skip
    return all(_param_consts(child, node, found) for child in a.children(node))


def slot_template(clause: WhereClause, values: Mapping[int, str]) -> SlotTemplate | None:
    """The template of ``clause`` (compiled with ``values``), or None when its ``$n`` values may matter
    beyond being the constants they are (see the module docstring)."""
    occurrences = _occurrences(clause.text)
    found: dict[int, int] = {}
    if occurrences is None or not _param_consts(clause.tree, None, found) or found != occurrences:
        return None
    if set(found) != set(clause.param_types):
        return None
    fixed: list[str | None] = []
    slots: list[_Slot] = []
    enums = dict(clause.enums)

    def literal(text: str | None, sql_type: str) -> str:
        fixed.append(text)
        return f"CAST({_MARK} AS {sql_type})" if sql_type else _MARK

    def param(node: a.Const, sql_type: str) -> str:
        assert node.param is not None
        slots.append(_Slot(len(fixed), node.param, parser(node.type, enums), formatter(node.type)))
        return literal(None, sql_type)

    sql = render(clause.tree, literal, param).replace("%", "%%").replace(_MARK, "%s")
    template = SlotTemplate(sql, tuple(fixed), tuple(slots), len(clause.param_types))
    # bound with the values it was compiled with, the template must give the clause's own SQL exactly
    if (sql, template.bind(values)) != clause.to_sql():
        return None
    return template
