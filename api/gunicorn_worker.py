"""shapesync's gunicorn worker: gunicorn's gevent worker that owns the engine, and the hooks' bodies.

Why a module of its own (``config/gunicorn.conf.py`` is configuration: settings, and hooks that call in
here): the worker is code, typed and tested like the rest of ``api/``.  It is the HTTP server end of the
API layer (it writes the pre-rendered answers of :mod:`api.raw_response`), and, as the gevent worker, the
one module outside ``sync/runtime.py`` that imports gevent: gunicorn loads it in its own processes only,
nothing in the app imports it.  Pieces: :class:`ShapesyncWorker` (connections, keep-alive, requests,
shutdown), its response writer (:mod:`api.gunicorn_response`), the patches of gunicorn internals it
installs in its process after the fork (:mod:`api.gunicorn_patches`), and :func:`start_engine` /
:func:`stop_engine`, which the configuration's ``post_worker_init`` and ``worker_exit`` hooks call.
"""

from __future__ import annotations

import logging
import socket
import sys
from datetime import datetime
from typing import Any

from gevent import GreenletExit, Timeout, get_hub, getcurrent
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker

from api import gunicorn_patches
from api.gunicorn_response import WorkerResponse
from api.raw_response import SERVER_FILES_KEY, SERVER_RAW_KEY, RawResponse
from sync.settings import Settings

__all__ = ["ShapesyncWorker", "start_engine", "stop_engine"]


class _KeepaliveTimeout(Timeout):  # type: ignore[misc]
    """gunicorn's wait for a connection's next request (``GeventWorker.timeout_ctx``: a silent
    ``gevent.Timeout(keepalive, False)`` around reading it; on expiry the read ends without a request and
    the connection closes), made once per connection instead of once per request (a libev timer made,
    started, stopped and closed each time: ~2.3 us in a micro-benchmark, more under load).

    Each ``with`` starts the full ``keepalive`` afresh and leaving it stops the timer (gevent's would close
    it).  Not with ``start``: libev's stop keeps a one-shot timer's remaining time, so a restarted one would
    fire early; a repeating timer's ``again`` starts it at its full repeat value (its repeats never happen:
    on expiry the ``with`` ends and stops it).  The worker closes it with the connection."""

    def __init__(self, seconds: float) -> None:
        super().__init__(None, False)  # no timer of gevent's own
        self.seconds = seconds
        self.timer = get_hub().loop.timer(seconds, seconds, priority=-1)  # gevent's priority

    def start(self) -> None:
        self.timer.again(self._on_expiration, getcurrent(), self, update=True)

    def __exit__(self, typ: Any, value: Any, tb: Any) -> bool:
        self.timer.stop()
        return value is self  # gevent's: a silent (exception=False) timeout is suppressed


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
    alive: bool  # gunicorn's (annotation only, for the type checker)

    def init_process(self) -> None:
        gunicorn_patches.install()  # in this worker process only (after the fork; never in the master)
        self._connections: dict[Any, bool] = {}  # handler greenlet -> busy with a request
        self._keepalive_timeouts: dict[Any, _KeepaliveTimeout] = {}  # handler greenlet -> its timeout
        # gunicorn reads ~16 settings per request through Config.__getattr__ (a dict lookup and a .get()
        # each); the worker's config never changes after the fork (a reload starts new workers): plain
        # attributes (properties, computed each time, are left alone)
        cfg = self.cfg
        for name in cfg.settings:
            if not isinstance(getattr(type(cfg), name, None), property):
                cfg.__dict__[name] = cfg.settings[name].get()
        super().init_process()

    def timeout_ctx(self) -> Timeout:
        """The connection's keep-alive timeout (gunicorn's keep-alive loop calls this per request)."""
        me = getcurrent()
        timeout = self._keepalive_timeouts.get(me)
        if timeout is None:
            timeout = self._keepalive_timeouts[me] = _KeepaliveTimeout(self.cfg.keepalive)
        return timeout

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        me = getcurrent()
        self._connections[me] = False
        try:
            super().handle(listener, client, addr)
        finally:
            self._connections.pop(me, None)
            timeout = self._keepalive_timeouts.pop(me, None)
            if timeout is not None:
                timeout.close()

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        me = getcurrent()
        self._connections[me] = True
        try:
            return self._serve(listener_name, req, sock, addr)
        except (GreenletExit, SystemExit):  # as GeventWorker.handle_request
            return None
        finally:
            if me in self._connections:
                self._connections[me] = False

    def _serve(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        """gunicorn 27's ``AsyncWorker.handle_request``, with our :class:`WorkerResponse` and the raw
        protocol (``api/raw_response.py``): ``SERVER_RAW_KEY`` in the environ, a RawResponse written whole."""
        logged = self.log.access_log_enabled  # no clock reads per request when nothing is logged
        request_start = datetime.now() if logged else None
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            resp, environ = wsgi.create(req, sock, addr, listener_name, self.cfg)
            resp.__class__ = WorkerResponse  # same state, our methods (wsgi.create builds the stock class)
            environ["wsgi.multithread"] = True
            environ[SERVER_RAW_KEY] = True
            environ[SERVER_FILES_KEY] = True
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            if self.is_already_handled(respiter):
                return False
            try:
                if type(respiter) is RawResponse:
                    resp.send_raw(respiter)
                elif isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                if request_start is not None:
                    self.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                raise StopIteration
        except StopIteration:
            raise
        except OSError:
            util.reraise(*sys.exc_info())
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                # A started response cannot take a 500 on the same socket: abort the connection.
                self.log.exception("Error handling request")
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
                raise StopIteration from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        return True

    def handle_exit(self, sig: Any, frame: Any) -> None:
        import gevent  # noqa: PLC0415

        super().handle_exit(sig, frame)
        gevent.spawn(self._shut_down)

    def _shut_down(self) -> None:
        import gevent  # noqa: PLC0415

        _detach_and_stop(self)
        gevent.sleep(self.IDLE_GRACE_S)
        idle = [g for g, busy in list(self._connections.items()) if not busy]
        gevent.killall(idle, block=False)


def start_engine(worker: Any, settings: Settings) -> None:
    """``post_worker_init``: start the engine inside the (patched) worker and hand it to the Falcon app;
    with ``[metrics] port`` set, start the metrics listener too."""
    from api.app import attach_engine  # noqa: PLC0415 - import after gevent patched the worker
    from sync import heap  # noqa: PLC0415
    from sync.engine import Engine  # noqa: PLC0415

    logging.getLogger("shapesync").info("starting engine in worker %s", worker.pid)
    heap.tune()
    attach_engine(worker.wsgi, Engine.start(settings))
    heap.freeze_startup_heap()
    metrics = worker.wsgi.shapesync_metrics
    if metrics is not None and settings.metrics.port:
        from api.metrics import start_metrics_server  # noqa: PLC0415

        worker.shapesync_metrics_server = start_metrics_server(
            metrics, settings.http.host, settings.metrics.port
        )


def stop_engine(worker: Any) -> None:
    """``worker_exit`` / ``worker_int``: stop the metrics listener, then the engine in order (which wakes
    every waiting request)."""
    listener = getattr(worker, "shapesync_metrics_server", None)
    if listener is not None:
        worker.shapesync_metrics_server = None
        listener.stop()
    _detach_and_stop(worker)


def _detach_and_stop(worker: Any) -> None:
    from api.app import detach_engine  # noqa: PLC0415

    app = getattr(worker, "wsgi", None)  # absent when the worker failed to load the app
    engine = detach_engine(app) if app is not None else None
    if engine is not None:
        engine.stop()
