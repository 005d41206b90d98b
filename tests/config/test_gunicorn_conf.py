"""config/gunicorn.conf.py as gunicorn's master loads it: configuration only.

Loaded by gunicorn's own application class (command line, config file, ``GUNICORN_CMD_ARGS``) in a fresh
interpreter, as ``shapesync serve`` runs it: the worker class resolves to ``api.gunicorn_worker``'s, the
settings come from the TOML file, the hooks are the file's, and loading it patches nothing of gunicorn's
and loads neither the app nor the engine (the worker does, after the fork: ``tests/service``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sync.cli import GUNICORN_CONF, ROOT

_PROBE = """
import json, os, sys
sys.argv = ["gunicorn", "-c", sys.argv[1], "api.app:get_app()"]
from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.http import message, wsgi
stock = (wsgi.base_environ, message.split_request_uri, message.Message._peer_is_trusted_proxy)
cfg = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").cfg
worker = cfg.worker_class
now = (wsgi.base_environ, message.split_request_uri, message.Message._peer_is_trusted_proxy)
print(json.dumps({
    "worker_class": worker.__module__ + "." + worker.__qualname__,
    "bind": cfg.bind, "workers": cfg.workers, "worker_connections": cfg.worker_connections,
    "graceful_timeout": cfg.graceful_timeout, "keepalive": cfg.keepalive, "preload_app": cfg.preload_app,
    "hooks": {name: getattr(cfg, name).__module__ for name in ("post_worker_init", "worker_exit", "worker_int")},
    "patched": [a is not b for a, b in zip(stock, now)],
    "loaded": sorted(m for m in ("api.app", "sync.engine", "falcon") if m in sys.modules),
    "gevent_tree": os.environ.get("GEVENT_TRACK_GREENLET_TREE"),
}))
"""


def test_gunicorn_loads_the_configuration_without_patching_or_loading_the_app(tmp_path: Path) -> None:
    toml = tmp_path / "shapesync.toml"
    toml.write_text("[http]\nport = 4321\nworker_connections = 777\ngraceful_timeout_s = 7\n")
    env = {
        k: v for k, v in os.environ.items() if k not in {"GUNICORN_CMD_ARGS", "GEVENT_TRACK_GREENLET_TREE"}
    }
    env["SHAPESYNC_CONFIG"] = str(toml)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(GUNICORN_CONF)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(out.stdout)
    assert got["worker_class"] == "api.gunicorn_worker.ShapesyncWorker"
    assert got["bind"][0].endswith(":4321")
    assert (got["workers"], got["worker_connections"], got["graceful_timeout"]) == (1, 777, 7)
    assert (got["keepalive"], got["preload_app"]) == (75, False)
    assert set(got["hooks"].values()) == {"__config__"}  # the file's own functions
    assert got["patched"] == [False, False, False]
    assert got["loaded"] == []
    assert got["gevent_tree"] == "false"
