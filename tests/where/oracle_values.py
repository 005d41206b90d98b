"""The values side of the WHERE oracle (tests/where/test_oracle.py): the mixed-type table ``t`` (COLUMNS,
its DDL), Hypothesis strategies for random rows of it (NULLs, extremes, Unicode, NaN/Infinity, BC dates,
empty arrays...) written as Postgres prints them, and TRICKY_INPUTS, the odd input texts of each type.
The random clauses over this table are in oracle_gen.py; the two were one module until it passed the
house limit of 400 lines.
"""

from __future__ import annotations

import math
import struct
from typing import Literal

from hypothesis import strategies as st

from sync.where import temporal as tm
from sync.where.formatting import format_array, format_float

COLUMNS = {
    "i2": "int2",
    "i4": "int4",
    "i8": "int8",
    "f4": "float4",
    "f8": "float8",
    "n": "numeric",
    "t": "text",
    "v": "varchar(20)",
    "b": "bool",
    "u": "uuid",
    "d": "date",
    "tm": "time",
    "ts": "timestamp",
    "tz": "timestamptz",
    "iv": "interval",
    "ia": "int4[]",
    "ta": "text[]",
    "m": "mood",
}
MOODS = ("sad", "ok", "happy")
DDL = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE TABLE t (" + ", ".join(f"{c} {ty}" for c, ty in COLUMNS.items()) + ")",
]

INT_BOUNDS = {"i2": 2**15, "i4": 2**31, "i8": 2**63}


def ints(bits_key: str) -> st.SearchStrategy[int]:
    b = INT_BOUNDS[bits_key]
    return st.one_of(
        st.sampled_from([0, 1, -1, 2, 10, b - 1, -b, b // 2]),
        st.integers(-b, b - 1),
        st.integers(-1000, 1000),
    )


def _f4(v: float) -> float:
    try:
        return float(struct.unpack("f", struct.pack("f", v))[0])
    except OverflowError:
        return math.copysign(math.inf, v)


_SPECIAL_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.5,
    0.1,
    1e300,
    -1e300,
    3.4e38,
    1e-300,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
]
floats8 = st.one_of(st.sampled_from(_SPECIAL_FLOATS), st.floats(allow_nan=True), st.floats(-1e6, 1e6))
floats4 = floats8.map(_f4)
numerics = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "1.0",
            "1.50",
            "0.001",
            "NaN",
            "Infinity",
            "-Infinity",
            "123456789012345678901234567890.5",
        ]
    ),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-(10**12), max_value=10**12).map(
        str
    ),
    st.integers(-(10**20), 10**20).map(str),
)
_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # inline, mypy would infer tuple[str] for this tuple
texts = st.one_of(
    st.sampled_from(
        ["", "a", "abc", "ABC", "a%b", "a_b", "É", "ß", "\\", "'", '"', " x ", "NULL", "{a}", "日本"]
    ),
    st.text(
        alphabet=st.characters(blacklist_categories=_SURROGATES, blacklist_characters="\x00"), max_size=6
    ),
)
uuids = st.uuids().map(str)
dates = st.one_of(
    st.sampled_from([tm.DATE_NOBEGIN, tm.DATE_NOEND, 0, -1, 7670, -730120 - 365 * 50]),
    st.integers(-2451545 + 1, 2_000_000),
).map(tm.format_date)
times = st.integers(0, tm.USECS_PER_DAY).map(tm.format_time)
_ts_ints = st.one_of(
    st.sampled_from([tm.TS_NOBEGIN, tm.TS_NOEND, 0, -1, 662774400000000]),
    st.integers(-211813488000000000, 9223371331200000000 - 1),
    st.integers(-(10**15), 10**15),
)
timestamps = _ts_ints.map(lambda v: tm.format_timestamp(v, False))
timestamptzs = _ts_ints.map(lambda v: tm.format_timestamp(v, True))
intervals = st.builds(
    tm.Interval,
    st.integers(-1000, 1000),
    st.integers(-10000, 10000),
    st.one_of(st.integers(-(10**12), 10**12), st.sampled_from([0, tm.USECS_PER_DAY, -1])),
).map(tm.format_interval)
int_arrays = st.one_of(
    st.lists(st.one_of(st.none(), ints("i4")), max_size=4).map(lambda xs: format_array(tuple(xs), str)),
    st.sampled_from(["{}", "{{1,2},{3,4}}", "{NULL}"]),
)
text_arrays = st.lists(st.one_of(st.none(), texts), max_size=3).map(lambda xs: format_array(tuple(xs), str))

