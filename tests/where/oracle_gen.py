"""Hypothesis strategies for the WHERE oracle: random rows of a mixed-type table and random well-typed
WHERE clauses over it (written as a user would, fully parenthesised)."""

from __future__ import annotations

import math
import struct
from decimal import Decimal

from hypothesis import strategies as st

from sync.where import temporal as tm
from sync.where.errors import WhereEvalError
from sync.where.formatting import format_array, format_float, format_numeric, formatter
from sync.where.values import parser

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


def _ints(bits_key: str) -> st.SearchStrategy[int]:
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
texts = st.one_of(
    st.sampled_from(
        ["", "a", "abc", "ABC", "a%b", "a_b", "É", "ß", "\\", "'", '"', " x ", "NULL", "{a}", "日本"]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6),
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
    st.lists(st.one_of(st.none(), _ints("i4")), max_size=4).map(lambda xs: format_array(tuple(xs), str)),
    st.sampled_from(["{}", "{{1,2},{3,4}}", "{NULL}"]),
)
text_arrays = st.lists(st.one_of(st.none(), texts), max_size=3).map(lambda xs: format_array(tuple(xs), str))

VALUES: dict[str, st.SearchStrategy[str]] = {
    "i2": _ints("i2").map(str),
    "i4": _ints("i4").map(str),
    "i8": _ints("i8").map(str),
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


# ---- expressions ---------------------------------------------------------------------------------------


def q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


NUM_COLS = {"i2": "int", "i4": "int", "i8": "int", "f4": "float", "f8": "float", "n": "numeric"}


@st.composite
def num_expr(draw: st.DrawFn, depth: int = 2) -> str:
    choices = ["col", "lit"] + (["bin", "bin", "neg", "fn", "cast"] if depth > 0 else [])
    kind = draw(st.sampled_from(choices))
    if kind == "col":
        return draw(st.sampled_from(list(NUM_COLS)))
    if kind == "cast":
        target = draw(st.sampled_from(["int2", "int4", "int8", "float4", "float8", "numeric"]))
        source = draw(st.one_of(num_expr(depth - 1), st.sampled_from(["(b)::int4", "array_ndims(ia)"])))
        return f"({source})::{target}"
    if kind == "lit":
        return draw(
            st.one_of(
                _ints("i4").map(str),
                _ints("i8").map(lambda v: str(v) if v >= 0 else f"({v})"),
                st.sampled_from(
                    [
                        "1.5",
                        "0.1",
                        "2.50",
                        "1e3",
                        "'NaN'::float8",
                        "'Infinity'::float8",
                        "'-Infinity'::numeric",
                        "'NaN'::numeric",
                        "'0.1'::float4",
                        "3::int2",
                        "'1e308'::float8",
                    ]
                ),
            )
        )
    if kind == "neg":
        return f"(- {draw(num_expr(depth - 1))})"
    if kind == "fn":
        fn = draw(st.sampled_from(["abs", "coalesce", "greatest", "least"]))
        if fn == "abs":
            return f"abs({draw(num_expr(depth - 1))})"
        return f"{fn}({draw(num_expr(depth - 1))}, {draw(num_expr(depth - 1))})"
    op = draw(st.sampled_from(["+", "-", "*", "/", "+", "-", "*"]))
    return f"({draw(num_expr(depth - 1))} {op} {draw(num_expr(depth - 1))})"


@st.composite
def text_expr(draw: st.DrawFn, depth: int = 2) -> str:
    choices = ["col", "lit"] + (["concat", "fn", "cast"] if depth > 0 else [])
    kind = draw(st.sampled_from(choices))
    if kind == "col":
        return draw(st.sampled_from(["t", "v", "t", "v", "(m)::text", "(ta)[1]"]))
    if kind == "lit":
        return q(draw(texts))
    if kind == "concat":
        return f"({draw(text_expr(depth - 1))} || {draw(st.one_of(text_expr(depth - 1), num_expr(0)))})"
    if kind == "fn":
        fn = draw(st.sampled_from(["lower", "upper", "coalesce", "concat"]))
        if fn in ("lower", "upper"):
            return f"{fn}({draw(text_expr(depth - 1))})"
        return f"{fn}({draw(text_expr(depth - 1))}, {draw(text_expr(depth - 1))})"
    src = draw(
        st.sampled_from(
            ["f4", "f8", "n", "d", "ts", "tz", "iv", "tm", "b", "u", "ia", "ta", "i8", "(f8 * 3)", "(n / 7)"]
        )
    )
    return f"({src})::text"


@st.composite
def temporal_cmp(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["date", "ts", "tz", "iv", "time"]))
    op = draw(st.sampled_from(["=", "<>", "<", ">", "<=", ">="]))
    if kind == "date":
        left = draw(st.sampled_from(["d", "(d + i2)", "(d - 1)", "(d + 30)"]))
        right = draw(st.one_of(dates.map(q), st.just("d"), st.just("(ts)::date")))
        if draw(st.booleans()):
            return f"((d - {q(draw(dates))}::date) {op} {draw(_ints('i2'))})"
        return f"({left} {op} {right})"
    if kind == "ts":
        left = draw(
            st.sampled_from(
                ["ts", "(ts + iv)", "(ts - iv)", "(d + tm)", "(d + iv)", "(ts + '1 mon'::interval)"]
            )
        )
        return f"({left} {op} {q(draw(timestamps))})"
    if kind == "tz":
        left = draw(
            st.sampled_from(
                ["tz", "(tz + iv)", "(tz - '1 day'::interval)", "((tz AT TIME ZONE 'UTC'))::timestamptz"]
            )
        )
        return f"({left} {op} {draw(st.one_of(timestamptzs.map(q), st.just('ts'), st.just('d')))})"
    if kind == "time":
        left = draw(st.sampled_from(["tm", "(tm + iv)", "(tm - '1 hour'::interval)"]))
        return f"({left} {op} {q(draw(times))})"
    left = draw(
        st.sampled_from(
            [
                "iv",
                "(iv + iv)",
                "(- iv)",
                "justify_hours(iv)",
                "justify_days(iv)",
                "justify_interval(iv)",
                "(ts - ts)",
                "(iv * 2)",
                "(iv * 1.5)",
                "(iv / 3)",
                "(iv * f8)",
                "(0.25 * iv)",
            ]
        )
    )
    return f"({left} {op} {q(draw(intervals))})"


