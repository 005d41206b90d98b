"""Spec §3, §6 (offsets ``now`` and out of bounds, long-poll, cursor, SSE) against the real service.

One service (gunicorn + one gevent worker, settings ``e2e_support.SERVICE``: long-poll 2 s, SSE 2 s with
0.5 s keep-alives, 10,000-byte chunks) per module, on its own database, over real HTTP.  Changes are waited
for with the service's own event (a live request returns when data lands), never a sleep.
"""

from __future__ import annotations

import http.client as hc
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from tests.api.e2e_support import (
    BIG,
    LIVE_CC,
    LONG_POLL_S,
    MUST_REFETCH,
    SCHEMA,
    SERVICE,
    WAIT_S,
    Http,
    Shape,
    Tables,
    caught_up,
    running_service,
)
from tests.background import Background
from tests.fixtures.pg import ClusterInfo

CURSOR_EPOCH = 1728432000  # 2024-10-09T00:00:00Z


@pytest.fixture(scope="module")
def env(pg_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Http, Tables]]:
    workdir: Path = tmp_path_factory.mktemp("protocol_e2e_live")
    with running_service(pg_cluster, workdir, "protocol_e2e_live", SERVICE) as (svc, dsn):
        yield Http(svc.port), Tables(dsn)


@pytest.fixture
def http(env: tuple[Http, Tables]) -> Http:
    return env[0]


@pytest.fixture
def db(env: tuple[Http, Tables]) -> Tables:
    return env[1]


# ------------------------------------------------------------------------------------ offsets and live (§3, §6)


