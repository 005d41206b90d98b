"""gunicorn configuration for shapesync: exactly one gevent worker that owns the whole engine.

Why one worker: the engine (actor tree, replication stream, shape logs) lives in the worker process; a
second worker would open a second replication stream and split the live waiters (see
shared/reference/python-stack.md §5).  Scale reads with an HTTP cache in front, writes with more instances.

Hooks: the engine starts in ``post_worker_init`` (after gevent has patched the worker and the app is loaded;
never at import time, never with ``--preload``) and stops in ``worker_exit``, which also wakes every waiting
request so that a graceful shutdown does not wait for long-polls to time out.  With ``[metrics] port`` set,
the metrics listener starts and stops with the engine.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

# gevent keeps a parent/spawn tree per greenlet unless told not to; we never read it, and every actor is a
# greenlet (~2 KB each, per shape).  Must be set before gevent is imported.
os.environ.setdefault("GEVENT_TRACK_GREENLET_TREE", "false")

from gunicorn.workers.ggevent import GeventWorker

from sync.settings import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as _exc:  # gunicorn would print a traceback; say it in one line instead
    print(f"shapesync: configuration error: {_exc}", file=sys.stderr)
    raise SystemExit(2) from None

logging.basicConfig(
    level=_settings.logging.level.upper(),
    format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    stream=sys.stderr,
)


class ShapesyncWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, with a shutdown that does not wait out idle clients.

    On SIGTERM the stock worker stops accepting and then waits up to ``graceful_timeout`` for every open
    connection, idle keep-alive ones and parked long-polls included, while the master SIGKILLs it at that
    same deadline: ``worker_exit`` would never run and the engine would never stop cleanly.  Here SIGTERM
    also (1) stops the engine at once, which completes every waiting request (they answer and close), and
    (2) after a short grace closes the connections that are still idle between requests.  Requests in the
    middle of a response keep the rest of ``graceful_timeout``.
    """

    IDLE_GRACE_S = 1.0

    def init_process(self) -> None:
        self._connections: dict[Any, bool] = {}  # handler greenlet -> busy with a request
        super().init_process()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        import gevent  # noqa: PLC0415 - patched by now

        me = gevent.getcurrent()
        self._connections[me] = False
        try:
            super().handle(listener, client, addr)
        finally:
            self._connections.pop(me, None)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        import gevent  # noqa: PLC0415

        me = gevent.getcurrent()
        self._connections[me] = True
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            if me in self._connections:
                self._connections[me] = False

    def handle_exit(self, sig: Any, frame: Any) -> None:
        import gevent  # noqa: PLC0415

        super().handle_exit(sig, frame)
        gevent.spawn(self._shut_down)

    def _shut_down(self) -> None:
        import gevent  # noqa: PLC0415

        _stop_engine(self)
        gevent.sleep(self.IDLE_GRACE_S)
        idle = [g for g, busy in list(self._connections.items()) if not busy]
        gevent.killall(idle, block=False)


def _stop_engine(worker: Any) -> None:
    from api.app import detach_engine  # noqa: PLC0415

    app = getattr(worker, "wsgi", None)  # absent when the worker failed to load the app
    engine = detach_engine(app) if app is not None else None
    if engine is not None:
        engine.stop()


bind = [f"{_settings.http.host}:{_settings.http.port}"]
worker_class = ShapesyncWorker
workers = _settings.http.workers  # validated to be 1
worker_connections = _settings.http.worker_connections
backlog = _settings.http.backlog
graceful_timeout = _settings.http.graceful_timeout_s
timeout = 60  # the gevent worker heartbeats from the hub; a stalled hub for a minute is a bug
keepalive = 75
preload_app = False
control_socket_disable = True  # gunicorn >= 27 otherwise creates ~/.gunicorn/gunicorn.ctl
loglevel = _settings.logging.level.lower()
accesslog = None
errorlog = "-"
proc_name = "shapesync"


def post_worker_init(worker: Any) -> None:
    """Start the engine inside the (patched) worker and hand it to the Falcon app."""
    from api.app import attach_engine  # noqa: PLC0415 - import after gevent patched the worker
    from sync.engine import Engine  # noqa: PLC0415

    logging.getLogger("shapesync").info("starting engine in worker %s", worker.pid)
    attach_engine(worker.wsgi, Engine.start(_settings))
    metrics = worker.wsgi.shapesync_metrics
    if metrics is not None and _settings.metrics.port:
        from api.metrics import start_metrics_server  # noqa: PLC0415

        worker.shapesync_metrics_server = start_metrics_server(
            metrics, _settings.http.host, _settings.metrics.port
        )


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the engine in order and wake every waiting request."""
    del server
    from api.app import detach_engine  # noqa: PLC0415

    listener = getattr(worker, "shapesync_metrics_server", None)
    if listener is not None:
        worker.shapesync_metrics_server = None
        listener.stop()
    app = getattr(worker, "wsgi", None)  # absent when the worker failed to load the app
    engine = detach_engine(app) if app is not None else None
    if engine is not None:
        engine.stop()


def worker_int(worker: Any) -> None:
    worker_exit(None, worker)
