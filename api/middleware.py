"""Falcon middleware of the Shape API: path normalisation, request id + common/CORS headers, auth, admission.

Why middleware: these rules hold for every response (including errors and 404s) or must run before routing
(``/v1/shape/``, ``/v1//shape`` and ``/v1/%73hape`` route and authenticate as ``/v1/shape``), so they cannot
live in a resource.  Admission control keeps a request's slot until its body has been fully written (or the
client went away): streamed bodies are wrapped so the slot is released when the WSGI server closes them.

Order matters; use :func:`shape_api_middleware` which returns them in the right order.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import falcon

from api.errors import ConcurrencyLimitExceeded, Unauthorized
from api.headers import SHAPE_PATH, SSE_CONTENT_TYPE, common_headers, cors_headers
from api.params import ApiSettings, parse_query
from api.raw_response import header_block, safe_header_value
from supervisors.stripes import native_lock

__all__ = [
    "AdmissionControl",
    "AdmissionMiddleware",
    "AdmissionSlot",
    "AuthMiddleware",
    "CommonHeadersMiddleware",
    "PathNormalizer",
    "RawCommonLines",
    "RequestIds",
    "normalize_path",
    "request_query",
    "shape_api_middleware",
]

log = logging.getLogger(__name__)

_SLASHES = re.compile(r"/{2,}")
Kind = Literal["initial", "existing"]


class RequestIds:
    """Random request ids as ``secrets.token_urlsafe(15)`` makes them (20 URL-safe characters from 15 bytes
    of ``os.urandom``), drawn 256 at a time: one ``getrandom`` call and one base64 pass per batch instead of
    per request.  ``list.pop`` is atomic, so threads may share it (a race refills twice, harmlessly)."""

    BATCH = 256

    def __init__(self) -> None:
        self._ids: list[str] = []

    def next(self) -> str:
        try:
            return self._ids.pop()
        except IndexError:
            text = base64.urlsafe_b64encode(os.urandom(15 * self.BATCH)).decode("ascii")  # 15 bytes: 20 chars
            self._ids = [text[i : i + 20] for i in range(0, len(text), 20)]
            return self._ids.pop()


def request_query(req: falcon.Request) -> dict[str, str]:
    """The decoded query of ``req`` (see :func:`api.params.parse_query`), parsed once per request."""
    query: dict[str, str] | None = getattr(req.context, "shape_query", None)
    if query is None:
        query = parse_query(req.query_string)
        req.context.shape_query = query
    return query


def normalize_path(path: str) -> str:
    """Collapse repeated slashes and drop a trailing one (percent-decoding is done by Falcon)."""
    if "//" not in path and (len(path) == 1 or not path.endswith("/")):
        return path  # already normal: no regex pass (every request comes here)
    path = _SLASHES.sub("/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


class PathNormalizer:
    """Rewrites ``req.path`` before routing so that equivalent spellings reach the same resource."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        normalized = normalize_path(req.path)
        if normalized != req.path:
            req.path = normalized


class CommonHeadersMiddleware:
    """Assigns the request id and puts ``electric-server``, ``x-request-id`` and CORS on every response
    (and ``x-accel-buffering: no`` on event streams)."""

    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings
        # Built once (issue 7: thousands of responses per change); only the id and the origin vary.
        self._cors_shape = cors_headers(None, SHAPE_PATH)
        self._cors_other = cors_headers(None, "/")
        self._ids = RequestIds()

    def request_id(self, incoming: str | None) -> str:
        """The request's id: Plug.RequestId accepts a client's id of 20..200 characters, else one is drawn."""
        return incoming if incoming is not None and 20 <= len(incoming) <= 200 else self._ids.next()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = self.request_id(req.get_header("x-request-id"))

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        request_id = getattr(req.context, "request_id", None) or self._ids.next()
        headers = common_headers(self._settings, request_id)
        headers += self._cors_shape if req.path == SHAPE_PATH else self._cors_other
        origin = req.get_header("origin")
        if origin:
            headers.append(("access-control-allow-origin", origin))  # replaces the "*" set above
        resp.set_headers(headers)
        if resp.content_type == SSE_CONTENT_TYPE:
            # nginx (config/nginx.conf) and similar proxies must pass an event stream through unbuffered.
            resp.set_header("x-accel-buffering", "no")


class RawCommonLines:
    """What :class:`CommonHeadersMiddleware` adds to a ``/v1/shape`` response, as a header block for a
    pre-rendered answer (:mod:`api.raw_response`); rendered once but for the request id and the origin."""

    def __init__(self, settings: ApiSettings) -> None:
        cors = cors_headers(None, SHAPE_PATH)  # allow-origin first, then the constant ones
        self._head = header_block([("electric-server", settings.server_header)]) + b"x-request-id: "
        self._tail = header_block(cors[1:])

    def render(self, req: falcon.Request) -> bytes | None:
        """The block for ``req`` (None if its request id or origin could not be sent as they are)."""
        return self.lines(getattr(req.context, "request_id", None), req.get_header("origin"))

    def lines(self, request_id: str | None, origin: str | None) -> bytes | None:
        """The block for a request with this id and ``Origin`` header (None if the id or the origin could
        not be sent as they are)."""
        origin = origin or "*"
        if request_id is None or not safe_header_value(request_id) or not safe_header_value(origin):
            return None
        return b"%s%s\r\naccess-control-allow-origin: %s\r\n%s" % (
            self._head,
            request_id.encode("latin-1"),
            origin.encode("latin-1"),
            self._tail,
        )