def test_out_of_bounds_offset_waits_then_400(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    del table
    r = shape.get("99999999999_0")
    assert r.elapsed >= LONG_POLL_S / 2 - 0.1
    assert r.status == 400
    assert r.json() == {"message": "Invalid request", "errors": {"offset": ["out of bounds for this shape"]}}
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["surrogate-control"] == "no-store"
    assert "electric-offset" not in r.headers and "electric-has-data" not in r.headers


def test_offset_ahead_served_once_the_shape_reaches_it(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    db.insert(table, 3)
    shape.follow(1)
    tx = int(shape.offset.split("_")[0])
    ahead = f"{tx}_2"  # past the shape's latest; the next transaction's offset is beyond it
    waiting = http.background(shape.url(ahead))
    db.insert(table, 4)
    r = waiting.result()
    assert r.status == 200 and r.elapsed < LONG_POLL_S / 2
    assert r.rows() == [{"id": "4", "title": "t4"}]
    assert int(r.offset.split("_")[0]) > tx


def test_offset_now(http: Http, db: Tables) -> None:
    table = db.create(rows=2)
    r = http.shape(f"table={table}&offset=now")
    assert r.status == 200
    handle = r.handle
    assert r.offset == "0_inf"
    assert r.headers["etag"] == f'"{handle}:now:0_inf"'
    assert r.headers["electric-has-data"] == "false"
    assert r.headers["electric-up-to-date"] == ""
    assert orjson.loads(r.headers["electric-schema"]) == SCHEMA
    [msg] = r.items()
    assert msg["headers"]["control"] == "up-to-date" and msg["headers"]["global_last_seen_lsn"].isdigit()
    shape = Shape(http, f"table={table}", handle, "0_inf")
    db.insert(table, 3)
    shape.follow(1)
    r = http.shape(f"table={table}&offset=now&handle=ignored-1")
    assert r.status == 200 and r.handle == handle
    assert r.offset == shape.offset
    assert int(r.items()[0]["headers"]["global_last_seen_lsn"]) >= int(shape.offset.split("_")[0])


def test_long_poll_timeout_answer(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    del table
    r = shape.get(extra="&live=true")
    assert r.elapsed >= LONG_POLL_S - 0.1
    assert r.status == 200
    assert r.controls() == ["up-to-date"] and len(r.items()) == 1
    h = r.headers
    assert h["electric-has-data"] == "false"
    assert h["electric-offset"] == shape.offset
    assert h["electric-up-to-date"] == ""
    assert re.fullmatch(rf'"{re.escape(shape.handle)}:{shape.offset}:{shape.offset}:[0-9]+"', h["etag"])
    assert h["cache-control"] == LIVE_CC
    assert "electric-schema" not in h
    # Cursor (spec §6): the next multiple of the long-poll interval since the epoch ...
    now = time.time() - CURSOR_EPOCH
    cursor = int(h["electric-cursor"])
    assert cursor % LONG_POLL_S == 0 and now - LONG_POLL_S - 5 <= cursor <= math.ceil(now) + LONG_POLL_S
    # ... unless the client's cursor is not below it: then the client's plus 1..3600.
    r = shape.get(extra=f"&live=true&cursor={cursor + 10**6}")
    assert cursor + 10**6 < int(r.headers["electric-cursor"]) <= cursor + 10**6 + 3600


def test_long_poll_woken_by_new_data(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    waiting = http.background(shape.url(extra="&live=true&cursor=1"))
    db.insert(table, 3)
    r = waiting.result()
    assert r.elapsed < LONG_POLL_S - 0.1  # woken, not timed out
    assert r.status == 200
    assert r.rows() == [{"id": "3", "title": "t3"}]
    assert r.controls() == ["up-to-date"]
    assert r.items()[-1]["headers"]["global_last_seen_lsn"] == r.offset.split("_")[0]
    assert r.offset == f"{r.items()[0]['headers']['lsn']}_0"
    h = r.headers
    assert h["electric-has-data"] == "true" and h["electric-up-to-date"] == ""
    assert int(h["electric-cursor"]) > 1
    assert h["cache-control"] == LIVE_CC
    assert h["etag"] == f'"{shape.handle}:{shape.offset}:{r.offset}"'
    assert "electric-schema" not in h


def _live_waiters(http: Http) -> float:
    for line in http.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith("shapesync_live_waiters "):
            return float(line.split()[1])
    return 0.0


def _wire_headers(http: Http, path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, every header in wire order (names lower-cased), body."""
    conn = hc.HTTPConnection("127.0.0.1", http.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, [(k.lower(), v) for k, v in r.getheaders()], r.read()
    finally:
        conn.close()


def test_woken_long_polls_answer_exactly_as_an_immediate_request(http: Http, db: Tables) -> None:
    """Long-polls woken by one change share a pre-rendered answer (api/raw_response.py) for all but the first
    to wake: every one must carry the same headers, in the same order, as the same request answered through
    Falcon at once, with its own cursor, request id and CORS origin."""
    table, shape = caught_up(http, db)
    path = f"/v1/shape?{shape.url(extra='&live=true')}"
    own_id = "client-chosen-request-id-0001"
    variants = [
        ({}, "1"),
        ({"Origin": "https://app.example", "X-Request-Id": own_id}, "1"),
        ({}, "99999999999"),
    ]
    before = _live_waiters(http)
    parked: list[Any] = []
    for headers, cursor in variants * 2:  # two of each: at most one of a pair builds the shared answer
        parked.append(
            (
                headers,
                cursor,
                Background(
                    cast(
                        Callable[[], Any],
                        lambda h=headers, c=cursor: _wire_headers(http, f"{path}&cursor={c}", h),
                    ),
                    timeout=WAIT_S,
                ),
            )
        )
    deadline = time.monotonic() + 10
    while _live_waiters(http) < before + len(parked):  # no event crosses the process boundary
        assert time.monotonic() < deadline, "the long-polls did not park"
        time.sleep(0.01)
    db.insert(table, 3)
    woken = [(headers, cursor, bg.result()) for headers, cursor, bg in parked]
    status, reference, ref_body = _wire_headers(http, f"{path}&cursor=1", {})  # behind now: answered at once
    assert status == 200 and orjson.loads(ref_body)[0]["value"] == {"id": "3", "title": "t3"}
    varying = {"date", "electric-cursor", "x-request-id", "access-control-allow-origin"}
    for headers, cursor, (status, got, body) in woken:
        assert status == 200 and body == ref_body
        assert [name for name, _ in got] == [name for name, _ in reference]
        assert [h for h in got if h[0] not in varying] == [h for h in reference if h[0] not in varying]
        values = dict(got)
        assert values["access-control-allow-origin"] == headers.get("Origin", "*")
        if "X-Request-Id" in headers:
            assert values["x-request-id"] == own_id
        else:
            assert len(values["x-request-id"]) == 20
        if cursor == "1":
            assert values["electric-cursor"] == dict(reference)["electric-cursor"]
        else:
            assert 99999999999 < int(values["electric-cursor"]) <= 99999999999 + 3600
    assert _live_waiters(http) == before  # the shared answers left the gauge as Falcon's do


def test_live_304_carries_the_cursor(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    behind = shape.offset
    db.insert(table, 3)
    shape.follow(1)
    r = shape.get(behind, extra="&live=true")  # behind: answered at once
    assert r.status == 200 and r.rows() == [{"id": "3", "title": "t3"}]
    again = shape.get(behind, extra="&live=true", headers={"If-None-Match": r.headers["etag"]})
    assert again.status == 304 and again.body == b""
    assert again.headers["cache-control"] == LIVE_CC
    assert int(again.headers["electric-cursor"]) > 0
    assert again.headers["electric-offset"] == r.offset
    assert "electric-schema" not in again.headers


# ------------------------------------------------------------------------------------------------- SSE (§6)


def sse_frames(text: str) -> list[Any]:
    """Strict SSE parse: every frame is ``data: <json>`` or the ``: keep-alive`` comment."""
    assert text.endswith("\n\n") or text == "", text
    frames: list[Any] = []
    for frame in text.split("\n\n")[:-1]:
        if frame == ": keep-alive":
            frames.append(frame)
        else:
            assert frame.startswith("data: ") and "\n" not in frame, frame
            frames.append(orjson.loads(frame[len("data: ") :]))
    return frames


def test_sse_stream_framing_keepalives_and_close(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    started = time.monotonic()
    conn, resp = http.open(f"/v1/shape?{shape.url(extra='&live=true&live_sse=true')}")
    try:
        assert resp.status == 200  # the stream opens at once, before any data
        assert time.monotonic() - started < 1.0
        headers = {k.lower(): v for k, v in resp.getheaders()}
        db.insert(table, 3)
        text = resp.read().decode()
    finally:
        conn.close()
    assert 2.0 <= time.monotonic() - started < 6.0  # closed by sse_timeout
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "public, max-age=1"
    assert headers["electric-handle"] == shape.handle
    assert int(headers["electric-cursor"]) > 0
    assert "electric-schema" not in headers
    frames = sse_frames(text)
    data = [f for f in frames if isinstance(f, dict)]
    assert [m.get("value") for m in data] == [{"id": "3", "title": "t3"}, None]
    assert data[1]["headers"]["control"] == "up-to-date"
    assert data[1]["headers"]["global_last_seen_lsn"] == data[0]["headers"]["lsn"]
    assert frames.count(": keep-alive") >= 2  # 0.5 s keep-alives in a 2 s stream


def test_sse_backlog_is_a_finite_stream(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    start = shape.offset
    db.sql(f"INSERT INTO {table} SELECT i, '{BIG}' FROM generate_series(3, 62) i")
    shape.follow(60)
    r = http.shape(f"{shape.url(start)}&live=true&experimental_live_sse=true")  # the deprecated name
    assert r.elapsed < 1.9  # before sse_timeout (2 s) ...
    assert r.status == 200 and r.headers["content-type"] == "text/event-stream"
    data = sse_frames(r.body.decode())  # ... and before any keep-alive (0.5 s): it did not wait
    items, tail = data[:-1], data[-1]
    assert items and all(isinstance(m, dict) and "key" in m for m in items)
    assert len(items) < 60  # one chunk of the backlog, then the stream closes
    last = items[-1]["headers"]
    # the batch ends with up-to-date all the same (spec §6): the official client only applies what it
    # buffered once it sees one, and resumes from <lsn>_0 of that transaction
    assert tail == {"headers": {"control": "up-to-date", "global_last_seen_lsn": last["lsn"]}}
    assert r.offset == f"{last['lsn']}_{last['op_position']}"


def test_sse_closes_silently_on_rotation_and_the_reconnect_gets_409(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    started = time.monotonic()
    conn, resp = http.open(f"/v1/shape?{shape.url(extra='&live=true&live_sse=true')}")
    try:
        assert resp.status == 200
        db.sql(f"TRUNCATE {table}")
        text = resp.read().decode()
    finally:
        conn.close()
    assert time.monotonic() - started < 2.0
    assert [f for f in sse_frames(text) if isinstance(f, dict)] == []
    r = shape.get(extra="&live=true&live_sse=true")
    assert r.status == 409 and r.json() == MUST_REFETCH
    assert r.headers["content-type"] == "application/json; charset=utf-8"  # errors are plain JSON
