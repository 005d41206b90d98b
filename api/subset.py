"""The HTTP side of subset snapshots (spec §9) and of ``queryable_columns`` (spec §2).

Why a module of its own: the shape resource only has to notice that a request is a subset and hand it
here.  This module reads the subset from the query string (``subset__where``, ``subset__params``,
``subset__limit``, ``subset__offset``, ``subset__order_by``) or from a POST body (the same keys without
the prefix, or nested under ``"subset"``; body values are converted to strings, ``offset`` there is the
*row* offset), asks the engine for the snapshot and writes the response: 200, the body as the engine built
it, ``electric-snapshot: true``, ``electric-handle``, ``electric-schema``, ``electric-offset`` and
``cache-control: no-cache``.  Subsets never 304.  Validation errors leave as 400 with
``errors.subset.<field>``.  Under our gunicorn worker a GET's answer leaves pre-rendered
(:mod:`api.raw_response`), past Falcon's response processing: the same headers in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

import falcon

from api.engine_port import InvalidRequest, ShapeEngine, SubsetSnapshot
from api.headers import JSON_CONTENT_TYPE, Headers, cache_control_headers
from api.middleware import RawCommonLines
from api.params import ApiSettings, ShapeRequest
from api.raw_response import RAW_ENV_KEY, RawAnswerReady, RawResponse, header_block
from sync.offsets import LogOffset
from sync.shapes.identifiers import InvalidIdentifier, parse_columns
from sync.shapes.subset import SubsetRequest

__all__ = [
    "SUBSET_BODY_KEYS",
    "InvalidSubset",
    "SubsetResponder",
    "apply_queryable_columns",
    "parse_queryable_columns",
    "subset_from_body",
    "subset_from_query",
    "subset_request_offset",
]

SUBSET_PREFIX = "subset__"
SUBSET_BODY_KEYS = frozenset(
    {"where", "order_by", "limit", "offset", "params", "where_expr", "order_by_expr", "subset"}
)
_JSON_TYPE = JSON_CONTENT_TYPE.encode()
_INVALID = "\x00invalid"  # a value no integer/where parser accepts: gives Ecto's "is invalid"


class InvalidSubset(InvalidRequest):
    """A 400 whose errors are nested under ``subset``: ``{"errors":{"subset":{"limit":[...]}}}``."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        super().__init__({})
        # The error body nests one level deeper than InvalidRequest's type says; the renderer dumps it as is.
        self.errors = cast("dict[str, list[str]]", {"subset": {k: list(v) for k, v in errors.items()}})


def subset_from_query(pairs: tuple[tuple[str, str], ...]) -> SubsetRequest | None:
    """The subset of a GET/POST query string (``subset__*``), or None when there is none."""
    if not pairs:
        return None
    values = {k[len(SUBSET_PREFIX) :]: v for k, v in pairs}
    return SubsetRequest(
        where=values.get("where"),
        params=values.get("params"),
        limit=values.get("limit"),
        offset=values.get("offset"),
        order_by=values.get("order_by"),
    )


def _text_field(body: Mapping[str, Any], name: str, errors: dict[str, list[str]]) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    errors[name] = ["is invalid"]
    return None


