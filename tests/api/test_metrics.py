"""Prometheus metrics: per-request series in the app, engine series from the real service under gunicorn."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon
import falcon.testing
import psycopg
import pytest

from api.app import create_app
from api.metrics import ApiMetrics, start_metrics_server
from sync.postgres.cluster import free_port
from sync.settings import MetricsSettings, Settings
from tests.api.metrics_support import parse, scrape, until, value
from tests.fixtures.service import ServiceProcess


class _Stream:
    def on_get(self, req: falcon.Request, resp: falcon.Response, n: str) -> None:
        del req, n
        resp.stream = iter([b"a" * 100, b"b" * 23])


# --------------------------------------------------------------------------------------------- in process


def test_requests_and_bytes_are_counted_by_method_route_and_status() -> None:
    app = create_app(Settings())
    app.add_route("/test/stream/{n}", _Stream())
    client = falcon.testing.TestClient(app)
    health = client.simulate_get("/v1/health")
    assert health.status_code == 202  # no engine attached
    assert client.simulate_get("/v1/shape", params={"table": "t", "offset": "-1"}).status_code == 503
    assert client.simulate_get("/v1//shape/", params={"offset": "-1"}).status_code == 400
    assert client.simulate_head("/v1/shape", params={"table": "t", "offset": "-1"}).status_code == 503
    assert client.simulate_get("/nope/123").content == b"Not found"
    not_allowed = client.simulate_request("TRACE", "/v1/health")
    assert not_allowed.status_code == 405
    assert client.simulate_get("/test/stream/7").content == b"a" * 100 + b"b" * 23
    samples = parse(client.simulate_get("/metrics").text)
    total = "shapesync_http_requests_total"
    assert value(samples, total, method="GET", route="/v1/health", status="202") == 1
    assert value(samples, total, method="HEAD", route="/v1/shape", status="503") == 1
    assert value(samples, total, method="GET", route="/v1/shape", status="503") == 1
    assert value(samples, total, method="GET", route="/v1/shape", status="400") == 1  # normalised path
    assert value(samples, total, method="GET", route="unmatched", status="404") == 1  # no path label
    assert value(samples, total, method="OTHER", route="/v1/health", status="405") == 1
    assert value(samples, total, method="GET", route="/test/stream/{n}", status="200") == 1
    sent = "shapesync_http_response_bytes_total"
    assert value(samples, sent, route="/test/stream/{n}") == 123
    assert value(samples, sent, route="/v1/health") == len(health.content) + len(not_allowed.content)
    assert value(samples, sent, route="unmatched") == len(b"Not found")
    assert value(samples, "shapesync_live_waiters") == 0
    assert value(samples, "shapesync_engine_active") == 0
    assert value(samples, "shapesync_shapes") is None  # no engine yet: no engine series
    # the scrape itself is counted for the next one
    again = parse(client.simulate_get("/metrics").text)
    assert value(again, total, method="GET", route="/metrics", status="200") == 1


def test_rejected_live_requests_never_count_as_waiters() -> None:
    client = falcon.testing.TestClient(create_app(Settings()))
    params = {"table": "t", "offset": "0_0", "handle": "h", "live": "true"}
    assert client.simulate_get("/v1/shape", params=params).status_code == 503  # responder raised
    assert client.simulate_get("/v1/shape", params={**params, "offset": "-1"}).status_code == 400
    samples = parse(client.simulate_get("/metrics").text)
    assert value(samples, "shapesync_live_waiters") == 0
    assert value(samples, "shapesync_http_requests_total", method="GET", route="/v1/shape", status="503") == 1


def test_each_app_has_its_own_registry() -> None:
    first = falcon.testing.TestClient(create_app(Settings()))
    second = falcon.testing.TestClient(create_app(Settings()))
    first.simulate_get("/v1/health")
    first.simulate_get("/v1/health")
    second.simulate_get("/v1/health")
    name = "shapesync_http_requests_total"
    assert (
        value(
            parse(first.simulate_get("/metrics").text), name, method="GET", route="/v1/health", status="202"
        )
        == 2
    )
    assert (
        value(
            parse(second.simulate_get("/metrics").text), name, method="GET", route="/v1/health", status="202"
        )
        == 1
    )


def test_disabled_metrics_are_not_served() -> None:
    app = create_app(Settings(metrics=MetricsSettings(enabled=False)))
    assert app.shapesync_metrics is None
    assert falcon.testing.TestClient(app).simulate_get("/metrics").status_code == 404


def test_metrics_port_serves_them_on_their_own_port() -> None:
    port = free_port()
    app = create_app(Settings(metrics=MetricsSettings(port=port)))
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/metrics").status_code == 404  # not on the API port
    client.simulate_get("/v1/health")
    assert app.shapesync_metrics is not None
    server = start_metrics_server(app.shapesync_metrics, "127.0.0.1", port)
    try:
        assert server.port == port
        samples = scrape(f"http://127.0.0.1:{port}")
        name = "shapesync_http_requests_total"
        assert value(samples, name, method="GET", route="/v1/health", status="202") == 1
        assert value(samples, name, method="GET", route="unmatched", status="404") == 1
    finally:
        server.stop()


# ------------------------------------------------------------------------------------- the real service


@pytest.fixture
def live_service(db_dsn: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    extra: dict[str, dict[str, Any]] = {
        "http": {"long_poll_timeout_ms": 10000},
        "replication": {"status_interval_s": 0.5},
    }
    svc = ServiceProcess(db_dsn, tmp_path, extra).start()
    try:
        svc.wait_healthy()
        yield svc
    finally:
        svc.stop()


def test_engine_series_from_the_real_service(live_service: ServiceProcess, db_dsn: str) -> None:
    svc = live_service
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, title text)")
        conn.execute("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 20) g")
        samples = scrape(svc.url)
        assert value(samples, "shapesync_engine_active") == 1
        assert value(samples, "shapesync_shapes") == 0
        restarts = "shapesync_actor_restarts_total"
        assert value(samples, restarts, actor="connection/replication_client") == 0
        assert value(samples, restarts, actor="shapes/shape_log_collector") == 0
        assert value(samples, "shapesync_actor_up", actor="connection/replication_client") == 1

        code, headers, body = svc.get("/v1/shape?table=items&offset=-1")
        assert code == 200
        handle, offset = headers["electric-handle"], headers["electric-offset"]
        while headers.get("electric-up-to-date") is None:
            code, headers, _ = svc.get(f"/v1/shape?table=items&handle={handle}&offset={offset}")
            assert code == 200
            offset = headers["electric-offset"]
        samples = scrape(svc.url)
        assert value(samples, "shapesync_shapes") == 1
        shape_requests = value(
            samples, "shapesync_http_requests_total", method="GET", route="/v1/shape", status="200"
        )
        assert shape_requests is not None and shape_requests >= 2
        sent = value(samples, "shapesync_http_response_bytes_total", route="/v1/shape")
        assert sent is not None and sent >= len(body)

        # A long-poll parks: one live waiter until a write wakes it.
        result: list[tuple[int, bytes]] = []
        path = f"/v1/shape?table=items&handle={handle}&offset={offset}&live=true"
        poll = threading.Thread(target=lambda: result.append(svc.get(path)[::2]))
        poll.start()
        until(lambda: value(scrape(svc.url), "shapesync_live_waiters") == 1, "the long-poll to park")
        conn.execute("INSERT INTO items VALUES (21, 'woken')")
        commit_lsn = int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])  # type: ignore[index]
        poll.join(15)
        assert result and result[0][0] == 200 and b"woken" in result[0][1]
        assert value(scrape(svc.url), "shapesync_live_waiters") == 0

        # The write is acknowledged to Postgres; lag is server position minus that.
        def acknowledged() -> bool:
            s = scrape(svc.url)
            acked = value(s, "shapesync_replication_acknowledged_lsn")
            server = value(s, "shapesync_replication_server_wal_lsn")
            lag = value(s, "shapesync_replication_lag_bytes")
            assert acked is not None and server is not None and lag is not None
            assert server >= acked and lag == server - acked
            return acked >= commit_lsn - 1

        until(acknowledged, "the write to be acknowledged")

        # Restarts per actor come from the live supervision tree.
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE backend_type = 'walsender' AND datname = current_database()"
        ).fetchall()
        assert killed == [(True,)]
        until(
            lambda: (value(scrape(svc.url), restarts, actor="connection/replication_client") or 0) >= 1,
            "the replication client's restart to show",
        )


def test_metrics_port_under_gunicorn(db_dsn: str, tmp_path: Path) -> None:
    port = free_port()
    svc = ServiceProcess(db_dsn, tmp_path, {"metrics": {"port": port}}).start()
    try:
        svc.wait_healthy()
        assert svc.get("/metrics")[0] == 404
        samples = scrape(f"http://127.0.0.1:{port}")
        assert value(samples, "shapesync_engine_active") == 1
        assert value(samples, "shapesync_shapes") == 0
        health = value(
            samples, "shapesync_http_requests_total", method="GET", route="/v1/health", status="200"
        )
        assert health is not None and health >= 1
    finally:
        assert svc.stop() == 0


def test_pre_rendered_answers_are_counted_when_scraped() -> None:
    """count_raw (api/raw_response.py's answers) keeps plain integers; every scrape, through render() or a
    bare registry collect (the separate metrics port), folds them into the series first."""
    metrics = ApiMetrics(lambda: None, ["/v1/shape"])
    metrics.live_waiters.inc(3)
    metrics.count_raw("/v1/shape", 100, True)
    metrics.count_raw("/v1/shape", 50, True)
    metrics.count_raw("/v1/shape", 7, False)
    samples = parse(metrics.render().decode())
    assert value(samples, "shapesync_http_requests_total", method="GET", route="/v1/shape", status="200") == 3
    assert value(samples, "shapesync_http_response_bytes_total", route="/v1/shape") == 157
    assert value(samples, "shapesync_live_waiters") == 1
    metrics.count_raw("/v1/shape", 1, True)
    assert metrics.registry.get_sample_value("shapesync_live_waiters") == 0
    assert (
        metrics.registry.get_sample_value(
            "shapesync_http_requests_total", {"method": "GET", "route": "/v1/shape", "status": "200"}
        )
        == 4
    )
