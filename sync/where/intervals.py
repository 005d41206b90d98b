"""Interval input (Postgres and ISO 8601 forms) and interval arithmetic (``justify_*``, ``* float8``).

Split from :mod:`sync.where.temporal`, which holds the representation (:class:`Interval`) and output.
"""

from __future__ import annotations

import math
import re

from sync.where.errors import WhereEvalError
from sync.where.temporal import (
    DAYS_PER_MONTH,
    PG_SPACE,
    USECS_PER_DAY,
    USECS_PER_HOUR,
    USECS_PER_MIN,
    USECS_PER_SEC,
    Interval,
    _bad,
    _tdiv,
    check_interval,
)

__all__ = ["interval_mul", "justify_days", "justify_interval", "parse_interval"]


_ISO_IV_RE = re.compile(
    r"(-)?P(?:(-?[0-9.]+)Y)?(?:(-?[0-9.]+)M)?(?:(-?[0-9.]+)W)?(?:(-?[0-9.]+)D)?"
    r"(?:T(?:(-?[0-9.]+)H)?(?:(-?[0-9.]+)M)?(?:(-?[0-9.]+)S)?)?",
    re.IGNORECASE,
)
_UNITS = {
    "microsecond": ("us", 1),
    "millisecond": ("us", 1000),
    "second": ("us", USECS_PER_SEC),
    "minute": ("us", USECS_PER_MIN),
    "hour": ("us", USECS_PER_HOUR),
    "day": ("d", 1),
    "week": ("d", 7),
    "month": ("m", 1),
    "year": ("m", 12),
    "decade": ("m", 120),
    "century": ("m", 1200),
    "millennium": ("m", 12000),
}
_ALIASES = {
    "us": "microsecond", "usec": "microsecond", "usecs": "microsecond", "useconds": "microsecond",
    "ms": "millisecond", "msec": "millisecond", "msecs": "millisecond", "mseconds": "millisecond",
    "s": "second", "sec": "second", "secs": "second", "seconds": "second",
    "m": "minute", "min": "minute", "mins": "minute", "minutes": "minute",
    "h": "hour", "hr": "hour", "hrs": "hour", "hours": "hour",
    "d": "day", "days": "day", "w": "week", "weeks": "week",
    "mon": "month", "mons": "month", "months": "month",
    "y": "year", "yr": "year", "yrs": "year", "years": "year",
    "decades": "decade", "centuries": "century", "millennia": "millennium",
}  # fmt: skip
_SP = r"[ \t\n\r\f\v]*"
_IV_TOKEN_RE = re.compile(
    _SP + r"(?:([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(?![0-9:])" + _SP + r"([a-z]+)?"
    r"|([+-]?[0-9]+:[0-9]+(?::[0-9]+(?:\.[0-9]+)?)?)|(ago))",
    re.IGNORECASE,
)


class _IvAcc:
    def __init__(self) -> None:
        self.months = 0.0
        self.days = 0.0
        self.micros = 0.0

    def add(self, value: float, unit: str) -> None:
        kind, scale = _UNITS[unit]
        if kind == "m":
            whole = int(value * scale)
            self.months += whole
            self.days += (value * scale - whole) * DAYS_PER_MONTH
        elif kind == "d":
            whole = int(value * scale)
            self.days += whole
            self.micros += (value * scale - whole) * USECS_PER_DAY
        else:
            self.micros += value * scale

    def result(self) -> Interval:
        whole_days = int(self.days)
        micros = self.micros + (self.days - whole_days) * USECS_PER_DAY
        return Interval(int(self.months), whole_days, round(micros))


