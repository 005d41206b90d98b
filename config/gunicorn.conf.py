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
import socket
import sys
import time
from datetime import datetime
from email.utils import formatdate
from functools import lru_cache
from typing import Any
from urllib.parse import SplitResult

# gevent keeps a parent/spawn tree per greenlet unless told not to; we never read it, and every actor is a
# greenlet (~2 KB each, per shape).  Must be set before gevent is imported.
os.environ.setdefault("GEVENT_TRACK_GREENLET_TREE", "false")

# gevent: gunicorn's gevent worker module imports it anyway (in the master too); none of these is patched
from gevent import GreenletExit, Timeout, get_hub, getcurrent
from gunicorn import util
from gunicorn.http import message as _message
from gunicorn.http import wsgi
from gunicorn.workers.ggevent import GeventWorker

from api.raw_response import SERVER_FILES_KEY, SERVER_RAW_KEY, RawResponse
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


_date_cache: list[Any] = [0, ""]
COALESCE_MAX = 64 * 1024  # bytes: a first body write up to this size goes out with the header block


def http_date() -> str:
    """gunicorn's Date value (``util.http_date``), formatted once per second instead of once per response."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[:] = [now, formatdate(now, localtime=False, usegmt=True)]
    return str(_date_cache[1])


class _Response(wsgi.Response):  # type: ignore[misc]
    """gunicorn's response with four savings (issue 7: thousands of responses per change, and megabytes of
    snapshot per initial sync): the Date is formatted once per second, a first body write of up to
    ``COALESCE_MAX`` bytes leaves in the same send as the header block (one send per small response instead
    of two), a pre-rendered :class:`~api.raw_response.RawResponse` is written whole (``send_raw``), and a
    body item that is a :class:`~sync.storage.reader.FileRange` goes out with ``sendfile``.  Everything else
    (header validation of ordinary responses, framing, HEAD/204/304 rules) is gunicorn's own."""

    def default_headers(self) -> list[str]:
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        major, minor = self.req.version
        headers = [
            f"HTTP/{major}.{minor} {self.status}\r\n",
            f"Server: {self.version}\r\n",
            f"Date: {http_date()}\r\n",
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def _head(self) -> bytes:
        lines = self.default_headers()
        lines.extend([f"{k}: {v}\r\n" for k, v in self.headers])
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        util.write(self.sock, self._head())
        self.headers_sent = True

    def write(self, arg: Any) -> None:
        if type(arg) is not bytes and self._sent_from_file(arg):
            return
        if (
            not self.headers_sent
            and type(arg) is bytes
            and 0 < len(arg) <= COALESCE_MAX
            and not self.chunked
            and not self._omits_body
            and (self.response_length is None or len(arg) <= self.response_length)
        ):
            head = self._head()
            self.headers_sent = True
            self.sent = len(arg)
            util.write(self.sock, head + arg)
            return
        super().write(arg)

    def _sent_from_file(self, arg: Any) -> bool:
        """Send a :class:`~sync.storage.reader.FileRange` body item with ``sendfile`` (False: not one).

        The kernel moves the bytes from the page cache to the socket: no read into this process, no copy
        out of it.  The socket is non-blocking under gevent; EAGAIN waits cooperatively until writable."""
        # imported by the app in the worker, after gevent's patch (never load storage into the master)
        from sync import runtime  # noqa: PLC0415
        from sync.storage.reader import FileRange  # noqa: PLC0415

        if type(arg) is not FileRange:
            return False
        self.send_headers()
        if self._omits_body:
            return True
        size = arg.size
        if self.response_length is not None:
            size = min(size, self.response_length - self.sent)
        if size <= 0:
            return True
        if self.chunked:
            util.write(self.sock, f"{size:X}\r\n".encode("latin-1"))
        fd = os.open(arg.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            out = self.sock.fileno()
            offset, left = arg.offset, size
            while left:
                try:
                    sent = os.sendfile(out, fd, offset, left)
                except BlockingIOError:
                    if not runtime.wait_writable(out, self.sock.gettimeout()):
                        raise TimeoutError("timed out sending a file range") from None
                    continue
                if not sent:
                    raise OSError(f"{arg.path} ended before {arg.offset + size}")
                offset += sent
                left -= sent
        finally:
            os.close(fd)
        self.sent += size
        if self.chunked:
            util.write(self.sock, b"\r\n")
        return True

    def send_raw(self, raw: RawResponse) -> None:
        """Write a pre-rendered response: our status line, Server, Date and Connection, then its block."""
        self.status = raw.status
        self.status_code = int(raw.status[:3])
        self.response_length = self.sent = len(raw.body)
        connection = "close" if self.should_close() else "keep-alive"
        major, minor = self.req.version
        head = (
            f"HTTP/{major}.{minor} {raw.status}\r\nServer: {self.version}\r\nDate: {http_date()}\r\n"
            f"Connection: {connection}\r\n"
        ).encode("latin-1")
        self.headers_sent = True
        data = b"".join((head, raw.head, b"\r\n", raw.body))
        # one send is the whole answer unless the socket's buffer is full: gevent's sendall would first ask
        # the socket its buffer size (a getsockopt system call) and slice a memoryview, per response
        sent = self.sock.send(data)
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])


