"""Postgres text output for the values the WHERE language evaluates.

Why this module exists: ``formatter(type)`` turns a value back into exactly the text Postgres prints with
the engine's display settings (shortest round-tripping floats in Postgres' layout, numerics without
exponent, quoted array elements...); casts to text and SQL generation for bound parameters both depend on
it being byte-for-byte Postgres', which is a concern of its own, separate from parsing input
(:mod:`sync.where.values`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sync.where import temporal as tm
from sync.where.typenames import INT_TYPES, elem, is_array, to_f4

__all__ = ["Formatter", "format_array", "format_float", "format_numeric", "formatter"]

Formatter = Callable[[Any], str]


def _shortest_digits(v: float, single: bool) -> tuple[str, int]:
    """Shortest round-tripping decimal digits and the decimal exponent of the first digit."""
    if single:
        for p in range(1, 10):
            s = f"{v:.{p - 1}e}"
            if to_f4(float(s)) == v:
                break
    else:
        s = repr(v)
    d = Decimal(s).normalize()
    _, digits, exp = d.as_tuple()
    ds = "".join(map(str, digits))
    return ds, int(exp) + len(ds) - 1


def format_float(v: float, single: bool = False) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0.0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    sign = "-" if v < 0 else ""
    digits, exp = _shortest_digits(abs(v), single)
    if -4 <= exp < (6 if single else 15):
        if exp < 0:
            return f"{sign}0.{'0' * (-exp - 1)}{digits}"
        if len(digits) <= exp + 1:
            return sign + digits + "0" * (exp + 1 - len(digits))
        return f"{sign}{digits[: exp + 1]}.{digits[exp + 1 :]}"
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def format_numeric(d: Decimal) -> str:
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "Infinity" if d > 0 else "-Infinity"
    if d.is_zero():
        d = d.copy_abs()
    return format(d, "f")


_NEEDS_QUOTE = re.compile(r'[{},"\\ \t\n\r\f\v]')


def _quote_elem(s: str) -> str:
    if s == "" or s.upper() == "NULL" or _NEEDS_QUOTE.search(s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def format_array(value: tuple[Any, ...], fmt_elem: Formatter) -> str:
    parts = []
    for v in value:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, tuple):
            parts.append(format_array(v, fmt_elem))
        else:
            parts.append(_quote_elem(fmt_elem(v)))
    return "{" + ",".join(parts) + "}"


def formatter(t: str) -> Formatter:
    """The output function for type ``t`` (Postgres text output with the engine's display settings)."""
    if is_array(t):
        fe = formatter(elem(t))
        return lambda v: format_array(v, fe)
    if t in INT_TYPES:
        return str
    if t == "float4":
        return lambda v: format_float(v, True)
    if t == "float8":
        return format_float
    if t == "numeric":
        return format_numeric
    if t == "bool":
        return lambda v: "true" if v else "false"
    simple: dict[str, Formatter] = {
        "date": tm.format_date,
        "time": tm.format_time,
        "timestamp": lambda v: tm.format_timestamp(v, False),
        "timestamptz": lambda v: tm.format_timestamp(v, True),
        "interval": tm.format_interval,
    }
    return simple.get(t, str)