class AuthMiddleware:
    """With a secret configured, ``/v1/shape`` (not OPTIONS) needs ``?secret=`` (legacy ``?api_secret=``)."""

    def __init__(self, settings: ApiSettings) -> None:
        self._secret = settings.secret.encode() if settings.secret else None

    def allows(self, query: dict[str, str]) -> bool:
        """Does the decoded query of a (non-OPTIONS) ``/v1/shape`` request carry the secret, if one is set."""
        if self._secret is None:
            return True
        given = query.get("secret") or query.get("api_secret") or ""
        return hmac.compare_digest(given.encode(), self._secret)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._secret is None or req.path != SHAPE_PATH or req.method == "OPTIONS":
            return
        if not self.allows(request_query(req)):
            raise Unauthorized


class AdmissionControl:
    """Counters of in-flight shape requests per kind, with limits (Electric's AdmissionControl)."""

    def __init__(self, limits: dict[Kind, int]) -> None:
        self._limits = dict(limits)
        self._counts: dict[Kind, int] = {"initial": 0, "existing": 0}
        # an OS-thread lock under gevent too (gevent's lock costs more per acquire, two acquires per
        # request): no critical section here switches greenlets (dict reads and integer updates only)
        self._lock = native_lock()

    def try_acquire(self, kind: Kind) -> bool:
        with self._lock:
            if self._counts[kind] >= self._limits[kind]:
                return False
            self._counts[kind] += 1
            return True

    def release(self, kind: Kind) -> None:
        with self._lock:
            self._counts[kind] -= 1

    def limit(self, kind: Kind) -> int:
        return self._limits[kind]

    def in_flight(self, kind: Kind) -> int:
        with self._lock:
            return self._counts[kind]


class AdmissionSlot:
    """One acquired admission slot; releasing is idempotent."""

    __slots__ = ("_control", "_kind", "_released")

    def __init__(self, control: AdmissionControl, kind: Kind) -> None:
        self._control = control
        self._kind = kind
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._control.release(self._kind)


class _ReleasingStream:
    """Wraps a streamed body; the WSGI server's ``close()`` (always called, even on a client disconnect)
    closes the inner iterator (running its ``finally`` blocks) and then releases the slot."""

    def __init__(self, inner: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._inner = inner
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


def request_kind(query: dict[str, str], exists: Callable[[str], bool]) -> Kind:
    """Electric's rule: ``existing`` when the request names a handle the engine knows, else ``initial``."""
    handle = query.get("handle")
    if not handle:
        return "initial"
    try:
        return "existing" if exists(handle) else "initial"
    except Exception:  # an engine that cannot answer yet: count it as a new client
        log.debug("admission: handle lookup failed", exc_info=True)
        return "initial"


class AdmissionMiddleware:
    """Bounds concurrent GET/HEAD ``/v1/shape`` requests; 503 ``concurrent_request_limit_exceeded`` above."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        exists: Callable[[str], bool] = lambda handle: True,
        rand: Callable[[int, int], int] = random.randint,
    ) -> None:
        self._exists = exists
        self.control = AdmissionControl(
            {"initial": settings.max_concurrent_initial, "existing": settings.max_concurrent_existing}
        )
        self._rand = rand

    def acquire(self, query: dict[str, str]) -> tuple[Kind, AdmissionSlot | None]:
        """The kind of a GET/HEAD/POST ``/v1/shape`` with this decoded query, and a slot of that kind (None
        when the kind is at its limit)."""
        kind = request_kind(query, self._exists)
        return kind, AdmissionSlot(self.control, kind) if self.control.try_acquire(kind) else None

    def refusal(self, kind: Kind) -> ConcurrencyLimitExceeded:
        return ConcurrencyLimitExceeded(kind, self.control.limit(kind), retry_after=self._rand(6, 10))

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path != SHAPE_PATH or req.method not in ("GET", "HEAD", "POST"):
            return
        kind, slot = self.acquire(request_query(req))
        if slot is None:
            raise self.refusal(kind)
        req.context.admission_slot = slot

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        slot: AdmissionSlot | None = getattr(req.context, "admission_slot", None)
        if slot is None:
            return
        stream: Any = resp.stream
        bodiless = req.method == "HEAD" or resp.status_code in (204, 304)
        if stream is None:
            slot.release()
        elif bodiless:
            # Falcon drops the body of HEAD/204/304 without closing it: close it here.
            _ReleasingStream(stream, slot.release).close()
            resp.stream = None
        else:
            resp.stream = _ReleasingStream(stream, slot.release)

    def finish_raw(self, req: falcon.Request, body_length: int) -> None:
        """A pre-rendered answer left Falcon (api/raw_response.py): its body is in memory, release now."""
        del body_length
        slot: AdmissionSlot | None = getattr(req.context, "admission_slot", None)
        if slot is not None:
            slot.release()


def shape_api_middleware(
    settings: ApiSettings, *, exists: Callable[[str], bool] = lambda handle: True
) -> list[Any]:
    """The middleware list, in order: normalise -> ids/CORS -> auth -> admission.

    ``exists(handle)`` tells admission control whether a handle names a live shape (``existing`` budget).
    """
    return [
        PathNormalizer(),
        CommonHeadersMiddleware(settings),
        AuthMiddleware(settings),
        AdmissionMiddleware(settings, exists=exists),
    ]
