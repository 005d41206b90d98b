"""Renders a validated tree as canonical SQL: quoted identifiers, every constant a bound parameter.

Nothing of the user's text is copied: identifiers come from the catalog (quoted), operators and function
names from our own tables, and constants are passed as parameters with an explicit cast to their type.
Every sub-expression is parenthesised, so precedence can never be reinterpreted.  Text comparisons,
``lower``/``upper`` and ``ILIKE`` carry ``COLLATE "C"`` so that Postgres computes exactly what the
evaluator computes, whatever the database's default collation.
"""

from __future__ import annotations

from collections.abc import Callable

from sync.where import ast as a
from sync.where.formatting import formatter
from sync.where.typenames import TEXT_TYPES

__all__ = ["ParamSlot", "quote_ident", "render", "sql_type"]

Literal = Callable[[str | None, str], str]  # (text value or None, sql type or "" for bare) -> SQL fragment
ParamSlot = Callable[[a.Const, str], str]  # (a constant that came from $n, its sql type) -> SQL fragment


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_type(t: str) -> str:
    if t.endswith("[]"):
        return sql_type(t[:-2]) + "[]"
    if t.startswith("enum:"):
        schema, name = t[5:].split(".", 1)
        return f"{quote_ident(schema)}.{quote_ident(name)}"
    if t.startswith("other:"):
        return t[6:]
    return t


_ORDERING = ("<", ">", "<=", ">=")
_INFIX = frozenset(
    ("=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "&", "|", "#", "||", "@>", "<@", "&&")
)
_C = ' COLLATE "C"'


def render(node: a.Node, literal: Literal, param: ParamSlot | None = None) -> str:
    """``node`` as SQL; constants through ``literal``, or those that came from a ``$n`` through ``param``
    when given (:mod:`sync.where.slots` renders them as slots bound per request)."""
    return _Renderer(literal, param).r(node)


class _Renderer:
    def __init__(self, literal: Literal, param: ParamSlot | None = None) -> None:
        self.literal = literal
        self.param = param

    def r(self, node: a.Node) -> str:
        if isinstance(node, a.Failed):
            return self.r(node.node)
        if isinstance(node, a.Const):
            if node.param is not None and self.param is not None:
                return self.param(node, sql_type(node.type))
            text = None if node.value is None else formatter(node.type)(node.value)
            return self.literal(text, sql_type(node.type))
        if isinstance(node, a.Col):
            return quote_ident(node.name)
        if isinstance(node, a.Cast):
            t = sql_type(node.type) + (f"({node.length})" if node.length is not None else "")
            return f"CAST({self.r(node.arg)} AS {t})"
        if isinstance(node, a.Call):
            return self.call(node)
        if isinstance(node, a.And | a.Or):
            sep = " AND " if isinstance(node, a.And) else " OR "
            return "(" + sep.join(self.r(x) for x in node.args) + ")"
        if isinstance(node, a.Not):
            return f"(NOT {self.r(node.arg)})"
        if isinstance(node, a.IsNull):
            return f"({self.r(node.arg)} IS {'NOT ' if node.negated else ''}NULL)"
        if isinstance(node, a.BoolTest):
            return (
                f"({self.r(node.arg)} IS {'NOT ' if node.negated else ''}{'TRUE' if node.value else 'FALSE'})"
            )
        if isinstance(node, a.Distinct):
            kw = "IS NOT DISTINCT FROM" if node.negated else "IS DISTINCT FROM"
            return f"({self.r(node.left)} {kw} {self.r(node.right)})"
        if isinstance(node, a.InList):
            return f"({self.r(node.arg)} IN ({', '.join(self.r(i) for i in node.items)}))"
        if isinstance(node, a.AnyAll):
            left = self.r(node.left) + (_C if node.op in _ORDERING and node.cmp_type in TEXT_TYPES else "")
            return f"({left} {node.op} {'ALL' if node.all else 'ANY'} ({self.r(node.array)}))"
        if isinstance(node, a.Like):
            op = ("NOT " if node.negated else "") + ("ILIKE" if node.case_insensitive else "LIKE")
            coll = _C if node.case_insensitive else ""
            arg, pattern = self.r(node.arg), self.r(node.pattern)
            esc = ""
            if isinstance(node.escape, a.Const):  # Postgres takes any expression; keep it a plain string
                esc = f" ESCAPE {self.literal(node.escape.value, '')}"
            elif node.escape is not None:
                esc = f" ESCAPE {self.r(node.escape)}"
            return f"(({arg}{coll}) {op} {pattern}{esc})"
        if isinstance(node, a.ArrayCtor):
            return "ARRAY[" + ", ".join(self.r(i) for i in node.items) + "]"
        return self.subscript(node)

    def call(self, node: a.Call) -> str:
        args = [self.r(x) for x in node.args]
        op = node.op
        if op == "neg":
            return f"(- {args[0]})"
        if op in ("|/", "~"):
            return f"({op} {args[0]})"
        if len(args) == 2 and op in _INFIX:
            coll = _C if op in _ORDERING and node.argtypes[0] in TEXT_TYPES else ""
            return f"({args[0]}{coll} {op} {args[1]})"
        if op in ("lower", "upper", "greatest", "least") and node.type in TEXT_TYPES:
            args = [f"({x}{_C})" for x in args]
        return f"{op}({', '.join(args)})"

    def subscript(self, node: a.Subscript) -> str:
        arg = self.r(node.arg)
        parts = []
        for lo, hi in zip(node.lowers, node.uppers, strict=True):
            if node.is_slice:
                parts.append(f"[{'' if lo is None else self.r(lo)}:{'' if hi is None else self.r(hi)}]")
            else:
                parts.append(f"[{self.r(hi) if hi is not None else ''}]")
        return f"({arg}){''.join(parts)}"
