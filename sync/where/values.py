"""Postgres text input for the types the WHERE language evaluates.

Values arrive as Postgres text output (from logical replication or a snapshot with the engine's display
settings); ``parser(type)`` turns one into its Python value with Postgres' input rules and error messages.
The reverse, ``formatter(type)``, is in :mod:`sync.where.formatting` and type names with their limits in
:mod:`sync.where.typenames`; both are re-exported here for the modules that import them from this one.

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
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sync.where import intervals as ivl
from sync.where import temporal as tm
from sync.where.errors import WhereEvalError
from sync.where.formatting import Formatter, format_array, format_float, format_numeric, formatter
from sync.where.typenames import (
    FLOAT_NAMES,
    FLOAT_TYPES,
    INT_NAMES,
    INT_RANGES,
    INT_TYPES,
    NUMERIC_CTX,
    NUMERIC_TYPES,
    TEXT_TYPES,
    check_int,
    elem,
    is_array,
    to_f4,
)

__all__ = [
    "FLOAT_NAMES",
    "FLOAT_TYPES",
    "INT_NAMES",
    "INT_RANGES",
    "INT_TYPES",
    "NUMERIC_CTX",
    "NUMERIC_TYPES",
    "PG_SPACE",
    "TEXT_TYPES",
    "Formatter",
    "Parser",
    "check_int",
    "elem",
    "format_array",
    "format_float",
    "format_numeric",
    "formatter",
    "is_array",
    "parse_array",
    "parse_bool",
    "parse_numeric",
    "parse_uuid",
    "parser",
    "to_f4",
]

PG_SPACE = " \t\n\r\v\f"  # what Postgres' input functions treat as white space

Parser = Callable[[str], Any]

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
_MAXDIM = 6  # MAXDIM of Postgres' arrays


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

    def level(i: int, depth: int) -> tuple[tuple[Any, ...], int]:
        if i >= n or s[i] != "{":
            raise bad()
        if depth > _MAXDIM:  # Postgres' limit; it also bounds this recursion
            raise WhereEvalError(
                f"number of array dimensions ({depth}) exceeds the maximum allowed ({_MAXDIM})"
            )
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
                sub, i = level(i, depth + 1)
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

    value, pos = level(pos, 1)
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
