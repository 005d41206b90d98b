"""Dates, times, timestamps and intervals with Postgres' own representation and range.

Python's ``datetime`` stops at year 9999 and has no BC years or infinities, so values use Postgres'
internal encoding: a date is days since 2000-01-01 (``±infinity`` are INT32 min/max), a time is
microseconds since midnight, a timestamp (with or without time zone, the former in UTC) is microseconds
since 2000-01-01 00:00 (``±infinity`` are INT64 min/max), an interval is ``(months, days, micros)``.
Text formats are those of ``DateStyle=ISO``, ``TimeZone=UTC`` and ``IntervalStyle=iso_8601`` (what the
engine's sessions use); input also accepts the common Postgres literal forms.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sync.where.errors import WhereEvalError

PG_SPACE = " \t\n\r\v\f"  # what Postgres' input functions treat as white space

USECS_PER_SEC = 1_000_000
USECS_PER_MIN = 60 * USECS_PER_SEC
USECS_PER_HOUR = 60 * USECS_PER_MIN
USECS_PER_DAY = 24 * USECS_PER_HOUR
DAYS_PER_MONTH = 30

DATE_NOBEGIN = -(2**31)
DATE_NOEND = 2**31 - 1
TS_NOBEGIN = -(2**63)
TS_NOEND = 2**63 - 1

_EPOCH_JD = 2451545  # date2j(2000, 1, 1)
_DATE_MIN = -_EPOCH_JD  # julian day 0 (4714-11-24 BC)
_DATE_END = 2147483494 - _EPOCH_JD
_TS_MIN = -211813488000000000
_TS_END = 9223371331200000000


class Interval(NamedTuple):
    months: int
    days: int
    micros: int


def interval_key(iv: Interval) -> int:
    """Postgres compares intervals as one span with 30-day months and 24-hour days."""
    return (iv.months * DAYS_PER_MONTH + iv.days) * USECS_PER_DAY + iv.micros


def _tdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def date2j(y: int, m: int, d: int) -> int:
    if m > 2:
        m += 1
        y += 4800
    else:
        m += 13
        y += 4799
    century = y // 100
    return y * 365 - 32167 + y // 4 - century + century // 4 + 7834 * m // 256 + d


def j2date(jd: int) -> tuple[int, int, int]:
    julian = jd + 32044
    quad = julian // 146097
    extra = (julian - quad * 146097) * 4 + 3
    julian += 60 + quad * 3 + extra // 146097
    quad = julian // 1461
    julian -= quad * 1461
    y = julian * 4 // 1461
    julian = ((julian + 305) % 365 if y != 0 else (julian + 306) % 366) + 123
    y += quad * 4
    quad = julian * 2141 // 65536
    return y - 4800, (quad + 10) % 12 + 1, julian - 7834 * quad // 256


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
        return 29 if leap else 28
    return 30 if m in (4, 6, 9, 11) else 31


def check_date(d: int) -> int:
    if d in (DATE_NOBEGIN, DATE_NOEND):
        return d
    if not _DATE_MIN <= d < _DATE_END:
        raise WhereEvalError("date out of range")
    return d


def check_ts(t: int, what: str = "timestamp") -> int:
    if t in (TS_NOBEGIN, TS_NOEND):
        return t
    if not _TS_MIN <= t < _TS_END:
        raise WhereEvalError(f"{what} out of range")
    return t


# ---- formatting -------------------------------------------------------------------------------------


def _fmt_year(y: int) -> tuple[str, str]:
    return (f"{y:04d}", "") if y > 0 else (f"{1 - y:04d}", " BC")


def format_date(d: int) -> str:
    if d == DATE_NOBEGIN:
        return "-infinity"
    if d == DATE_NOEND:
        return "infinity"
    y, m, day = j2date(d + _EPOCH_JD)
    ys, bc = _fmt_year(y)
    return f"{ys}-{m:02d}-{day:02d}{bc}"


def _fmt_secs(us: int) -> str:
    s, frac = divmod(us, USECS_PER_SEC)
    out = f"{s:02d}"
    if frac:
        out += "." + f"{frac:06d}".rstrip("0")
    return out


def format_time(t: int) -> str:
    h, rest = divmod(t, USECS_PER_HOUR)
    mi, rest = divmod(rest, USECS_PER_MIN)
    return f"{h:02d}:{mi:02d}:{_fmt_secs(rest)}"


def format_timestamp(t: int, tz: bool) -> str:
    if t == TS_NOBEGIN:
        return "-infinity"
    if t == TS_NOEND:
        return "infinity"
    days, rest = divmod(t, USECS_PER_DAY)
    y, m, d = j2date(days + _EPOCH_JD)
    ys, bc = _fmt_year(y)
    return f"{ys}-{m:02d}-{d:02d} {format_time(rest)}{'+00' if tz else ''}{bc}"


def format_interval(iv: Interval) -> str:
    months, days, micros = iv
    if months == 0 and days == 0 and micros == 0:
        return "PT0S"
    year, mon = _tdiv(months, 12), months - _tdiv(months, 12) * 12
    hour = _tdiv(micros, USECS_PER_HOUR)
    micros -= hour * USECS_PER_HOUR
    minute = _tdiv(micros, USECS_PER_MIN)
    micros -= minute * USECS_PER_MIN
    out = "P"
    for value, unit in ((year, "Y"), (mon, "M"), (days, "D")):
        if value:
            out += f"{value}{unit}"
    if hour or minute or micros:
        out += "T"
        for value, unit in ((hour, "H"), (minute, "M")):
            if value:
                out += f"{value}{unit}"
        if micros:
            sec, frac = divmod(abs(micros), USECS_PER_SEC)
            out += ("-" if micros < 0 else "") + str(sec)
            if frac:
                out += "." + f"{frac:06d}".rstrip("0")
            out += "S"
    return out


# ---- parsing ----------------------------------------------------------------------------------------

_DATE_RE = re.compile(r"[ \t\n\r\f\v]*([0-9]{1,7})-([0-9]{1,2})-([0-9]{1,2})")
_TIME_RE = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?")
_TZ_RE = re.compile(
    r"[ \t\n\r\f\v]*(?:([+-])([0-9]{1,2})(?::?([0-9]{2}))?(?::([0-9]{2}))?|(Z|UTC|GMT))", re.IGNORECASE
)
_BC_RE = re.compile(r"[ \t\n\r\f\v]*(BC|AD)[ \t\n\r\f\v]*$", re.IGNORECASE)


def _bad(kind: str, text: str) -> WhereEvalError:
    return WhereEvalError(f'invalid input syntax for type {kind}: "{text}"')


def _special(text: str) -> str | None:
    s = text.strip(PG_SPACE).lower()
    return s if s in ("infinity", "+infinity", "-infinity", "epoch", "allballs") else None


def _ymd_to_days(y: int, m: int, d: int, bc: bool, text: str) -> int:
    if bc:
        y = 1 - y
    if not (1 <= m <= 12 and 1 <= d <= _days_in_month(y, m)) or (y == 0 and not bc):
        raise WhereEvalError(f'date/time field value out of range: "{text}"')
    return date2j(y, m, d) - _EPOCH_JD


def _time_micros(match: re.Match[str], text: str) -> int:
    h, mi, s, frac = match.group(1), match.group(2), match.group(3), match.group(4)
    hour, minute, sec = int(h), int(mi), int(s or 0)
    micros = 0
    if frac:
        micros = (
            round(int(frac) * 10 ** (6 - len(frac))) if len(frac) <= 6 else round(float("0." + frac) * 1e6)
        )
    total = ((hour * 60 + minute) * 60 + sec) * USECS_PER_SEC + micros
    if minute > 59 or sec > 60 or total > USECS_PER_DAY:
        raise WhereEvalError(f'date/time field value out of range: "{text}"')
    return total


def parse_date(text: str) -> int:
    sp = _special(text)
    if sp is not None:
        if sp in ("infinity", "+infinity"):
            return DATE_NOEND
        if sp == "-infinity":
            return DATE_NOBEGIN
        if sp == "epoch":
            return date2j(1970, 1, 1) - _EPOCH_JD
        raise _bad("date", text)
    m = _DATE_RE.match(text)
    if m is None:
        raise _bad("date", text)
    rest = text[m.end() :]
    bc_m = _BC_RE.search(rest)
    bc = bool(bc_m and bc_m.group(1).upper() == "BC")
    if bc_m:
        rest = rest[: bc_m.start()]
    if rest.strip(PG_SPACE):
        # a time part is allowed (and ignored) in date input
        tm = _TIME_RE.match(rest.strip(PG_SPACE).lstrip("Tt").strip(PG_SPACE))
        if tm is None:
            raise _bad("date", text)
    return check_date(_ymd_to_days(int(m.group(1)), int(m.group(2)), int(m.group(3)), bc, text))


def parse_time(text: str) -> int:
    if _special(text) == "allballs":
        return 0
    tm = _TIME_RE.fullmatch(text.strip(PG_SPACE))
    if tm is None:
        raise _bad("time without time zone", text)
    return _time_micros(tm, text)


def parse_timestamp(text: str, tz: bool) -> int:
    kind = "timestamp with time zone" if tz else "timestamp without time zone"
    sp = _special(text)
    if sp is not None:
        if sp in ("infinity", "+infinity"):
            return TS_NOEND
        if sp == "-infinity":
            return TS_NOBEGIN
        if sp == "epoch":
            return (date2j(1970, 1, 1) - _EPOCH_JD) * USECS_PER_DAY
        raise _bad(kind, text)
    m = _DATE_RE.match(text)
    if m is None:
        raise _bad(kind, text)
    rest = text[m.end() :]
    bc_m = _BC_RE.search(rest)
    bc = bool(bc_m and bc_m.group(1).upper() == "BC")
    if bc_m:
        rest = rest[: bc_m.start()]
    rest = rest.strip(PG_SPACE)
    if rest[:1] in ("T", "t"):
        rest = rest[1:]
    micros = 0
    offset = 0
    if rest:
        tm = _TIME_RE.match(rest)
        if tm is None:
            raise _bad(kind, text)
        micros = _time_micros(tm, text)
        rest = rest[tm.end() :]
        if rest.strip(PG_SPACE):
            zm = _TZ_RE.fullmatch(rest)
            if zm is None:
                raise _bad(kind, text)
            if zm.group(1):
                sign = -1 if zm.group(1) == "-" else 1
                offset = sign * (int(zm.group(2)) * 3600 + int(zm.group(3) or 0) * 60 + int(zm.group(4) or 0))
    days = _ymd_to_days(int(m.group(1)), int(m.group(2)), int(m.group(3)), bc, text)
    value = days * USECS_PER_DAY + micros
    if tz:
        value -= offset * USECS_PER_SEC
    return check_ts(value)


# ---- arithmetic -------------------------------------------------------------------------------------


def check_interval(iv: Interval) -> Interval:
    if not (-(2**31) <= iv.months < 2**31 and -(2**31) <= iv.days < 2**31 and -(2**63) <= iv.micros < 2**63):
        raise WhereEvalError("interval out of range")
    return iv


def ts_plus_interval(t: int, iv: Interval, what: str = "timestamp") -> int:
    if t in (TS_NOBEGIN, TS_NOEND):
        return t
    if iv.months:
        days, rest = divmod(t, USECS_PER_DAY)
        y, m, d = j2date(days + _EPOCH_JD)
        total = y * 12 + (m - 1) + iv.months
        y, m = divmod(total, 12)
        m += 1
        d = min(d, _days_in_month(y, m))
        t = (date2j(y, m, d) - _EPOCH_JD) * USECS_PER_DAY + rest
    if iv.days:
        days, rest = divmod(t, USECS_PER_DAY)
        t = (days + iv.days) * USECS_PER_DAY + rest
    return check_ts(t + iv.micros, what)


def ts_minus_ts(a: int, b: int) -> Interval:
    if a in (TS_NOBEGIN, TS_NOEND) or b in (TS_NOBEGIN, TS_NOEND):
        raise WhereEvalError("cannot subtract infinite timestamps")
    diff = a - b
    days = _tdiv(diff, USECS_PER_DAY)
    return check_interval(justify_hours(Interval(0, 0, diff)) if days else Interval(0, 0, diff))


def justify_hours(iv: Interval) -> Interval:
    months, days, micros = iv
    whole = _tdiv(micros, USECS_PER_DAY)
    micros -= whole * USECS_PER_DAY
    days += whole
    if days > 0 and micros < 0:
        micros += USECS_PER_DAY
        days -= 1
    elif days < 0 and micros > 0:
        micros -= USECS_PER_DAY
        days += 1
    return check_interval(Interval(months, days, micros))
