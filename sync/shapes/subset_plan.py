"""Validated subset plans (spec §9), kept per shape and request shape and bound per request.

Why: an on-demand client (TanStack DB) sends the same subset again and again with other ``$n`` values:
same handle, same ``where`` text, ``order_by``, ``limit`` and ``offset``.  Validating it and building its
query each time (parsing ORDER BY, compiling the WHERE, rendering the SQL) cost the HTTP worker more than
the query costs Postgres.  A plan is the outcome of one full validation: the query text and its values,
with the subset WHERE's ``$n`` values as slots (:mod:`sync.where.slots`).  The next request of the same
shape only decodes its ``params`` and binds them.

A plan answers only when the full validation would have given the same query: same catalog entry of the
table (its identity: the resolver replaces the entry when the table changes), same queryable columns, same
texts, the same number of ``$n`` values, each taken by its type as the compiler takes it.  Whatever else
(a ``params`` that is not a JSON object, a value the type refuses, a clause whose values may change its
shape) goes through :func:`~sync.shapes.subset.validate_subset` again, which raises the request's error.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sync.postgres.inspector import TableInfo
from sync.shapes.definition import ShapeDefinition
from sync.shapes.subset import (
    SubsetError,
    SubsetRequest,
    build_subset_query,
    numbered_params,
    restrict_table,
    subset_params,
    validate_subset,
)
from sync.where import WhereClause
from sync.where.slots import SlotTemplate, slot_template

__all__ = ["KeptPlan", "PlannedQuery", "SubsetPlans"]

PlanKey = tuple[str, tuple[str, ...] | None, str | None, str | None, str | None, str | None, int]


@dataclass(frozen=True, slots=True)
class PlannedQuery:
    """A subset's query (psycopg ``%s`` syntax) and its values."""

    query: bytes
    params: list[Any]


@dataclass(frozen=True, slots=True)
class _Plan:
    table: TableInfo  # the catalog entry validated against (identity)
    query: bytes
    params: tuple[Any, ...]  # the subset WHERE's values are bound at ``at``
    template: SlotTemplate | None  # None: the subset WHERE takes no $n values
    at: int

    def bound(self, values: Mapping[int, str]) -> PlannedQuery | None:
        """The query with the subset WHERE's ``values`` ($n -> text) in place of the template's; None when
        the template cannot take them (:meth:`SlotTemplate.bind`)."""
        assert self.template is not None
        bound = self.template.bind(values)
        if bound is None:
            return None
        params = list(self.params)
        params[self.at : self.at + len(bound)] = bound
        return PlannedQuery(self.query, params)


def _key(handle: str, queryable: tuple[str, ...] | None, request: SubsetRequest, n: int) -> PlanKey:
    return (handle, queryable, request.where, request.order_by, request.limit, request.offset, n)


class SubsetPlans:
    """Plans per (handle, queryable columns, subset texts, number of ``$n`` values), least recently used
    evicted.  Not thread-safe on its own: a lost update only costs a validation (gevent: one thread)."""

    def __init__(self, size: int = 1024) -> None:
        self._plans: OrderedDict[PlanKey, _Plan] = OrderedDict()
        self._size = size

    def __len__(self) -> int:
        return len(self._plans)

    def plan(  # noqa: PLR0917 - the whole request context
        self,
        handle: str,
        definition: ShapeDefinition,
        shape_where: WhereClause | None,
        table: TableInfo,
        queryable: tuple[str, ...] | None,
        request: SubsetRequest,
    ) -> PlannedQuery:
        """The query of ``request`` on the shape ``handle``; raises :class:`SubsetError` as
        :func:`~sync.shapes.subset.validate_subset` does."""
        bound = self._bind(handle, table, queryable, request)
        if bound is not None:
            return bound
        subset = validate_subset(request, restrict_table(table, queryable))
        query, params = build_subset_query(definition, shape_where, subset)
        values = numbered_params(subset_params(request.params))
        template: SlotTemplate | None = None
        at = len(params)
        if subset.where is not None:
            at = _where_at(shape_where)
            if values:
                template = slot_template(subset.where, values)
                if template is None:
                    return PlannedQuery(query, params)  # its values may matter: validated each time
        key = _key(handle, queryable, request, len(values))
        self._plans[key] = _Plan(table, query, tuple(params), template, at)
        self._plans.move_to_end(key)
        while len(self._plans) > self._size:
            self._plans.popitem(last=False)
        return PlannedQuery(query, params)

    def _bind(
        self, handle: str, table: TableInfo, queryable: tuple[str, ...] | None, request: SubsetRequest
    ) -> PlannedQuery | None:
        try:
            values = subset_params(request.params)
            plan = self._plans.get(_key(handle, queryable, request, len(values)))
            if plan is None or plan.table is not table:
                return None
            if plan.template is None:  # no subset WHERE, or one without $n (then no values: n is 0)
                return PlannedQuery(plan.query, list(plan.params))
            numbered = numbered_params(values)
        except SubsetError:
            return None  # validated again: raises the request's own error
        return plan.bound(numbered)

    def kept(
        self, handle: str, table: TableInfo, queryable: tuple[str, ...] | None, request: SubsetRequest
    ) -> KeptPlan | None:
        """The plan :meth:`plan` keeps for ``request``'s shape (validated against ``table``), when its
        values are bound per request; None otherwise."""
        try:
            n = len(subset_params(request.params))
        except SubsetError:
            return None
        plan = self._plans.get(_key(handle, queryable, request, n))
        if plan is None or plan.table is not table or plan.template is None:
            return None
        return KeptPlan(plan)


class KeptPlan:
    """One request shape's plan, bound per request without a lookup (a repeated subset's fast path)."""

    __slots__ = ("_keys", "_plan")

    def __init__(self, plan: _Plan) -> None:
        assert plan.template is not None
        self._plan = plan
        # the $n values' keys as a client writes them ("1".."n"), with their numbers
        self._keys = tuple((str(n), n) for n in range(1, plan.template.params + 1))

    @property
    def table(self) -> TableInfo:
        return self._plan.table

    def bind(self, params: str) -> PlannedQuery | None:
        """The query with ``params`` (the request's ``subset__params`` text) bound as
        :meth:`SubsetPlans.plan` binds them; None when :meth:`SubsetPlans.plan` must decide (an error, or a
        value the template cannot take)."""
        values = _plain_values(params, self._keys)
        if values is None:  # anything but an object of exactly "1".."n" with text values
            try:
                values = numbered_params(subset_params(params))
            except SubsetError:
                return None
        return self._plan.bound(values)


def _plain_values(params: str, keys: tuple[tuple[str, int], ...]) -> dict[int, str] | None:
    """``numbered_params(subset_params(params))`` when ``params`` is a JSON object of exactly the keys
    ``"1"``..``"n"`` with string values (what a client sends: both give the same mapping then), else None.
    The general path's steps (a decoded copy with every value stringified, the keys checked and numbered
    one by one) cost a repeated subset ~15 µs of the worker's time on its critical path."""
    try:
        decoded = orjson.loads(params)
    except orjson.JSONDecodeError:
        return None
    if type(decoded) is not dict or len(decoded) != len(keys):
        return None
    values: dict[int, str] = {}
    for key, number in keys:
        value = decoded.get(key)
        if type(value) is not str:
            return None
        values[number] = value
    return values


def _where_at(shape_where: WhereClause | None) -> int:
    """Where the subset WHERE's values start: after the shape WHERE's (see build_subset_query)."""
    return 0 if shape_where is None else len(shape_where.to_sql()[1])