@st.composite
def like_pattern(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(st.sampled_from(["%", "_", "a", "A", "b", "\\%", "\\_", "É", "é", "x", "'"]), max_size=4)
    )
    return q("".join(parts))


@st.composite
def bool_expr(draw: st.DrawFn, depth: int = 2) -> str:
    kinds = ["numcmp", "textcmp", "temporal", "null", "in", "between", "like", "any", "array", "enum", "col",
             "distinct", "uuid", "booltest", "input", "zone"]  # fmt: skip
    if depth > 0:
        kinds += ["and", "or", "not"] * 2
    kind = draw(st.sampled_from(kinds))
    op = draw(st.sampled_from(["=", "<>", "<", ">", "<=", ">="]))
    if kind == "numcmp":
        return f"({draw(num_expr())} {op} {draw(num_expr())})"
    if kind == "textcmp":
        return f"({draw(text_expr())} {op} {draw(text_expr())})"
    if kind == "temporal":
        return draw(temporal_cmp())
    if kind == "null":
        col = draw(st.sampled_from([*VALUES, "(i4 + 1)", "lower(t)"]))
        return f"({col} IS {'NOT ' if draw(st.booleans()) else ''}NULL)"
    if kind == "in":
        if draw(st.booleans()):
            items = draw(
                st.lists(_ints("i4").map(str) | st.just("NULL") | st.just("i2"), min_size=1, max_size=4)
            )
            return f"({draw(st.sampled_from(['i4', 'i8', 'n', 'f8', 'i2']))} {'NOT ' if draw(st.booleans()) else ''}IN ({', '.join(items)}))"
        items = draw(st.lists(texts.map(q) | st.just("NULL"), min_size=1, max_size=3))
        return f"(t {'NOT ' if draw(st.booleans()) else ''}IN ({', '.join(items)}))"
    if kind == "between":
        sym = "SYMMETRIC " if draw(st.booleans()) else ""
        neg = "NOT " if draw(st.booleans()) else ""
        if draw(st.booleans()):
            return f"({draw(num_expr(1))} {neg}BETWEEN {sym}{draw(num_expr(0))} AND {draw(num_expr(0))})"
        return f"({draw(text_expr(1))} {neg}BETWEEN {sym}{q(draw(texts))} AND {q(draw(texts))})"
    if kind == "like":
        op_ = draw(st.sampled_from(["LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE", "~~", "~~*", "!~~", "!~~*"]))
        esc = (
            f" ESCAPE {q(draw(st.sampled_from(['!', '', 'a'])))}"
            if draw(st.integers(0, 4)) == 0 and "~" not in op_
            else ""
        )
        return f"({draw(text_expr(1))} {op_} {draw(like_pattern())}{esc})"
    if kind == "any":
        quant = draw(st.sampled_from(["ANY", "ALL"]))
        if draw(st.booleans()):
            return f"({draw(num_expr(1))} {op} {quant}(ia))"
        arr = draw(st.sampled_from(["ta", q(draw(text_arrays)), "ARRAY[t, v]"]))
        return f"({draw(text_expr(1))} {op} {quant}({arr}))"
    if kind == "array":
        aop = draw(st.sampled_from(["@>", "<@", "&&", "=", "<>"]))
        other = draw(
            st.sampled_from(
                [
                    q(draw(int_arrays)),
                    "ARRAY[i4, 1]",
                    "(ia || i4)",
                    "(ia || ia)",
                    "array_append(ia, 7)",
                    "array_prepend(i4, ia)",
                    "array_cat(ia, '{5}')",
                    "(ia)[1:2]",
                    "(ia)[2:]",
                ]
            )
        )
        if draw(st.integers(0, 3)) == 0:
            return f"(array_ndims(ia) {op} {draw(st.integers(0, 2))})"
        if draw(st.integers(0, 3)) == 0:
            return f"((ia)[{draw(st.integers(-1, 3))}] {op} {draw(_ints('i4'))})"
        if draw(st.integers(0, 3)) == 0:
            return f"(ta {aop} {q(draw(text_arrays))})"
        return f"(ia {aop} {other})"
    if kind == "enum":
        if draw(st.booleans()):
            return f"(m {draw(st.sampled_from(['=', '<>']))} {q(draw(st.sampled_from(MOODS)))})"
        return f"((m)::text {op} {q(draw(texts))})"
    if kind == "col":
        return "b"
    if kind == "input":
        return draw(input_check())
    if kind == "zone":
        return draw(zone_check())
    if kind == "uuid":
        return f"(u {op} {q(draw(uuids))})"
    if kind == "distinct":
        left, right = draw(
            st.sampled_from(
                [("i4", "i8"), ("t", "v"), ("n", "f8"), ("b", "true"), ("iv", "'1 day'"), ("ia", "'{1,2}'")]
            )
        )
        return f"({left} IS {'NOT ' if draw(st.booleans()) else ''}DISTINCT FROM {right})"
    if kind == "booltest":
        what = draw(st.sampled_from(["TRUE", "FALSE", "NOT TRUE", "NOT FALSE"]))
        return f"({draw(bool_expr(0))} IS {what})"
    if kind == "not":
        return f"(NOT {draw(bool_expr(depth - 1))})"
    joiner = " AND " if kind == "and" else " OR "
    return "(" + joiner.join(draw(st.lists(bool_expr(depth - 1), min_size=2, max_size=3))) + ")"


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


@st.composite
def input_check(draw: st.DrawFn) -> str:
    """``'<input>'::T::text = '<our output>'``: Postgres agrees iff it parses and prints like we do."""
    typ = draw(st.sampled_from(sorted(TRICKY_INPUTS)))
    text = draw(st.sampled_from(TRICKY_INPUTS[typ]))
    try:
        expected = formatter(typ)(parser(typ)(text))
    except WhereEvalError:
        expected = "<rejected>"
    return f"((({q(text)})::{typ})::text = {q(expected)})"


@st.composite
def zone_check(draw: st.DrawFn) -> str:
    zone = draw(
        st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"])
    )
    col = draw(st.sampled_from(["tz", "ts"]))
    return f"(({col} AT TIME ZONE {q(zone)}) {draw(st.sampled_from(['<', '=', '>=']))} {q(draw(timestamps))})"


__all__ = ["DDL", "VALUES", "Decimal", "bool_expr", "format_numeric", "rows"]
