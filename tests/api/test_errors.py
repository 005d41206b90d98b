"""The error table (spec §1/§2/§7): pure mapping, and the same through Falcon with a failing engine."""

from __future__ import annotations

import logging
import threading
from typing import Any

import falcon
import orjson
import pytest
from falcon.testing import TestClient

from api.engine_port import (
    DatabaseUnreachable,
    InvalidRequest,
    ShapeCreationFailed,
    ShapeDefinition,
    SnapshotFailed,
    StackNotReady,
)
from api.errors import (
    ConcurrencyLimitExceeded,
    DefinitionMismatch,
    DeleteNotAllowed,
    MustRefetch,
    ShapeNotFound,
    Unauthorized,
    to_error_response,
)
from tests.api.conftest import TEST_SETTINGS, build_app
from tests.api.fake_engine import FakeEngine


@pytest.mark.parametrize(
    ("exc", "status", "body", "headers"),
    [
        (
            InvalidRequest({"offset": ["x"]}),
            400,
            {"message": "Invalid request", "errors": {"offset": ["x"]}},
            {},
        ),
        (Unauthorized(), 401, {"message": "Unauthorized - Invalid API secret"}, {}),
        (ShapeNotFound(), 404, {"message": "No existing shape found"}, {}),
        (DeleteNotAllowed(), 405, {"message": "DELETE not allowed"}, {}),
        (MustRefetch("H"), 409, [{"headers": {"control": "must-refetch"}}], {}),
        (
            DatabaseUnreachable(),
            503,
            {"code": "database_unreachable", "error": "Database is unreachable"},
            {"retry-after": "10"},
        ),
        (StackNotReady("Stack not ready"), 503, {"message": "Stack not ready"}, {"retry-after": "5"}),
        (
            ShapeCreationFailed(),
            503,
            {"message": "Failed to create shape, please retry"},
            {"retry-after": "1"},
        ),
        (
            SnapshotFailed("boom"),
            503,
            {"message": "boom"},
            {"retry-after": "10", "electric-internal-known-error": "true"},
        ),
        (
            ConcurrencyLimitExceeded("initial", 300, 7),
            503,
            {
                "code": "concurrent_request_limit_exceeded",
                "message": "Concurrent initial request limit exceeded (limit: 300), please retry",
            },
            {"retry-after": "7", "electric-internal-known-error": "true"},
        ),
        (RuntimeError("bug"), 500, {"error": "Internal server error"}, {}),
        (KeyError("bug"), 500, {"error": "Internal server error"}, {}),
    ],
)
def test_error_table(exc: Exception, status: int, body: Any, headers: dict[str, str]) -> None:
    err = to_error_response(exc)
    assert err.status == status
    assert orjson.loads(err.body) == body
    assert dict(err.headers) == headers


def test_definition_mismatch_message() -> None:
    err = to_error_response(DefinitionMismatch())
    assert err.status == 400
    assert orjson.loads(err.body) == {
        "message": "The specified shape definition and handle do not match. Please ensure the shape definition is "
        "correct or omit the shape handle from the request to obtain a new one."
    }


class FailingEngine(FakeEngine):
    """The fake, except that ``get_or_create`` raises the configured error."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def get_or_create(self, definition: ShapeDefinition) -> str:
        raise self.error


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (DatabaseUnreachable(), 503, "10"),
        (StackNotReady("Stack not ready"), 503, "5"),
        (ShapeCreationFailed(), 503, "1"),
        (RuntimeError("bug"), 500, None),
    ],
)
def test_engine_errors_through_falcon(
    error: Exception, status: int, retry_after: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    client = TestClient(build_app(FailingEngine(error), TEST_SETTINGS))
    rid = "request-id-0123456789"
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        r = client.simulate_get("/v1/shape", query_string="table=t&offset=-1", headers={"x-request-id": rid})
    assert r.status_code == status
    assert r.headers.get("retry-after") == retry_after
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["surrogate-control"] == "no-store"
    assert r.headers["x-request-id"] == rid
    assert r.headers["access-control-allow-origin"] == "*"
    if status == 500:
        assert orjson.loads(r.content) == {"error": "Internal server error"}
        assert any(rid in rec.getMessage() for rec in caplog.records)
    else:
        assert not caplog.records


def test_snapshot_failure_is_503(fake: FakeEngine) -> None:
    table = fake.create_table([])
    fake.fail_snapshots = True
    r = TestClient(build_app(fake, TEST_SETTINGS)).simulate_get(
        "/v1/shape", query_string=f"table={table}&offset=-1"
    )
    assert r.status_code == 503
    assert r.headers["retry-after"] == "10"


def test_engine_not_attached_is_503() -> None:
    r = TestClient(build_app(lambda: None, TEST_SETTINGS)).simulate_get(
        "/v1/shape", query_string="table=t&offset=-1"
    )
    assert r.status_code == 503
    assert orjson.loads(r.content) == {"message": "Stack not ready"}
    assert r.headers["retry-after"] == "5"


def test_engine_stop_during_long_poll_is_503(fake: FakeEngine) -> None:
    client = TestClient(build_app(fake, TEST_SETTINGS))
    table = fake.create_table([])
    handle = client.simulate_get("/v1/shape", query_string=f"table={table}&offset=-1").headers[
        "electric-handle"
    ]
    results: list[Any] = []
    t = threading.Thread(
        target=lambda: results.append(
            client.simulate_get("/v1/shape", query_string=f"table={table}&offset=0_inf&handle={handle}&live")
        )
    )
    t.start()
    assert fake.waiter_registered.wait(5)
    fake.stop()
    t.join(5)
    assert results[0].status_code == 503
    assert results[0].headers["retry-after"] == "10"


def test_long_poll_timeout_while_not_active_is_503(fake: FakeEngine) -> None:
    client = TestClient(build_app(fake, TEST_SETTINGS))
    table = fake.create_table([])
    handle = client.simulate_get("/v1/shape", query_string=f"table={table}&offset=-1").headers[
        "electric-handle"
    ]
    fake.engine_status = "waiting"
    r = client.simulate_get("/v1/shape", query_string=f"table={table}&offset=0_inf&handle={handle}&live")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "10"


def test_unsupported_method_is_405_json() -> None:
    r = TestClient(build_app(FakeEngine(), TEST_SETTINGS)).simulate_put("/v1/shape")
    assert r.status_code == 405
    assert r.headers["cache-control"] == "no-cache"
    assert isinstance(orjson.loads(r.content), dict)
    assert falcon.HTTP_405.startswith("405")
