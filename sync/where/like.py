"""LIKE / ILIKE pattern matching with Postgres' rules, for the WHERE evaluator.

Why this module exists: pattern matching is a self-contained piece of Postgres semantics (``%``, ``_``,
the escape character, ILIKE's ASCII case folding, the error for a pattern ending with the escape character
raised only when matching gets that far); keeping it out of the closure compiler keeps both small.  Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sync.where.errors import WhereEvalError
from sync.where.functions import ascii_lower

__all__ = ["escape_char", "like_matcher"]


def like_matcher(pattern: str, escape: str | None = "\\", ci: bool = False) -> Callable[[str], bool]:
    """A LIKE/ILIKE predicate for ``pattern`` (``%``, ``_``, ``escape`` quoting the next character).

    As in Postgres, a pattern ending with the escape character is an error only when matching gets that
    far (``LIKE pattern must not end with escape character``); ILIKE compares ASCII-lowercased text.
    """
    out = []
    i = 0
    n = len(pattern)
    dangling = False
    while i < n:
        ch = pattern[i]
        if escape and ch == escape:
            i += 1
            if i >= n:
                dangling = True
                break
            lit = pattern[i]
            out.append(re.escape(ascii_lower(lit) if ci else lit))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ascii_lower(ch) if ci else ch))
        i += 1
    rx = re.compile("".join(out), re.DOTALL)
    fold = ascii_lower if ci else (lambda v: v)
    if not dangling:
        full = rx.fullmatch
        return lambda v: full(fold(v)) is not None
    # Postgres' matcher meets the dangling escape only with text left over
    prefix = re.compile(rx.pattern + ".", re.DOTALL).match

    def dangling_match(v: str) -> bool:
        if prefix(fold(v)) is not None:
            raise WhereEvalError("LIKE pattern must not end with escape character")
        return False

    return dangling_match


def escape_char(e: str) -> str | None:
    """The ``ESCAPE`` operand as the matcher takes it: None for ``''`` (no escape character)."""
    if e == "":
        return None
    if len(e) != 1:
        raise WhereEvalError("invalid escape string")
    return e
