"""Subset snapshots (spec §9): validate a subset request against a shape and build its query.

Why a pure module: the validation rules and their messages are part of the protocol and are unit-tested
rule by rule, and the SQL is built here from validated pieces only.  The client's text never reaches
Postgres: the subset WHERE is compiled by :mod:`sync.where` and re-rendered from its typed tree (constants
bound as ``%s`` parameters), ORDER BY accepts column references with ASC/DESC and NULLS FIRST/LAST and is
re-rendered with quoted identifiers, LIMIT/OFFSET are bound integers.

Validation follows Electric's ``Api.Params.SubsetParams`` + ``Shape.Subset``: cast errors (``limit``,
``offset``, ``params``) and the number rules are reported together; then, only if those passed,
``order_by`` and finally ``where`` (the first failure of those two wins).  Every message is keyed by the
subset field; the HTTP layer nests them under ``errors.subset``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from sync.postgres.inspector import TableInfo
from sync.shapes.definition import ShapeDefinition
from sync.shapes.identifiers import InvalidIdentifier, parse_identifier, quote_identifier
from sync.where import WhereClause, WhereError, compile_where

__all__ = [
    "OrderItem",
    "SubsetError",
    "SubsetQuery",
    "SubsetRequest",
    "build_subset_query",
    "numbered_params",
    "parse_order_by",
    "restrict_table",
    "subset_params",
    "validate_subset",
]

NO_SUBQUERIES = "Subqueries are not allowed in subsets"
ORDER_BY_REQUIRED = "order_by is required when limit or offset is present"
_SUBLINK_MARK = "sublinks are supported"  # sync.where's message for any sublink
_BIGINT = 1 << 63


class SubsetError(ValueError):
    """The subset part of a request is invalid: ``errors`` maps a subset field to its messages."""

    def __init__(self, errors: Mapping[str, Sequence[str]]) -> None:
        super().__init__(dict(errors))
        self.errors: dict[str, list[str]] = {k: list(v) for k, v in errors.items()}


@dataclass(frozen=True, slots=True)
class SubsetRequest:
    """A subset request as received (GET ``subset__*`` params or a POST body), values as text.

    ``params`` is either the JSON object text of ``subset__params`` or an already decoded mapping (a POST
    body); its values are converted to strings (spec §9).
    """

    where: str | None = None
    params: str | Mapping[str, Any] | None = None
    limit: str | None = None
    offset: str | None = None
    order_by: str | None = None


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One ORDER BY term: a column, its direction and its NULLS placement (None: Postgres' default)."""

    column: str
    descending: bool = False
    nulls_first: bool | None = None

    def to_text(self) -> str:
        """The term as SQL for a psycopg query (identifier quoted, ``%`` escaped)."""
        text = _ident(self.column)
        if self.descending:
            text += " DESC"
        if self.nulls_first is not None:
            text += " NULLS FIRST" if self.nulls_first else " NULLS LAST"
        return text


@dataclass(frozen=True, slots=True)
class SubsetQuery:
    """A validated subset: the compiled WHERE (None: the whole shape), ORDER BY, LIMIT and OFFSET."""

    where: WhereClause | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: int | None = None
    offset: int | None = None
    columns_used: frozenset[str] = field(default=frozenset())


# -- parsing ------------------------------------------------------------------------------------------------


def _integer(value: str | None, name: str, errors: dict[str, list[str]]) -> int | None:
    if value is None or value == "":
        return None
    text = value.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 30 or abs(int(text)) >= _BIGINT:
        errors.setdefault(name, []).append("is invalid")  # also what Postgres' bigint LIMIT cannot take
        return None
    return int(text)


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def _params(raw: str | Mapping[str, Any] | None, errors: dict[str, list[str]]) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    decoded: Any = raw
    if isinstance(raw, str):
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            errors.setdefault("params", []).append("params must be valid JSON")
            return {}
    if not isinstance(decoded, Mapping):
        errors.setdefault("params", []).append("params must be a JSON object")
        return {}
    return {str(k): _stringify(v) for k, v in decoded.items()}


def subset_params(raw: str | Mapping[str, Any] | None) -> dict[str, str]:
    """``params`` as text values by key; raises :class:`SubsetError` (``params``) when it is no JSON
    object."""
    errors: dict[str, list[str]] = {}
    params = _params(raw, errors)
    if errors:
        raise SubsetError(errors)
    return params


def numbered_params(params: Mapping[str, str]) -> dict[int, str]:
    """``$n`` -> value; raises :class:`SubsetError` (``params``) unless keys are 1..n."""
    numbers: dict[int, str] = {}
    for key, value in params.items():
        if not key.isascii() or not key.isdigit():
            raise SubsetError({"params": ["Parameters can only use numbers as keys"]})
        numbers[int(key)] = value
    if sorted(numbers) != list(range(1, len(numbers) + 1)):
        raise SubsetError({"params": ["Parameters must be numbered sequentially, starting from 1"]})
    return numbers