VALUES: dict[str, st.SearchStrategy[str]] = {
    "i2": ints("i2").map(str),
    "i4": ints("i4").map(str),
    "i8": ints("i8").map(str),
    "f4": floats4.map(lambda v: format_float(v, True)),
    "f8": floats8.map(format_float),
    "n": numerics,
    "t": texts,
    "v": texts,
    "b": st.sampled_from(["true", "false"]),
    "u": uuids,
    "d": dates,
    "tm": times,
    "ts": timestamps,
    "tz": timestamptzs,
    "iv": intervals,
    "ia": int_arrays,
    "ta": text_arrays,
    "m": st.sampled_from(MOODS),
}

rows = st.fixed_dictionaries({c: st.one_of(st.none(), s) for c, s in VALUES.items()})


TRICKY_INPUTS: dict[str, list[str]] = {
    "int4": [" 12 ", "+5", "-0", "1_000", "\u0663", "1e3", "", "0x10", "2147483648", "-2147483648", "\t7\n"],
    "int8": ["9223372036854775807", "-9223372036854775809", " 42"],
    "int2": ["32768", "-32768", "12"],
    "float8": [
        " 1.5 ",
        "inf",
        "-INF",
        "nan",
        "NaN ",
        "1e400",
        "1e-400",
        ".5",
        "5.",
        "-.5e-3",
        "Infinity",
        "+Infinity",
        "1e308",
        "4.9e-324",
        "0.1",
        "-0",
        "1_0",
    ],
    "float4": ["3.4e38", "3.5e38", "1e-46", "0.1", "16777217", "-inf", "1.17549435e-38"],
    "numeric": [
        " 1.50 ",
        "+1",
        "-0.0",
        "1e3",
        "1E-3",
        "NaN",
        "inf",
        "-Infinity",
        ".5",
        "5.",
        "1_0",
        "  ",
        "1e-20",
    ],
    "bool": ["t", "TRUE", " yes ", "of", "o", "on", "1", "0", "n", "tr", "x", "off", "FALSE "],
    "date": [
        "2020-01-02",
        "2020-1-2",
        " 2020-01-02 ",
        "0001-01-01 BC",
        "2020-02-30",
        "infinity",
        "-infinity",
        "epoch",
        "2020-02-29",
        "2021-02-29",
        "4713-11-24 BC",
        "5874897-12-31",
        "2020-01-02 10:00",
    ],
    "timestamp": [
        "2020-01-02 03:04:05",
        "2020-01-02T03:04:05.123456789",
        "2020-01-02 03:04",
        "2020-01-02 24:00:00",
        "2020-01-02 03:04:05+02",
        "epoch",
        "2020-01-02",
        "294276-12-31 23:59:59",
        "2020-01-02 03:04:05.5 BC",
    ],
    "timestamptz": [
        "2020-01-02 03:04:05+05:30",
        "2020-01-02 03:04:05-08",
        "2020-01-02 03:04:05 UTC",
        "2020-01-02 03:04:05Z",
        "2020-01-02 03:04:05+00:00:30",
        "infinity",
    ],
    "interval": [
        "1 day",
        "1 day 2 hours",
        "-1 mon",
        "1.5 days",
        "1 year 2 months 3 days 04:05:06.7",
        "P1Y2M",
        "PT1.5S",
        "1 week",
        "2 hours 30 minutes",
        "1:30",
        "-1:30:00",
        "100 years",
        "1 millisecond",
        "1 day ago",
        "P1DT2H",
        "0.5 months",
        "3 mins 4 secs",
        "P-1D",
    ],
    "uuid": [
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "a0eebc99",
    ],
    "time": ["03:04", "03:04:05.5", "24:00", "24:00:01", " 3:04 ", "allballs", "23:59:59.9999999"],
    "int4[]": [
        "{1,2}",
        "{ 1 , 2 }",
        "{}",
        "{{1},{2}}",
        "{{1},{2,3}}",
        "{NULL,1}",
        "{1,}",
        "[1:2]={1,2}",
        '{"1"}',
    ],
    "text[]": ["{a,b}", '{"a b",c}', '{NULL,"NULL"}', '{"\\""}', "{ a , b }", "{}"],
}