class _ErrorsWrapper(wsgi.WSGIErrorsWrapper):  # type: ignore[misc]
    """gunicorn's ``wsgi.errors``, made once per worker: its streams are looked up when something is
    written (rarely), not per request (a logger lookup under the logging module's lock, ~10 us a request
    under gevent)."""

    def __init__(self, cfg: Any) -> None:  # gunicorn's own __init__ runs in write()
        self._cfg = cfg

    def write(self, data: Any) -> None:
        wsgi.WSGIErrorsWrapper.__init__(self, self._cfg)  # the streams as gunicorn would find them now
        super().write(data)


# gunicorn's own, also when this file is executed again (a reload re-reads it in the master)
_stock_base_environ = getattr(wsgi.base_environ, "stock", wsgi.base_environ)


@lru_cache(maxsize=4)
def _base_environ_of(cfg: Any) -> dict[str, Any]:
    environ: dict[str, Any] = _stock_base_environ(cfg)
    environ["wsgi.errors"] = _ErrorsWrapper(cfg)
    return environ


def _base_environ(cfg: Any) -> dict[str, Any]:
    """gunicorn's ``base_environ`` (the WSGI keys every request starts with): a pure function of the
    worker's fixed config but for a new ``wsgi.errors``, so a copy of one made once."""
    return _base_environ_of(cfg).copy()


_base_environ.stock = _stock_base_environ  # type: ignore[attr-defined]
wsgi.base_environ = _base_environ


def _split_request_uri(uri: str) -> Any:
    """gunicorn's ``split_request_uri``: ``urlsplit`` of a request target; an origin-form one (``/path``
    or ``/path?query``, not ``//``, without ``#`` or the tab and newlines ``urlsplit`` deletes) splits
    at its first ``?``, which is exactly what ``urlsplit`` returns for it.  ``urlsplit`` is an
    ``lru_cache`` whose every request misses (the query differs), ~15 us a subset GET under load."""
    if (
        uri[:1] == "/"
        and uri[1:2] != "/"
        and "#" not in uri
        and "\t" not in uri
        and "\r" not in uri
        and "\n" not in uri
    ):
        path, _, query = uri.partition("?")
        return SplitResult("", "", path, query, "")
    return util.split_request_uri(uri)


_message.split_request_uri = _split_request_uri  # the name gunicorn's request parser calls


@lru_cache(maxsize=256)
def _trusted_host(cfg: Any, host: str) -> bool:
    """gunicorn's forwarded-header trust of a peer address: a pure function of the worker's (fixed) config
    and the address, parsed with ``ipaddress`` on every request otherwise (~10-15 us)."""
    return _message._ip_in_allow_list(host, cfg.forwarded_allow_ips, cfg.forwarded_allow_networks())


def _peer_is_trusted_proxy(self: Any) -> bool:
    peer = self.peer_addr
    return not isinstance(peer, tuple) or _trusted_host(self.cfg, peer[0])


_message.Message._peer_is_trusted_proxy = _peer_is_trusted_proxy


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

    def init_process(self) -> None:
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
        """gunicorn 27's ``AsyncWorker.handle_request``, with our :class:`_Response` and the raw protocol
        (``api/raw_response.py``): ``SERVER_RAW_KEY`` in the environ, a RawResponse written whole."""
        logged = self.log.access_log_enabled  # no clock reads per request when nothing is logged
        request_start = datetime.now() if logged else None
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            resp, environ = wsgi.create(req, sock, addr, listener_name, self.cfg)
            resp.__class__ = _Response  # same state, our methods (wsgi.create builds the stock class)
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
    from sync import heap  # noqa: PLC0415
    from sync.engine import Engine  # noqa: PLC0415

    logging.getLogger("shapesync").info("starting engine in worker %s", worker.pid)
    heap.tune()
    attach_engine(worker.wsgi, Engine.start(_settings))
    heap.freeze_startup_heap()
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
