"""Prometheus metrics of the service: ``GET /metrics`` on the API port, or on a port of its own.

Why this module exists: operators need to see traffic (requests by route/status/method, bytes served, live
waiters) and the engine (live shapes, replication lag, acknowledged LSN, restarts per actor) without asking
an actor.  Two kinds of series:

* per-request series are counted by :class:`MetricsMiddleware`, the outermost Falcon middleware: one dict
  lookup and a counter increment per request, one increment per body write for streamed bodies;
* engine series are computed at scrape time by :class:`EngineCollector` from state that is readable from
  any greenlet (the shape directory, the replication client's ack bookkeeping, the supervision tree's
  published views); nothing is pushed from the engine's hot paths.

Every app owns its :class:`ApiMetrics` with a private ``CollectorRegistry`` (never the global one), so tests
can build several apps in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import falcon
import pykka
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.headers import SHAPE_PATH
from api.middleware import request_query
from supervisors import ChildView, which_children
from supervisors.errors import NotSupervised
from sync.engine import Engine
from sync.stack import SHAPE_SUPERVISOR
from sync.storage import coldio

__all__ = [
    "METRICS_PATH",
    "ApiMetrics",
    "EngineCollector",
    "MetricsMiddleware",
    "MetricsResource",
    "live_request",
    "start_metrics_server",
]

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def live_request(query: dict[str, str]) -> bool:
    """Does a shape request with this decoded query count as a live waiter (``live`` but not ``false``)."""
    return "live" in query and query["live"] != "false"


class ApiMetrics:
    """The registry of one app and its per-request series."""

    def __init__(self, engine: Callable[[], Engine | None], routes: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Registered first: a scrape collects it before the series it folds the pending counts into.
        self._pending: dict[str, list[int]] = {}
        self.registry.register(_PendingFlush(self.flush_raw))
        self.requests = Counter(
            "shapesync_http_requests",
            "HTTP responses, by method, route (URI template) and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.response_bytes = Counter(
            "shapesync_http_response_bytes",
            "Response body bytes handed to the WSGI server, by route.",
            ["route"],
            registry=self.registry,
        )
        self.live_waiters = Gauge(
            "shapesync_live_waiters",
            "Live shape requests (long-poll or SSE) in flight: parked on a shape or streaming.",
            registry=self.registry,
        )
        self.registry.register(EngineCollector(engine))
        self.routes = frozenset(routes)  # paths that label their own 401/503s raised before routing
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._bytes_children: dict[str, Any] = {}

    def count_request(self, method: str, route: str, status: int) -> None:
        key = (method, route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(method, route, str(status))
        child.inc()

    def bytes_counter(self, route: str) -> Callable[[float], None]:
        child = self._bytes_children.get(route)
        if child is None:
            child = self._bytes_children[route] = self.response_bytes.labels(route)
        inc: Callable[[float], None] = child.inc
        return inc

    def count_raw(self, route: str, body_length: int, live: bool) -> None:
        """A pre-rendered GET 200 (api/raw_response.py): thousands leave per change, so they are counted in
        plain integers and folded into the series when scraped (``flush_raw``), not through three locks."""
        pending = self._pending.get(route)
        if pending is None:
            pending = self._pending[route] = [0, 0, 0]
        pending[0] += 1
        pending[1] += body_length
        pending[2] += live

    def flush_raw(self) -> None:
        pending, self._pending = self._pending, {}
        for route, (count, length, live) in pending.items():
            self.requests.labels("GET", route, "200").inc(count)
            self.bytes_counter(route)(length)
            if live:
                self.live_waiters.dec(live)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PendingFlush(Collector):
    """Folds :meth:`ApiMetrics.count_raw`'s counts into the series at every scrape (no series of its own)."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def collect(self) -> Iterable[Metric]:
        self._flush()
        return []

    def describe(self) -> Iterable[Metric]:
        return []


class MetricsResource:
    """``GET /metrics``: the Prometheus text format of the app's registry."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        del req
        resp.content_type = CONTENT_TYPE_LATEST
        resp.set_header("cache-control", "no-store")
        resp.data = self._metrics.render()


class _MeteredBody:
    """A streamed body that counts its bytes as they are written and runs ``on_close`` exactly once when the
    WSGI server closes it (gunicorn always does, also when the client went away)."""

    __slots__ = ("_count", "_inner", "_on_close")

    def __init__(
        self, inner: Iterable[bytes], count: Callable[[float], None], on_close: Callable[[], None] | None
    ) -> None:
        self._inner = inner
        self._count = count
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        count = self._count
        for chunk in self._inner:
            count(len(chunk))
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class MetricsMiddleware:
    """Counts every response (outermost middleware: its ``process_response`` runs last, after the error
    handlers and the other middleware, so it sees the final status and body) and tracks live requests."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self._metrics = metrics
        self._routes = metrics.routes

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict[str, Any]
    ) -> None:
        # After routing and admission: only admitted live shape requests count as waiters.
        in_shape = req.path == SHAPE_PATH and req.method in ("GET", "HEAD", "POST")
        if in_shape and live_request(request_query(req)):
            req.context.metrics_live = True
            self._metrics.live_waiters.inc()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        metrics = self._metrics
        route = req.uri_template or (req.path if req.path in self._routes else UNMATCHED)
        method = req.method if req.method in KNOWN_METHODS else "OTHER"
        status = resp.status_code
        metrics.count_request(method, route, status)
        on_close: Callable[[], None] | None = None
        if getattr(req.context, "metrics_live", False):
            on_close = metrics.live_waiters.dec
        if method == "HEAD" or status in (204, 304):
            if on_close is not None:
                on_close()
            return
        stream: Any = resp.stream
        if stream is not None:
            resp.stream = _MeteredBody(stream, metrics.bytes_counter(route), on_close)
            return
        if on_close is not None:
            on_close()
        body = resp.render_body()
        if body:
            metrics.bytes_counter(route)(len(body))

    def finish_raw(self, req: falcon.Request, body_length: int) -> None:
        """A pre-rendered 200 left Falcon (api/raw_response.py): count it as process_response would."""
        self._metrics.count_raw(
            req.uri_template or UNMATCHED, body_length, getattr(req.context, "metrics_live", False)
        )


