"""Postgres text input/output for the types the WHERE language evaluates.

Values arrive as Postgres text output (from logical replication or a snapshot with the engine's display
settings); ``parser(type)`` turns one into its Python value, ``formatter(type)`` turns a value back into
Postgres' text output (used by casts to text and by SQL generation for bound parameters).

Types are names: the ``typname`` of a built-in (``int4``, ``timestamptz``...), ``name[]`` for arrays,
``enum:<schema>.<name>`` for enums and ``other:<typname>`` for types only usable as opaque text
(``json``, ``jsonb``, ``bytea``, composites...).  Value representations: ints, floats, ``Decimal`` for
numeric, ``str`` for text-like/uuid/enum/opaque, ``bool``, the integers of :mod:`sync.where.temporal`
for dates/times/timestamps, :class:`~sync.where.temporal.Interval`, and (nested) tuples for arrays.
"""

from __future__ import annotations

import decimal
import functools
import math
import re
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sync.where import intervals as ivl
from sync.where import temporal as tm
from sync.where.errors import WhereEvalError

PG_SPACE = " \t\n\r\v\f"  # what Postgres' input functions treat as white space

Parser = Callable[[str], Any]
Formatter = Callable[[Any], str]

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


# ---- input -------------------------------------------------------------------------------------------

_INT_RE = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*")
_FLOAT_RE = re.compile(
    r"[ \t\n\r\f\v]*[+-]?(?:[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)[ \t\n\r\f\v]*"
)
_SPECIAL_NAMES = {"nan": "NaN", "infinity": "Infinity", "+infinity": "Infinity", "-infinity": "-Infinity",
                  "inf": "Infinity", "+inf": "Infinity", "-inf": "-Infinity"}  # fmt: skip
_FLOAT_SPECIAL = {k: float(v) for k, v in _SPECIAL_NAMES.items()}
_NUMERIC_SPECIAL = {k: Decimal(v) for k, v in _SPECIAL_NAMES.items()}
_UUID_RE = re.compile(r"[ \t\n\r\f\v]*\{?([0-9a-fA-F]{4}-?){7}[0-9a-fA-F]{4}\}?[ \t\n\r\f\v]*")
_BOOL_TRUE = ("true", "yes", "on", "1")
_BOOL_FALSE = ("false", "no", "off", "0")


@functools.cache  # one closure per type, shared by every clause (a few types: bounded)
def _int_parser(t: str) -> Parser:
    lo, hi = INT_RANGES[t]
    name = INT_NAMES[t]

    def parse(s: str) -> int:
        # fast path for Postgres' own output ("-?[0-9]+"); anything else goes through the full check
        canonical = s.isascii() and (s.isdigit() or (s[:1] == "-" and s[1:].isdigit()))
        if not canonical and not _INT_RE.fullmatch(s):
            raise WhereEvalError(f'invalid input syntax for type {name}: "{s}"')
        v = int(s)
        if v < lo or v > hi:
            raise WhereEvalError(f'value "{s}" is out of range for type {name}')
        return v

    return parse


@functools.cache
def _float_parser(t: str) -> Parser:
    name = FLOAT_NAMES[t]

    def parse(s: str) -> float:
        special = _FLOAT_SPECIAL.get(s.strip(PG_SPACE).lower())
        if special is not None:
            return special
        if not _FLOAT_RE.fullmatch(s):
            raise WhereEvalError(f'invalid input syntax for type {name}: "{s}"')
        v = float(s)
        if t == "float4":
            r = to_f4(v)
            if math.isinf(r) or (r == 0.0 and v != 0.0) or (v == 0.0 and _nonzero_digits(s)):
                raise WhereEvalError(f'"{s.strip(PG_SPACE)}" is out of range for type {name}')
            return r
        if math.isinf(v) or (v == 0.0 and _nonzero_digits(s)):
            raise WhereEvalError(f'"{s.strip(PG_SPACE)}" is out of range for type {name}')
        return v

    return parse


def _nonzero_digits(s: str) -> bool:
    mantissa = s.strip(PG_SPACE).lower().split("e")[0]
    return any(c in "123456789" for c in mantissa)


_NUMERIC_RE = re.compile(r"[ \t\n\r\f\v]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\n\r\f\v]*")


_NUMERIC_FAST = frozenset("0123456789.-")


def parse_numeric(s: str) -> Decimal:
    if s and s[-1].isdigit() and s.isascii() and _NUMERIC_FAST.issuperset(s) and s[0] != ".":
        # Postgres' own output: plain decimal notation
        try:
            d = Decimal(s)
        except decimal.InvalidOperation:
            raise WhereEvalError(f'invalid input syntax for type numeric: "{s}"') from None
        return d.copy_abs() if s[0] == "-" and d.is_zero() else d
    special = _NUMERIC_SPECIAL.get(s.strip(PG_SPACE).lower())
    if special is not None:
        return special
    if not _NUMERIC_RE.fullmatch(s):
        raise WhereEvalError(f'invalid input syntax for type numeric: "{s}"')
    d = Decimal(s.strip(PG_SPACE))
    if d.as_tuple().exponent > 0:  # type: ignore[operator]
        d = d.quantize(Decimal(1), context=NUMERIC_CTX)
    return d.copy_abs() if d.is_zero() else d


