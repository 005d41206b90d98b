"""Integer, float and numeric arithmetic with Postgres' overflow, rounding, NaN and scale rules."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sync.where.errors import WhereEvalError
from sync.where.typenames import INT_NAMES, INT_RANGES, NUMERIC_CTX, to_f4

NAN = Decimal("NaN")
INF = Decimal("Infinity")
NINF = Decimal("-Infinity")
_FLT_MAX = 3.4028234663852886e38


def _zero() -> WhereEvalError:
    return WhereEvalError("division by zero")


def _tdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


# ---- integers ----------------------------------------------------------------------------------------


def int_ops(t: str) -> dict[str, Callable[..., Any]]:
    lo, hi = INT_RANGES[t]
    msg = f"{INT_NAMES[t]} out of range"

    def chk(v: int) -> int:
        if v < lo or v > hi:
            raise WhereEvalError(msg)
        return v

    def div(a: int, b: int) -> int:
        if b == 0:
            raise _zero()
        return chk(_tdiv(a, b))

    def mod(a: int, b: int) -> int:
        if b == 0:
            raise _zero()
        return a - _tdiv(a, b) * b

    return {
        "+": lambda a, b: chk(a + b),
        "-": lambda a, b: chk(a - b),
        "*": lambda a, b: chk(a * b),
        "/": div,
        "%": mod,
        "&": lambda a, b: a & b,
        "|": lambda a, b: a | b,
        "#": lambda a, b: a ^ b,
        "neg": lambda a: chk(-a),
        "abs": lambda a: chk(abs(a)),
        "~": lambda a: ~a,
    }


# ---- floats ------------------------------------------------------------------------------------------


def float_ops(t: str) -> dict[str, Callable[..., Any]]:
    single = t == "float4"

    def fin(v: float, inputs_inf: bool) -> float:
        if single:
            v = to_f4(v)
        if math.isinf(v) and not inputs_inf:
            raise WhereEvalError("value out of range: overflow")
        return v

    def add(a: float, b: float) -> float:
        return fin(a + b, math.isinf(a) or math.isinf(b))

    def sub(a: float, b: float) -> float:
        return fin(a - b, math.isinf(a) or math.isinf(b))

    def mul(a: float, b: float) -> float:
        r = fin(a * b, math.isinf(a) or math.isinf(b))
        if r == 0.0 and a != 0.0 and b != 0.0:
            raise WhereEvalError("value out of range: underflow")
        return r

    def div(a: float, b: float) -> float:
        if b == 0.0 and not math.isnan(a):
            raise _zero()
        if b == 0.0:
            return math.nan
        r = fin(a / b, math.isinf(a))
        if r == 0.0 and a != 0.0 and not math.isinf(b):
            raise WhereEvalError("value out of range: underflow")
        return r

    return {"+": add, "-": sub, "*": mul, "/": div, "neg": lambda a: -a, "abs": abs}


def float_pow(a: float, b: float) -> float:
    if math.isnan(a):
        return 1.0 if b == 0.0 else math.nan
    if math.isnan(b):
        return 1.0 if a == 1.0 else math.nan
    if a == 0.0 and b < 0.0:
        raise WhereEvalError("zero raised to a negative power is undefined")
    if a < 0.0 and not math.isinf(b) and b != math.floor(b) and not math.isinf(a):
        raise WhereEvalError("a negative number raised to a non-integer power yields a complex result")
    try:
        r = math.pow(a, b)
    except OverflowError:
        raise WhereEvalError("value out of range: overflow") from None
    except ValueError:
        raise WhereEvalError("value out of range: overflow") from None
    if math.isinf(r) and not (math.isinf(a) or math.isinf(b)):
        raise WhereEvalError("value out of range: overflow")
    if r == 0.0 and a != 0.0 and not math.isinf(b):
        raise WhereEvalError("value out of range: underflow")
    return r


def float_sqrt(a: float) -> float:
    if a < 0:
        raise WhereEvalError("cannot take square root of a negative number")
    return math.sqrt(a)


# ---- numeric -----------------------------------------------------------------------------------------


def _dscale(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def _weight_first(d: Decimal) -> tuple[int, int]:
    if d.is_zero():
        return 0, 0
    weight = d.adjusted() // 4
    first = int(abs(d).scaleb(-4 * weight, context=NUMERIC_CTX)) % 10000
    return weight, first


def _round_div(a: Decimal, b: Decimal, rscale: int) -> Decimal:
    """a / b rounded half away from zero to ``rscale`` digits, exactly (integer arithmetic)."""
    sa, da, ea = a.as_tuple()
    sb, db, eb = b.as_tuple()
    ma = int("".join(map(str, da)) or "0")
    mb = int("".join(map(str, db)) or "0")
    shift = int(ea) - int(eb) + rscale
    num, den = (ma * 10**shift, mb) if shift >= 0 else (ma, mb * 10**-shift)
    q, r = divmod(num, den)
    if 2 * r >= den:
        q += 1
    neg = (sa != sb) and q != 0
    return Decimal((1 if neg else 0, tuple(int(c) for c in str(q)), -rscale))


def num_add(a: Decimal, b: Decimal) -> Decimal:
    if a.is_nan() or b.is_nan():
        return NAN
    if a.is_infinite() and b.is_infinite() and a != b:
        return NAN
    return _norm(NUMERIC_CTX.add(a, b))


def num_sub(a: Decimal, b: Decimal) -> Decimal:
    if a.is_nan() or b.is_nan():
        return NAN
    if a.is_infinite() and b.is_infinite() and a == b:
        return NAN
    return _norm(NUMERIC_CTX.subtract(a, b))


def num_mul(a: Decimal, b: Decimal) -> Decimal:
    if a.is_nan() or b.is_nan():
        return NAN
    if (a.is_infinite() and b.is_zero()) or (b.is_infinite() and a.is_zero()):
        return NAN
    return _norm(NUMERIC_CTX.multiply(a, b))


def num_div(a: Decimal, b: Decimal) -> Decimal:
    if a.is_nan() or b.is_nan():
        return NAN
    if a.is_infinite():
        if b.is_infinite():
            return NAN
        if b.is_zero():
            raise _zero()
        return INF if (a > 0) == (b > 0) else NINF
    if b.is_infinite():
        return Decimal(0)
    if b.is_zero():
        raise _zero()
    w1, f1 = _weight_first(a)
    w2, f2 = _weight_first(b)
    qweight = w1 - w2 - (1 if f1 <= f2 else 0)
    rscale = max(16 - qweight * 4, _dscale(a), _dscale(b), 0)
    return _norm(_round_div(a, b, min(rscale, 1000)))


def num_mod(a: Decimal, b: Decimal) -> Decimal:
    if a.is_nan() or b.is_nan():
        return NAN
    if b.is_zero():
        raise _zero()
    if a.is_infinite():
        return NAN
    if b.is_infinite():
        return a
    return _norm(NUMERIC_CTX.remainder(a, b))


def num_neg(a: Decimal) -> Decimal:
    return a if a.is_nan() else _norm(a.copy_negate())


def num_abs(a: Decimal) -> Decimal:
    return a.copy_abs()


def _norm(d: Decimal) -> Decimal:
    return d.copy_abs() if d.is_zero() else d


def num_cmp_key(d: Decimal) -> tuple[int, Decimal]:
    """Postgres orders NaN above +Infinity and treats NaN = NaN."""
    return (1, Decimal(0)) if d.is_nan() else (0, d)


def float_cmp_key(v: float) -> tuple[bool, float]:
    return (True, 0.0) if math.isnan(v) else (False, v)


# ---- conversions -------------------------------------------------------------------------------------


def numeric_to_int(d: Decimal, t: str) -> int:
    if d.is_nan():
        raise WhereEvalError(f"cannot convert NaN to {INT_NAMES[t]}")
    if d.is_infinite():
        raise WhereEvalError(f"cannot convert infinity to {INT_NAMES[t]}")
    v = int(d.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=NUMERIC_CTX))
    lo, hi = INT_RANGES[t]
    if v < lo or v > hi:
        raise WhereEvalError(f"{INT_NAMES[t]} out of range")
    return v


def float_to_int(v: float, t: str) -> int:
    if math.isnan(v) or math.isinf(v):
        raise WhereEvalError(f"{INT_NAMES[t]} out of range")
    r = round(v)
    lo, hi = INT_RANGES[t]
    if r < lo or r > hi:
        raise WhereEvalError(f"{INT_NAMES[t]} out of range")
    return r


def float_to_numeric(v: float, single: bool) -> Decimal:
    if math.isnan(v):
        return NAN
    if math.isinf(v):
        return INF if v > 0 else NINF
    d = Decimal(f"{v:.{6 if single else 15}g}")
    if d.as_tuple().exponent > 0:  # type: ignore[operator]
        d = d.quantize(Decimal(1), context=NUMERIC_CTX)
    return _norm(d)


def numeric_to_float(d: Decimal, single: bool) -> float:
    if d.is_nan():
        return math.nan
    if d.is_infinite():
        return math.inf if d > 0 else -math.inf
    v = float(d)
    if single:
        v = to_f4(v)
    if math.isinf(v) or (v == 0.0 and not d.is_zero()):
        raise WhereEvalError(f'"{d}" is out of range for type {"real" if single else "double precision"}')
    return v


def float8_to_float4(v: float) -> float:
    r = to_f4(v)
    if math.isinf(r) and not math.isinf(v):
        raise WhereEvalError("value out of range: overflow")
    if r == 0.0 and v != 0.0:
        raise WhereEvalError("value out of range: underflow")
    return r
