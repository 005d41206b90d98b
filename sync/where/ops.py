"""Operators and functions of the WHERE language: signature resolution and Python implementations.

``binary(op, left_type, right_type)`` returns the operand types (what each side is implicitly cast to),
the result type and a two-argument implementation working on non-NULL values, or None when Postgres has
no such operator.  Applied to its own operand types it returns the same answer, so the evaluator can look
an implementation up from a node's ``argtypes``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

from sync.where import intervals as ivl
from sync.where import numeric as nm
from sync.where import temporal as tm
from sync.where.casts import ORDERED, canonical, common_type, numeric_common
from sync.where.errors import WhereEvalError
from sync.where.values import FLOAT_TYPES, INT_TYPES, NUMERIC_TYPES, TEXT_TYPES, elem, formatter, is_array

Impl = Callable[..., Any]


class Resolved(NamedTuple):
    argtypes: tuple[str, ...]
    result: str
    impl: Impl
    strict: bool = True  # NULL in, NULL out (array concatenation operators are not strict)


COMPARISONS = ("=", "<>", "<", ">", "<=", ">=")
_PY_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def cmp_key(t: str) -> Callable[[Any], Any] | None:
    """A key making Python comparison agree with Postgres for ``t`` (None: values compare as they are)."""
    if t in FLOAT_TYPES:
        return nm.float_cmp_key
    if t == "numeric":
        return nm.num_cmp_key
    if t == "interval":
        return tm.interval_key
    if is_array(t):
        inner = cmp_key(elem(t))
        if inner is None:
            return None
        fn = inner

        def key(v: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(key(x) if isinstance(x, tuple) else (None if x is None else fn(x)) for x in v)

        return key
    return None


def comparison_impl(op: str, t: str) -> Impl:
    py = _PY_CMP[op]
    if t in FLOAT_TYPES or t == "numeric":
        return _nan_aware(op, t)
    key = cmp_key(t)
    if key is None:
        return py
    k = key
    return lambda a, b: py(k(a), k(b))


def _nan_aware(op: str, t: str) -> Impl:
    """Comparisons on floats/numerics: plain Python unless a NaN is involved (NaN = NaN, NaN > all)."""
    py = _PY_CMP[op]
    key = nm.float_cmp_key if t in FLOAT_TYPES else nm.num_cmp_key
    is_nan: Callable[[Any], bool] = math.isnan if t in FLOAT_TYPES else Decimal.is_nan

    def slow(a: Any, b: Any) -> bool:
        return py(key(a), key(b))

    if op == "=":
        return lambda a, b: a == b or (is_nan(a) and is_nan(b))
    if op == "<>":
        return lambda a, b: a != b and not (is_nan(a) and is_nan(b))

    def ordered(a: Any, b: Any) -> bool:
        if is_nan(a) or is_nan(b):
            return slow(a, b)
        return py(a, b)

    return ordered


def _comparable(op: str, t: str) -> bool:
    if t in ORDERED:
        return True
    return op in ("=", "<>") and (is_array(t) or t.startswith("enum:"))


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


def _array_dims(v: tuple[Any, ...]) -> int:
    n = 0
    while isinstance(v, tuple):
        n += 1
        if not v:
            break
        v = v[0]
    return n


def array_cat(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    if not a:
        return b
    if not b:
        return a
    da, db = _array_dims(a), _array_dims(b)
    if da == db:
        if da > 1 and _shape(a)[1:] != _shape(b)[1:]:
            raise WhereEvalError("cannot concatenate incompatible arrays")
        return a + b
    if da == db + 1:
        if _shape(a)[1:] != _shape(b):
            raise WhereEvalError("cannot concatenate incompatible arrays")
        return (*a, b)
    if db == da + 1:
        if _shape(b)[1:] != _shape(a):
            raise WhereEvalError("cannot concatenate incompatible arrays")
        return (a, *b)
    raise WhereEvalError("cannot concatenate incompatible arrays")


def _shape(v: Any) -> tuple[int, ...]:
    out = []
    while isinstance(v, tuple) and v:
        out.append(len(v))
        v = v[0]
    return tuple(out)


def _flat(v: tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    for x in v:
        if isinstance(x, tuple):
            out.extend(_flat(x))
        else:
            out.append(x)
    return out


def array_append(a: tuple[Any, ...] | None, x: Any) -> tuple[Any, ...]:
    if a is None:
        return (x,)
    if a and _array_dims(a) > 1:
        raise WhereEvalError("argument must be empty or one-dimensional array")
    return (*a, x)


def array_prepend(x: Any, a: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if a is None:
        return (x,)
    if a and _array_dims(a) > 1:
        raise WhereEvalError("argument must be empty or one-dimensional array")
    return (x, *a)


def _contains(t: str) -> Callable[[tuple[Any, ...], tuple[Any, ...]], bool]:
    key = cmp_key(elem(t)) or (lambda v: v)

    def contains(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        have = {key(x) for x in _flat(a) if x is not None}
        return all(x is not None and key(x) in have for x in _flat(b))

    return contains


def _overlaps(t: str) -> Callable[[tuple[Any, ...], tuple[Any, ...]], bool]:
    key = cmp_key(elem(t)) or (lambda v: v)

    def overlaps(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        have = {key(x) for x in _flat(a) if x is not None}
        return any(x is not None and key(x) in have for x in _flat(b))

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
        if c is None or not _comparable(op, c):
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
