"""Hypothesis strategies for the WHERE oracle's clauses: random well-typed WHERE clauses over the table of
oracle_values.py (written as a user would, fully parenthesised), including input-function and time-zone
checks.  The table and its random rows are in oracle_values.py.
"""

from __future__ import annotations

from hypothesis import strategies as st

from sync.where.errors import WhereEvalError
from sync.where.formatting import formatter
from sync.where.values import parser
from tests.where.oracle_values import (
    MOODS,
    TRICKY_INPUTS,
    VALUES,
    dates,
    int_arrays,
    intervals,
    ints,
    text_arrays,
    texts,
    times,
    timestamps,
    timestamptzs,
    uuids,
)


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
                ints("i4").map(str),
                ints("i8").map(lambda v: str(v) if v >= 0 else f"({v})"),
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
            return f"((d - {q(draw(dates))}::date) {op} {draw(ints('i2'))})"
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
                st.lists(ints("i4").map(str) | st.just("NULL") | st.just("i2"), min_size=1, max_size=4)
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
            return f"((ia)[{draw(st.integers(-1, 3))}] {op} {draw(ints('i4'))})"
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