def _int_field(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return _INVALID
    return str(value)


def subset_from_body(body: Mapping[str, Any]) -> SubsetRequest | None:
    """The subset of a decoded POST body, or None when the body does not ask for one."""
    if not SUBSET_BODY_KEYS & body.keys():
        return None
    nested = body.get("subset")
    fields: Mapping[str, Any] = nested if isinstance(nested, Mapping) else body
    errors: dict[str, list[str]] = {}
    where = _text_field(fields, "where", errors)
    order_by = _text_field(fields, "order_by", errors)
    params = fields.get("params")
    if params is not None and not isinstance(params, (str, Mapping)):
        errors["params"] = ["params must be a JSON object"]
        params = None
    if errors:
        raise InvalidSubset(errors)
    return SubsetRequest(
        where=where,
        params=params,
        limit=_int_field(fields, "limit"),
        offset=_int_field(fields, "offset"),
        order_by=order_by,
    )


def parse_queryable_columns(query: Mapping[str, str]) -> tuple[str, ...] | None:
    """``queryable_columns`` as catalog names (same syntax as ``columns``), None when absent."""
    raw = query.get("queryable_columns")
    if raw is None or raw == "":
        return None
    try:
        return parse_columns(raw)
    except InvalidIdentifier as exc:
        raise InvalidRequest({"queryable_columns": [exc.message]}) from None


def apply_queryable_columns(request: ShapeRequest, queryable: tuple[str, ...] | None) -> ShapeRequest:
    """``queryable_columns`` is the allow-list of ``columns`` and their default (spec §2)."""
    if queryable is None:
        return request
    definition = request.definition
    if definition.columns is None:
        text = ",".join('"' + c.replace('"', '""') + '"' for c in queryable)
        return replace(request, definition=replace(definition, columns=text))
    try:
        selected = parse_columns(definition.columns)
    except InvalidIdentifier:
        return request  # the engine reports the columns error itself
    outside = [c for c in selected if c not in queryable]
    if outside:
        raise InvalidRequest(
            {"columns": ["The following columns are not in queryable_columns: " + ", ".join(outside)]}
        )
    return request


class SubsetResponder:
    """Writes subset answers (one per resource): through Falcon, or pre-rendered for our worker."""

    BLOCKS = 1024  # header blocks kept (one per shape and schema)

    def __init__(self, settings: ApiSettings) -> None:
        self._raw_common = RawCommonLines(settings)
        self._cache_control = cache_control_headers(settings, method="GET", status=200, subset=True)
        # (handle, schema) -> the rendered lines before electric-offset's value (None: not sendable raw)
        self._blocks: dict[tuple[str, str], bytes | None] = {}

    def serve(  # noqa: PLR0917 - the resource's whole request context
        self,
        engine: ShapeEngine,
        req: falcon.Request,
        resp: falcon.Response,
        request: ShapeRequest,
        handle: str,
        subset: SubsetRequest,
        queryable: tuple[str, ...] | None,
    ) -> None:
        """Answer a subset request for the shape ``handle`` (already resolved, handle checked)."""
        if req.method == "GET" and req.env.get(RAW_ENV_KEY):
            request_id: str | None = getattr(req.context, "request_id", None)
            raw = self.raw(engine, request, handle, subset, queryable, request_id, req.get_header("origin"))
            if raw is not None:
                raise RawAnswerReady(req, raw)
        snapshot = engine.subset_snapshot(
            handle, subset, request_offset=subset_request_offset(request), queryable_columns=queryable
        )
        resp.status = 200
        resp.set_headers(self._headers(handle, engine.schema_header(handle), str(snapshot.offset)))
        resp.data = snapshot.body

    def raw(  # noqa: PLR0917 - the request's whole context
        self,
        engine: ShapeEngine,
        request: ShapeRequest,
        handle: str,
        subset: SubsetRequest,
        queryable: tuple[str, ...] | None,
        request_id: str | None,
        origin: str | None,
    ) -> RawResponse | None:
        """The answer to a GET as the Falcon path would send it: the resource's headers, the middleware's
        (request id, CORS origin) and content-length; None, before any query, when a value cannot be sent
        as it is (the Falcon path then answers)."""
        common = self._raw_common.lines(request_id, origin)
        before = self._block(handle, engine.schema_header(handle))
        if before is None or common is None:
            return None
        snapshot = engine.subset_snapshot(
            handle, subset, request_offset=subset_request_offset(request), queryable_columns=queryable
        )
        return _raw_answer(before, common, snapshot)

    def fast_raw(self, engine: Any, handle: str, fast: Any) -> Any:
        """A repeated subset GET's answer (the lean lane's fast path): ``fast(params)`` is the engine's
        kept plan (``EngineShapes.subset_repeat``); the header block is rendered once.  The answer is None
        when anything kept no longer holds (the full path then answers)."""
        before = self._block(handle, engine.schema_header(handle))
        lines = self._raw_common.lines
        if before is None:
            return None

        def run(params: str, request_id: str, origin: str | None) -> RawResponse | None:
            common = lines(request_id, origin)
            if common is None:
                return None
            snapshot = fast(params)
            return None if snapshot is None else _raw_answer(before, common, snapshot)

        return run

    def _headers(self, handle: str, schema: str, offset: str) -> Headers:
        return [
            *self._cache_control,
            ("electric-snapshot", "true"),
            ("electric-handle", handle),
            ("electric-schema", schema),
            ("electric-offset", offset),
            ("content-type", JSON_CONTENT_TYPE),
        ]

    def _block(self, handle: str, schema: str) -> bytes | None:
        """The rendered lines before electric-offset's value, kept per (handle, schema); None when one of
        them cannot be sent as it is."""
        key = (handle, schema)
        try:
            return self._blocks[key]
        except KeyError:
            pass
        try:
            before: bytes | None = header_block(self._headers(handle, schema, "")[:-2])
        except ValueError:
            before = None
        if len(self._blocks) >= self.BLOCKS:
            self._blocks.clear()
        self._blocks[key] = before
        return before


def _raw_answer(before: bytes, common: bytes, snapshot: SubsetSnapshot) -> RawResponse:
    """The 200 of a subset GET: the resource's header lines up to ``electric-offset`` (``before``), the
    offset, content type, the middleware's ``common`` lines and content-length, then the body."""
    body = snapshot.body
    head = b"%selectric-offset: %s\r\ncontent-type: %s\r\n%scontent-length: %d\r\n" % (
        before,
        str(snapshot.offset).encode(),  # digits, "_" and "-" only (a LogOffset)
        _JSON_TYPE,
        common,
        len(body),
    )
    return RawResponse("200 OK", head, body, snapshot.after)


def subset_request_offset(request: ShapeRequest) -> LogOffset | None:
    """The offset a subset answer echoes: the client's own position in the log, if it has one."""
    return None if request.is_now or request.is_before_all else request.log_offset
