"""Functions of the WHERE language (spec §8): signatures and implementations.

Casting functions named after a type (``int4('1')``, ``text(x)``...) are handled by the parser as casts;
this module covers the rest.  Text case mapping uses the C collation (ASCII only) because the generated
SQL pins ``COLLATE "C"``: the snapshot query and the live evaluator must agree whatever the database's
locale is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from sync.where import intervals as ivl
from sync.where import temporal as tm
from sync.where.arrays import array_append, array_cat, array_prepend
from sync.where.casts import common_of
from sync.where.comparisons import cmp_key
from sync.where.formatting import formatter
from sync.where.typenames import TEXT_TYPES, elem, is_array

__all__ = ["FUNCTIONS", "Function", "ascii_lower", "ascii_upper", "resolve_function"]

_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_lower(s: str) -> str:
    return s.lower() if s.isascii() else s.translate(_LOWER)


def ascii_upper(s: str) -> str:
    return s.upper() if s.isascii() else s.translate(_UPPER)


class Function(NamedTuple):
    argtypes: tuple[str, ...]
    result: str
    impl: Callable[..., Any]
    strict: bool  # NULL in, NULL out (without calling impl)


def _ndims(v: tuple[Any, ...]) -> int | None:
    if not v:
        return None
    n = 0
    while isinstance(v, tuple) and v:
        n += 1
        v = v[0]
    return n


def _greatest(t: str, least: bool) -> Callable[..., Any]:
    key = cmp_key(t) or (lambda v: v)

    def pick(*args: Any) -> Any:
        vals = [a for a in args if a is not None]
        if not vals:
            return None
        return min(vals, key=key) if least else max(vals, key=key)

    return pick


def _coalesce(*args: Any) -> Any:
    for a in args:
        if a is not None:
            return a
    return None


def resolve_function(name: str, types: list[str]) -> Function | None:
    """Resolve ``name(types...)``; ``unknown`` stands for untyped literals."""
    n = len(types)
    t = [("text" if x == "unknown" else x) for x in types]
    if name in ("lower", "upper") and n == 1 and t[0] in TEXT_TYPES:
        return Function(("text",), "text", ascii_lower if name == "lower" else ascii_upper, True)
    if name in ("coalesce", "greatest", "least") and n >= 1:
        c = common_of(types)
        if c is None:
            return None
        impl = _coalesce if name == "coalesce" else _greatest(c, name == "least")
        return Function(tuple(c for _ in types), c, impl, False)
    if name == "concat" and n >= 1:
        fmts = [formatter(x) for x in t]

        def concat(*args: Any) -> str:
            return "".join(f(a) for f, a in zip(fmts, args, strict=True) if a is not None)

        return Function(tuple(t), "text", concat, False)
    if name == "array_cat" and n == 2:
        c = common_of(types)
        if c is None or not is_array(c):
            return None

        return Function((c, c), c, array_cat, False)
    if name == "array_append" and n == 2 and is_array(types[0]):
        c = common_of([elem(types[0]), types[1]])
        if c is None:
            return None
        return Function((c + "[]", c), c + "[]", array_append, False)
    if name == "array_prepend" and n == 2 and is_array(types[1]):
        c = common_of([types[0], elem(types[1])])
        if c is None:
            return None
        return Function((c, c + "[]"), c + "[]", array_prepend, False)
    if name == "array_ndims" and n == 1 and is_array(types[0]):
        return Function((types[0],), "int4", _ndims, True)
    if name in ("justify_days", "justify_hours", "justify_interval") and n == 1 and t[0] == "interval":
        impl = {"justify_days": ivl.justify_days, "justify_hours": tm.justify_hours}.get(
            name, ivl.justify_interval
        )
        return Function(("interval",), "interval", impl, True)
    return None


FUNCTIONS = frozenset(
    {
        "lower",
        "upper",
        "coalesce",
        "greatest",
        "least",
        "concat",
        "array_cat",
        "array_append",
        "array_prepend",
        "array_ndims",
        "justify_days",
        "justify_hours",
        "justify_interval",
        "like",
        "ilike",
        "timezone",
        "abs",
    }
)
