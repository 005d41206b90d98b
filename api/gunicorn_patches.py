"""Replacements of gunicorn internals: three that cost the worker per request, each gunicorn's own result,
and one that makes gunicorn's own error answers speak the API's protocol.

Why a module of its own: they are patches of another library's module globals, so they are installed
explicitly (:func:`install`), by the worker (:class:`api.gunicorn_worker.ShapesyncWorker`) in its own
process after the fork: importing this module changes nothing, and the gunicorn master (which loads the
worker class) never runs them.  ``tests/api/test_gunicorn_patches.py`` holds the first three to gunicorn's
behaviour:

* ``wsgi.base_environ`` (the WSGI keys every request starts with): a copy of one made per config;
* ``message.split_request_uri``: an origin-form request target split at its first ``?``;
* ``Message._peer_is_trusted_proxy``: the forwarded-header trust of a peer address, memoised;
* ``util.write_error``: the answer to a request gunicorn itself refuses before the app sees it (a request
  line over ``limit_request_line``: 414; too many or too large headers: 431; a malformed request: 400) is
  JSON ``{"message": ...}`` with the headers the spec puts on every response (``electric-server``,
  ``x-request-id``, CORS), not gunicorn's HTML page without them: a browser client would otherwise see an
  opaque CORS failure instead of the status.  The connection still closes, as gunicorn's does.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any
from urllib.parse import SplitResult

import orjson
from gunicorn import util
from gunicorn.http import message as _message
from gunicorn.http import wsgi

__all__ = [
    "base_environ",
    "install",
    "peer_is_trusted_proxy",
    "split_request_uri",
    "stock_base_environ",
    "write_error",
]

logger = logging.getLogger(__name__)


class _ErrorsWrapper(wsgi.WSGIErrorsWrapper):  # type: ignore[misc]
    """gunicorn's ``wsgi.errors``, made once per worker: its streams are looked up when something is
    written (rarely), not per request (a logger lookup under the logging module's lock, ~10 us a request
    under gevent)."""

    def __init__(self, cfg: Any) -> None:  # gunicorn's own __init__ runs in write()
        self._cfg = cfg

    def write(self, data: Any) -> None:
        wsgi.WSGIErrorsWrapper.__init__(self, self._cfg)  # the streams as gunicorn would find them now
        super().write(data)


# gunicorn's own, also if this module is loaded again after install()
stock_base_environ: Any = getattr(wsgi.base_environ, "stock", wsgi.base_environ)


@lru_cache(maxsize=4)
def _base_environ_of(cfg: Any) -> dict[str, Any]:
    environ: dict[str, Any] = stock_base_environ(cfg)
    environ["wsgi.errors"] = _ErrorsWrapper(cfg)
    return environ


def base_environ(cfg: Any) -> dict[str, Any]:
    """gunicorn's ``base_environ`` (the WSGI keys every request starts with): a pure function of the
    worker's fixed config but for a new ``wsgi.errors``, so a copy of one made once."""
    return _base_environ_of(cfg).copy()


base_environ.stock = stock_base_environ  # type: ignore[attr-defined]


def split_request_uri(uri: str) -> Any:
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


@lru_cache(maxsize=256)
def _trusted_host(cfg: Any, host: str) -> bool:
    """gunicorn's forwarded-header trust of a peer address: a pure function of the worker's (fixed) config
    and the address, parsed with ``ipaddress`` on every request otherwise (~10-15 us)."""
    return bool(_message._ip_in_allow_list(host, cfg.forwarded_allow_ips, cfg.forwarded_allow_networks()))


def peer_is_trusted_proxy(self: Any) -> bool:
    """``Message._peer_is_trusted_proxy`` (a method: ``self`` is gunicorn's request message)."""
    peer = self.peer_addr
    return not isinstance(peer, tuple) or _trusted_host(self.cfg, peer[0])


def error_response(status: int, reason: str, message: str) -> bytes:
    """The whole HTTP answer :func:`write_error` sends: ``{"message": "<reason>: <gunicorn's detail>"}``
    (``{"error":"Internal server error"}`` for a 5xx) with the headers of every response."""
    # Imported here: they load falcon, and the gunicorn master, which imports this module through the worker
    # class, must not load the app (tests/config/test_gunicorn_conf.py).
    from api.headers import JSON_CONTENT_TYPE, SHAPE_PATH, common_headers, cors_headers  # noqa: PLC0415
    from api.middleware import RequestIds  # noqa: PLC0415
    from api.params import ApiSettings  # noqa: PLC0415

    if status >= 500:
        body = {"error": "Internal server error"}
    else:
        body = {"message": f"{reason}: {message}" if message else reason}
    data = orjson.dumps(body)
    headers = [
        *common_headers(ApiSettings(), RequestIds().next()),
        *cors_headers(None, SHAPE_PATH),  # the request was not understood: the API's path is the likely one
        ("content-type", JSON_CONTENT_TYPE),
        ("content-length", str(len(data))),
        ("connection", "close"),
    ]
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + data


def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """``util.write_error``: called by gunicorn's ``Worker.handle_error`` for requests it refused itself."""
    util.write_nonblock(sock, error_response(status_int, reason, mesg))


def install() -> None:
    """Put the four in gunicorn's modules (the worker's ``init_process``, once per worker process).
    Assignments only: a second call changes nothing."""
    wsgi.base_environ = base_environ
    _message.split_request_uri = split_request_uri  # the name gunicorn's request parser calls
    _message.Message._peer_is_trusted_proxy = peer_is_trusted_proxy
    util.write_error = write_error  # the name Worker.handle_error calls
    logger.debug("gunicorn patched: base_environ, split_request_uri, _peer_is_trusted_proxy, write_error")
