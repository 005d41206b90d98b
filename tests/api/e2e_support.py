"""Helpers of the end-to-end protocol tests: a service per test module, a raw HTTP client and a table driver.

Why a raw client: the protocol tests must see exactly what goes over the wire (status, every header, body
bytes) for any method and any path spelling (``/v1//shape``, ``/v1/%73hape``), which ``urllib`` would
reshape or refuse; ``http.client`` sends the request line as given.  Waiting for a change to reach a shape
uses the service's own event (a live request returns when the shape has new data), never a sleep.
"""

from __future__ import annotations

import http.client
import itertools
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

from tests.background import Background
from tests.fixtures.pg import ClusterInfo, drop_database
from tests.fixtures.service import ServiceProcess

MUST_REFETCH = [{"headers": {"control": "must-refetch"}}]

# The service of the read/live modules: Electric's integration-test settings where they matter (10,000-byte
# chunks, DELETE enabled) plus short live timings (long-poll 2 s, SSE 2 s with 0.5 s keep-alives).
SERVICE: dict[str, dict[str, Any]] = {
    "http": {
        "allow_shape_deletion": True,
        "long_poll_timeout_ms": 2000,
        "sse_timeout_s": 2,
        "sse_keepalive_s": 0.5,
    },
    "storage": {"chunk_bytes_threshold": 10000},
    "shapes": {"schema_check_interval_s": 0.3},  # a dropped table is noticed quickly
}
LONG_POLL_S = 2.0
WAIT_S = 30.0  # how long a request run in the Background may take
BEFORE_ALL_CC = "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
CATCH_UP_CC = "public, max-age=60, stale-while-revalidate=300"
LIVE_CC = "public, max-age=5, stale-while-revalidate=5"
SCHEMA = {"id": {"type": "int4", "pk_index": 0, "not_null": True}, "title": {"type": "text"}}
BIG = "x" * 400  # ~500 JSON bytes per row: a 10,000-byte chunk holds ~20 of them


@dataclass(frozen=True)
class Resp:
    """One HTTP answer: status, headers (names lower-cased) and the raw body."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return orjson.loads(self.body)

    def items(self) -> list[dict[str, Any]]:
        data = self.json()
        assert isinstance(data, list), data
        return data

    def rows(self) -> list[dict[str, Any]]:
        return [m["value"] for m in self.items() if "key" in m]

    def controls(self) -> list[str]:
        return [m["headers"]["control"] for m in self.items() if "control" in m["headers"]]

    @property
    def handle(self) -> str:
        return self.headers["electric-handle"]

    @property
    def offset(self) -> str:
        return self.headers["electric-offset"]


class Http:
    """A tiny client of one service: one connection per request, like independent HTTP clients."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        *,
        body: bytes | None = None,
        timeout: float = 30.0,
    ) -> Resp:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        started = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            r = conn.getresponse()
            data = r.read()
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data, time.monotonic() - started)
        finally:
            conn.close()

    def open(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[Any, Any]:
        """Send a GET and return (connection, response) once the status line and headers arrived; the
        caller reads the body (e.g. an event stream) and closes the connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path, headers=dict(headers or {}))
        return conn, conn.getresponse()

    def shape(self, query: str, headers: Mapping[str, str] | None = None, method: str = "GET") -> Resp:
        return self.request(method, f"/v1/shape?{query}", headers)

    def background(self, query: str, headers: Mapping[str, str] | None = None) -> Background[Resp]:
        return Background(lambda: self.shape(query, headers), timeout=WAIT_S)


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class Tables:
    """Creates uniquely named tables in the service's database and writes to them."""

    _names = itertools.count(1)

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def sql(self, *statements: str | sql.Composed, params: tuple[Any, ...] | None = None) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt, params)

    def create(
        self, columns: str = "id int PRIMARY KEY, title text", rows: int = 0, prefix: str = "t"
    ) -> str:
        """A new table ``<prefix><n>``; ``rows`` rows ``(i, 't<i>')`` when it has the default columns."""
        name = f"{prefix}{next(self._names)}"
        self.sql(f"CREATE TABLE {name} ({columns})")
        if rows:
            self.sql(f"INSERT INTO {name} SELECT i, 't' || i FROM generate_series(1, {rows}) i")
        return name

    def insert(self, table: str, *ids: int) -> None:
        """One transaction per id."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for i in ids:
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, f"t{i}"))


@dataclass
class Shape:
    """A client of one shape: its query, handle and the offset it has read up to."""

    http: Http
    query: str
    handle: str = ""
    offset: str = "-1"

    def url(self, offset: str | None = None, extra: str = "") -> str:
        off = self.offset if offset is None else offset
        handle = f"&handle={q(self.handle)}" if self.handle and off not in ("-1", "now") else ""
        return f"{self.query}&offset={off}{handle}{extra}"

    def get(
        self, offset: str | None = None, extra: str = "", headers: Mapping[str, str] | None = None
    ) -> Resp:
        return self.http.shape(self.url(offset, extra), headers)

    def sync(self) -> list[Resp]:
        """Read from ``-1`` until up-to-date (non-live); returns the responses."""
        responses = []
        while True:
            r = self.get()
            assert r.status == 200, (r.status, r.body)
            self.handle, self.offset = r.handle, r.offset
            responses.append(r)
            if "up-to-date" in r.controls():
                return responses

    def follow(self, count: int, deadline_s: float = 20.0) -> list[dict[str, Any]]:
        """Live requests from the current offset until ``count`` changes arrived; returns them."""
        got: list[dict[str, Any]] = []
        end = time.monotonic() + deadline_s
        while len(got) < count:
            assert time.monotonic() < end, f"only {len(got)} of {count} changes after {deadline_s}s"
            r = self.get(extra="&live=true")
            assert r.status == 200, (r.status, r.body)
            got += [m for m in r.items() if "key" in m]
            self.offset = r.offset
        assert len(got) == count, got
        return got


@contextmanager
def running_service(
    pg_cluster: ClusterInfo, workdir: Path, dbname: str, extra: Mapping[str, Mapping[str, Any]]
) -> Iterator[tuple[ServiceProcess, str]]:
    """A fresh database ``dbname`` and the real service (gunicorn + gevent) on it, for one test module."""
    admin = pg_cluster.dsn()
    drop_database(admin, dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(dbname))
        )
    dsn = pg_cluster.dsn(dbname)
    svc = ServiceProcess(dsn, workdir, extra).start()
    try:
        svc.wait_healthy()
        yield svc, dsn
    finally:
        svc.stop()
        drop_database(admin, dbname)


def caught_up(http: Http, db: Tables, rows: int = 2) -> tuple[str, Shape]:
    """A new table with ``rows`` rows and a client that has read its shape up to date."""
    table = db.create(rows=rows)
    shape = Shape(http, f"table={table}")
    shape.sync()
    return table, shape


def assert_409(r: Resp, new_handle: str) -> None:
    """Spec §7: must-refetch with the new handle, ``"H::"`` etag, no offset/cursor/has-data/schema."""
    assert r.status == 409
    assert r.json() == MUST_REFETCH
    assert r.headers["electric-handle"] == new_handle
    assert r.headers["etag"] == f'"{new_handle}::"'
    assert r.headers["cache-control"] == "public, max-age=60, must-revalidate"
    for name in ("electric-offset", "electric-cursor", "electric-has-data", "electric-schema"):
        assert name not in r.headers, name
