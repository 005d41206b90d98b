"""``AT TIME ZONE`` / ``timezone(zone, ts)`` with IANA zone names (via :mod:`zoneinfo`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sync.where import temporal as tm
from sync.where.errors import WhereEvalError

_EPOCH = dt.datetime(2000, 1, 1)
_MIN_US = (dt.datetime(1, 1, 2) - _EPOCH) // dt.timedelta(microseconds=1)
_MAX_US = (dt.datetime(9999, 12, 30) - _EPOCH) // dt.timedelta(microseconds=1)
_CYCLE_US = 146097 * tm.USECS_PER_DAY


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo | None:
    if name.upper() in ("UTC", "GMT", "Z", "ZULU", "UCT"):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WhereEvalError(f'time zone "{name}" not recognized') from None


def _offset_us(zone: ZoneInfo | None, local_or_utc: int, is_local: bool) -> int:
    if zone is None:
        return 0
    if local_or_utc < _MIN_US:
        local_or_utc = _MIN_US  # before the zone's first transition: its LMT offset, as at year 1
    elif local_or_utc > _MAX_US:
        # after the last transition the zone's rule repeats with the 400-year Gregorian cycle
        cycles = (local_or_utc - _MAX_US) // _CYCLE_US + 1
        local_or_utc -= cycles * _CYCLE_US
    moment = _EPOCH + dt.timedelta(microseconds=local_or_utc)
    if is_local:
        off = moment.replace(tzinfo=zone).utcoffset()
    else:
        off = moment.replace(tzinfo=dt.UTC).astimezone(zone).utcoffset()
    return 0 if off is None else off // dt.timedelta(microseconds=1)


def timezone_impl(ts_type: str) -> Callable[[str, int], int]:
    """``timezone(zone, ts)``: timestamptz -> local timestamp, or timestamp (local) -> timestamptz."""
    to_local = ts_type == "timestamptz"

    def apply(zone_name: str, t: int) -> int:
        zone = _zone(zone_name)
        if t in (tm.TS_NOBEGIN, tm.TS_NOEND):
            return t
        if to_local:
            return tm.check_ts(t + _offset_us(zone, t, False))
        return tm.check_ts(t - _offset_us(zone, t, True))

    return apply