def parse_bool(s: str) -> bool:
    v = s.strip(PG_SPACE).lower()
    if v:
        t = any(w.startswith(v) for w in _BOOL_TRUE) and v not in ("o",)
        f = any(w.startswith(v) for w in _BOOL_FALSE) and v not in ("o",)
        if t != f:
            return t
    raise WhereEvalError(f'invalid input syntax for type boolean: "{s}"')


def parse_uuid(s: str) -> str:
    if not _UUID_RE.fullmatch(s):
        raise WhereEvalError(f'invalid input syntax for type uuid: "{s}"')
    h = re.sub(r"[^0-9a-fA-F]", "", s).lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _enum_parser(t: str, labels: tuple[str, ...]) -> Parser:
    allowed = frozenset(labels)
    name = t.split(".", 1)[1] if "." in t else t

    def parse(s: str) -> str:
        if s not in allowed:
            raise WhereEvalError(f'invalid input value for enum {name}: "{s}"')
        return s

    return parse


_ONE_BASED = re.compile(r"(\[1:[0-9]+\])+")


def parse_array(text: str, parse_elem: Parser, type_name: str) -> tuple[Any, ...]:
    """Parse a Postgres array literal (``{1,2}``, ``{{a,"b c"},{NULL,d}}``; dimension decorations ignored)."""
    s = text
    pos = 0
    n = len(s)
    while pos < n and s[pos] in PG_SPACE:
        pos += 1
    if pos < n and s[pos] == "[":
        eq = s.find("=", pos)
        if eq < 0:
            raise WhereEvalError(f'malformed array literal: "{text}"')
        if not _ONE_BASED.fullmatch(s[pos:eq].strip(PG_SPACE)):
            # values are tuples indexed from 1; refuse rather than answer differently from Postgres
            raise WhereEvalError(f'arrays with lower bounds other than 1 are not supported: "{text}"')
        pos = eq + 1
        while pos < n and s[pos] in PG_SPACE:
            pos += 1

    def bad() -> WhereEvalError:
        return WhereEvalError(f'malformed array literal: "{text}"')

    def level(i: int) -> tuple[tuple[Any, ...], int]:
        if i >= n or s[i] != "{":
            raise bad()
        i += 1
        items: list[Any] = []
        while True:
            while i < n and s[i] in PG_SPACE:
                i += 1
            if i >= n:
                raise bad()
            if s[i] == "}" and not items:
                return (), i + 1
            if s[i] == "{":
                sub, i = level(i)
                items.append(sub)
            elif s[i] == '"':
                i += 1
                buf = []
                while i < n and s[i] != '"':
                    if s[i] == "\\":
                        i += 1
                    if i >= n:
                        raise bad()
                    buf.append(s[i])
                    i += 1
                if i >= n:
                    raise bad()
                i += 1
                items.append(parse_elem("".join(buf)))
            else:
                start = i
                buf = []
                while i < n and s[i] not in ",}{":
                    if s[i] == "\\":
                        i += 1
                        if i >= n:
                            raise bad()
                    buf.append(s[i])
                    i += 1
                raw = "".join(buf).strip(PG_SPACE)
                if not raw or i == start:
                    raise bad()
                items.append(None if raw.upper() == "NULL" else parse_elem(raw))
            while i < n and s[i] in PG_SPACE:
                i += 1
            if i < n and s[i] == ",":
                i += 1
                continue
            if i < n and s[i] == "}":
                return tuple(items), i + 1
            raise bad()

    value, pos = level(pos)
    if s[pos:].strip(PG_SPACE):
        raise bad()
    _check_rectangular(value, text)
    return value


def _check_rectangular(value: tuple[Any, ...], text: str) -> None:
    if not value:
        return
    nested = [isinstance(v, tuple) for v in value]
    if any(nested) and not all(nested):
        raise WhereEvalError(f'malformed array literal: "{text}"')
    if all(nested):
        lengths = {len(v) for v in value}
        if len(lengths) != 1 or 0 in lengths:
            raise WhereEvalError(f'malformed array literal: "{text}"')
        for v in value:
            _check_rectangular(v, text)


def parser(t: str, enums: dict[str, tuple[str, ...]] | None = None) -> Parser:
    """The input function for type ``t`` (raises :class:`WhereEvalError` with Postgres' message)."""
    if is_array(t):
        pe = parser(elem(t), enums)
        return lambda s: parse_array(s, pe, t)
    if t in INT_TYPES:
        return _int_parser(t)
    if t in FLOAT_TYPES:
        return _float_parser(t)
    if t == "numeric":
        return parse_numeric
    if t == "bpchar":
        return lambda s: s.rstrip(" ")
    if t in TEXT_TYPES or t.startswith("other:"):
        return str
    simple: dict[str, Parser] = {
        "bool": parse_bool,
        "uuid": parse_uuid,
        "date": tm.parse_date,
        "time": tm.parse_time,
        "timestamp": lambda s: tm.parse_timestamp(s, False),
        "timestamptz": lambda s: tm.parse_timestamp(s, True),
        "interval": ivl.parse_interval,
    }
    if t in simple:
        return simple[t]
    if t.startswith("enum:"):
        return _enum_parser(t, (enums or {}).get(t, ()))
    raise KeyError(t)


# ---- output ------------------------------------------------------------------------------------------


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
