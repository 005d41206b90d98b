"""One table mapping domain errors to HTTP responses (spec §1, §2, §4, §7), registered on the Falcon app.

Why: Electric's clients branch on status, body and a few headers (409 must-refetch with the new handle,
``retry-after`` on 503s, ``electric-internal-known-error``), so every error leaves through this module and
nowhere else.  A client mistake is always a 4xx: unexpected exceptions become the one 500 body, logged with
the request id.  Bodies are serialised with orjson.

Errors raised by the API itself (the engine's are in ``api/engine_port.py``)::

    ApiError
    ├─ Unauthorized              401
    ├─ DeleteNotAllowed          405
    ├─ ShapeNotFound             404 (DELETE of an unknown shape)
    ├─ DefinitionMismatch        400 (DELETE with a handle that does not match the definition)
    ├─ BadRequestBody            400/413 (POST body)
    ├─ MustRefetch               409 [{"headers":{"control":"must-refetch"}}] + electric-handle
    └─ ConcurrencyLimitExceeded  503 concurrent_request_limit_exceeded
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import falcon
import orjson

from api.engine_port import (
    DatabaseUnreachable,
    InvalidRequest,
    ShapeCreationFailed,
    ShapeGone,
    SnapshotFailed,
    StackNotReady,
)
from api.headers import JSON_CONTENT_TYPE, Headers, cache_control_headers, etag_value
from api.params import ApiSettings

__all__ = [
    "ApiError",
    "BadRequestBody",
    "ConcurrencyLimitExceeded",
    "DefinitionMismatch",
    "DeleteNotAllowed",
    "ErrorResponse",
    "MustRefetch",
    "ShapeNotFound",
    "Unauthorized",
    "register_error_handlers",
    "to_error_response",
]

log = logging.getLogger(__name__)

MUST_REFETCH_BODY = b'[{"headers":{"control":"must-refetch"}}]'
DEFINITION_MISMATCH = (
    "The specified shape definition and handle do not match. Please ensure the shape definition is correct "
    "or omit the shape handle from the request to obtain a new one."
)


class ApiError(Exception):
    """Errors the HTTP layer raises itself."""


class Unauthorized(ApiError):
    """Missing or wrong ``secret``/``api_secret`` while a secret is configured."""


class DeleteNotAllowed(ApiError):
    """DELETE /v1/shape while ``allow_shape_deletion`` is off."""


class ShapeNotFound(ApiError):
    """DELETE of a shape that does not exist."""


class DefinitionMismatch(ApiError):
    """DELETE with a handle that is not the definition's shape."""


class BadRequestBody(ApiError):
    """A POST body that is too large, not JSON or not an object (``{"error": ...}`` bodies, spec §2)."""

    def __init__(self, status: int, payload: dict[str, str]) -> None:
        super().__init__(status, payload)
        self.status = status
        self.payload = payload


class MustRefetch(ApiError):
    """The client's handle is unknown, stale or mismatched: 409 with the shape's current handle (if any)."""

    def __init__(self, new_handle: str | None) -> None:
        super().__init__(new_handle)
        self.new_handle = new_handle


class ConcurrencyLimitExceeded(ApiError):
    """Admission control refused the request (``kind`` is ``initial`` or ``existing``)."""

    def __init__(self, kind: Literal["initial", "existing"], limit: int, retry_after: int) -> None:
        super().__init__(kind, limit)
        self.kind = kind
        self.limit = limit
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Status, body bytes and the error-specific headers (cache-control etc. are added by the handler)."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=list)
    content_type: str = JSON_CONTENT_TYPE
    handle: str | None = None  # 409: the new handle (electric-handle, etag, cache-control)


def _json(status: int, body: Any, headers: Headers | None = None) -> ErrorResponse:
    return ErrorResponse(status, orjson.dumps(body), headers or [])


def _retry(seconds: int) -> Headers:
    return [("retry-after", str(seconds))]


def _invalid_request(ex: InvalidRequest) -> ErrorResponse:
    return _json(400, {"message": ex.message, "errors": ex.errors})


def _must_refetch(ex: MustRefetch) -> ErrorResponse:
    return ErrorResponse(409, MUST_REFETCH_BODY, handle=ex.new_handle)


def _shape_gone(ex: ShapeGone) -> ErrorResponse:
    # Only reached when the resource could not resolve the definition again: 409 without a new handle.
    return ErrorResponse(409, MUST_REFETCH_BODY)


