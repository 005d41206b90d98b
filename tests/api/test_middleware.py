"""Middleware: path normalisation, admission control (limits, 503 body, reliable release), request ids."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from typing import Any, cast
from wsgiref.types import StartResponse

import orjson
import pytest
from falcon.testing import TestClient

from api.middleware import AdmissionMiddleware, RequestIds, _ReleasingStream, normalize_path, request_kind
from api.params import parse_query
from tests.api.conftest import TEST_SETTINGS, build_app
from tests.api.fake_engine import FakeEngine


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("/v1/shape/", "/v1/shape"), ("/v1//shape", "/v1/shape"), ("//v1///shape//", "/v1/shape"), ("/", "/")],
)
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("table=t&offset=-1", "initial"),
        ("table=t&offset=0_0&handle=", "initial"),
        ("table=t&offset=0_0&handle=unknown", "initial"),
        ("table=t&offset=0_0&handle=known", "existing"),
        ("table=t&offset=-1&handle=known", "existing"),
        ("table=t&offset=5_2&handle=known&live", "existing"),
        ("table=t&offset=5_2&handle=boom&live", "initial"),
    ],
)
def test_request_kind(query: str, kind: str) -> None:
    def exists(handle: str) -> bool:
        if handle == "boom":
            raise RuntimeError("engine not ready")
        return handle == "known"

    assert request_kind(parse_query(query), exists) == kind


def admission_of(app: Any) -> AdmissionMiddleware:
    for component in app._unprepared_middleware:
        if isinstance(component, AdmissionMiddleware):
            return component
    raise AssertionError("no admission middleware")


def test_existing_limit_rejects_and_releases(fake: FakeEngine) -> None:
    settings = replace(TEST_SETTINGS, max_concurrent_existing=1)
    app = build_app(fake, settings)
    admission = admission_of(app)
    client = TestClient(app)
    table = fake.create_table([])
    handle = client.simulate_get("/v1/shape", query_string=f"table={table}&offset=-1").headers[
        "electric-handle"
    ]
    assert admission.control.in_flight("initial") == 0
    live_query = f"table={table}&offset=0_inf&handle={handle}&live"
    results: list[Any] = []
    t = threading.Thread(
        target=lambda: results.append(client.simulate_get("/v1/shape", query_string=live_query))
    )
    t.start()
    assert fake.waiter_registered.wait(5)
    assert admission.control.in_flight("existing") == 1
    r = client.simulate_get("/v1/shape", query_string=live_query)
    assert r.status_code == 503
    assert orjson.loads(r.content) == {
        "code": "concurrent_request_limit_exceeded",
        "message": "Concurrent existing request limit exceeded (limit: 1), please retry",
    }
    assert 6 <= int(r.headers["retry-after"]) <= 10
    assert r.headers["electric-internal-known-error"] == "true"
    assert r.headers["cache-control"] == "no-store"
    # initial requests have their own budget
    assert client.simulate_get("/v1/shape", query_string=f"table={table}&offset=-1").status_code == 200
    fake.insert(table, {"id": "1", "title": "x"})
    t.join(5)
    assert results[0].status_code == 200
    assert admission.control.in_flight("existing") == 0
    assert admission.control.in_flight("initial") == 0


def test_initial_limit(fake: FakeEngine) -> None:
    app = build_app(fake, replace(TEST_SETTINGS, max_concurrent_initial=0))
    r = TestClient(app).simulate_get("/v1/shape", query_string="table=t&offset=-1")
    assert r.status_code == 503
    assert (
        orjson.loads(r.content)["message"]
        == "Concurrent initial request limit exceeded (limit: 0), please retry"
    )


def test_slots_released_for_every_kind_of_response(fake: FakeEngine) -> None:
    settings = replace(TEST_SETTINGS, stream_buffer_bytes=64)  # force streamed bodies
    app = build_app(fake, settings)
    admission = admission_of(app)
    client = TestClient(app)
    table = fake.create_table([{"id": str(i), "title": "x" * 50} for i in range(3)])
    r = client.simulate_get("/v1/shape", query_string=f"table={table}&offset=-1")  # streamed
    assert r.status_code == 200 and len(orjson.loads(r.content)) == 4
    etag = r.headers["etag"]
    handle = r.headers["electric-handle"]
    client.simulate_head("/v1/shape", query_string=f"table={table}&offset=-1")  # HEAD drops the stream
    client.simulate_get("/v1/shape", query_string=f"table={table}&offset=-1", headers={"If-None-Match": etag})
    client.simulate_get("/v1/shape", query_string="table=t")  # 400
    client.simulate_get("/v1/shape", query_string=f"table={table}&offset=0_0&handle=zzz")  # 409
    client.simulate_head("/v1/shape", query_string=f"table={table}&offset=0_2&handle={handle}&live&live_sse")
    assert admission.control.in_flight("initial") == 0
    assert admission.control.in_flight("existing") == 0
    assert not any(s.waiters for s in fake.shapes.values())  # the SSE generator was closed


def test_streamed_body_keeps_slot_until_closed(fake: FakeEngine) -> None:
    settings = replace(TEST_SETTINGS, stream_buffer_bytes=64)
    app = build_app(fake, settings)
    admission = admission_of(app)
    table = fake.create_table([{"id": str(i), "title": "x" * 50} for i in range(3)])
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/v1/shape",
        "QUERY_STRING": f"table={table}&offset=-1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": None,
    }
    env["wsgi.input"] = io.BytesIO()
    env["wsgi.errors"] = sys.stderr
    start_response = cast(StartResponse, lambda status, headers, exc_info=None: None)
    body = cast(_ReleasingStream, app(env, start_response))  # the middleware's wrapper of a streamed body
    assert admission.control.in_flight("initial") == 1
    first = next(iter(body))  # the client reads a little, then goes away
    assert first.startswith(b"[")
    assert admission.control.in_flight("initial") == 1
    body.close()  # what gunicorn does in its finally
    assert admission.control.in_flight("initial") == 0


def test_request_ids_are_token_urlsafe_15_and_unique() -> None:
    ids = RequestIds()
    drawn = [ids.next() for _ in range(3 * RequestIds.BATCH + 5)]  # several batches
    assert len(set(drawn)) == len(drawn)
    assert all(len(i) == 20 and re.fullmatch(r"[A-Za-z0-9_-]{20}", i) for i in drawn)


def test_admission_lock_is_an_os_thread_lock_under_gevent() -> None:
    """AdmissionControl's lock stays native under gevent (cheaper than gevent's per acquire; its critical
    sections never switch greenlets): held by one greenlet, it keeps a real OS thread out, and the counts
    still add up."""
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import gevent
        from api.middleware import AdmissionControl
        control = AdmissionControl({"initial": 1, "existing": 2})
        assert type(control._lock).__module__ == "_thread", type(control._lock)
        with control._lock:
            taken = gevent.get_hub().threadpool.apply(control._lock.acquire, (True, 0.05))
        assert not taken
        assert control.try_acquire("existing") and control.try_acquire("existing")
        assert not control.try_acquire("existing") and control.in_flight("existing") == 2
        control.release("existing")
        assert control.in_flight("existing") == 1 and control.try_acquire("initial")
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stdout.strip() == "ok", proc.stderr
