"""The ``/v1/shape`` resource: GET/HEAD/DELETE/OPTIONS over the :class:`ShapeEngine` port (spec §3-§7).

Why it is thin: parsing lives in ``api/params.py``, header rules in ``api/headers.py``, error mapping in
``api/errors.py``, SSE in ``api/sse.py`` and response rendering (headers, 304, body, memoised answers) in
``api/shape_response.py``; this module only sequences a request: resolve the shape
(409 on an unknown/mismatched handle), wait out an out-of-bounds offset, read the chunk, answer 304 on a
matching If-None-Match (decided before any wait), hold a live request on a :class:`ChangeWaiter` (a future,
no actor busy) and stream the body as ``[`` + stored item bytes + control item + ``]`` without decoding.
Long-polls woken by the same change share one answer (body and headers, ``api/live_memo.py``); each keeps
its own cursor; under our gunicorn worker a memoised answer leaves pre-rendered, past Falcon's response
processing and gunicorn's header code (``api/raw_response.py``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import falcon
import orjson

from api.engine_port import (
    ChangeWaiter,
    InvalidRequest,
    LogChunk,
    ShapeDefinition,
    ShapeEngine,
    ShapeEngineError,
    ShapeGone,
    StackNotReady,
    WaitOutcome,
)
from api.errors import (
    BadRequestBody,
    DefinitionMismatch,
    DeleteNotAllowed,
    MustRefetch,
    ShapeNotFound,
    register_error_handlers,
)
from api.headers import (
    SHAPE_PATH,
    ShapeResponseMeta,
    cache_control_headers,
    preflight_headers,
)
from api.live_memo import LiveAnswer, LiveMemo
from api.middleware import request_query, shape_api_middleware
from api.params import ApiSettings, ShapeRequest, parse_delete_request, parse_shape_request
from api.raw_response import LANE_ERROR_KEY, RawResponse
from api.shape_response import ShapeResponder, json_array_body
from api.sse import sse_events, up_to_date_item
from api.subset import (
    SubsetResponder,
    apply_queryable_columns,
    parse_queryable_columns,
    subset_from_body,
    subset_from_query,
    subset_request_offset,
)
from sync.offsets import LogOffset
from sync.shapes.subset import SubsetRequest

__all__ = ["ShapeResource", "install_shape_api", "json_array_body"]

log = logging.getLogger(__name__)

OUT_OF_BOUNDS = {"offset": ["out of bounds for this shape"]}
LIVE_MEMO_TTL = 3.0  # s: outlasts one wake-up's fan-out to thousands of parked requests (api/live_memo.py)
LIVE_MEMO_SIZE = 512  # answers kept at most; with LIVE_MEMO_MAX_BODY: at most 32 MiB of bodies
SPLIT_MEMO_SIZE = 1024  # subset query strings (without their params) kept validated for the lean lane
LIVE_MEMO_MAX_BODY = 64 * 1024  # bytes: larger live bodies are built per request


class ShapeResource:
    """``/v1/shape``.  Collaborators are injected; time and randomness too (tests pin them).

    ``engine`` is the engine itself or a zero-argument callable returning it (None while it is not
    attached yet, e.g. before gunicorn's ``post_worker_init``: requests then get 503 "Stack not ready").
    """

    def __init__(
        self,
        engine: ShapeEngine | Callable[[], ShapeEngine | None],
        settings: ApiSettings,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        rand: Callable[[int, int], int] = random.randint,
    ) -> None:
        self._provider: Callable[[], ShapeEngine | None]
        if hasattr(engine, "get_or_create"):
            fixed = cast("ShapeEngine", engine)
            self._provider = lambda: fixed
        else:
            self._provider = engine
        self._settings = settings
        self._monotonic = monotonic
        self._out = ShapeResponder(settings, clock=clock, monotonic_ns=monotonic_ns, rand=rand)
        self._subsets = SubsetResponder(settings)
        self._memo = LiveMemo(ttl=LIVE_MEMO_TTL, size=LIVE_MEMO_SIZE, monotonic=monotonic)
        # the lean lane's query strings without subset__params -> (request, queryable, subset w/o params)
        self._split_memo: dict[str, tuple[ShapeRequest, tuple[str, ...] | None, SubsetRequest | None]] = {}
        self.fast_memo: dict[str, Any] = {}
        self.middleware: list[Any] = []  # set by install_shape_api (ShapesyncApp finishes raw answers)

    @property
    def _engine(self) -> ShapeEngine:
        engine = self._provider()
        if engine is None:
            raise StackNotReady("Stack not ready", retry_after=5)
        return engine

    def handle_exists(self, handle: str) -> bool:
        """For admission control: does ``handle`` name a live shape (False while no engine is attached)."""
        engine = self._provider()
        return engine is not None and engine.exists(handle)

    # ------------------------------------------------------------------------------------- responders

    def on_options(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = 204
        for name, value in preflight_headers(req.get_header("access-control-request-headers")):
            resp.set_header(name, value)

    def on_get(
        self, req: falcon.Request, resp: falcon.Response, body_subset: SubsetRequest | None = None
    ) -> None:
        failed: Exception | None = req.env.pop(LANE_ERROR_KEY, None)
        if failed is not None:  # the lean lane's request (api/lean_lane.py) failed: answer its error here
            raise failed
        request, queryable, handle = self._resolve(request_query(req))
        subset = body_subset or subset_from_query(request.subset)
        try:
            if subset is not None:  # spec §9: a subset snapshot instead of the log
                self._subsets.serve(self._engine, req, resp, request, handle, subset, queryable)
            elif request.is_now:
                self._serve_now(req, resp, request, handle)
            else:
                self._serve_log(req, resp, request, handle)
        except ShapeGone as gone:
            raise MustRefetch(self._resolve_again(request.definition, gone.handle)) from None

    on_head = on_get

    def raw_subset(self, query: dict[str, str], request_id: str, origin: str | None) -> RawResponse | None:
        """A subset GET's whole answer as :meth:`on_get` would give it under our worker (the lean lane,
        ``api/lean_lane.py``); None when it is not a subset or cannot leave pre-rendered.  Raises what
        :meth:`on_get` raises."""
        request, queryable, handle = self._resolve(query)
        subset = subset_from_query(request.subset)
        if subset is None:
            return None
        try:
            return self._subsets.raw(self._engine, request, handle, subset, queryable, request_id, origin)
        except ShapeGone as gone:
            raise MustRefetch(self._resolve_again(request.definition, gone.handle)) from None

    def raw_split_subset(
        self, rest: str, query: dict[str, str], params: str, request_id: str, origin: str | None
    ) -> RawResponse | None:
        """:meth:`raw_subset` of the query ``rest`` (decoded: ``query``) plus ``subset__params=params``
        (the lean lane's split, ``api/lean_lane.py``).  The validated request, queryable columns and subset
        without its params are kept per ``rest`` (pure functions of it, as ``parse_shape_request`` is; only
        successes are kept, so an invalid query raises its error each time); the shape is resolved and the
        handle checked on every request, as ``_resolve`` does."""
        parsed = self._split_memo.get(rest)
        if parsed is None:
            request = parse_shape_request(query)
            queryable = parse_queryable_columns(query)
            request = apply_queryable_columns(request, queryable)
            base = subset_from_query((*request.subset, ("subset__params", "")))
            parsed = (request, queryable, base)
            if len(self._split_memo) >= SPLIT_MEMO_SIZE:
                self._split_memo.clear()
            self._split_memo[rest] = parsed
        request, queryable, base = parsed
        handle = self._engine.get_or_create(request.definition)
        if request.handle is not None and request.handle != handle:
            raise MustRefetch(handle)
        assert base is not None  # the memo's subset always has params
        subset = SubsetRequest(
            where=base.where, params=params, limit=base.limit, offset=base.offset, order_by=base.order_by
        )
        try:
            raw = self._subsets.raw(self._engine, request, handle, subset, queryable, request_id, origin)
        except ShapeGone as gone:
            raise MustRefetch(self._resolve_again(request.definition, gone.handle)) from None
        subset_repeat = getattr(self._engine, "subset_repeat", None)  # EngineShapes (api/engine_adapter.py)
        if raw is not None and subset_repeat is not None:  # kept (again) for the lane's next same request
            fast = subset_repeat(
                handle, subset, request_offset=subset_request_offset(request), queryable_columns=queryable
            )
            repeat = None if fast is None else self._subsets.fast_raw(self._engine, handle, fast)
            if len(self.fast_memo) >= SPLIT_MEMO_SIZE:
                self.fast_memo.clear()
            if repeat is None:
                self.fast_memo.pop(rest, None)
            else:
                self.fast_memo[rest] = repeat
        return raw

    def _resolve(self, query: dict[str, str]) -> tuple[ShapeRequest, tuple[str, ...] | None, str]:
        """The request, its queryable columns and its shape's handle (created if needed); 409 when the
        request names another handle."""
        request = parse_shape_request(query)
        queryable = parse_queryable_columns(query)
        request = apply_queryable_columns(request, queryable)
        handle = self._engine.get_or_create(request.definition)
        if request.handle is not None and request.handle != handle:
            raise MustRefetch(handle)
        return request, queryable, handle

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Spec §1: the same as GET (with ``cache-control: no-cache``) unless the body asks for a subset."""
        limit = self._settings.max_request_body_bytes
        raw = req.bounded_stream.read(limit + 1)
        if len(raw) > limit:
            raise BadRequestBody(413, {"error": "Request body too large"})
        body_subset = None
        if raw.strip():
            try:
                decoded = orjson.loads(raw)
            except orjson.JSONDecodeError as ex:
                raise BadRequestBody(
                    400, {"error": "Invalid JSON in request body", "details": str(ex)}
                ) from None
            if not isinstance(decoded, dict):
                raise BadRequestBody(400, {"error": "Request body must be a JSON object"})
            body_subset = subset_from_body(decoded)
        self.on_get(req, resp, body_subset)

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self._settings.allow_shape_deletion:
            raise DeleteNotAllowed
        request = parse_delete_request(request_query(req))
        if request.definition is not None:
            handle = self._engine.find(request.definition)
            if handle is None:
                if request.handle is not None and self._engine.exists(request.handle):
                    raise DefinitionMismatch
                raise ShapeNotFound
            if request.handle is not None and request.handle != handle:
                raise DefinitionMismatch
        else:
            assert request.handle is not None
            handle = request.handle
        if not self._engine.delete(handle):
            raise ShapeNotFound
        resp.status = 202
        for name, value in cache_control_headers(self._settings, method="DELETE", status=202):
            resp.set_header(name, value)

    # ---------------------------------------------------------------------------------------- serving

    def _resolve_again(self, definition: ShapeDefinition, gone: str) -> str | None:
        """After a rotation seen mid-request: the definition's shape, created if needed (spec §7), so the 409
        carries a handle (the TS client warns about handle-less 409s and refetches at once anyway).  None
        when that fails (table dropped, engine stopping): the 409 then has no handle.

        The engine withdraws a rotated handle before it wakes the shape's waiters, so the definition never
        resolves to ``gone`` here; if it did, the 409 goes without a handle rather than with the old one."""
        try:
            handle = self._engine.get_or_create(definition)
        except ShapeEngineError:
            return None
        if handle == gone:
            log.warning("shape %s still resolves after its rotation: 409 without a handle", gone)
            return None
        return handle

    def _serve_now(
        self, req: falcon.Request, resp: falcon.Response, request: ShapeRequest, handle: str
    ) -> None:
        self._engine.await_snapshot_start(handle)  # a commit after the answer must not land in the snapshot
        latest = self._engine.latest_offset(handle)
        meta = ShapeResponseMeta(
            handle=handle,
            request_offset=request.offset_text,
            offset=latest,
            before_all=False,
            live=False,
            live_sse=False,
            up_to_date=True,
            has_data=False,
        )
        if self._out.not_modified(req, resp, request, meta):
            return
        meta = replace(meta, schema=self._engine.schema_header(handle))
        lsn = max(self._engine.global_last_seen_lsn(), latest.tx)
        self._out.respond(req, resp, request, meta, (), up_to_date_item(lsn))

    def _serve_log(
        self, req: falcon.Request, resp: falcon.Response, request: ShapeRequest, handle: str
    ) -> None:
        offset = request.log_offset
        sse = request.live and request.live_sse
        chunk = self._engine.read(handle, offset, per_item=sse)
        if not offset.is_before_all and offset > chunk.latest_offset:
            self._wait_in_bounds(handle, offset, chunk.latest_offset)
            chunk = self._engine.read(handle, offset, per_item=sse)
        up_to_date = not offset.is_before_all and chunk.end_offset >= max(chunk.latest_offset, offset)
        meta = ShapeResponseMeta(
            handle=handle,
            request_offset=request.offset_text,
            offset=chunk.end_offset,
            before_all=offset.is_before_all,
            live=request.live,
            live_sse=sse,
            up_to_date=up_to_date,
            has_data=True,
        )
        if not sse and self._out.not_modified(req, resp, request, meta):
            return
        if sse:
            self._out.apply_headers(req, resp, request, meta, status=200)
            resp.stream = sse_events(self._engine, handle, chunk, self._settings, clock=self._monotonic)
            return
        if request.live and chunk.is_empty:
            self._long_poll(req, resp, request, meta, chunk)
            return
        if not request.live:
            meta = replace(meta, schema=self._engine.schema_header(handle))
        tail = None
        if up_to_date:
            # Live with data: the chunk's own transaction; non-live: also trust the global LSN (spec §5).
            lsn = chunk.end_offset.tx
            if not request.live:
                lsn = max(self._engine.global_last_seen_lsn(), lsn)
            tail = up_to_date_item(lsn)
        self._out.respond(req, resp, request, meta, chunk.pieces, tail)

    def _long_poll(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        request: ShapeRequest,
        meta: ShapeResponseMeta,
        chunk: LogChunk,
    ) -> None:
        """Hold the request until data lands after the chunk end, the shape rotates, or the timeout."""
        offset, handle = request.log_offset, meta.handle
        deadline = self._monotonic() + self._settings.long_poll_timeout
        wait_from = chunk.end_offset
        while True:
            remaining = deadline - self._monotonic()
            outcome = self._wait(handle, wait_from, remaining) if remaining > 0 else WaitOutcome.TIMEOUT
            if outcome is WaitOutcome.ROTATED:
                raise ShapeGone(handle)
            if outcome is WaitOutcome.STOPPED:
                raise StackNotReady("Stack not ready", retry_after=10)
            if outcome is WaitOutcome.NEW_DATA:
                answer = self._memo.get(handle, request.offset_text, req.method)
                if answer is not None:  # another request parked here woke first and built it
                    self._out.respond_memoized(req, resp, request, answer)
                    return
                fresh = self._engine.read(handle, offset)
                if fresh.is_empty:
                    wait_from = max(wait_from, fresh.end_offset)
                    continue
                up_to_date = fresh.end_offset >= max(fresh.latest_offset, offset)
                tail = up_to_date_item(fresh.end_offset.tx) if up_to_date else None
                meta = replace(meta, offset=fresh.end_offset, up_to_date=up_to_date)
                headers = self._out.respond(req, resp, request, meta, fresh.pieces, tail)
                if resp.data is not None and len(resp.data) <= LIVE_MEMO_MAX_BODY:
                    self._memo.put(handle, request.offset_text, req.method, LiveAnswer.of(resp.data, headers))
                return
            if self._engine.status() != "active":
                raise StackNotReady("Stack not ready", retry_after=10)
            lsn = max(self._engine.global_last_seen_lsn(), chunk.end_offset.tx)
            meta = replace(meta, up_to_date=True, has_data=False, no_changes=True)
            self._out.respond(req, resp, request, meta, (), up_to_date_item(lsn))
            return

    def _wait_in_bounds(self, handle: str, offset: LogOffset, latest: LogOffset) -> None:
        """Spec §3: an offset past the shape's latest waits up to long_poll_timeout/2, then 400."""
        deadline = self._monotonic() + self._settings.out_of_bounds_timeout
        while offset > latest:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise InvalidRequest(OUT_OF_BOUNDS)
            outcome = self._wait(handle, latest, remaining)
            if outcome is WaitOutcome.ROTATED:
                raise ShapeGone(handle)
            if outcome is WaitOutcome.STOPPED:
                raise StackNotReady("Stack not ready", retry_after=10)
            latest = self._engine.latest_offset(handle)

    def _wait(self, handle: str, offset: LogOffset, timeout: float) -> WaitOutcome:
        waiter: ChangeWaiter = self._engine.wait_for_change(handle, offset)
        try:
            return waiter.wait(timeout)
        finally:
            waiter.cancel()


def install_shape_api(
    app: falcon.App[Any, Any],
    engine: ShapeEngine | Callable[[], ShapeEngine | None],
    settings: ApiSettings,
    **kwargs: Any,
) -> ShapeResource:
    """Wire the Shape API into ``app``: middleware (in order), the error table and the ``/v1/shape`` route.

    Call before the app serves its first request.  ``kwargs`` go to :class:`ShapeResource` (clock, rand...).
    """
    resource = ShapeResource(engine, settings, **kwargs)
    resource.middleware = shape_api_middleware(settings, exists=resource.handle_exists)
    app.add_middleware(resource.middleware)
    register_error_handlers(app, settings)
    app.add_route(SHAPE_PATH, resource)
    return resource
