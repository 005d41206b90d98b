"""api/gunicorn_worker.py's worker (config/gunicorn.conf.py's worker_class) on a real service and real sockets,
as gunicorn's own.

Its patches of gunicorn internals (``api/gunicorn_patches.py``) are installed once, in the worker's process:
never in the master, which loads the configuration and the worker class.

The keep-alive wait (one timer per connection, started afresh per request): gunicorn's semantics.  An idle
gap shorter than ``keepalive`` keeps the connection; a request that takes longer than ``keepalive`` (a parked
long-poll) is not cut by it; an idle gap of ``keepalive`` closes the connection.  gunicorn's ``--keep-alive``
comes from ``GUNICORN_CMD_ARGS``, which overrides the config file.

``SCRIPT_NAME`` from the worker's environment (gunicorn reads it per request): a request under it reaches
the app with the rest as its path, and one outside it is refused."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.service import ServiceProcess

KEEPALIVE_S = 1


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp, resp.read()


def test_keepalive_keeps_busy_and_briefly_idle_connections_and_closes_idle_ones(
    db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as pg:
        pg.execute("CREATE TABLE t (id int primary key)")
    monkeypatch.setenv("GUNICORN_CMD_ARGS", f"--keep-alive {KEEPALIVE_S}")
    svc = ServiceProcess(db_dsn, tmp_path, {"http": {"long_poll_timeout_ms": 2500}})
    svc.start()
    try:
        svc.wait_healthy()
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
        status, resp, body = _get(conn, "/v1/shape?table=t&offset=-1")
        assert status == 200, body
        handle, offset = resp.getheader("electric-handle"), resp.getheader("electric-offset")
        sock = conn.sock
        assert sock is not None
        for _ in range(3):  # idle for less than keepalive between requests: the same connection serves
            time.sleep(KEEPALIVE_S * 0.4)  # the idle gap itself is what is tested
            status, _, body = _get(conn, "/v1/health")
            assert (status, body) == (200, b'{"status":"active"}')
            assert conn.sock is sock
        # a request parked for longer than keepalive is answered on the same connection
        started = time.monotonic()
        status, _, body = _get(conn, f"/v1/shape?table=t&offset={offset}&handle={handle}&live=true")
        assert time.monotonic() - started > KEEPALIVE_S * 2
        assert status == 200, body
        assert json.loads(body)[-1]["headers"]["control"] == "up-to-date"
        assert conn.sock is sock
        status, _, _ = _get(conn, "/v1/health")
        assert status == 200 and conn.sock is sock
        # idle for keepalive: the worker closes the connection (the read ends at EOF)
        idle_from = time.monotonic()
        sock.settimeout(KEEPALIVE_S * 10)
        assert sock.recv(1) == b""
        idle = time.monotonic() - idle_from
        assert KEEPALIVE_S * 0.8 < idle < KEEPALIVE_S * 5, idle
        conn.close()
    finally:
        svc.stop()


def test_script_name_from_the_environment_is_applied_per_request(
    db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_NAME", "/base")
    svc = ServiceProcess(db_dsn, tmp_path)
    svc.start()
    try:
        deadline = time.monotonic() + 60
        body = b""
        while time.monotonic() < deadline and body != b'{"status":"active"}':
            assert svc.proc is not None and svc.proc.poll() is None, svc.output()[-3000:]
            with contextlib.suppress(OSError):
                _, _, body = svc.get("/base/v1/health", timeout=2)
            time.sleep(0.1)  # nothing to wait on: poll the health endpoint until it answers
        assert body == b'{"status":"active"}'
        for _ in range(2):  # once per request, not once per worker
            assert svc.get("/base/v1/health")[0] == 200
            assert svc.get("/v1/health")[0] >= 400  # gunicorn: the path does not start with SCRIPT_NAME
    finally:
        svc.stop()


def test_the_worker_patches_gunicorn_once_in_its_own_process(db_dsn: str, tmp_path: Path) -> None:
    svc = ServiceProcess(db_dsn, tmp_path, log_level="debug")
    svc.start()
    try:
        svc.wait_healthy()  # post_worker_init ran in the worker: the engine is active
        worker = svc.worker_pid()
        assert worker is not None
    finally:
        svc.stop()
    lines = svc.output().splitlines()
    patched = [line for line in lines if "api.gunicorn_patches: gunicorn patched" in line]
    started = [line for line in lines if "starting engine in worker" in line]
    assert len(patched) == 1 and f"] [{worker}] [DEBUG]" in patched[0], patched
    assert len(started) == 1 and f"] [{worker}] [INFO]" in started[0], started
    assert lines.index(patched[0]) < lines.index(started[0])
