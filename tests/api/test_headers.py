"""Spec §1/§4/§6 header rules as pure functions: CORS, cache-control, etag, If-None-Match, cursor, OPTIONS."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.headers import (
    EXPOSE_HEADERS,
    ShapeResponseMeta,
    cache_control_headers,
    common_headers,
    cors_headers,
    etag_value,
    if_none_match_matches,
    next_cursor,
    preflight_headers,
    shape_response_headers,
)
from api.params import ApiSettings
from sync.offsets import LogOffset

S = ApiSettings()


def cc(**kwargs) -> dict[str, str]:  # type: ignore[no-untyped-def]
    kwargs.setdefault("method", "GET")
    kwargs.setdefault("status", 200)
    return dict(cache_control_headers(S, **kwargs))


def test_expose_list_is_exact() -> None:
    assert EXPOSE_HEADERS == (
        "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,"
        "electric-up-to-date,electric-internal-known-error,retry-after"
    )


def test_cors_origin_echo_or_star_and_methods_per_path() -> None:
    h = dict(cors_headers("https://app.example", "/v1/shape"))
    assert h["access-control-allow-origin"] == "https://app.example"
    assert h["access-control-allow-methods"] == "GET, POST, HEAD, DELETE, OPTIONS"
    assert h["access-control-expose-headers"] == EXPOSE_HEADERS
    h = dict(cors_headers(None, "/v1/health"))
    assert h["access-control-allow-origin"] == "*"
    assert h["access-control-allow-methods"] == "GET, HEAD"


def test_common_headers() -> None:
    assert common_headers(ApiSettings(server_header="ElectricSQL/9"), "rid") == [
        ("electric-server", "ElectricSQL/9"),
        ("x-request-id", "rid"),
    ]


def test_cache_control_variants() -> None:
    assert cc(before_all=True) == {
        "cache-control": "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
    }
    assert cc(live=True) == {"cache-control": "public, max-age=5, stale-while-revalidate=5"}
    assert cc(live=True, live_sse=True) == {"cache-control": "public, max-age=59"}
    assert cc() == {"cache-control": "public, max-age=60, stale-while-revalidate=300"}
    assert cc(status=409, has_handle=True) == {"cache-control": "public, max-age=60, must-revalidate"}
    assert cc(status=409) == {"cache-control": "public, max-age=1, must-revalidate"}
    for status in (400, 401, 404, 405, 500, 503):
        assert cc(status=status) == {"cache-control": "no-store", "surrogate-control": "no-store"}
    assert cc(method="DELETE", status=202) == {"cache-control": "no-cache"}
    assert cc(method="POST") == {"cache-control": "no-cache"}
    assert cc(subset=True) == {"cache-control": "no-cache"}
    assert cc(method="HEAD", before_all=True)["cache-control"].startswith("public, max-age=604800")


def test_cache_control_uses_settings() -> None:
    s = ApiSettings(cache_max_age=1, cache_stale_age=3, sse_timeout=10)
    assert dict(cache_control_headers(s, method="GET", status=200)) == {
        "cache-control": "public, max-age=1, stale-while-revalidate=3"
    }
    assert dict(cache_control_headers(s, method="GET", status=200, live=True, live_sse=True)) == {
        "cache-control": "public, max-age=9"
    }
    s = ApiSettings(sse_timeout=1)
    assert dict(cache_control_headers(s, method="GET", status=200, live=True, live_sse=True)) == {
        "cache-control": "public, max-age=1"
    }


def test_etag_forms() -> None:
    assert etag_value("H", "-1", LogOffset(0, 0)) == '"H:-1:0_0"'
    assert etag_value("H", "now", LogOffset.SNAPSHOT_END) == '"H:now:0_inf"'
    assert etag_value("H", "5_0", LogOffset(5, 0), 77) == '"H:5_0:5_0:77"'
    assert etag_value("H", "", None) == '"H::"'


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"H:-1:0_0"', True),
        ("H:-1:0_0", True),
        ('"x", "H:-1:0_0"', True),
        ('W/"H:-1:0_0"', False),
        ('"H:-1:0_1"', False),
        ('"H:-1:0_0:123"', False),
        ("", False),
    ],
)
def test_if_none_match(header: str, matches: bool) -> None:
    assert if_none_match_matches([header], "H:-1:0_0") is matches


def test_cursor_is_next_interval_since_epoch() -> None:
    epoch = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
    assert next_cursor(20, None, now=epoch + 1) == 20
    assert next_cursor(20, None, now=epoch + 20) == 20
    assert next_cursor(20, None, now=epoch + 20.5) == 40
    assert next_cursor(20, "junk", now=epoch + 21) == 40
    assert next_cursor(20, "20", now=epoch + 21) == 40  # client is behind: plain next interval
    assert next_cursor(0.5, None, now=epoch + 21) == 0


def test_cursor_random_bump_when_not_ahead_of_client() -> None:
    epoch = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
    calls: list[tuple[int, int]] = []

    def rand(a: int, b: int) -> int:
        calls.append((a, b))
        return 7

    assert next_cursor(20, "40", now=epoch + 21, rand=rand) == 47
    assert next_cursor(20, "100", now=epoch + 21, rand=rand) == 107
    assert calls == [(1, 3600), (1, 3600)]


def test_preflight_allow_headers_only_exact_values() -> None:
    base = {"access-control-max-age": "86400"}
    assert dict(preflight_headers(None)) == base
    assert dict(preflight_headers("if-none-match")) == {
        **base,
        "access-control-allow-headers": "if-none-match",
    }
    assert dict(preflight_headers("traceparent")) == {**base, "access-control-allow-headers": "traceparent"}
    assert dict(preflight_headers("if-none-match, traceparent")) == base
    assert dict(preflight_headers("x-custom")) == base


def meta(**kw: Any) -> ShapeResponseMeta:
    base: dict[str, Any] = {
        "handle": "H",
        "request_offset": "5_0",
        "offset": LogOffset(9, 2),
        "before_all": False,
        "live": False,
        "live_sse": False,
        "up_to_date": True,
        "has_data": True,
        "schema": "{}",
    }
    base.update(kw)
    return ShapeResponseMeta(**base)


def headers_of(m: ShapeResponseMeta, status: int = 200, cursor: str | None = None) -> dict[str, str]:
    epoch = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
    return dict(
        shape_response_headers(
            m,
            S,
            method="GET",
            status=status,
            client_cursor=cursor,
            now=epoch + 1,
            monotonic_ns=42,
            rand=lambda a, b: 1,
        )
    )


def test_shape_headers_non_live() -> None:
    h = headers_of(meta())
    assert h["electric-handle"] == "H"
    assert h["electric-offset"] == "9_2"
    assert h["electric-schema"] == "{}"
    assert h["electric-up-to-date"] == ""
    assert h["electric-has-data"] == "true"
    assert h["etag"] == '"H:5_0:9_2"'
    assert h["content-type"] == "application/json; charset=utf-8"
    assert "electric-cursor" not in h


def test_shape_headers_live_no_changes() -> None:
    h = headers_of(meta(live=True, has_data=False, no_changes=True))
    assert h["electric-cursor"] == "20"
    assert "electric-schema" not in h
    assert h["electric-has-data"] == "false"
    assert h["etag"] == '"H:5_0:9_2:42"'
    assert h["cache-control"] == "public, max-age=5, stale-while-revalidate=5"


def test_shape_headers_304_has_no_schema_and_no_up_to_date_when_not() -> None:
    h = headers_of(meta(up_to_date=False), status=304)
    assert "electric-schema" not in h
    assert "electric-up-to-date" not in h
    assert h["electric-offset"] == "9_2"


def test_shape_headers_sse() -> None:
    h = headers_of(meta(live=True, live_sse=True))
    assert h["content-type"] == "text/event-stream"
    assert h["cache-control"] == "public, max-age=59"
    assert h["electric-cursor"] == "20"
