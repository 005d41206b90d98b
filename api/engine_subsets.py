"""Subset snapshots (spec §9) over the real engine: the subset half of the ShapeEngine port's adapter.

Why a module of its own: a subset is answered by a query of its own, beside the shape's log (plans kept
per request shape, each shape's compiled WHERE, a pool of snapshot connections), and a repeated subset GET
(the lean lane, ``api/lean_lane.py``) reruns what the first one checked and planned (:class:`SubsetRepeat`).
:class:`~api.engine_adapter.EngineShapes` inherits these methods from :class:`EngineSubsets` rather than
delegating to it, so a subset request makes no extra call on its way to the query.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from api.engine_port import (
    DatabaseUnreachable,
    InvalidRequest,
    ShapeGone,
    SnapshotBusy,
    SnapshotFailed,
    SubsetSnapshot,
)
from api.subset import InvalidSubset
from sync.engine import Engine
from sync.offsets import LogOffset
from sync.postgres.inspector import TableInfo
from sync.shapes.definition import ShapeDefinition as SyncDefinition
from sync.shapes.directory import LiveShape
from sync.shapes.resolver import CatalogUnavailable
from sync.shapes.subset import SubsetError, SubsetRequest
from sync.shapes.subset_plan import KeptPlan, PlannedQuery, SubsetPlans
from sync.shapes.subset_runner import SubsetBusy, SubsetQueryFailed, SubsetRunner
from sync.stack import StackServices
from sync.storage.errors import ShapeGone as StorageShapeGone
from sync.where import WhereClause, WhereError, compile_where

__all__ = ["EngineSubsets", "SubsetRepeat"]


class EngineSubsets:
    """The subset methods of :class:`~api.engine_adapter.EngineShapes` and what they keep: validated plans
    (:mod:`sync.shapes.subset_plan`), per handle the shape's compiled WHERE and the fact that its snapshot
    has started, and the subset connections (:class:`~sync.shapes.subset_runner.SubsetRunner`)."""

    # EngineShapes's: its services, the size of its per-handle caches, its handle lookup and snapshot wait
    _services: StackServices
    _memo_size: int
    _shape: Callable[[str], LiveShape]
    await_snapshot_start: Callable[[str], None]

    def _init_subsets(self, engine: Engine) -> None:
        self._wheres: OrderedDict[str, WhereClause] = OrderedDict()
        self._plans = SubsetPlans()
        # per handle: the shape seen with its snapshot started (a started snapshot stays started)
        self._started: OrderedDict[str, LiveShape] = OrderedDict()
        db = engine.settings.database
        self._subsets = SubsetRunner(
            engine.settings.snapshot_dsn,
            size=db.snapshot_pool_size,
            queue_timeout=db.snapshot_queue_timeout_s,
            statement_timeout=db.statement_timeout_s,
        )

    def subset_snapshot(
        self,
        handle: str,
        subset: SubsetRequest,
        *,
        request_offset: LogOffset | None,
        queryable_columns: tuple[str, ...] | None = None,
    ) -> SubsetSnapshot:
        shape = self._shape(handle)
        defn = shape.definition
        try:
            info = self._services.resolver.table(defn.schema, defn.table)
        except CatalogUnavailable as exc:
            raise DatabaseUnreachable(str(exc)) from None
        except LookupError:
            raise ShapeGone(handle) from None
        if info.oid != defn.relation_oid:
            raise ShapeGone(handle)
        if queryable_columns is not None:
            missing = [c for c in info.pk if c not in queryable_columns]
            if missing:
                msg = "The list of queryable columns must include all primary key columns, missing: "
                raise InvalidRequest({"queryable_columns": [msg + ", ".join(missing)]})
        try:
            planned = self._plans.plan(
                handle, defn, self._shape_where(handle, defn, info), info, queryable_columns, subset
            )
        except SubsetError as exc:
            raise InvalidSubset(exc.errors) from None
        # The shape's own snapshot must have been taken before the subset's: for a new shape, a transaction
        # committed between the two would otherwise be neither in the subset nor in the log.
        if self._started.get(handle) is not shape:
            self.await_snapshot_start(handle)
            _remember(self._started, handle, shape, self._memo_size)
        try:
            latest = shape.reader.latest_offset()  # before the subset's snapshot: the log so far is covered
        except StorageShapeGone:
            raise ShapeGone(handle) from None
        return self._run_subset(planned, defn, latest, request_offset)

    def _run_subset(
        self, planned: PlannedQuery, defn: SyncDefinition, latest: LogOffset, request_offset: LogOffset | None
    ) -> SubsetSnapshot:
        """Run a planned subset query (taken after ``latest``, the shape's latest offset): its answer, echoing
        the client's own offset if it has one."""
        try:
            result = self._subsets.run(planned.query, planned.params, defn)
        except SubsetBusy:
            raise SnapshotBusy from None
        except SubsetQueryFailed as exc:
            raise SnapshotFailed(f"Subset snapshot failed: {exc}") from None
        offset = request_offset if request_offset is not None else latest
        # the statement's end is read once the answer has left (sync/shapes/subset_hot.py)
        return SubsetSnapshot(body=result.body(), offset=offset, after=self._subsets.settle_pending)

    def subset_repeat(
        self,
        handle: str,
        subset: SubsetRequest,
        *,
        request_offset: LogOffset | None,
        queryable_columns: tuple[str, ...] | None = None,
    ) -> SubsetRepeat | None:
        """What :meth:`subset_snapshot` checked and planned for this request shape, kept for its repeats
        (called after it succeeded); None when there is nothing to keep."""
        shape = self._services.directory.get(handle)
        if shape is None or self._started.get(handle) is not shape:
            return None
        defn = shape.definition
        try:
            info = self._services.resolver.table(defn.schema, defn.table)
        except (CatalogUnavailable, LookupError):
            return None
        plan = self._plans.kept(handle, info, queryable_columns, subset)
        if plan is None:
            return None
        return SubsetRepeat(self, handle, shape, plan, request_offset)

    def _shape_where(self, handle: str, defn: SyncDefinition, info: TableInfo) -> WhereClause | None:
        """The shape's compiled WHERE, kept per handle (a handle's definition never changes)."""
        if defn.where is None:
            return None
        clause = self._wheres.get(handle)
        if clause is None:
            try:
                clause = compile_where(defn.where, info, {i + 1: v for i, v in enumerate(defn.params)})
            except WhereError:  # the table changed under the shape: it is being invalidated
                raise ShapeGone(handle) from None
            _remember(self._wheres, handle, clause, self._memo_size)
        return clause

    def close(self) -> None:
        """Close the subset connections (the engine's own resources are stopped with the engine)."""
        self._subsets.close()


class SubsetRepeat:
    """A repeated subset's :meth:`EngineSubsets.subset_snapshot`: the checks that can change between
    requests, made again (the shape is still the handle's, the catalog entry still the plan's), then the
    plan bound and run.  ``__call__`` answers None whenever one fails: the full path then answers, with
    its own error if there is one."""

    __slots__ = ("_directory", "_handle", "_offset", "_plan", "_resolver", "_run", "_shape")

    def __init__(
        self, adapter: EngineSubsets, handle: str, shape: LiveShape, plan: KeptPlan, offset: LogOffset | None
    ) -> None:
        self._directory = adapter._services.directory
        self._resolver = adapter._services.resolver
        self._run = adapter._run_subset
        self._handle, self._shape, self._plan, self._offset = handle, shape, plan, offset

    def __call__(self, params: str) -> SubsetSnapshot | None:
        shape, defn = self._shape, self._shape.definition
        if self._directory.get(self._handle) is not shape:
            return None
        try:
            if self._resolver.table(defn.schema, defn.table) is not self._plan.table:
                return None
        except (CatalogUnavailable, LookupError):
            return None
        self._directory.touch(self._handle)
        planned = self._plan.bind(params)
        if planned is None:
            return None
        try:
            latest = shape.reader.latest_offset()  # before the subset's snapshot (as subset_snapshot)
        except StorageShapeGone:
            return None
        return self._run(planned, defn, latest, self._offset)


def _remember(cache: OrderedDict[str, Any], key: str, value: Any, size: int) -> None:
    """Put ``key`` in a bounded per-handle cache (oldest first out)."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
