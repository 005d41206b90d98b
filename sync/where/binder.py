"""Type resolution for the WHERE tree: coercion of untyped literals, implicit casts, constant folding.

The parser (:mod:`sync.where.parse`) walks sqlglot's tree and calls one method here per construct; each
returns a typed :mod:`sync.where.ast` node or raises :class:`WhereError` with a located message.  Which
constants Postgres' planner folds is in :mod:`sync.where.folding`, and how SQL spells types (cast targets,
type-named functions, types in messages) in :mod:`sync.where.sqltypes`.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

from sync.where import ast as a
from sync.where.casts import canonical, cast_fn, common_of, implicitly_castable
from sync.where.errors import WhereError, WhereEvalError
from sync.where.evaluate import compile_node
from sync.where.folding import check_folding, has_unknown, is_stable, strict_null
from sync.where.functions import FUNCTIONS, resolve_function
from sync.where.ops import binary, unary
from sync.where.sqltypes import ALIASES, NAMED_TYPES, readable, type_from_sql
from sync.where.syntax import Parsed
from sync.where.typenames import INT_TYPES, TEXT_TYPES, elem, is_array
from sync.where.values import parser

__all__ = ["Binder", "check_folding", "readable"]


class Binder:
    def __init__(self, parsed: Parsed, enums: dict[str, tuple[str, ...]]) -> None:
        self.p = parsed
        self.enums = enums
        self.param_types: dict[int, str] = {}

    def err(self, loc: int, message: str) -> WhereError:
        return self.p.at(loc, message)

    # ---- typing helpers ---------------------------------------------------------------------------

    def fold(self, node: a.Node, loc: int) -> a.Node:
        if isinstance(node, a.Const | a.Failed) or node.type == "unknown" or a.columns_of(node):
            return node
        if is_stable(node) or not all(isinstance(c, a.Const) for c in a.children(node)):
            # Postgres' planner folds immutable operations on constants only (a STABLE sub-expression
            # stays, and so does everything above it)
            return node
        if has_unknown(node):
            return node
        try:
            value = compile_node(node, self.enums)({})
        except WhereEvalError as e:
            # Postgres' planner may never fold this part (see check_folding): decide at the end
            inner = node.node if isinstance(node, a.Failed) else node
            return a.Failed(inner, e.message, loc, node.type)
        return a.Const(node.type, value)

    def coerce(self, node: a.Node, target: str, loc: int, *, top: bool = False, what: str = "") -> a.Node:
        """``node`` as ``target`` (parsing an untyped literal, or an implicit cast)."""
        if node.type == target or (canonical(node.type) == canonical(target) and target != "bpchar"):
            return node
        if isinstance(node, a.Const) and node.type == "unknown":
            value: Any = None
            if node.value is not None:
                try:
                    value = parser(target, self.enums)(node.value)
                except WhereEvalError as e:
                    raise self.err(loc, e.message) from None
                except KeyError:
                    raise self.err(loc, f"cannot cast type unknown to {readable(target)}") from None
            if node.param is not None:
                seen = self.param_types.setdefault(node.param, target)
                if seen != target:
                    raise self.err(
                        loc, f"type conflict for ${node.param}: {readable(seen)} and {readable(target)}"
                    )
            return a.Const(target, value, node.param)
        if top:
            raise WhereError(["WHERE clause must return a boolean"])
        if what:
            raise self.err(loc, f"argument of {what} must be type boolean, not type {readable(node.type)}")
        if not implicitly_castable(node.type, target) or cast_fn(node.type, target) is None:
            raise self.err(loc, f"{readable(node.type)} cannot be matched to {readable(target)}")
        return self.fold(a.Cast(node, target), loc)

    def settle(self, node: a.Node) -> a.Node:
        """Give a still-untyped literal its default type (text), as Postgres does at the end."""
        if node.type == "unknown":
            return self.coerce(node, "text", 0)
        return node

    def param(self, n: int, value: str) -> a.Node:
        """``$n`` is an untyped literal typed by its context; conflicting contexts are rejected."""
        return a.Const("unknown", value, n)

    # ---- constructs -------------------------------------------------------------------------------

    def unary(self, op: str, arg: a.Node, loc: int) -> a.Node:
        res = unary(op, arg.type)
        if res is None:
            if op == "abs":
                raise self.err(loc, f"unknown or unsupported function abs({readable(arg.type)})")
            raise self.err(loc, f"operator does not exist: {op} {readable(arg.type)}")
        arg = self.coerce(arg, res.argtypes[0], loc)
        name = "neg" if op == "-" else op
        return self.fold(strict_null(a.Call(name, (arg,), res.result, res.argtypes)), loc)

    def binary(self, op: str, left: a.Node, right: a.Node, loc: int) -> a.Node:
        res = binary(op, left.type, right.type)
        if res is None and op == "^" and "numeric" in (canonical(left.type), canonical(right.type)):
            raise self.err(loc, "numeric ^ numeric is not supported: cast an operand to float8")
        if res is None:
            raise self.err(loc, f"operator does not exist: {readable(left.type)} {op} {readable(right.type)}")
        left = self.coerce(left, res.argtypes[0], loc)
        right = self.coerce(right, res.argtypes[1], loc)
        call = a.Call(op, (left, right), res.result, res.argtypes)
        return self.fold(strict_null(call) if res.strict else call, loc)

    def boolean(self, is_and: bool, args: list[a.Node], loc: int) -> a.Node:
        what = "AND" if is_and else "OR"
        flat: list[a.Node] = []
        kind = a.And if is_and else a.Or
        for raw in args:
            arg = self.coerce(raw, "bool", loc, what=what)
            flat.extend(arg.args if isinstance(arg, kind) else (arg,))
        decisive = not is_and  # a constant TRUE decides an OR, a constant FALSE an AND
        for i, arg in enumerate(flat):
            if isinstance(arg, a.Const) and arg.value is decisive:
                # Postgres' planner reduces the whole expression to that constant, after simplifying
                # (and raising for) the arguments before it
                for prev in flat[:i]:
                    check_folding(prev, self.p)
                return a.Const("bool", decisive)
        # and, like Postgres, drop the neutral constants (FALSE in an OR, TRUE in an AND)
        flat = [x for x in flat if not (isinstance(x, a.Const) and x.value is (not decisive))]
        if len(flat) <= 1:
            return flat[0] if flat else a.Const("bool", not decisive)
        node: a.Node = a.And(tuple(flat)) if is_and else a.Or(tuple(flat))
        return self.fold(node, loc)

    def negate(self, arg: a.Node, loc: int) -> a.Node:
        return self.fold(a.Not(self.coerce(arg, "bool", loc, what="NOT")), loc)

    def is_null(self, arg: a.Node, negated: bool) -> a.Node:
        return self.fold(a.IsNull(self.settle(arg), negated), 0)

    def bool_test(self, arg: a.Node, value: bool, negated: bool, loc: int) -> a.Node:
        what = f"IS {'NOT ' if negated else ''}{'TRUE' if value else 'FALSE'}"
        return self.fold(a.BoolTest(self.coerce(arg, "bool", loc, what=what), value, negated), loc)

    def _cmp_type(self, op: str, left: str, right: str, loc: int) -> str:
        """The operand type of comparison ``op`` between ``left`` and ``right`` (operator resolution)."""
        res = binary(op, left, right)
        if res is None or res.result != "bool":
            raise self.err(loc, f"operator does not exist: {readable(left)} {op} {readable(right)}")
        return res.argtypes[0]

    def distinct(self, left: a.Node, right: a.Node, negated: bool, loc: int) -> a.Node:
        c = self._cmp_type("=", left.type, right.type, loc)
        node = a.Distinct(self.coerce(left, c, loc), self.coerce(right, c, loc), c, negated)
        return self.fold(node, loc)

    def in_list(self, arg: a.Node, items: list[a.Node], loc: int) -> a.Node:
        """``x IN (...)`` as Postgres transforms it: the items without column references (if more than
        one) become ``x = ANY(array)`` compared in their common type; every other item is a separate
        ``x = item`` (operator resolution), OR-ed after it."""
        consts = [i for i in items if not a.columns_of(i)]
        rest = items
        parts: list[a.Node] = []
        if len(consts) > 1:
            c = common_of([arg.type, *(i.type for i in consts)])
            if c is not None and binary("=", c, c) is not None:
                typed = tuple(self.coerce(i, c, loc) for i in consts)
                parts.append(self.fold(a.InList(self.coerce(arg, c, loc), typed, c, False), loc))
                rest = [i for i in items if a.columns_of(i)]
        parts.extend(self.binary("=", arg, i, loc) for i in rest)
        return parts[0] if len(parts) == 1 else self.boolean(False, parts, loc)

    def between(self, arg: a.Node, low: a.Node, high: a.Node, symmetric: bool, loc: int) -> a.Node:
        """``x BETWEEN a AND b`` is ``x >= a AND x <= b`` (SYMMETRIC: OR the swapped bounds), as in
        Postgres' parser; each comparison resolves its own operand types."""

        def pair(lo: a.Node, hi: a.Node) -> a.Node:
            return self.boolean(True, [self.binary(">=", arg, lo, loc), self.binary("<=", arg, hi, loc)], loc)

        node = pair(low, high)
        return self.boolean(False, [node, pair(high, low)], loc) if symmetric else node

    def like(  # noqa: PLR0917 - mirrors the SQL construct's parts
        self, arg: a.Node, pattern: a.Node, escape: a.Node | None, ci: bool, negated: bool, loc: int
    ) -> a.Node:
        for n in (arg, pattern):
            if canonical(n.type) not in TEXT_TYPES | {"unknown"}:
                op = "~~*" if ci else "~~"
                raise self.err(
                    loc, f"operator does not exist: {readable(arg.type)} {op} {readable(pattern.type)}"
                )
        node = a.Like(
            self.coerce(arg, "text", loc),
            self.coerce(pattern, "text", loc),
            None if escape is None else self.coerce(escape, "text", loc),
            ci,
            negated,
        )
        parts = (node.arg, node.pattern, node.escape)
        if any(isinstance(x, a.Const) and x.value is None for x in parts):
            return a.Const("bool", None)  # strict, folded to NULL by the planner
        return self.fold(node, loc)

    def any_all(self, op: str, left: a.Node, array: a.Node, is_all: bool, loc: int) -> a.Node:
        if array.type == "unknown":
            c = self._cmp_type(op, left.type, "unknown", loc)
        elif not is_array(array.type):
            raise self.err(
                loc, f"op ANY/ALL (array) requires array on right side, not {readable(array.type)}"
            )
        else:
            c = self._cmp_type(op, left.type, elem(array.type), loc)
        node = a.AnyAll(op, self.coerce(left, c, loc), self.coerce(array, c + "[]", loc), c, is_all)
        return self.fold(node, loc)

    def cast(self, arg: a.Node, target: str, length: int | None, loc: int) -> a.Node:
        if isinstance(arg, a.Const) and arg.type == "unknown":
            const = self.coerce(arg, target, loc)
            if length is None:
                return const
            arg = const
        if arg.type == target and length is None:
            return arg
        if cast_fn(arg.type, target, length, self.enums) is None:
            raise self.err(loc, f"cannot cast type {readable(arg.type)} to {readable(target)}")
        return self.fold(a.Cast(arg, target, length), loc)

    def array(self, items: list[a.Node], loc: int) -> a.Node:
        if not items:
            raise self.err(loc, "cannot determine type of empty array")
        nested = [i for i in items if is_array(i.type)]
        if nested and len(nested) != len(items):
            raise self.err(
                loc, "multidimensional arrays must have array expressions with matching dimensions"
            )
        c = common_of([i.type for i in items])
        if c is None:
            raise self.err(
                loc,
                "ARRAY types "
                + " and ".join(sorted({readable(i.type) for i in items}))
                + " cannot be matched",
            )
        typed = tuple(self.coerce(i, c, loc) for i in items)
        return self.fold(a.ArrayCtor(typed, c if nested else c + "[]"), loc)

    def subscript(
        self, arg: a.Node, lowers: list[a.Node | None], uppers: list[a.Node | None], is_slice: bool, loc: int
    ) -> a.Node:
        if not is_array(arg.type):
            raise self.err(
                loc, f"cannot subscript type {readable(arg.type)} because it does not support subscripting"
            )

        def idx(n: a.Node | None) -> a.Node | None:
            if n is None:
                return None
            if n.type not in INT_TYPES | {"unknown"}:
                raise self.err(loc, "array subscript must have type integer")
            return self.coerce(n, "int4", loc) if n.type != "int4" else n

        node = a.Subscript(
            arg,
            tuple(idx(x) for x in lowers),
            tuple(idx(x) for x in uppers),
            is_slice,
            arg.type if is_slice else elem(arg.type),
        )
        return self.fold(node, loc)

    def timezone(self, zone: a.Node, ts: a.Node, loc: int) -> a.Node:
        zone = self.coerce(zone, "text", loc)
        src = ts.type
        if src == "unknown":
            src = "timestamptz"
        elif src == "date":
            src = "timestamp"
        if src not in ("timestamp", "timestamptz"):
            raise self.err(loc, f"function timezone(text, {readable(ts.type)}) does not exist")
        ts = self.coerce(ts, src, loc)
        result = "timestamp" if src == "timestamptz" else "timestamptz"
        return self.fold(strict_null(a.Call("timezone", (zone, ts), result, ("text", src))), loc)

    def function(self, name: str, args: list[a.Node], loc: int) -> a.Node:
        n = len(args)
        target = ALIASES.get(name, name)
        if name in NAMED_TYPES and n == 1:
            return self.cast(args[0], target, None, loc)
        if name in ("like", "ilike") and n == 2:
            return self.like(args[0], args[1], None, name == "ilike", False, loc)
        if name == "timezone" and n == 2:
            return self.timezone(args[0], args[1], loc)
        if name == "abs" and n == 1:
            return self.unary("abs", args[0], loc)
        if name not in FUNCTIONS:
            raise self.err(loc, f"unknown or unsupported function {name}/{n}")
        res = resolve_function(name, [x.type for x in args])
        if res is None:
            shown = ", ".join(readable(x.type) for x in args)
            raise self.err(loc, f"Could not select a function overload for {name}({shown})")
        typed = tuple(self.coerce(x, t, loc) for x, t in zip(args, res.argtypes, strict=True))
        if name == "coalesce":
            return self._coalesce(typed, res.result, loc)
        call = a.Call(name, typed, res.result, res.argtypes)
        return self.fold(strict_null(call) if res.strict else call, loc)

    def _coalesce(self, args: tuple[a.Node, ...], result: str, loc: int) -> a.Node:
        """COALESCE simplified as Postgres' planner does: NULL constants dropped, nothing kept after the
        first non-NULL constant (which is the whole result when it comes first)."""
        kept: list[a.Node] = []
        for arg in args:
            if isinstance(arg, a.Const) and arg.value is None:
                continue
            if isinstance(arg, a.Const) and not kept:
                return arg
            kept.append(arg)
            if isinstance(arg, a.Const):
                break
        if not kept:
            return a.Const(result, None)
        return self.fold(a.Call("coalesce", tuple(kept), result, tuple(result for _ in kept)), loc)

    def type_from_sql(self, dt: exp.Expr, loc: int) -> tuple[str, int | None]:
        """Our type name (and varchar/char length) for a sqlglot ``DataType``; enums are this clause's."""
        return type_from_sql(dt, loc, self.enums, self.p)
