"""Parsing of the ``table`` and ``columns`` request parameters, and identifier quoting.

The HTTP API (spec §2) names tables and columns the way SQL does: unquoted names are folded to lower case and
must look like plain identifiers, double-quoted names keep their case and may contain anything (``""`` stands
for one quote).  Both parameters are parsed here, once, into the exact catalog names, so that the rest of the
engine never deals with quoting again.  Errors carry the spec's exact messages.

Unquoted names are folded the way PostgreSQL folds them in a UTF-8 database: only ASCII ``A-Z`` is
lowered (``scansup.c``); other letters are kept as they are.
"""

from __future__ import annotations

import unicodedata

from sync.where.functions import ascii_lower

__all__ = [
    "MAX_IDENTIFIER_LENGTH",
    "InvalidIdentifier",
    "parse_columns",
    "parse_identifier",
    "parse_relation",
    "quote_identifier",
    "quote_relation",
]

MAX_IDENTIFIER_LENGTH = 63  # NAMEDATALEN - 1


class InvalidIdentifier(ValueError):
    """A ``table`` or ``columns`` value naming no possible relation or column; ``str()`` is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_ZERO_LENGTH = "Invalid zero-length delimited identifier"


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _is_valid_unquoted(ident: str) -> bool:
    """``^[\\pL_][\\pL\\pM_0-9$]*$`` without the ``regex`` module."""
    first = ident[0]
    if not (first == "_" or _is_letter(first)):
        return False
    for ch in ident[1:]:
        if ch in "_$0123456789":
            continue
        cat = unicodedata.category(ch)
        if cat[0] not in "LM":
            return False
    return True


def _unquote(body: str) -> str:
    """The inside of a quoted identifier; every quote in it must be doubled."""
    if not body:
        raise InvalidIdentifier(_ZERO_LENGTH)
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        ch = body[i]
        if ch == '"':
            if i + 1 < n and body[i + 1] == '"':
                out.append('"')
                i += 2
                continue
            raise InvalidIdentifier(f"Invalid identifier with unescaped quote: {body}")
        out.append(ch)
        i += 1
    return "".join(out)


def parse_identifier(ident: str) -> str:
    """One identifier as written in a request: ``name`` (folded) or ``"Name"`` (kept)."""
    if len(ident) >= 2 and ident.startswith('"') and ident.endswith('"'):
        name = _unquote(ident[1:-1])
    elif not ident:
        raise InvalidIdentifier(_ZERO_LENGTH)
    elif not _is_valid_unquoted(ident):
        raise InvalidIdentifier(f"Invalid unquoted identifier contains special characters: {ident}")
    else:
        name = ascii_lower(ident)
    if len(name.encode()) > MAX_IDENTIFIER_LENGTH:
        raise InvalidIdentifier(
            f"Invalid identifier, longer than {MAX_IDENTIFIER_LENGTH} characters: {ident}"
        )
    return name


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (a doubled quote inside quotes stays inside)."""
    parts: list[str] = []
    start = 0
    in_quotes = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            if in_quotes and i + 1 < n and text[i + 1] == '"':
                i += 2
                continue
            in_quotes = not in_quotes
        elif ch == sep and not in_quotes:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def parse_relation(text: str) -> tuple[str, str]:
    """The ``table`` parameter as ``(schema, table)``; a bare name is in ``public``."""
    parts = _split(text, ".")
    if len(parts) > 2:
        raise InvalidIdentifier(f"Invalid relation identifier, too many delimiters: {text}")
    if len(parts) == 1:
        return "public", parse_identifier(parts[0])
    return parse_identifier(parts[0]), parse_identifier(parts[1])


def parse_columns(text: str) -> tuple[str, ...]:
    """The ``columns`` parameter as catalog names, in the order given, without duplicates."""
    seen: dict[str, None] = {}
    for item in _split(text, ","):
        seen.setdefault(parse_identifier(item), None)
    return tuple(seen)


def quote_identifier(name: str) -> str:
    """``name`` as a SQL identifier, always quoted: ``a"b`` -> ``"a""b"``."""
    return '"' + name.replace('"', '""') + '"'


def quote_relation(schema: str, table: str) -> str:
    """``"schema"."table"`` for SQL and for messages."""
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"
