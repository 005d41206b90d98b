"""Array values of the WHERE evaluator: dimensions, subscripts, slices and concatenation with Postgres' rules.

Why this module exists: the evaluator represents an array as nested tuples; reading its shape, flattening
it, fetching an element (NULL when out of bounds or with the wrong number of subscripts), slicing (bounds
clamped, empty when they cross) and concatenating (``||``, ``array_cat``/``array_append``/``array_prepend``:
dimensions must match) are pure rules of their own, kept out of the closure compiler and of operator
resolution.
"""

from __future__ import annotations

from typing import Any

from sync.where.errors import WhereEvalError

__all__ = [
    "array_append",
    "array_cat",
    "array_dims",
    "array_prepend",
    "array_shape",
    "check_dimensions",
    "fetch",
    "flatten",
    "slice_array",
]


def check_dimensions(vals: tuple[Any, ...]) -> tuple[Any, ...]:
    """``ARRAY[...]`` of arrays: ``vals`` (sub-arrays or NULLs) must all have one shape; () if all empty."""
    subs = [v for v in vals if v is not None]
    if not subs or all(len(s) == 0 for s in subs):
        return ()
    shapes = {array_shape(s) for s in subs}
    if len(shapes) != 1 or len(subs) != len(vals):
        raise WhereEvalError("multidimensional arrays must have array expressions with matching dimensions")
    return vals


def array_shape(v: Any) -> tuple[int, ...]:
    """The length of each dimension (of the first element at each level)."""
    out = []
    while isinstance(v, tuple) and v:
        out.append(len(v))
        v = v[0]
    return tuple(out)


def fetch(v: tuple[Any, ...], idx: list[int]) -> Any:
    """``v[i][j]...`` (1-based): NULL unless there is one subscript per dimension, each in bounds."""
    if len(idx) != len(array_shape(v)):
        return None
    cur: Any = v
    for i in idx:
        if not 1 <= i <= len(cur):
            return None
        cur = cur[i - 1]
    return cur


def slice_array(v: tuple[Any, ...], lows: list[int | None], ups: list[int | None]) -> tuple[Any, ...]:
    """``v[lo:hi]...``: omitted bounds are the dimension's, bounds are clamped, crossing ones give ``{}``."""
    shape = array_shape(v)
    if not shape or len(lows) > len(shape):
        return ()
    bounds = []
    for d, size in enumerate(shape):
        if d < len(lows):
            given_lo, given_hi = lows[d], ups[d]
            lo = 1 if given_lo is None else max(given_lo, 1)
            hi = size if given_hi is None else min(given_hi, size)
            if lo > hi:
                return ()
            bounds.append((lo, hi))
        else:
            bounds.append((1, size))

    def cut(x: Any, d: int) -> Any:
        if d == len(bounds):
            return x
        lo, hi = bounds[d]
        return tuple(cut(y, d + 1) for y in x[lo - 1 : hi])

    out: tuple[Any, ...] = cut(v, 0)
    return out


def flatten(v: tuple[Any, ...]) -> list[Any]:
    """The elements of every dimension in storage order (NULLs included)."""
    out: list[Any] = []
    for x in v:
        if isinstance(x, tuple):
            out.extend(flatten(x))
        else:
            out.append(x)
    return out


def array_dims(v: tuple[Any, ...]) -> int:
    """The number of dimensions (an empty array counts the levels down to its first empty tuple)."""
    n = 0
    while isinstance(v, tuple):
        n += 1
        if not v:
            break
        v = v[0]
    return n


def array_cat(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    if not a:
        return b
    if not b:
        return a
    da, db = array_dims(a), array_dims(b)
    if da == db:
        if da > 1 and array_shape(a)[1:] != array_shape(b)[1:]:
            raise WhereEvalError("cannot concatenate incompatible arrays")
        return a + b
    if da == db + 1:
        if array_shape(a)[1:] != array_shape(b):
            raise WhereEvalError("cannot concatenate incompatible arrays")
        return (*a, b)
    if db == da + 1:
        if array_shape(b)[1:] != array_shape(a):
            raise WhereEvalError("cannot concatenate incompatible arrays")
        return (a, *b)
    raise WhereEvalError("cannot concatenate incompatible arrays")


def array_append(a: tuple[Any, ...] | None, x: Any) -> tuple[Any, ...]:
    if a is None:
        return (x,)
    if a and array_dims(a) > 1:
        raise WhereEvalError("argument must be empty or one-dimensional array")
    return (*a, x)


def array_prepend(x: Any, a: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if a is None:
        return (x,)
    if a and array_dims(a) > 1:
        raise WhereEvalError("argument must be empty or one-dimensional array")
    return (x, *a)
