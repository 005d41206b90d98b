"""Every response-header rule of the Shape API (spec §1, §4, §6) as pure functions.

Why a pure module: header names and values are the protocol (the TS client fails hard on a missing
``electric-offset``/``electric-handle``, CDNs cache by ``cache-control``/``etag``, browsers need the CORS
expose list).  Keeping them out of the resource lets each rule be unit-tested against the spec's strings,
with time and randomness injected.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from api.params import ApiSettings
from sync.offsets import LogOffset

__all__ = [
    "CURSOR_EPOCH",
    "EXPOSE_HEADERS",
    "SHAPE_METHODS",
    "Headers",
    "ShapeResponseMeta",
    "cache_control_headers",
    "common_headers",
    "cors_headers",
    "etag_value",
    "if_none_match_matches",
    "next_cursor",
    "preflight_headers",
    "shape_response_headers",
]

Headers = list[tuple[str, str]]

EXPOSE_HEADERS = (
    "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,"
    "electric-up-to-date,electric-internal-known-error,retry-after"
)
SHAPE_PATH = "/v1/shape"
SHAPE_METHODS = "GET, POST, HEAD, DELETE, OPTIONS"
OTHER_METHODS = "GET, HEAD"
CURSOR_EPOCH = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
PREFLIGHT_ALLOWED_HEADERS = frozenset({"if-none-match", "traceparent"})

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
SSE_CONTENT_TYPE = "text/event-stream"


def common_headers(settings: ApiSettings, request_id: str) -> Headers:
    """``electric-server`` and ``x-request-id``, on every response."""
    return [("electric-server", settings.server_header), ("x-request-id", request_id)]


def cors_headers(origin: str | None, path: str) -> Headers:
    """CORS headers on every response: origin echo (or ``*``), the expose list, methods per path."""
    methods = SHAPE_METHODS if path == SHAPE_PATH else OTHER_METHODS
    return [
        ("access-control-allow-origin", origin if origin else "*"),
        ("access-control-expose-headers", EXPOSE_HEADERS),
        ("access-control-allow-methods", methods),
    ]


def preflight_headers(requested_headers: str | None) -> Headers:
    """OPTIONS ``/v1/shape``: cacheable for a day; allow-headers only for exactly the two known headers."""
    # ``connection: keep-alive`` is hop-by-hop: PEP 3333 forbids it from the app; gunicorn sends it itself.
    headers: Headers = [("access-control-max-age", "86400")]
    if requested_headers is not None and requested_headers.strip().lower() in PREFLIGHT_ALLOWED_HEADERS:
        headers.append(("access-control-allow-headers", requested_headers))
    return headers


def cache_control_headers(
    settings: ApiSettings,
    *,
    method: str,
    status: int,
    before_all: bool = False,
    live: bool = False,
    live_sse: bool = False,
    has_handle: bool = False,
    subset: bool = False,
) -> Headers:
    """The ``cache-control`` variant of spec §4 (first matching rule wins, as in Electric's Response)."""
    if method not in ("GET", "HEAD", "OPTIONS") or subset:
        return [("cache-control", "no-cache")]
    if status == 409:
        return [("cache-control", f"public, max-age={60 if has_handle else 1}, must-revalidate")]
    if status >= 400:
        return [("cache-control", "no-store"), ("surrogate-control", "no-store")]
    if before_all:
        return [("cache-control", "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746")]
    if live and live_sse:
        return [("cache-control", f"public, max-age={max(1, int(settings.sse_timeout) - 1)}")]
    if live:
        return [("cache-control", "public, max-age=5, stale-while-revalidate=5")]
    return [
        (
            "cache-control",
            f"public, max-age={settings.cache_max_age}, stale-while-revalidate={settings.cache_stale_age}",
        )
    ]


def etag_value(
    handle: str, request_offset: str, response_offset: LogOffset | None, monotonic_ns: int | None = None
) -> str:
    """Quoted etag ``"<handle>:<req offset>:<resp offset>[:<monotonic>]"``; a 409 passes ``""``/None."""
    core = f"{handle}:{request_offset}:{'' if response_offset is None else response_offset}"
    if monotonic_ns is not None:
        core = f"{core}:{monotonic_ns}"
    return f'"{core}"'


def if_none_match_matches(header_values: Iterable[str], unquoted_etag: str) -> bool:
    """Spec §4: comma-split the If-None-Match values, strip spaces and quotes, compare exactly."""
    for value in header_values:
        for part in value.split(","):
            if part.strip().strip('"') == unquoted_etag:
                return True
    return False


def next_cursor(
    long_poll_timeout: float,
    client_cursor: str | None,
    *,
    now: float,
    rand: Callable[[int, int], int] = random.randint,
) -> int:
    """Spec §6: the next time bucket of ``long_poll_timeout`` seconds since 2024-10-09, bumped past the
    client's cursor by a random 1..3600 s when it would not move forward (CDN cache busting)."""
    interval = int(long_poll_timeout)
    if interval <= 0:
        return 0
    elapsed = now - CURSOR_EPOCH
    nxt = math.ceil(elapsed / interval) * interval
    if client_cursor is not None:
        try:
            previous = int(client_cursor)
        except ValueError:
            return nxt
        if nxt <= previous:
            return previous + rand(1, 3600)
    return nxt


@dataclass(frozen=True, slots=True)
class ShapeResponseMeta:
    """Everything the headers of a 200/304 shape response depend on."""

    handle: str
    request_offset: str  # the offset as the client sent it (etag)
    offset: LogOffset  # electric-offset: the chunk end
    before_all: bool
    live: bool
    live_sse: bool
    up_to_date: bool
    has_data: bool
    no_changes: bool = False  # long-poll timeout: the etag gets a monotonic suffix
    schema: str | None = None  # electric-schema, only for non-live 200s

    @property
    def unquoted_etag(self) -> str:
        return f"{self.handle}:{self.request_offset}:{self.offset}"


def shape_response_headers(
    meta: ShapeResponseMeta,
    settings: ApiSettings,
    *,
    method: str,
    status: int,
    client_cursor: str | None,
    now: float,
    monotonic_ns: int,
    rand: Callable[[int, int], int] = random.randint,
) -> Headers:
    """Headers of a 200 (or 304) shape response, spec §4/§6; no schema on 304s and live responses."""
    headers = cache_control_headers(
        settings,
        method=method,
        status=status,
        before_all=meta.before_all,
        live=meta.live,
        live_sse=meta.live_sse,
    )
    if meta.live:
        cursor = next_cursor(settings.long_poll_timeout, client_cursor, now=now, rand=rand)
        headers.append(("electric-cursor", str(cursor)))
    headers.append(
        (
            "etag",
            etag_value(
                meta.handle, meta.request_offset, meta.offset, monotonic_ns if meta.no_changes else None
            ),
        )
    )
    headers.append(("electric-handle", meta.handle))
    if status == 200 and not meta.live and meta.schema is not None:
        headers.append(("electric-schema", meta.schema))
    if meta.up_to_date:
        headers.append(("electric-up-to-date", ""))
    headers.append(("electric-offset", str(meta.offset)))
    headers.append(("electric-has-data", "true" if meta.has_data else "false"))
    if status == 304:
        pass  # a 304 has no content, hence no content-type
    elif meta.live and meta.live_sse:
        headers.append(("content-type", SSE_CONTENT_TYPE))  # connection: keep-alive comes from gunicorn
    else:
        headers.append(("content-type", JSON_CONTENT_TYPE))
    return headers
