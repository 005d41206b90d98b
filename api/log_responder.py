"""A shape's log over HTTP: ``offset=now``, catch-up reads, long-polls and SSE (spec §3-§5).

Why a module of its own: the shape resource (``api/shape_resource.py``) resolves a request to its shape and
picks the answer (a subset, ``now`` or the log); answering from the log is a sequence of its own with state
of its own: wait out an out-of-bounds offset, read the chunk, answer 304 on a matching If-None-Match
(decided before any wait), hold a live request on a :class:`ChangeWaiter` (a future, no actor busy) and
stream the body as ``[`` + stored item bytes + control item + ``]`` without decoding.  Long-polls woken by
the same change share one answer (body and headers, ``api/live_memo.py``); each keeps its own cursor;
under our gunicorn worker a memoised answer leaves pre-rendered, past Falcon's response processing and
gunicorn's header code (``api/raw_response.py``).  Rendering is ``api/shape_response.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import falcon

from api.engine_port import (
    AttachedEngine,
    ChangeWaiter,
    InvalidRequest,
    LogChunk,
    ShapeEngine,
    ShapeGone,
    StackNotReady,
    WaitOutcome,
)
from api.headers import ShapeResponseMeta
from api.live_memo import LiveAnswer, LiveMemo
from api.params import ApiSettings, ShapeRequest
from api.shape_response import ShapeResponder
from api.sse import sse_events, up_to_date_item
from sync.offsets import LogOffset

__all__ = ["LIVE_MEMO_MAX_BODY", "LIVE_MEMO_SIZE", "LIVE_MEMO_TTL", "OUT_OF_BOUNDS", "LogResponder"]

OUT_OF_BOUNDS = {"offset": ["out of bounds for this shape"]}
LIVE_MEMO_TTL = 3.0  # s: outlasts one wake-up's fan-out to thousands of parked requests (api/live_memo.py)
LIVE_MEMO_SIZE = 512  # answers kept at most; with LIVE_MEMO_MAX_BODY: at most 32 MiB of bodies
LIVE_MEMO_MAX_BODY = 64 * 1024  # bytes: larger live bodies are built per request


class LogResponder(AttachedEngine):
    """Answers a resolved shape request from the shape's log (one per resource)."""

    def __init__(
        self,
        provider: Callable[[], ShapeEngine | None],
        settings: ApiSettings,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        monotonic_ns: Callable[[], int],
        rand: Callable[[int, int], int],
    ) -> None:
        self._provider = provider
        self._settings = settings
        self._monotonic = monotonic
        self._out = ShapeResponder(settings, clock=clock, monotonic_ns=monotonic_ns, rand=rand)
        self._memo = LiveMemo(ttl=LIVE_MEMO_TTL, size=LIVE_MEMO_SIZE, monotonic=monotonic)

    def serve_now(
        self, req: falcon.Request, resp: falcon.Response, request: ShapeRequest, handle: str
    ) -> None:
        """``offset=now``: no data, the shape's latest offset, up-to-date (spec §3)."""
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

    def serve(self, req: falcon.Request, resp: falcon.Response, request: ShapeRequest, handle: str) -> None:
        """The chunk after the request's offset: catch-up, long-poll or SSE."""
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