class EngineCollector(Collector):
    """Engine series, computed when scraped from state any greenlet may read."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time; nothing to check for name clashes up front

    def collect(self) -> Iterable[Metric]:
        engine = self._engine()
        active = GaugeMetricFamily(
            "shapesync_engine_active", "1 when the engine streams and serves shapes, else 0."
        )
        active.add_metric([], 1.0 if engine is not None and engine.connection.state() == "active" else 0.0)
        yield active
        if engine is None:
            return
        shapes = GaugeMetricFamily("shapesync_shapes", "Live shapes (in the shape directory).")
        shapes.add_metric([], float(len(engine.services.directory)))
        yield shapes
        seen = GaugeMetricFamily(
            "shapesync_last_seen_lsn", "Commit LSN of the last transaction routed to the shapes."
        )
        seen.add_metric([], float(engine.services.last_seen_lsn))
        yield seen
        positions = engine.connection.status.wal_positions()
        if positions is not None:
            acknowledged, server = positions
            acked = GaugeMetricFamily(
                "shapesync_replication_acknowledged_lsn",
                "The flush LSN the replication client acknowledges to Postgres.",
            )
            acked.add_metric([], float(acknowledged))
            yield acked
            server_lsn = GaugeMetricFamily(
                "shapesync_replication_server_wal_lsn",
                "The newest server WAL position the replication stream reported (keepalive wal_end).",
            )
            server_lsn.add_metric([], float(server))
            yield server_lsn
            lag = GaugeMetricFamily(
                "shapesync_replication_lag_bytes",
                "Server WAL position minus the acknowledged flush LSN, in bytes.",
            )
            lag.add_metric([], float(max(0, server - acknowledged)))
            yield lag
        yield from _restart_families(engine.root)
        uncached = CounterMetricFamily(
            "shapesync_storage_uncached_io",
            "Small shape-log reads and writes that found their page evicted from the page cache and went "
            "to an OS thread (a steady rate: the page cache is too small for the shapes in use).",
            labels=["op"],
        )
        uncached.add_metric(["write"], float(coldio.COUNTERS.writes))
        uncached.add_metric(["read"], float(coldio.COUNTERS.reads))
        yield uncached


def _restart_families(root: pykka.ActorRef[Any]) -> Iterator[Metric]:
    restarts = CounterMetricFamily(
        "shapesync_actor_restarts",
        "Restarts of each supervised actor, by its path in the supervision tree.",
        labels=["actor"],
    )
    alive = GaugeMetricFamily(
        "shapesync_actor_up", "1 when the supervised actor is alive, else 0.", labels=["actor"]
    )
    for path, view in _walk(root, ""):
        restarts.add_metric([path], float(view.restarts))
        alive.add_metric([path], 1.0 if view.alive else 0.0)
    yield restarts
    yield alive


def _walk(sup: pykka.ActorRef[Any], prefix: str, depth: int = 0) -> Iterator[tuple[str, ChildView]]:
    """Children of ``sup`` depth first, read from the published views (never asking a supervisor).

    The per-shape subtrees under the shape supervisor are skipped: they are temporary (never restarted)
    and there may be tens of thousands of them; the ``shapesync_shapes`` gauge counts them instead.
    """
    try:
        views = which_children(sup)
    except NotSupervised:
        return
    for view in views:
        path = f"{prefix}/{view.id}" if prefix else view.id
        yield path, view
        if view.kind == "supervisor" and view.id != SHAPE_SUPERVISOR and view.ref is not None and depth < 16:
            yield from _walk(view.ref, path, depth + 1)


class _Closeable(Protocol):
    def shutdown(self) -> None: ...


class MetricsServer:
    """The metrics listener started by :func:`start_metrics_server`."""

    def __init__(self, server: _Closeable, port: int) -> None:
        self._server = server
        self.port = port

    def stop(self) -> None:
        self._server.shutdown()


def start_metrics_server(metrics: ApiMetrics, host: str, port: int) -> MetricsServer:
    """Serve ``metrics`` on ``host:port`` (``[metrics] port``), in a thread (a greenlet under gevent).

    prometheus_client's server answers every path with the metrics text, like its ``/metrics``.
    """
    from prometheus_client import start_http_server  # noqa: PLC0415 - only used with a metrics port

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    bound = int(server.server_address[1])
    log.info("metrics served on http://%s:%d%s", host, bound, METRICS_PATH)
    return MetricsServer(server, bound)
