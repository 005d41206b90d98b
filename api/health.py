"""``GET /v1/health`` (spec §1) and the actor tree at ``GET /v1/health/actors``.

``/v1/health`` answers 200 ``{"status":"active"}`` when the engine streams, 202 ``{"status":"starting"}``
while it starts (or is not attached yet) and 202 ``{"status":"waiting"}`` while another instance holds the
replication lock.  ``/v1/health/actors`` returns the supervision tree as JSON: every node's name, kind,
alive flag, restart count and last failure (reason and time), plus the engine status and its last error.
A supervisor with more than ``MAX_CHILDREN`` children (the shapes' one, with thousands of shapes) is
summarised: counts by status, and only the children not running, restarted or failed (``?full=true``:
every node; with 10,000 shapes that is ~230 ms of the event loop and 10 MB).  Neither needs
authentication.
"""

from __future__ import annotations

from typing import Any, Protocol

import falcon
import orjson

NO_CACHE = "no-cache, no-store, must-revalidate"
MAX_CHILDREN = 100  # children of one supervisor listed whole by /v1/health/actors unless ?full=true


class HealthSource(Protocol):
    """What the health endpoints need from the engine."""

    def status(self) -> str: ...

    def health_details(self, max_children: int | None = None) -> dict[str, Any]: ...


class EngineSlot(Protocol):
    @property
    def engine(self) -> HealthSource | None: ...


class HealthResource:
    def __init__(self, slot: EngineSlot) -> None:
        self._slot = slot

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        del req
        engine = self._slot.engine
        status = engine.status() if engine is not None else "starting"
        resp.status = falcon.HTTP_200 if status == "active" else falcon.HTTP_202
        resp.content_type = "application/json"
        resp.set_header("cache-control", NO_CACHE)
        resp.data = orjson.dumps({"status": status})

    on_head = on_get  # the CORS headers advertise GET, HEAD; the server drops the body of a HEAD


class ActorTreeResource:
    def __init__(self, slot: EngineSlot) -> None:
        self._slot = slot

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        full = req.get_param_as_bool("full", default=False)
        engine = self._slot.engine
        body: dict[str, Any]
        if engine is None:
            body = {"status": "starting", "tree": None}
        else:
            body = {"status": engine.status(), **engine.health_details(None if full else MAX_CHILDREN)}
        resp.content_type = "application/json"
        resp.set_header("cache-control", NO_CACHE)
        resp.data = orjson.dumps(body, option=orjson.OPT_INDENT_2)
