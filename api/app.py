"""The Falcon application factory.

``create_app(settings)`` builds the WSGI app; nothing is built at import time.  gunicorn loads
``api.app:get_app()`` in the worker, then ``post_worker_init`` starts the engine and attaches it with
:func:`attach_engine`; until then the health endpoint says ``starting`` and shape requests get 503.
Tests call ``create_app(settings)`` and attach an engine they started themselves.
"""

from __future__ import annotations

from typing import Any

import falcon

from api.health import ActorTreeResource, HealthResource, HealthSource
from sync.settings import Settings, load_settings

__all__ = ["EngineSlot", "attach_engine", "create_app", "detach_engine", "get_app"]


class EngineSlot:
    """The engine the app serves, attached after the worker started it."""

    def __init__(self) -> None:
        self.engine: Any | None = None


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


def create_app(settings: Settings) -> falcon.App[falcon.Request, falcon.Response]:
    slot = EngineSlot()
    app: falcon.App[falcon.Request, falcon.Response] = falcon.App(cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.keep_blank_qs_values = True
    app.req_options.auto_parse_qs_csv = False
    app.add_route("/", RootResource())
    app.add_route("/v1/health", HealthResource(slot))
    app.add_route("/v1/health/actors", ActorTreeResource(slot))
    app.add_sink(_not_found, r"/")
    app.shapesync_slot = slot  # type: ignore[attr-defined]
    app.shapesync_settings = settings  # type: ignore[attr-defined]
    return app


def get_app() -> falcon.App[falcon.Request, falcon.Response]:
    """Entry point for gunicorn (``api.app:get_app()``): settings from the file and environment."""
    return create_app(load_settings())


def attach_engine(app: falcon.App[falcon.Request, falcon.Response], engine: HealthSource) -> None:
    app.shapesync_slot.engine = engine  # type: ignore[attr-defined]


def detach_engine(app: falcon.App[falcon.Request, falcon.Response]) -> Any | None:
    slot: EngineSlot = app.shapesync_slot  # type: ignore[attr-defined]
    engine, slot.engine = slot.engine, None
    return engine