def _limit(ex: ConcurrencyLimitExceeded) -> ErrorResponse:
    message = f"Concurrent {ex.kind} request limit exceeded (limit: {ex.limit}), please retry"
    return _json(
        503,
        {"code": "concurrent_request_limit_exceeded", "message": message},
        [*_retry(ex.retry_after), ("electric-internal-known-error", "true")],
    )


def _http_error(ex: falcon.HTTPError) -> ErrorResponse:
    if isinstance(ex, falcon.HTTPRouteNotFound):
        return ErrorResponse(404, b"Not found", content_type="text/plain; charset=utf-8")
    raw = ex.headers or {}
    pairs: list[tuple[str, str]] = list(raw.items()) if isinstance(raw, dict) else list(raw)  # type: ignore[arg-type]
    headers: Headers = [(k.lower(), v) for k, v in pairs]
    return _json(ex.status_code, {"message": ex.description or ex.title}, headers)


# The table: most specific class first; the first isinstance match wins.
ERROR_TABLE: tuple[tuple[type[Exception], Callable[[Any], ErrorResponse]], ...] = (
    (InvalidRequest, _invalid_request),
    (Unauthorized, lambda _: _json(401, {"message": "Unauthorized - Invalid API secret"})),
    (DeleteNotAllowed, lambda _: _json(405, {"message": "DELETE not allowed"})),
    (ShapeNotFound, lambda _: _json(404, {"message": "No existing shape found"})),
    (DefinitionMismatch, lambda _: _json(400, {"message": DEFINITION_MISMATCH})),
    (BadRequestBody, lambda ex: _json(ex.status, ex.payload)),
    (MustRefetch, _must_refetch),
    (ShapeGone, _shape_gone),
    (ConcurrencyLimitExceeded, _limit),
    (
        DatabaseUnreachable,
        lambda _: _json(
            503, {"code": "database_unreachable", "error": "Database is unreachable"}, _retry(10)
        ),
    ),
    (StackNotReady, lambda ex: _json(503, {"message": ex.reason}, _retry(ex.retry_after))),
    (
        ShapeCreationFailed,
        lambda _: _json(503, {"message": "Failed to create shape, please retry"}, _retry(1)),
    ),
    (
        SnapshotFailed,
        lambda ex: _json(
            503, {"message": ex.message}, [*_retry(10), ("electric-internal-known-error", "true")]
        ),
    ),
    (falcon.HTTPError, _http_error),
)

INTERNAL_ERROR = ErrorResponse(500, b'{"error":"Internal server error"}')


def to_error_response(ex: BaseException) -> ErrorResponse:
    """Map an exception to its response; anything not in the table is the generic 500."""
    for cls, build in ERROR_TABLE:
        if isinstance(ex, cls):
            return build(ex)
    return INTERNAL_ERROR


def apply_error_response(
    resp: falcon.Response, err: ErrorResponse, settings: ApiSettings, *, method: str
) -> None:
    """Write ``err`` onto ``resp`` with the error cache headers (and 409 handle/etag)."""
    resp.status = err.status
    resp.data = err.body
    resp.content_type = err.content_type
    resp.stream = None
    for name in ("etag", "electric-offset", "electric-cursor", "electric-schema", "electric-has-data"):
        resp.delete_header(name)
    for name, value in cache_control_headers(
        settings, method=method, status=err.status, has_handle=err.handle is not None
    ):
        resp.set_header(name, value)
    if err.status == 409 and err.handle is not None:
        resp.set_header("electric-handle", err.handle)
        resp.set_header("etag", etag_value(err.handle, "", None))
    for name, value in err.headers:
        resp.set_header(name, value)


def register_error_handlers(app: falcon.App[Any, Any], settings: ApiSettings) -> None:
    """Register the handler for every class of the table, plus the catch-all 500."""

    def handle(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> None:
        err = to_error_response(ex)
        if err.status >= 500 and err is INTERNAL_ERROR:
            log.exception(
                "unexpected error serving %s %s (request id %s)",
                req.method,
                req.path,
                getattr(req.context, "request_id", "-"),
                exc_info=ex,
            )
        apply_error_response(resp, err, settings, method=req.method)

    app.add_error_handler(Exception, handle)
    for cls, _ in ERROR_TABLE:
        app.add_error_handler(cls, handle)