def _order_tokens(text: str) -> list[tuple[str, int]]:
    """Split ORDER BY text into (token, position): quoted identifiers, words and commas."""
    tokens: list[tuple[str, int]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == ",":
            tokens.append((",", i))
            i += 1
        elif ch == '"':
            j = i + 1
            while j < n:
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise SubsetError({"order_by": [f"At location {i}: unterminated quoted identifier"]})
            tokens.append((text[i : j + 1], i))
            i = j + 1
        elif ch.isalnum() or ch in "_$" or ord(ch) > 127:
            j = i
            while j < n and (text[j].isalnum() or text[j] in "_$" or ord(text[j]) > 127):
                j += 1
            tokens.append((text[i:j], i))
            i = j
        else:
            raise SubsetError(
                {"order_by": [f"At location {i}: order_by only accepts column references with ASC/DESC "
                              "and NULLS FIRST/LAST"]}
            )  # fmt: skip
    return tokens


def parse_order_by(text: str, columns: Mapping[str, object]) -> tuple[OrderItem, ...]:
    """``col [ASC|DESC] [NULLS FIRST|LAST], ...`` over ``columns``; raises SubsetError (``order_by``)."""
    items: list[OrderItem] = []
    tokens = _order_tokens(text)
    if not tokens:
        raise SubsetError({"order_by": ["can't be blank"]})
    pos = 0

    def fail(at: int, message: str) -> SubsetError:
        return SubsetError({"order_by": [f"At location {at}: {message}"]})

    while pos < len(tokens):
        token, at = tokens[pos]
        if token == ",":
            raise fail(at, "expected a column reference")
        try:
            column = parse_identifier(token)
        except InvalidIdentifier as exc:
            raise fail(at, exc.message) from None
        if column not in columns:
            raise fail(at, f"unknown reference {token}")
        pos += 1
        descending = False
        nulls_first: bool | None = None
        if pos < len(tokens) and tokens[pos][0].upper() in ("ASC", "DESC"):
            descending = tokens[pos][0].upper() == "DESC"
            pos += 1
        if pos < len(tokens) and tokens[pos][0].upper() == "NULLS":
            if pos + 1 >= len(tokens) or tokens[pos + 1][0].upper() not in ("FIRST", "LAST"):
                raise fail(tokens[pos][1], "expected FIRST or LAST after NULLS")
            nulls_first = tokens[pos + 1][0].upper() == "FIRST"
            pos += 2
        items.append(OrderItem(column, descending, nulls_first))
        if pos < len(tokens):
            token, at = tokens[pos]
            if token != ",":
                raise fail(at, "order_by only accepts column references with ASC/DESC and NULLS FIRST/LAST")
            pos += 1
            if pos == len(tokens):
                raise fail(at, "expected a column reference")
    return tuple(items)


def restrict_table(table: TableInfo, queryable: Sequence[str] | None) -> TableInfo:
    """``table`` with only the ``queryable`` columns (all of them when None)."""
    if queryable is None:
        return table
    allowed = set(queryable)
    return replace(table, columns=tuple(c for c in table.columns if c.name in allowed), by_name={})


def validate_subset(request: SubsetRequest, table: TableInfo) -> SubsetQuery:
    """Validate ``request`` against ``table`` (already restricted to the queryable columns).

    Raises :class:`SubsetError` with Electric's messages (see the module docstring for the order).
    """
    errors: dict[str, list[str]] = {}
    limit = _integer(request.limit, "limit", errors)
    offset = _integer(request.offset, "offset", errors)
    params = _params(request.params, errors)
    if limit is not None and limit <= 0:
        errors.setdefault("limit", []).append("must be greater than 0")
    if offset is not None and offset < 0:
        errors.setdefault("offset", []).append("must be greater than or equal to 0")
    has_order = request.order_by is not None and request.order_by.strip() != ""
    if (request.limit not in (None, "") or request.offset not in (None, "")) and not has_order:
        errors.setdefault("order_by", []).append(ORDER_BY_REQUIRED)
    if errors:
        raise SubsetError(errors)

    order: tuple[OrderItem, ...] = ()
    if has_order:
        assert request.order_by is not None
        order = parse_order_by(request.order_by, table.by_name)

    clause: WhereClause | None = None
    if request.where is not None and request.where.strip():
        numbered = numbered_params(params)
        try:
            clause = compile_where(request.where, table, numbered)
        except WhereError as exc:
            messages = [NO_SUBQUERIES if _SUBLINK_MARK in m else m for m in exc.messages]
            raise SubsetError({"where": messages}) from None
    used = frozenset(item.column for item in order) | (clause.columns if clause else frozenset())
    return SubsetQuery(clause, order, limit, offset, used)


# -- SQL ---------------------------------------------------------------------------------------------------


def _ident(name: str) -> str:
    """A quoted identifier for psycopg's ``%s`` query syntax (``"`` doubled, ``%`` escaped)."""
    return quote_identifier(name).replace("%", "%%")


def build_subset_query(
    definition: ShapeDefinition, shape_where: WhereClause | None, subset: SubsetQuery
) -> tuple[bytes, list[Any]]:
    """``SELECT <shape columns> FROM <table> WHERE (<shape where>) AND (<subset where>) ORDER BY ...
    LIMIT %s OFFSET %s`` and its parameters (psycopg ``%s`` style).

    Built as text from quoted identifiers and the WHERE package's rendering rather than ``psycopg.sql``
    objects: composing those costs more than the query itself on a small subset, and a plain query is
    parsed once and cached by psycopg."""
    parts = [
        "SELECT ",
        ", ".join(_ident(c) for c in definition.columns),
        f" FROM ONLY {_ident(definition.schema)}.{_ident(definition.table)}",  # as the snapshot reads it
    ]
    params: list[Any] = []
    conditions: list[str] = []
    for clause in (shape_where, subset.where):
        if clause is not None:
            text, values = clause.to_sql()
            conditions.append(f"({text})")
            params.extend(values)
    if conditions:
        parts += (" WHERE ", " AND ".join(conditions))
    if subset.order_by:
        parts += (" ORDER BY ", ", ".join(item.to_text() for item in subset.order_by))
    if subset.limit is not None:
        parts.append(" LIMIT %s")
        params.append(subset.limit)
    if subset.offset is not None:
        parts.append(" OFFSET %s")
        params.append(subset.offset)
    return "".join(parts).encode(), params
