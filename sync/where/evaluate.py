"""Compiles a typed tree into nested Python closures, once per clause.

Each node becomes ``fn(row) -> value | None`` where ``row`` maps column names to Postgres text (or None
for NULL); a column is parsed only when its closure runs, so ``AND``/``OR`` short-circuits also skip
parsing.  NULL handling is Postgres' three-valued logic; errors Postgres would raise surface as
:class:`~sync.where.errors.WhereEvalError`.  LIKE matching is in :mod:`sync.where.like`, array subscripts
and slices in :mod:`sync.where.arrays` (``like_matcher`` is re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sync.where import ast as a
from sync.where.arrays import check_dimensions, fetch, flatten, slice_array
from sync.where.casts import cast_fn
from sync.where.comparisons import cmp_key, comparison_impl
from sync.where.errors import WhereEvalError
from sync.where.functions import resolve_function
from sync.where.like import escape_char, like_matcher
from sync.where.ops import binary, unary
from sync.where.values import parser
from sync.where.zones import timezone_impl

Row = Mapping[str, str | None]
Fn = Callable[[Row], Any]

__all__ = ["Fn", "Row", "compile_node", "like_matcher"]


def compile_node(node: a.Node, enums: dict[str, tuple[str, ...]]) -> Fn:
    c = _Compiler(enums)
    return c.compile(node)


class _Compiler:
    def __init__(self, enums: dict[str, tuple[str, ...]]) -> None:
        self.enums = enums

    def compile(self, node: a.Node) -> Fn:
        method = getattr(self, "_" + type(node).__name__.lower())
        fn: Fn = method(node)
        return fn

    def _failed(self, node: a.Failed) -> Fn:
        message = node.message

        def fail(r: Row) -> Any:
            raise WhereEvalError(message)

        return fail

    def _const(self, node: a.Const) -> Fn:
        value = node.value
        return lambda r: value

    def _col(self, node: a.Col) -> Fn:
        name = node.name
        if _text_valued(node):
            return lambda r: r[name]  # the text output is the value
        parse = parser(node.type, self.enums)

        def col(r: Row) -> Any:
            s = r[name]
            return None if s is None else parse(s)

        return col

    def _cast(self, node: a.Cast) -> Fn:
        fn = cast_fn(_type_of(node.arg), node.type, node.length, self.enums)
        if fn is None:  # pragma: no cover - the parser only builds castable casts
            raise AssertionError(f"no cast {_type_of(node.arg)} -> {node.type}")
        arg = self.compile(node.arg)
        conv = fn

        def cast(r: Row) -> Any:
            v = arg(r)
            return None if v is None else conv(v)

        return cast

    def _call(self, node: a.Call) -> Fn:
        args = [self.compile(x) for x in node.args]
        impl: Callable[..., Any]
        if node.op == "coalesce":  # lazy: arguments after the first non-NULL one are not evaluated

            def coalesce(r: Row) -> Any:
                for f in args:
                    v = f(r)
                    if v is not None:
                        return v
                return None

            return coalesce
        if node.op == "timezone":
            impl = timezone_impl(node.argtypes[1])
            strict = True
        elif node.op in ("abs", "neg", "|/", "~") or (len(args) == 1 and node.op == "-"):
            res = unary("-" if node.op == "neg" else node.op, node.argtypes[0])
            assert res is not None
            impl, strict = res.impl, True
        elif len(args) == 2 and (res2 := binary(node.op, *node.argtypes)) is not None:
            impl, strict = res2.impl, res2.strict
        else:
            fres = resolve_function(node.op, list(node.argtypes))
            assert fres is not None, node
            impl, strict = fres.impl, fres.strict
        if strict and len(args) == 2:
            fused = self._column_vs_constant(node, impl)
            if fused is not None:
                return fused
        return _strict_call(impl, args) if strict else (lambda r: impl(*(f(r) for f in args)))

    def _column_vs_constant(self, node: a.Call, impl: Callable[..., Any]) -> Fn | None:
        """``col op const`` (either side) as one closure: the commonest clause, kept by thousands of shapes.

        Same result and errors as the general strict call over the column's and the constant's closures.
        """
        left, right = node.args
        if isinstance(left, a.Col) and isinstance(right, a.Const) and right.value is not None:
            col, value, column_first = left, right.value, True
        elif isinstance(right, a.Col) and isinstance(left, a.Const) and left.value is not None:
            col, value, column_first = right, left.value, False
        else:
            return None
        name = col.name
        if _text_valued(col):
            if column_first:
                return lambda r: None if (s := r[name]) is None else impl(s, value)
            return lambda r: None if (s := r[name]) is None else impl(value, s)
        parse = parser(col.type, self.enums)
        if column_first:
            return lambda r: None if (s := r[name]) is None else impl(parse(s), value)
        return lambda r: None if (s := r[name]) is None else impl(value, parse(s))

    def _and(self, node: a.And) -> Fn:
        fs = [self.compile(x) for x in node.args]
        if len(fs) == 2:
            f0, f1 = fs

            def and2(r: Row) -> bool | None:
                x = f0(r)
                if x is False:
                    return False
                y = f1(r)
                if y is False:
                    return False
                return None if x is None or y is None else True

            return and2

        def and_(r: Row) -> bool | None:
            null = False
            for f in fs:
                v = f(r)
                if v is False:
                    return False
                if v is None:
                    null = True
            return None if null else True

        return and_

    def _or(self, node: a.Or) -> Fn:
        fs = [self.compile(x) for x in node.args]

        def or_(r: Row) -> bool | None:
            null = False
            for f in fs:
                v = f(r)
                if v is True:
                    return True
                if v is None:
                    null = True
            return None if null else False

        return or_

    def _not(self, node: a.Not) -> Fn:
        f = self.compile(node.arg)

        def not_(r: Row) -> bool | None:
            v = f(r)
            return None if v is None else not v

        return not_

    def _isnull(self, node: a.IsNull) -> Fn:
        f = self.compile(node.arg)
        if node.negated:
            return lambda r: f(r) is not None
        return lambda r: f(r) is None

    def _booltest(self, node: a.BoolTest) -> Fn:
        f = self.compile(node.arg)
        want, neg = node.value, node.negated
        return lambda r: (f(r) is want) != neg

    def _distinct(self, node: a.Distinct) -> Fn:
        fl, fr = self.compile(node.left), self.compile(node.right)
        eq = comparison_impl("=", node.cmp_type)
        neg = node.negated

        def distinct(r: Row) -> bool:
            x, y = fl(r), fr(r)
            d = (x is None) != (y is None) if x is None or y is None else not eq(x, y)
            return d != neg

        return distinct

    def _inlist(self, node: a.InList) -> Fn:
        f = self.compile(node.arg)
        if all(isinstance(i, a.Const) for i in node.items):
            key = cmp_key(node.cmp_type) or (lambda v: v)
            values = [i.value for i in node.items if isinstance(i, a.Const)]
            has_null = any(v is None for v in values)
            keys = frozenset(key(v) for v in values if v is not None)

            def in_set(r: Row) -> bool | None:
                v = f(r)
                if v is None:
                    return None
                if key(v) in keys:
                    return True
                return None if has_null else False

            return in_set
        items = [self.compile(i) for i in node.items]
        eq = comparison_impl("=", node.cmp_type)

        def in_list(r: Row) -> bool | None:
            v = f(r)
            if v is None:
                return None
            null = False
            for g in items:
                w = g(r)
                if w is None:
                    null = True
                elif eq(v, w):
                    return True
            return None if null else False

        return in_list

    def _anyall(self, node: a.AnyAll) -> Fn:
        fl, fa = self.compile(node.left), self.compile(node.array)
        res = binary(node.op, node.cmp_type, node.cmp_type)
        assert res is not None
        cmp = res.impl
        is_all = node.all

        def any_all(r: Row) -> bool | None:
            v = fl(r)  # Postgres evaluates the scalar first (its errors win)
            arr = fa(r)
            if arr is None:
                return None
            elems = flatten(arr)
            if not elems:
                return is_all
            if v is None:
                return None
            null = False
            for e in elems:
                if e is None:
                    null = True
                    continue
                ok = cmp(v, e)
                if ok and not is_all:
                    return True
                if not ok and is_all:
                    return False
            return None if null else is_all

        return any_all

    def _like(self, node: a.Like) -> Fn:
        f = self.compile(node.arg)
        ci, neg = node.case_insensitive, node.negated
        esc_node = node.escape
        if isinstance(node.pattern, a.Const) and (esc_node is None or isinstance(esc_node, a.Const)):
            pat = node.pattern.value
            esc = "\\" if esc_node is None else esc_node.value
            if pat is None or esc is None:
                return lambda r: None
            match = like_matcher(pat, escape_char(esc), ci)

            def like_const(r: Row) -> bool | None:
                v = f(r)
                if v is None:
                    return None
                return match(v) != neg

            return like_const
        fp = self.compile(node.pattern)
        fe = self.compile(esc_node) if esc_node is not None else (lambda r: "\\")

        def like(r: Row) -> bool | None:
            v, p, e = f(r), fp(r), fe(r)
            if v is None or p is None or e is None:
                return None
            return like_matcher(p, escape_char(e), ci)(v) != neg

        return like

    def _arrayctor(self, node: a.ArrayCtor) -> Fn:
        fs = [self.compile(i) for i in node.items]
        nested = any(isinstance(i, a.ArrayCtor) for i in node.items) or (
            bool(node.items) and all(_type_of(i).endswith("[]") for i in node.items)
        )

        def arr(r: Row) -> tuple[Any, ...]:
            vals = tuple(f(r) for f in fs)
            return check_dimensions(vals) if nested else vals

        return arr

    def _subscript(self, node: a.Subscript) -> Fn:
        f = self.compile(node.arg)
        lows = [None if x is None else self.compile(x) for x in node.lowers]
        ups = [None if x is None else self.compile(x) for x in node.uppers]
        is_slice = node.is_slice

        def sub(r: Row) -> Any:
            v = f(r)
            if v is None:
                return None
            lo_vals: list[int | None] = [None if g is None else g(r) for g in lows]
            up_vals: list[int | None] = [None if g is None else g(r) for g in ups]
            if not is_slice:
                idx = [x for x in up_vals if x is not None]
                return None if len(idx) != len(up_vals) else fetch(v, idx)
            for g, x in zip(lows + ups, lo_vals + up_vals, strict=True):
                if g is not None and x is None:
                    return None
            return slice_array(v, lo_vals, up_vals)

        return sub


def _type_of(node: a.Node) -> str:
    return node.type


def _text_valued(col: a.Col) -> bool:
    """A column whose Postgres text output is its value (no parsing)."""
    return col.type in ("text", "varchar", "name") or col.type.startswith("other:")


def _strict_call(impl: Callable[..., Any], args: list[Fn]) -> Fn:
    """A call returning NULL when an argument is NULL (after evaluating every argument, as Postgres)."""
    if len(args) == 1:
        (f0,) = args

        def call1(r: Row) -> Any:
            v = f0(r)
            return None if v is None else impl(v)

        return call1
    if len(args) == 2:
        f0, f1 = args

        def call2(r: Row) -> Any:
            x = f0(r)
            y = f1(r)  # strict functions evaluate every argument before the NULL check
            return None if x is None or y is None else impl(x, y)

        return call2

    def calln(r: Row) -> Any:
        vals = [f(r) for f in args]
        return None if any(v is None for v in vals) else impl(*vals)

    return calln
