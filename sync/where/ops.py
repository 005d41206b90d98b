"""Operators and functions of the WHERE language: signature resolution and Python implementations.

``binary(op, left_type, right_type)`` returns the operand types (what each side is implicitly cast to),
the result type and a two-argument implementation working on non-NULL values, or None when Postgres has
no such operator.  Applied to its own operand types it returns the same answer, so the evaluator can look
an implementation up from a node's ``argtypes``.  Comparison semantics are in
:mod:`sync.where.comparisons` and array concatenation in :mod:`sync.where.arrays` (their public names are
re-exported here); this module resolves signatures and holds the arithmetic implementations.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

from sync.where import intervals as ivl
from sync.where import numeric as nm
from sync.where import temporal as tm
from sync.where.arrays import array_append, array_cat, array_prepend, flatten
from sync.where.casts import canonical, common_type, numeric_common
from sync.where.comparisons import COMPARISONS, cmp_key, comparable, comparison_impl
from sync.where.errors import WhereEvalError
from sync.where.formatting import formatter
from sync.where.typenames import FLOAT_TYPES, INT_TYPES, NUMERIC_TYPES, TEXT_TYPES, elem, is_array

__all__ = [
    "COMPARISONS",
    "Impl",
    "Resolved",
    "array_append",
    "array_cat",
    "array_prepend",
    "binary",
    "cmp_key",
    "comparison_impl",
    "unary",
]

Impl = Callable[..., Any]


class Resolved(NamedTuple):
    argtypes: tuple[str, ...]
    result: str
    impl: Impl
    strict: bool = True  # NULL in, NULL out (array concatenation operators are not strict)


# ---- arithmetic --------------------------------------------------------------------------------------


def _numeric_impls(t: str) -> dict[str, Impl]:
    if t in INT_TYPES:
        return nm.int_ops(t)
    if t in FLOAT_TYPES:
        return nm.float_ops(t)
    return {
        "+": nm.num_add,
        "-": nm.num_sub,
        "*": nm.num_mul,
        "/": nm.num_div,
        "%": nm.num_mod,
        "neg": nm.num_neg,
        "abs": nm.num_abs,
    }


def _date_pl(d: int, n: int) -> int:
    if d in (tm.DATE_NOBEGIN, tm.DATE_NOEND):
        return d
    return tm.check_date(d + n)


def _date_mi_date(a: int, b: int) -> int:
    if a in (tm.DATE_NOBEGIN, tm.DATE_NOEND) or b in (tm.DATE_NOBEGIN, tm.DATE_NOEND):
        raise WhereEvalError("cannot subtract infinite dates")
    return a - b


def _neg_iv(iv: tm.Interval) -> tm.Interval:
    return tm.check_interval(tm.Interval(-iv.months, -iv.days, -iv.micros))


def _iv_add(a: tm.Interval, b: tm.Interval) -> tm.Interval:
    return tm.check_interval(tm.Interval(a.months + b.months, a.days + b.days, a.micros + b.micros))


def _iv_div(a: tm.Interval, f: float) -> tm.Interval:
    if f == 0.0:
        raise WhereEvalError("division by zero")
    return ivl.interval_mul(a, 1.0 / f)


def _time_pl(t: int, iv: tm.Interval) -> int:
    return (t + iv.micros) % tm.USECS_PER_DAY


def _time_mi(t: int, iv: tm.Interval) -> int:
    return _time_pl(t, _neg_iv(iv))


def _float_mul_iv(f: float, iv: tm.Interval) -> tm.Interval:
    return ivl.interval_mul(iv, f)


def _iv_pl_ts(iv: tm.Interval, t: int) -> int:
    return tm.ts_plus_interval(t, iv)


def _temporal(op: str, a: str, b: str) -> Resolved | None:
    ints = INT_TYPES
    table: dict[tuple[str, str, str], Resolved] = {
        ("+", "date", "int4"): Resolved(("date", "int4"), "date", _date_pl),
        ("+", "int4", "date"): Resolved(("int4", "date"), "date", lambda n, d: _date_pl(d, n)),
        ("-", "date", "int4"): Resolved(("date", "int4"), "date", lambda d, n: _date_pl(d, -n)),
        ("-", "date", "date"): Resolved(("date", "date"), "int4", _date_mi_date),
        ("+", "date", "time"): Resolved(("date", "time"), "timestamp", _date_time),
        ("+", "time", "date"): Resolved(("time", "date"), "timestamp", lambda t, d: _date_time(d, t)),
        ("+", "interval", "interval"): Resolved(("interval", "interval"), "interval", _iv_add),
        ("-", "interval", "interval"): Resolved(
            ("interval", "interval"), "interval", lambda x, y: _iv_add(x, _neg_iv(y))
        ),
        ("+", "time", "interval"): Resolved(("time", "interval"), "time", _time_pl),
        ("+", "interval", "time"): Resolved(("interval", "time"), "time", lambda iv, t: _time_pl(t, iv)),
        ("-", "time", "interval"): Resolved(("time", "interval"), "time", _time_mi),
        ("-", "time", "time"): Resolved(("time", "time"), "interval", lambda x, y: tm.Interval(0, 0, x - y)),
        ("*", "interval", "float8"): Resolved(("interval", "float8"), "interval", ivl.interval_mul),
        ("*", "float8", "interval"): Resolved(("float8", "interval"), "interval", _float_mul_iv),
        ("/", "interval", "float8"): Resolved(("interval", "float8"), "interval", _iv_div),
    }  # fmt: skip
    a2 = "int4" if a in ints and b == "date" else a
    b2 = "int4" if b in ints and a == "date" else b
    if op in {"*", "/"}:
        if a == "interval" and b in NUMERIC_TYPES:
            b2 = "float8"
        if b == "interval" and a in NUMERIC_TYPES and op == "*":
            a2 = "float8"
    found = table.get((op, a2, b2))
    if found is not None:
        return found
    for ts in ("timestamp", "timestamptz"):
        promote = {"date", ts} if ts == "timestamp" else {"date", "timestamp", "timestamptz"}
        if (
            op in {"+", "-"}
            and a in promote
            and b == "interval"
            and (a == ts or (ts == "timestamp" and a == "date"))
        ):
            return Resolved((ts, "interval"), ts, _ts_pl_iv(op == "-", ts))
        if op == "+" and a == "interval" and (b == ts or (ts == "timestamp" and b == "date")):
            return Resolved(("interval", ts), ts, _iv_pl_ts)
    if op == "-" and a in ("date", "timestamp", "timestamptz") and b in ("date", "timestamp", "timestamptz"):
        c = common_type(a, b)
        if c is not None and c != "date":
            return Resolved((c, c), "interval", tm.ts_minus_ts)
    return None


def _date_time(d: int, t: int) -> int:
    if d in (tm.DATE_NOBEGIN, tm.DATE_NOEND):
        return tm.TS_NOBEGIN if d == tm.DATE_NOBEGIN else tm.TS_NOEND
    return tm.check_ts(d * tm.USECS_PER_DAY + t)


def _ts_pl_iv(minus: bool, ts: str) -> Impl:
    what = "timestamp"
    if minus:
        return lambda t, iv: tm.ts_plus_interval(t, _neg_iv(iv), what)
    return lambda t, iv: tm.ts_plus_interval(t, iv, what)


# ---- text and arrays ---------------------------------------------------------------------------------


def _contains(t: str) -> Callable[[tuple[Any, ...], tuple[Any, ...]], bool]:
    key = cmp_key(elem(t)) or (lambda v: v)

    def contains(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        have = {key(x) for x in flatten(a) if x is not None}
        return all(x is not None and key(x) in have for x in flatten(b))

    return contains


def _overlaps(t: str) -> Callable[[tuple[Any, ...], tuple[Any, ...]], bool]:
    key = cmp_key(elem(t)) or (lambda v: v)

    def overlaps(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        have = {key(x) for x in flatten(a) if x is not None}
        return any(x is not None and key(x) in have for x in flatten(b))

    return overlaps


def _concat(a: str, b: str) -> Resolved | None:
    ca, cb = canonical(a), canonical(b)
    if is_array(ca) or is_array(cb):
        if ca == "unknown":
            ca = cb
        if cb == "unknown":
            cb = ca
        if is_array(ca) and is_array(cb):
            c = common_type(ca, cb)
            return Resolved((c, c), c, array_cat, False) if c is not None else None
        if is_array(ca):
            c = common_type(elem(ca), cb)
            if c is None:
                return None
            return Resolved((c + "[]", c), c + "[]", array_append, False)
        c = common_type(ca, elem(cb))
        if c is None:
            return None
        return Resolved((c, c + "[]"), c + "[]", array_prepend, False)
    if ca in TEXT_TYPES | {"unknown"} and cb in TEXT_TYPES | {"unknown"}:
        return Resolved(("text", "text"), "text", lambda x, y: x + y)
    if ca in TEXT_TYPES | {"unknown"}:
        fb = formatter(b)
        return Resolved(("text", b), "text", lambda x, y: x + fb(y))
    if cb in TEXT_TYPES | {"unknown"}:
        fa = formatter(a)
        return Resolved((a, "text"), "text", lambda x, y: fa(x) + y)
    return None


def binary(op: str, a: str, b: str) -> Resolved | None:
    """Resolve ``a op b`` (``a``/``b`` may be ``unknown`` for untyped literals)."""
    if op in COMPARISONS:
        c = common_type(a, b)
        if c is None or not comparable(op, c):
            return None
        return Resolved((c, c), "bool", comparison_impl(op, c))
    if op == "||":
        return _concat(a, b)
    ca, cb = canonical(a), canonical(b)
    if ca == "unknown":
        ca = cb if cb != "unknown" else "text"
    if cb == "unknown":
        cb = ca
    if op in ("@>", "<@", "&&"):
        c = common_type(ca, cb)
        if c is None or not is_array(c):
            return None
        fn = _overlaps(c) if op == "&&" else _contains(c)
        impl = fn if op != "<@" else (lambda x, y: fn(y, x))
        return Resolved((c, c), "bool", impl)
    if ca in NUMERIC_TYPES and cb in NUMERIC_TYPES:
        c = numeric_common(ca, cb)
        if op == "^":
            if c == "numeric":
                return None
            return Resolved(("float8", "float8"), "float8", nm.float_pow)
        if op in ("&", "|", "#"):
            return Resolved((c, c), c, nm.int_ops(c)[op]) if c in INT_TYPES else None
        impls = _numeric_impls(c)
        if op in ("+", "-", "*", "/") or (op == "%" and c not in FLOAT_TYPES):
            return Resolved((c, c), c, impls[op])
        return None
    if op in ("+", "-", "*", "/"):
        return _temporal(op, ca, cb)
    return None


def unary(op: str, t: str) -> Resolved | None:
    c = canonical(t)
    if c == "unknown":
        c = "float8" if op == "|/" else "text"
    if op == "-" and c in NUMERIC_TYPES:
        return Resolved((c,), c, _numeric_impls(c)["neg"])
    if op == "-" and c == "interval":
        return Resolved((c,), c, _neg_iv)
    if op == "|/" and c in NUMERIC_TYPES:
        return Resolved(("float8",), "float8", nm.float_sqrt)
    if op == "~" and c in INT_TYPES:
        return Resolved((c,), c, operator.invert)
    if op == "abs" and c in NUMERIC_TYPES:
        return Resolved((c,), c, _numeric_impls(c)["abs"])
    return None
