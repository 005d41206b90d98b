"""Type categories, implicit-cast resolution and cast implementations, following Postgres' rules.

Postgres resolves mixed-type operators by implicit casts (``int2 -> int4 -> int8 -> numeric -> float4 ->
float8``, text-like types to ``text``, ``date -> timestamp -> timestamptz``) and its operator-selection
heuristics; :func:`common_type` reproduces the outcome for the operators we support (e.g. ``int4 = numeric``
compares as numeric, anything with a float compares as ``float8`` unless both sides are ``float4``).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sync.where import numeric as nm
from sync.where import temporal as tm
from sync.where.errors import WhereEvalError
from sync.where.formatting import formatter
from sync.where.typenames import (
    FLOAT_TYPES,
    INT_RANGES,
    INT_TYPES,
    NUMERIC_TYPES,
    TEXT_TYPES,
    check_int,
    elem,
    is_array,
    to_f4,
)
from sync.where.values import parser

CastFn = Callable[[Any], Any]

_INT_RANK = {"int2": 0, "int4": 1, "int8": 2}
_TEMPORAL_RANK = {"date": 0, "timestamp": 1, "timestamptz": 2}
ORDERED = frozenset(
    NUMERIC_TYPES | TEXT_TYPES | {"uuid", "date", "time", "timestamp", "timestamptz", "interval", "bool"}
)


def canonical(t: str) -> str:
    """The type an operand of ``t`` is compared/combined as (varchar and name behave as text)."""
    return "text" if t in ("varchar", "name") else t


def numeric_common(a: str, b: str) -> str:
    if a in INT_TYPES and b in INT_TYPES:
        return a if _INT_RANK[a] >= _INT_RANK[b] else b
    if a in FLOAT_TYPES or b in FLOAT_TYPES:
        return "float4" if a == b == "float4" else "float8"
    return "numeric"


def common_type(a: str, b: str) -> str | None:
    """The type both operands are implicitly cast to for comparison, or None if incompatible."""
    a, b = canonical(a), canonical(b)
    if a == "unknown":
        a = b if b != "unknown" else "text"
    if b == "unknown":
        b = a
    if a == b:
        return a
    if a in NUMERIC_TYPES and b in NUMERIC_TYPES:
        return numeric_common(a, b)
    if a in TEXT_TYPES and b in TEXT_TYPES:
        return "text"
    if a in _TEMPORAL_RANK and b in _TEMPORAL_RANK:
        return a if _TEMPORAL_RANK[a] >= _TEMPORAL_RANK[b] else b
    if is_array(a) and is_array(b):
        inner = common_type(elem(a), elem(b))
        return inner + "[]" if inner is not None else None
    return None


_SELECT_RANK = {"int2": 0, "int4": 1, "int8": 2, "numeric": 3, "float4": 4, "float8": 5}


def common_of(types: list[str]) -> str | None:
    """Postgres' ``select_common_type`` (COALESCE, GREATEST/LEAST, ARRAY[], IN lists): walking the
    inputs, move to a type the current one implicitly casts to.  Unlike operator resolution this
    makes ``numeric`` and ``float4`` meet at ``float4``."""
    known = [canonical(t) for t in types if t != "unknown"]
    if not known:
        return "text"
    out = known[0]
    for t in known[1:]:
        if t == out:
            continue
        if out in _SELECT_RANK and t in _SELECT_RANK:
            out = out if _SELECT_RANK[out] >= _SELECT_RANK[t] else t
        elif is_array(out) and is_array(t):
            inner = common_of([elem(out), elem(t)])
            if inner is None:
                return None
            out = inner + "[]"
        else:
            c = common_type(out, t)
            if c is None:
                return None
            out = c
    return out


def implicitly_castable(src: str, dst: str) -> bool:
    """Whether Postgres casts ``src`` to ``dst`` implicitly (the casts operator arguments may get)."""
    src, dst = canonical(src), canonical(dst)
    if src == dst:
        return True
    if src in _SELECT_RANK and dst in _SELECT_RANK:
        return _SELECT_RANK[src] < _SELECT_RANK[dst]
    if src in TEXT_TYPES and dst in TEXT_TYPES:
        return True
    if src in _TEMPORAL_RANK and dst in _TEMPORAL_RANK:
        return _TEMPORAL_RANK[src] < _TEMPORAL_RANK[dst]
    if is_array(src) and is_array(dst):
        return implicitly_castable(elem(src), elem(dst))
    return False


# ---- implementations ---------------------------------------------------------------------------------


def _date_to_ts(d: int) -> int:
    if d == tm.DATE_NOBEGIN:
        return tm.TS_NOBEGIN
    if d == tm.DATE_NOEND:
        return tm.TS_NOEND
    return tm.check_ts(d * tm.USECS_PER_DAY, "date")


def _ts_to_date(t: int) -> int:
    if t == tm.TS_NOBEGIN:
        return tm.DATE_NOBEGIN
    if t == tm.TS_NOEND:
        return tm.DATE_NOEND
    return t // tm.USECS_PER_DAY


def _ts_to_time(t: int) -> int:
    if t in (tm.TS_NOBEGIN, tm.TS_NOEND):
        raise WhereEvalError("time out of range")
    return t % tm.USECS_PER_DAY


def _numeric_cast(src: str, dst: str) -> CastFn | None:
    if dst in INT_TYPES:
        if src in INT_TYPES:
            return (
                (lambda v: v) if INT_RANGES[src][1] <= INT_RANGES[dst][1] else (lambda v: check_int(v, dst))
            )
        if src in FLOAT_TYPES:
            return lambda v: nm.float_to_int(v, dst)
        return lambda v: nm.numeric_to_int(v, dst)
    if dst == "float8":
        if src in INT_TYPES or src == "float4":
            return float
        return lambda v: nm.numeric_to_float(v, False)
    if dst == "float4":
        if src in INT_TYPES:
            return lambda v: to_f4(float(v))
        if src == "float8":
            return nm.float8_to_float4
        return lambda v: nm.numeric_to_float(v, True)
    # dst == numeric
    if src in INT_TYPES:
        return Decimal
    return lambda v: nm.float_to_numeric(v, src == "float4")


def _truncate(length: int | None, bpchar: bool) -> CastFn | None:
    if length is None:
        return None
    if bpchar:
        return lambda s: s[:length].rstrip(" ")
    return lambda s: s[:length]


def cast_fn(
    src: str, dst: str, length: int | None = None, enums: dict[str, tuple[str, ...]] | None = None
) -> CastFn | None:
    """How to convert a non-NULL value of ``src`` to ``dst``; None if Postgres has no such cast."""
    base = _cast_fn(src, dst, enums)
    trunc = _truncate(length, dst == "bpchar") if dst in ("varchar", "bpchar") else None
    if base is None or trunc is None:
        return base
    return lambda v: trunc(base(v))


def _cast_fn(src: str, dst: str, enums: dict[str, tuple[str, ...]] | None) -> CastFn | None:
    if src == dst or (src in TEXT_TYPES and dst in TEXT_TYPES and dst != "bpchar"):
        return lambda v: v
    if dst in TEXT_TYPES:
        return formatter(src)
    if src in TEXT_TYPES:
        try:
            return parser(dst, enums)
        except KeyError:
            return None
    if src in NUMERIC_TYPES and dst in NUMERIC_TYPES:
        return _numeric_cast(src, dst)
    if is_array(src) and is_array(dst):
        inner = _cast_fn(elem(src), elem(dst), enums)
        if inner is None:
            return None
        fn = inner

        def arr(v: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(arr(x) if isinstance(x, tuple) else (None if x is None else fn(x)) for x in v)

        return arr
    simple: dict[tuple[str, str], CastFn] = {
        ("bool", "int4"): int,
        ("int4", "bool"): bool,
        ("date", "timestamp"): _date_to_ts,
        ("date", "timestamptz"): _date_to_ts,
        ("timestamp", "timestamptz"): lambda v: v,
        ("timestamptz", "timestamp"): lambda v: v,
        ("timestamp", "date"): _ts_to_date,
        ("timestamptz", "date"): _ts_to_date,
        ("timestamp", "time"): _ts_to_time,
        ("timestamptz", "time"): _ts_to_time,
        ("time", "interval"): lambda v: tm.Interval(0, 0, v),
        ("interval", "time"): lambda v: v.micros % tm.USECS_PER_DAY,
    }
    return simple.get((src, dst))
