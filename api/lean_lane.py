"""The lean lane: subset GETs answered past Falcon's routing, request and response objects.

Why it exists (issue 8): a subset GET (TanStack DB's on-demand loads) is one short query; Falcon's request
and response objects, routing, the middleware's per-request hooks and the raw-answer bookkeeping cost the
worker ~80 µs of a ~1.2 ms request.  Under our gunicorn worker (``SERVER_RAW_KEY``, see
``api/raw_response.py``) :class:`api.app.ShapesyncApp` hands a ``GET /v1/shape`` whose query names a
subset here first.  No rule is written twice: the lane calls the same pieces the Falcon path runs, in the
same order (the middleware's ``request_id``, ``allows``, ``acquire``; the resource's ``raw_subset``, which
is ``on_get``'s own resolution and the subset responder's pre-rendered answer; the metrics' ``count_raw``).

The lane answers only what leaves pre-rendered with status 200; everything else goes to the Falcon path:

* a request it does not take (live, wrong secret, admission limit reached, not a subset, a header value
  that cannot be sent as it is) goes there untouched: Falcon runs it from the start;
* a request that failed once started (bad params, 409, 503 ...) goes there with its exception in the
  environ (``LANE_ERROR_KEY``); the resource raises it first thing, so the error leaves through the one
  error table and the middleware, and the work that failed (a query, a shape creation) is not repeated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from falcon.uri import decode

from api.headers import SHAPE_PATH
from api.metrics import ApiMetrics, live_request
from api.middleware import AdmissionMiddleware, AuthMiddleware, CommonHeadersMiddleware
from api.params import parse_query
from api.raw_response import LANE_ERROR_KEY, RawResponse

__all__ = ["LeanLane", "params_value", "split_params", "takes"]

T = TypeVar("T")

RawSubset = Callable[[dict[str, str], str, "str | None"], "RawResponse | None"]
RawSplitSubset = Callable[[str, dict[str, str], str, str, "str | None"], "RawResponse | None"]

_PARAMS = "subset__params"
_PARAMS_FIELD = _PARAMS + "="
_AMP_PARAMS_FIELD = "&" + _PARAMS_FIELD
MEMO_SIZE = 1024  # query strings (without their subset__params) kept decoded


def takes(env: dict[str, Any]) -> bool:
    """Is this a request the lane tries: ``GET /v1/shape`` (the normal path) with a subset in its query."""
    return (
        env.get("REQUEST_METHOD") == "GET"
        and env.get("PATH_INFO") == SHAPE_PATH
        and "subset__" in env.get("QUERY_STRING", "")
    )


class LeanLane:
    """Subset GETs through the same rules as Falcon's middleware and the shape resource, without Falcon."""

    def __init__(
        self,
        raw_subset: RawSubset,
        middleware: list[Any],
        metrics: ApiMetrics | None,
        raw_split: RawSplitSubset | None = None,
    ) -> None:
        self._raw_subset = raw_subset
        self._raw_split = raw_split
        self._decoded: dict[str, dict[str, str] | None] = {}  # rest of the query string -> its decoded query
        self._ids = _one(middleware, CommonHeadersMiddleware)
        self._auth = _one(middleware, AuthMiddleware)
        self._admission = _one(middleware, AdmissionMiddleware)
        self._metrics = metrics
        # rest of the query string -> the answer of its repeats (ShapeResource.fast_memo, set by create_app):
        # called with the params, request id and origin; None when the full path must answer
        self.fast_memo: dict[str, Any] | None = None

    def serve(self, env: dict[str, Any]) -> RawResponse | None:
        """The whole answer, or None for the Falcon path (with ``LANE_ERROR_KEY`` set if it failed)."""
        query_string: str = env.get("QUERY_STRING", "")
        split = self._split(query_string) if self._raw_split is not None else None
        query = parse_query(query_string) if split is None else split[1]
        if live_request(query) or not self._auth.allows(query):
            return None
        _, slot = self._admission.acquire(query)
        if slot is None:
            return None  # the Falcon path refuses it (or admits it, if a slot was freed meanwhile)
        try:
            request_id = self._ids.request_id(env.get("HTTP_X_REQUEST_ID"))
            origin = env.get("HTTP_ORIGIN")
            if split is None:
                raw = self._raw_subset(query, request_id, origin)
            else:
                repeat = None if self.fast_memo is None else self.fast_memo.get(split[0])
                raw = None if repeat is None else repeat(split[2], request_id, origin)
                if raw is None:  # not a repeat, or something it kept no longer holds
                    assert self._raw_split is not None
                    raw = self._raw_split(split[0], query, split[2], request_id, origin)
        except Exception as exc:  # answered by the Falcon path's error table
            env[LANE_ERROR_KEY] = exc
            return None
        finally:
            slot.release()  # the body is in memory (as AdmissionMiddleware.finish_raw)
        if raw is not None and self._metrics is not None:
            self._metrics.count_raw(SHAPE_PATH, len(raw.body), False)
        return raw

    def _split(self, query_string: str) -> tuple[str, dict[str, str], str] | None:
        """``(rest, query, params)``: the query string without its one ``subset__params=`` field, the rest
        decoded (kept per rest: an on-demand client repeats it with other params) and the params' decoded
        value; None (decode it all) unless the field is there exactly once and nothing else in the rest
        decodes to that name.  The pieces decode as the whole does: ``parse_query`` splits on ``&`` and
        decodes each field alone."""
        pieces = split_params(query_string)
        if pieces is None:
            return None
        rest, params_field = pieces
        try:
            query = self._decoded[rest]
        except KeyError:
            query = parse_query(rest)
            if _PARAMS in query:
                query = None  # e.g. an encoded or a bare subset__params key besides the plain one
            if len(self._decoded) >= MEMO_SIZE:
                self._decoded.clear()
            self._decoded[rest] = query
        if query is None:
            return None
        return rest, query, params_value(params_field)


def split_params(query_string: str) -> tuple[str, str] | None:
    """``(rest, field)``: the query string's one ``subset__params=`` field and the other fields, exactly
    ``"&".join`` of ``query_string.split("&")`` without that field; None unless there is exactly one field
    starting with ``subset__params=``.  Found with ``find`` instead of splitting every field."""
    if query_string.startswith(_PARAMS_FIELD):
        start = 0
    else:
        start = query_string.find(_AMP_PARAMS_FIELD) + 1  # the field follows an "&"
        if not start:
            return None
    end = query_string.find("&", start)  # the "&" after the field, or the end
    if end < 0:
        end = len(query_string)
    elif query_string.find(_AMP_PARAMS_FIELD, end) >= 0:
        return None  # a second one
    rest = query_string[end + 1 :] if not start else query_string[: start - 1] + query_string[end:]
    return rest, query_string[start:end]


def params_value(field: str) -> str:
    """The decoded value of a ``subset__params=...`` field (no ``&`` in it): exactly
    ``parse_query(field)["subset__params"]``, which runs Falcon's whole query parser and a dict
    comprehension for one field (~5 µs of a repeated subset's critical path in the benchmark); its value is
    decoded alone by the same ``decode`` (``+`` as a space, percent-escapes as UTF-8)."""
    value = field[len(_PARAMS_FIELD) :]
    return decode(value) if "%" in value or "+" in value else value


def _one(middleware: list[Any], kind: type[T]) -> T:
    found = [m for m in middleware if isinstance(m, kind)]
    if len(found) != 1:
        raise ValueError(f"expected one {kind.__name__} in the middleware, found {len(found)}")
    return found[0]
