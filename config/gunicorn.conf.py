"""gunicorn configuration for shapesync: exactly one gevent worker that owns the whole engine.

Why one worker: the engine (actor tree, replication stream, shape logs) lives in the worker process; a
second worker would open a second replication stream and split the live waiters (see
shared/reference/python-stack.md §5).  Scale reads with an HTTP cache in front, writes with more instances.

Hooks: the engine starts in ``post_worker_init`` (after gevent has patched the worker and the app is loaded;
never at import time, never with ``--preload``) and stops in ``worker_exit``, which also wakes every waiting
request so that a graceful shutdown does not wait for long-polls to time out.  With ``[metrics] port`` set,
the metrics listener starts and stops with the engine.

This file is configuration: settings, and hooks that call into the worker's module,
``api/gunicorn_worker.py`` (the worker class, its response writer and its patches of gunicorn internals).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

# gevent keeps a parent/spawn tree per greenlet unless told not to; we never read it, and every actor is a
# greenlet (~2 KB each, per shape).  Must be set before gevent is imported (by the worker's module, below).
os.environ.setdefault("GEVENT_TRACK_GREENLET_TREE", "false")

from api.gunicorn_worker import ShapesyncWorker, start_engine, stop_engine
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

bind = [f"{_settings.http.host}:{_settings.http.port}"]
worker_class = ShapesyncWorker
workers = _settings.http.workers  # validated to be 1
worker_connections = _settings.http.worker_connections
backlog = _settings.http.backlog
graceful_timeout = _settings.http.graceful_timeout_s
timeout = 60  # the gevent worker heartbeats from the hub; a stalled hub for a minute is a bug
keepalive = 75
# Long WHERE clauses (an IN list of ids) travel in the URL, as Electric's clients send them.  gunicorn's
# default request line is 4094 bytes; 8190 is the largest bounded value it allows (Electric's server takes
# 10,000; nginx's default buffers hold 8 KB).  Longer ones get a 414 in the API's JSON (api.gunicorn_patches).
limit_request_line = 8190
preload_app = False
control_socket_disable = True  # gunicorn >= 27 otherwise creates ~/.gunicorn/gunicorn.ctl
loglevel = _settings.logging.level.lower()
accesslog = None
errorlog = "-"
proc_name = "shapesync"


def post_worker_init(worker: Any) -> None:
    """Start the engine inside the (patched) worker and hand it to the Falcon app."""
    start_engine(worker, _settings)


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the engine in order and wake every waiting request."""
    del server
    stop_engine(worker)


def worker_int(worker: Any) -> None:
    stop_engine(worker)
