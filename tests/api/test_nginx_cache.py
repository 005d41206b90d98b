"""A real nginx (the distribution's package) in front of the real service, configured by config/nginx.conf.

Shows that the proxy caches per our headers and collapses concurrent identical requests (the service sees
one of them, counted by its own /metrics), that a live long-poll through it is woken by a write, and that
an SSE stream passes through unbuffered and uncached.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from api.nginx_conf import NginxOptions, options_for, render_nginx_conf
from sync.postgres.cluster import free_port
from sync.settings import HttpSettings, Settings
from tests.api.metrics_support import scrape, until, value
from tests.fixtures.service import ServiceProcess

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # .ci/run installs nginx-light when it is missing
LONG_POLL_S = 5.0

Response = tuple[int, dict[str, str], bytes]


class Nginx:
    """``nginx -p <dir> -c <rendered conf> -g 'daemon off;'``: pid, logs, temp files and cache in ``dir``."""

    def __init__(self, upstream_port: int, state: Path) -> None:
        self.port = free_port()
        self.state = state
        state.mkdir()
        self.options = NginxOptions(
            listen=f"127.0.0.1:{self.port}",
            upstream=f"127.0.0.1:{upstream_port}",
            state_dir=state,
            cache_dir=state / "cache",
            long_poll_timeout=LONG_POLL_S,
            worker_connections=1024,
            user="root" if os.geteuid() == 0 else None,
        )
        self.conf = state / "nginx.conf"
        self.conf.write_text(render_nginx_conf(self.options))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def errors(self) -> str:
        log = self.state / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def start(self) -> Nginx:
        cmd = [NGINX, "-p", str(self.state), "-e", str(self.state / "error.log"), "-c", str(self.conf)]
        self.proc = subprocess.Popen(
            [*cmd, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while True:  # no event to wait on across processes: poll the port with a deadline
            if self.proc.poll() is not None:
                pytest.fail(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nginx not listening after 20 s:\n{self.errors()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def get(self, path: str, timeout: float = 30.0) -> Response:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read()

    def cache_lifetimes(self) -> list[float]:
        """Seconds each cached entry stays fresh: ``valid_sec`` of nginx's cache file header (after the
        8-byte version), minus now."""
        now = time.time()
        out = []
        for path in (self.state / "cache").rglob("*"):
            if path.is_file():
                _version, valid_sec = struct.unpack_from("<Qq", path.read_bytes())
                out.append(valid_sec - now)
        return out


@dataclass
class Proxied:
    service: ServiceProcess
    nginx: Nginx
    dsn: str

    def shape_responses(self, status: int = 200) -> float:
        """GET /v1/shape responses the service answered with ``status`` (its own counter)."""
        labels = {"method": "GET", "route": "/v1/shape", "status": str(status)}
        return value(scrape(self.service.url), "shapesync_http_requests_total", **labels) or 0.0

    def waiters(self) -> float | None:
        return value(scrape(self.service.url), "shapesync_live_waiters")

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.encode())

    def catch_up(self, table: str) -> tuple[str, str]:
        """Follow the shape through the proxy until up-to-date: (handle, offset)."""
        code, headers, _ = self.nginx.get(f"/v1/shape?table={table}&offset=-1")
        assert code == 200, headers
        handle, offset = headers["electric-handle"], headers["electric-offset"]
        while "electric-up-to-date" not in headers:
            code, headers, _ = self.nginx.get(f"/v1/shape?table={table}&handle={handle}&offset={offset}")
            assert code == 200
            offset = headers["electric-offset"]
        return handle, offset


@pytest.fixture
def proxied(db_dsn: str, tmp_path: Path) -> Iterator[Proxied]:
    extra = {
        "http": {"long_poll_timeout_ms": int(LONG_POLL_S * 1000), "sse_timeout_s": 30, "cache_max_age_s": 1}
    }
    svc = ServiceProcess(db_dsn, tmp_path, extra).start()
    proxy: Nginx | None = None
    try:
        svc.wait_healthy()
        proxy = Nginx(svc.port, tmp_path / "nginx").start()
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, title text)")
            conn.execute("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 200) g")
        yield Proxied(svc, proxy, db_dsn)
    finally:
        if proxy is not None:
            proxy.stop()
        svc.stop()


def fire(nginx: Nginx, path: str, n: int) -> list[Response]:
    """``n`` identical requests, released together."""
    barrier = threading.Barrier(n)

    def one(_: int) -> Response:
        barrier.wait(10)
        return nginx.get(path)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_identical_requests_reach_the_service_once(proxied: Proxied) -> None:
    path = "/v1/shape?table=items&offset=-1"
    before = proxied.shape_responses()
    responses = fire(proxied.nginx, path, 50)
    assert proxied.shape_responses() - before == 1
    assert {code for code, _, _ in responses} == {200}
    bodies = {body for _, _, body in responses}
    assert len(bodies) == 1
    statuses = sorted(headers["X-Proxy-Cache"] for _, headers, _ in responses)
    assert statuses == ["HIT"] * 49 + ["MISS"], statuses
    # ... the very bytes (and headers) the service gives for that request
    code, direct_headers, direct = proxied.service.get(path)
    assert code == 200 and {direct} == bodies
    for name in ("electric-handle", "electric-offset", "etag", "cache-control", "electric-schema"):
        assert {headers[name] for _, headers, _ in responses} == {direct_headers[name]}
    # cached as long as OUR header says for a shared cache: s-maxage=3600 (not max-age=604800)
    [lifetime] = proxied.nginx.cache_lifetimes()
    assert 3500 < lifetime <= 3601, lifetime
    # the query string is part of the key: another shape is another entry, fetched once more
    other = fire(proxied.nginx, "/v1/shape?table=items&offset=-1&where=id%3C10", 5)
    assert proxied.shape_responses() - before == 3  # the direct request + the new shape
    assert len({body for _, _, body in other}) == 1 and {body for _, _, body in other} != bodies
    # errors are not cached (no-store): each one reaches the service
    bad = proxied.shape_responses(400)
    assert proxied.nginx.get("/v1/shape?table=items&offset=x")[0] == 400
    assert proxied.nginx.get("/v1/shape?table=items&offset=x")[1]["X-Proxy-Cache"] == "MISS"
    assert proxied.shape_responses(400) - bad == 2


def test_expired_entries_are_revalidated_with_the_etag(proxied: Proxied) -> None:
    handle, offset = proxied.catch_up("items")
    path = f"/v1/shape?table=items&handle={handle}&offset={offset}"  # non-live: max-age=1 (the setting)
    code, headers, body = proxied.nginx.get(path)
    assert code == 200 and headers["X-Proxy-Cache"] == "MISS"
    assert headers["cache-control"] == "public, max-age=1, stale-while-revalidate=300"
    not_modified = proxied.shape_responses(304)
    seen: set[str] = set()
    deadline = time.monotonic() + 15
    # No event tells when the entry expires: request until nginx has asked the service with If-None-Match.
    while proxied.shape_responses(304) == not_modified:
        assert time.monotonic() < deadline, seen
        code, headers, again = proxied.nginx.get(path)
        assert (code, again) == (200, body)
        seen.add(headers["X-Proxy-Cache"])
        time.sleep(0.1)
    assert seen <= {"HIT", "STALE", "UPDATING", "REVALIDATED"}, seen
    assert proxied.shape_responses(304) - not_modified == 1
    assert proxied.nginx.get(path)[2] == body


def test_live_long_polls_collapse_and_are_woken_by_a_write(proxied: Proxied) -> None:
    handle, offset = proxied.catch_up("items")
    path = f"/v1/shape?table=items&handle={handle}&offset={offset}&live=true&cursor=0"
    before = proxied.shape_responses()
    results: list[Response] = []
    threads = [threading.Thread(target=lambda: results.append(proxied.nginx.get(path))) for _ in range(10)]
    for thread in threads:
        thread.start()
    until(lambda: proxied.waiters() == 1, "one long-poll parked in the service")
    started = time.monotonic()
    proxied.execute("INSERT INTO items VALUES (1001, 'written while polling')")
    for thread in threads:
        thread.join(LONG_POLL_S * 3)
    assert len(results) == 10
    assert time.monotonic() - started < LONG_POLL_S  # woken by the write, not by the timeout
    assert {code for code, _, _ in results} == {200}
    bodies = {body for _, _, body in results}
    assert len(bodies) == 1 and b"written while polling" in bodies.pop()
    assert sorted(h["X-Proxy-Cache"] for _, h, _ in results) == ["HIT"] * 9 + ["MISS"]
    assert proxied.shape_responses() - before == 1
    assert proxied.waiters() == 0


def test_sse_streams_through_unbuffered_and_uncached(proxied: Proxied) -> None:
    handle, offset = proxied.catch_up("items")
    path = f"/v1/shape?table=items&handle={handle}&offset={offset}&live=true&live_sse=true"
    conn = http.client.HTTPConnection("127.0.0.1", proxied.nginx.port, timeout=LONG_POLL_S)
    try:
        conn.request("GET", path)
        until(lambda: proxied.waiters() == 1, "the SSE stream to wait in the service")
        proxied.execute("INSERT INTO items VALUES (2001, 'first event')")
        resp = conn.getresponse()  # the service sends its headers with the first event
        assert resp.status == 200
        assert resp.getheader("content-type") == "text/event-stream"
        assert resp.getheader("X-Proxy-Cache") == "BYPASS"
        # The stream stays open for sse_timeout_s=30: a buffering proxy would hold these events back.
        for title in (b"first event", b"second event"):
            if title == b"second event":
                proxied.execute("INSERT INTO items VALUES (2002, 'second event')")
            received = b""
            while title not in received:
                line = resp.fp.readline()
                assert line, received
                received += line
            assert received.startswith(b"data: ") or b"\ndata: " in received
    finally:
        conn.close()
    # nginx honours (and strips) the service's X-Accel-Buffering: no, so check it at the source; a stream
    # with a backlog answers at once.
    direct = http.client.HTTPConnection("127.0.0.1", proxied.service.port, timeout=LONG_POLL_S)
    try:
        direct.request("GET", path)
        resp = direct.getresponse()
        assert resp.status == 200
        assert resp.getheader("x-accel-buffering") == "no"
    finally:
        direct.close()


def test_rendered_config_follows_the_service_settings(tmp_path: Path) -> None:
    settings = Settings(http=HttpSettings(host="0.0.0.0", port=4000, long_poll_timeout_ms=40_000))
    text = render_nginx_conf(options_for(settings, listen="8080", state_dir=Path("/srv/proxy")))
    assert "{{" not in text.split("\n\n", 1)[1]  # past the header comment
    assert "\nuser " not in text
    assert "server 127.0.0.1:4000;" in text  # a wildcard bind is reached over loopback
    assert "proxy_cache_lock_timeout 50s;" in text  # the lock outlasts a long-poll
    assert "proxy_read_timeout 55s;" in text
    assert "proxy_cache_path /srv/proxy/cache " in text
    bad = tmp_path / "bad.conf"
    bad.write_text("listen {{listen}}; {{nope}}")
    with pytest.raises(KeyError, match="nope"):
        render_nginx_conf(options_for(settings, listen="8080", state_dir=tmp_path), bad)
