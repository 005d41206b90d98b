"""The ``/v1/shape`` resource: GET/HEAD/POST/DELETE/OPTIONS over the :class:`ShapeEngine` port (spec §3-§7).

Why it is thin: parsing lives in ``api/params.py``, header rules in ``api/headers.py``, error mapping in
``api/errors.py``, answering from the shape's log (``now``, catch-up, long-poll, SSE) in
``api/log_responder.py`` and subset snapshots in ``api/subset.py``; this module only sequences a request:
resolve the shape (409 on an unknown/mismatched handle, after a rotation seen mid-request too) and hand it
to the responder that answers it.  The lean lane's subset GETs (``api/lean_lane.py``) enter through
:meth:`ShapeResource.raw_subset` and :meth:`ShapeResource.raw_split_subset`, the same resolution without
Falcon's request and response objects.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, cast

import falcon
import orjson

from api.engine_port import (
    AttachedEngine,
    ShapeDefinition,
    ShapeEngine,
    ShapeEngineError,
    ShapeGone,
)
from api.errors import (
    BadRequestBody,
    DefinitionMismatch,
    DeleteNotAllowed,
    MustRefetch,
    ShapeNotFound,
    register_error_handlers,
)
from api.headers import SHAPE_PATH, cache_control_headers, preflight_headers
from api.log_responder import LogResponder
from api.middleware import request_query, shape_api_middleware
from api.params import ApiSettings, ShapeRequest, parse_delete_request, parse_shape_request
from api.raw_response import LANE_ERROR_KEY, RawResponse
from api.shape_response import json_array_body
from api.subset import (
    SubsetResponder,
    apply_queryable_columns,
    parse_queryable_columns,
    subset_from_body,
    subset_from_query,
    subset_request_offset,
)
from sync.shapes.subset import SubsetRequest

__all__ = ["ShapeResource", "install_shape_api", "json_array_body"]

log = logging.getLogger(__name__)

SPLIT_MEMO_SIZE = 1024  # subset query strings (without their params) kept validated for the lean lane


class ShapeResource(AttachedEngine):
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
        if hasattr(engine, "get_or_create"):
            fixed = cast("ShapeEngine", engine)
            self._provider = lambda: fixed
        else:
            self._provider = engine
        self._settings = settings
        self._log = LogResponder(
            self._provider, settings, clock=clock, monotonic=monotonic, monotonic_ns=monotonic_ns, rand=rand
        )
        self._subsets = SubsetResponder(settings)
        # the lean lane's query strings without subset__params -> (request, queryable, subset w/o params)
        self._split_memo: dict[str, tuple[ShapeRequest, tuple[str, ...] | None, SubsetRequest | None]] = {}
        self.fast_memo: dict[str, Any] = {}
        self.middleware: list[Any] = []  # set by install_shape_api (ShapesyncApp finishes raw answers)

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
                self._log.serve_now(req, resp, request, handle)
            else:
                self._log.serve(req, resp, request, handle)
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
