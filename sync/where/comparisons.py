"""Comparison semantics of the WHERE evaluator: the Python comparisons that agree with Postgres' ordering.

Why this module exists: Python's own ordering differs from Postgres' for floats and numerics (NaN equals
NaN and sorts above everything), intervals (compared by their normalised span) and arrays of those; the
evaluator, operator resolution, functions and routing all need the same keys, so they live here once.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sync.where import numeric as nm
from sync.where import temporal as tm
from sync.where.casts import ORDERED
from sync.where.typenames import FLOAT_TYPES, elem, is_array

__all__ = ["COMPARISONS", "cmp_key", "comparable", "comparison_impl"]

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


def comparison_impl(op: str, t: str) -> Callable[..., Any]:
    py = _PY_CMP[op]
    if t in FLOAT_TYPES or t == "numeric":
        return _nan_aware(op, t)
    key = cmp_key(t)
    if key is None:
        return py
    k = key
    return lambda a, b: py(k(a), k(b))


def _nan_aware(op: str, t: str) -> Callable[..., Any]:
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


def comparable(op: str, t: str) -> bool:
    """Whether Postgres has comparison ``op`` on type ``t`` (equality only for arrays and enums)."""
    if t in ORDERED:
        return True
    return op in ("=", "<>") and (is_array(t) or t.startswith("enum:"))
