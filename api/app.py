"""The Falcon application factory.

``create_app(settings)`` builds the WSGI app; nothing is built at import time.  gunicorn loads
``api.app:get_app()`` in the worker, then ``post_worker_init`` starts the engine and attaches it with
:func:`attach_engine`; until then the health endpoint says ``starting`` and shape requests get 503.
Tests call ``create_app(settings)`` and attach an engine they started themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import falcon

from api.engine_adapter import EngineShapes
from api.health import ActorTreeResource, HealthResource
from api.lean_lane import LeanLane, takes
from api.metrics import METRICS_PATH, ApiMetrics, MetricsMiddleware, MetricsResource
from api.params import ApiSettings
from api.raw_response import RAW_ENV_KEY, SERVER_RAW_KEY, RawAnswerReady
from api.shape_resource import install_shape_api
from sync.engine import Engine
from sync.settings import Settings, load_settings

__all__ = ["EngineSlot", "attach_engine", "create_app", "detach_engine", "get_app"]


class EngineSlot:
    """The engine the app serves (and its Shape API adapter), attached after the worker started it."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.shapes: EngineShapes | None = None


class RootResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        del req
        resp.status = falcon.HTTP_200
        resp.content_type = "text/plain"
        resp.data = b""


def _not_found(req: falcon.Request, resp: falcon.Response, **kwargs: Any) -> None:
    del req, kwargs
    resp.status = falcon.HTTP_404
    resp.content_type = "text/plain"
    resp.data = b"Not found"


class ShapesyncApp(falcon.App[falcon.Request, falcon.Response]):
    """The Falcon app plus the engine slot and settings the hooks and resources share.

    Under a server that writes pre-rendered responses itself (our gunicorn worker sets ``SERVER_RAW_KEY``),
    subset GETs go through ``lean_lane`` first (``api/lean_lane.py``), and a responder may leave with
    :class:`RawAnswerReady`; the middleware that must see every response then
    finishes it through ``raw_finishers`` (``finish_raw(req, body_length)``), see ``api/raw_response.py``.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(cors_enable=False)
        self.shapesync_settings = settings
        self.shapesync_slot = EngineSlot()
        self.shapesync_metrics: ApiMetrics | None = None
        self.raw_finishers: list[Callable[[falcon.Request, int], None]] = []
        self.lean_lane: LeanLane | None = None  # subset GETs past Falcon (api/lean_lane.py)

    def __call__(self, env: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if env.get(SERVER_RAW_KEY):
            env[RAW_ENV_KEY] = True
            if self.lean_lane is not None and takes(env):
                answer = self.lean_lane.serve(env)
                if answer is not None:
                    return answer
        try:
            return super().__call__(env, start_response)
        except RawAnswerReady as ready:
            req: Any = ready.request
            length = len(ready.response.body)
            for finish in self.raw_finishers:  # innermost first, as Falcon runs process_response
                finish(req, length)
            return ready.response


def create_app(settings: Settings) -> ShapesyncApp:
    app = ShapesyncApp(settings)
    slot = app.shapesync_slot
    metrics_middleware: MetricsMiddleware | None = None
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.keep_blank_qs_values = True
    app.req_options.auto_parse_qs_csv = False
    if settings.metrics.enabled:
        # Outermost middleware (added first): it sees every response's final status and body.
        here = settings.metrics.port == 0
        routes = ("/", "/v1/health", "/v1/health/actors", "/v1/shape") + ((METRICS_PATH,) if here else ())
        metrics = app.shapesync_metrics = ApiMetrics(lambda: slot.engine, routes)
        metrics_middleware = MetricsMiddleware(metrics)
        app.add_middleware(metrics_middleware)
        if here:
            app.add_route(METRICS_PATH, MetricsResource(metrics))
    app.add_route("/", RootResource())
    app.add_route("/v1/health", HealthResource(slot))
    app.add_route("/v1/health/actors", ActorTreeResource(slot))
    shapes = install_shape_api(app, lambda: slot.shapes, ApiSettings.from_http(settings.http))
    finishers = [getattr(m, "finish_raw", None) for m in reversed(shapes.middleware)]
    if metrics_middleware is not None:
        finishers.append(metrics_middleware.finish_raw)
    app.raw_finishers = [f for f in finishers if f is not None]
    app.lean_lane = LeanLane(
        shapes.raw_subset, shapes.middleware, app.shapesync_metrics, shapes.raw_split_subset
    )
    app.lean_lane.fast_memo = shapes.fast_memo
    app.add_sink(_not_found, r"/")
    return app


def get_app() -> ShapesyncApp:
    """Entry point for gunicorn (``api.app:get_app()``): settings from the file and environment."""
    return create_app(load_settings())


def attach_engine(app: ShapesyncApp, engine: Engine) -> None:
    app.shapesync_slot.shapes = EngineShapes(engine)
    app.shapesync_slot.engine = engine


def detach_engine(app: ShapesyncApp) -> Engine | None:
    slot = app.shapesync_slot
    engine, shapes = slot.engine, slot.shapes
    slot.engine, slot.shapes = None, None
    if shapes is not None:
        shapes.close()  # the subset connection pool
    return engine