def parse_interval(text: str) -> Interval:
    s = text.strip(PG_SPACE)
    iso = _ISO_IV_RE.fullmatch(s)
    if iso is not None and len(s) > 1:
        acc = _IvAcc()
        units = ("year", "month", "week", "day", "hour", "minute", "second")
        for group, unit in zip(range(2, 9), units, strict=True):
            if iso.group(group):
                acc.add(float(iso.group(group)), unit)
        iv = acc.result()
        return Interval(-iv.months, -iv.days, -iv.micros) if iso.group(1) else iv
    acc = _IvAcc()
    pos, ago, seen = 0, False, False
    while pos < len(s):
        m = _IV_TOKEN_RE.match(s, pos)
        if m is None or m.end() == pos:
            raise _bad("interval", text)
        pos = m.end()
        if m.group(4):
            ago = True
        elif m.group(3):
            parts = m.group(3).lstrip("+-").split(":")
            sign = -1 if m.group(3).startswith("-") else 1
            h, mi = int(parts[0]), int(parts[1])
            sec = float(parts[2]) if len(parts) > 2 else 0.0
            acc.micros += sign * ((h * 60 + mi) * 60 * USECS_PER_SEC + sec * USECS_PER_SEC)
            seen = True
        else:
            unit = (m.group(2) or "second").lower()
            unit = _ALIASES.get(unit, unit)
            if unit not in _UNITS:
                raise _bad("interval", text)
            acc.add(float(m.group(1)), unit)
            seen = True
    if not seen:
        raise _bad("interval", text)
    iv = acc.result()
    return Interval(-iv.months, -iv.days, -iv.micros) if ago else iv


def justify_days(iv: Interval) -> Interval:
    months, days, micros = iv
    whole = _tdiv(days, DAYS_PER_MONTH)
    days -= whole * DAYS_PER_MONTH
    months += whole
    if months > 0 and days < 0:
        days += DAYS_PER_MONTH
        months -= 1
    elif months < 0 and days > 0:
        days -= DAYS_PER_MONTH
        months += 1
    return check_interval(Interval(months, days, micros))


def justify_interval(iv: Interval) -> Interval:
    months, days, micros = iv
    whole = _tdiv(days, DAYS_PER_MONTH)
    days -= whole * DAYS_PER_MONTH
    months += whole
    whole = _tdiv(micros, USECS_PER_DAY)
    micros -= whole * USECS_PER_DAY
    days += whole
    if months > 0 and (days < 0 or (days == 0 and micros < 0)):
        days += DAYS_PER_MONTH
        months -= 1
    elif months < 0 and (days > 0 or (days == 0 and micros > 0)):
        days -= DAYS_PER_MONTH
        months += 1
    if days > 0 and micros < 0:
        micros += USECS_PER_DAY
        days -= 1
    elif days < 0 and micros > 0:
        micros -= USECS_PER_DAY
        days += 1
    return check_interval(Interval(months, days, micros))


def interval_mul(iv: Interval, factor: float) -> Interval:
    """``interval * float8`` as interval_mul does it: fractional months and days cascade down."""
    if math.isnan(factor) or math.isinf(factor):
        raise WhereEvalError("interval out of range")
    result_double = iv.months * factor
    if not -(2**31) <= result_double < 2**31:
        raise WhereEvalError("interval out of range")
    months = int(result_double)
    result_double = iv.days * factor
    if not -(2**31) <= result_double < 2**31:
        raise WhereEvalError("interval out of range")
    days = int(result_double)
    month_remainder_days = (iv.months * factor - months) * DAYS_PER_MONTH
    month_remainder_days = (
        float(math.trunc(month_remainder_days * 1e6 + (0.5 if month_remainder_days >= 0 else -0.5))) / 1e6
    )
    sec_remainder = (iv.days * factor - days + month_remainder_days - int(month_remainder_days)) * 86400
    sec_remainder = float(round(sec_remainder * 1e6)) / 1e6
    if abs(sec_remainder) >= 86400:
        days += int(sec_remainder / 86400)
        sec_remainder -= int(sec_remainder / 86400) * 86400
    days += int(month_remainder_days)
    micros_double = iv.micros * factor + sec_remainder * 1e6
    micros_double = float(round(micros_double))
    if not -(2**63) <= micros_double < 2**63:
        raise WhereEvalError("interval out of range")
    return check_interval(Interval(months, days, int(micros_double)))
