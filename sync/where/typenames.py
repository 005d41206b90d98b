"""Type names of the WHERE language, their families and the numeric limits that go with them.

Why this module exists: nearly every part of the language (type resolution, casts, operators, functions,
text input and output, SQL generation) asks the same questions of a type name (is it an array, which
integer range, which float width) and needs the same precision context; they live here, below all of
those, so that none of them has to import another just for a constant.

Types are names: the ``typname`` of a built-in (``int4``, ``timestamptz``...), ``name[]`` for arrays,
``enum:<schema>.<name>`` for enums and ``other:<typname>`` for types only usable as opaque text.
"""

from __future__ import annotations

import decimal
import math
import struct

from sync.where.errors import WhereEvalError

__all__ = [
    "FLOAT_NAMES",
    "FLOAT_TYPES",
    "INT_NAMES",
    "INT_RANGES",
    "INT_TYPES",
    "NUMERIC_CTX",
    "NUMERIC_TYPES",
    "TEXT_TYPES",
    "check_int",
    "elem",
    "is_array",
    "to_f4",
]

NUMERIC_CTX = decimal.Context(prec=100_000, Emax=999_999, Emin=-999_999, traps=[decimal.InvalidOperation])

INT_RANGES = {"int2": (-(2**15), 2**15 - 1), "int4": (-(2**31), 2**31 - 1), "int8": (-(2**63), 2**63 - 1)}
INT_NAMES = {"int2": "smallint", "int4": "integer", "int8": "bigint"}
FLOAT_NAMES = {"float4": "real", "float8": "double precision"}
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name"})
INT_TYPES = frozenset(INT_RANGES)
FLOAT_TYPES = frozenset(FLOAT_NAMES)
NUMERIC_TYPES = INT_TYPES | FLOAT_TYPES | {"numeric"}
_FLT_MAX = 3.4028234663852886e38


def is_array(t: str) -> bool:
    return t.endswith("[]")


def elem(t: str) -> str:
    return t[:-2]


def check_int(v: int, t: str) -> int:
    lo, hi = INT_RANGES[t]
    if v < lo or v > hi:
        raise WhereEvalError(f"{INT_NAMES[t]} out of range")
    return v


def to_f4(v: float) -> float:
    """Round a double to the nearest float4 (Postgres computes float4 arithmetic in single precision)."""
    if math.isnan(v) or math.isinf(v):
        return v
    if abs(v) > _FLT_MAX:
        # round-to-nearest may still land on FLT_MAX; struct refuses anything beyond
        try:
            return float(struct.unpack("f", struct.pack("f", v))[0])
        except OverflowError:
            return math.copysign(math.inf, v)
    return float(struct.unpack("f", struct.pack("f", v))[0])
