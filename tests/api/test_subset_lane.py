"""The lean lane (api/lean_lane.py) answers subset GETs byte for byte as the Falcon path does.

Against the real service (gunicorn + our worker): ``GET /v1/shape?...`` takes the lane, and the same request
to ``/v1/shape/`` (normalised to ``/v1/shape`` by the Falcon middleware, never taken by the lane) is the
Falcon path's answer.  Both are read as raw bytes off the socket and compared whole: status line, every
header in order, body; only ``Date`` (the clock), a 503's random ``retry-after`` and a 200's snapshot
metadata and marks (a mark per request, the snapshot at that moment) are masked.  Success and each error class:
bad params (400), a handle that is not the shape's (409), a wrong secret (401), the admission limit (503)
and saturated subset connections (503, raised after the lane started: answered through the error table).
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.api.subset_support import module_database, module_service, module_tmp, request
from tests.fixtures.pg import ClusterInfo
from tests.fixtures.service import ServiceProcess

__all__ = ["module_tmp"]

SECRET = "lane-secret-0123456789"
REQUEST_ID = "lane-request-id-0123456789"
_TABLES = itertools.count(1)


@pytest.fixture(scope="module")
def dsn(pg_cluster: ClusterInfo) -> Iterator[str]:
    yield from module_database(pg_cluster, "subset_lane")


@pytest.fixture(scope="module")
def svc(dsn: str, module_tmp: Path) -> Iterator[ServiceProcess]:
    """A secret, one subset connection that gives up quickly, one admitted request with a handle."""
    extra: dict[str, dict[str, Any]] = {
        "database": {"snapshot_pool_size": 1, "snapshot_queue_timeout_s": 0.3},
        "http": {
            "secret": SECRET,
            "long_poll_timeout_ms": 30000,
            "max_concurrent_existing": 1,
            "max_concurrent_initial": 10,
        },
    }
    yield from module_service(dsn, module_tmp, extra)


@pytest.fixture
def table(dsn: str) -> str:
    name = f"lane_{next(_TABLES)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{name}" (id int PRIMARY KEY, grp int NOT NULL, name text)')
        conn.execute(f"INSERT INTO \"{name}\" SELECT i, i % 3, 'n' || i FROM generate_series(1, 30) i")
    return name


def raw_get(svc: ServiceProcess, path: str, headers: dict[str, str] | None = None) -> bytes:
    """The whole response to ``GET path`` as it came off the socket."""
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", svc.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def masked(response: bytes) -> bytes:
    response = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", response)
    response = re.sub(rb"\r\nretry-after: \d+", b"\r\nretry-after: -", response)
    response = re.sub(rb'^(.*\r\n\r\n)\{"metadata":\{[^}]*\}', rb'\1{"metadata":-', response, flags=re.S)
    return re.sub(rb'"snapshot_mark":\d+', b'"snapshot_mark":-', response)


def both(svc: ServiceProcess, params: dict[str, str], headers: dict[str, str] | None = None) -> bytes:
    """The lane's answer and the Falcon path's, asserted identical (masked); returns the lane's."""
    query = urllib.parse.urlencode(params)
    headers = {"X-Request-Id": REQUEST_ID, **(headers or {})}
    lane = raw_get(svc, f"/v1/shape?{query}", headers)
    falcon = raw_get(svc, f"/v1/shape/?{query}", headers)
    assert masked(lane) == masked(falcon)
    return lane


def status_of(response: bytes) -> int:
    return int(response[9:12])


def body_of(response: bytes) -> Any:
    return json.loads(response.partition(b"\r\n\r\n")[2])


def subset_params(table: str, **extra: str) -> dict[str, str]:
    return {
        "table": table,
        "offset": "-1",
        "secret": SECRET,
        "subset__where": "grp = $1",
        "subset__params": '{"1":"2"}',
        "subset__order_by": "id",
        "subset__limit": "4",
        **extra,
    }


def test_success_is_identical(svc: ServiceProcess, table: str) -> None:
    for headers in ({}, {"Origin": "https://app.example"}):
        answer = both(svc, subset_params(table), headers)
        assert status_of(answer) == 200, answer
        assert [int(i["value"]["id"]) for i in body_of(answer)["data"]] == [2, 5, 8, 11]
        assert f"x-request-id: {REQUEST_ID}".encode() in answer
        assert f"access-control-allow-origin: {headers.get('Origin', '*')}".encode() in answer
    # the masking leaves a difference in rows visible
    query = urllib.parse.urlencode(subset_params(table))
    other = urllib.parse.urlencode(subset_params(table, subset__params='{"1":"1"}'))
    assert masked(raw_get(svc, f"/v1/shape?{query}")) != masked(raw_get(svc, f"/v1/shape/?{other}"))


@pytest.mark.parametrize(
    "extra",
    [
        {"subset__params": '{"1":"x"}'},  # not an int4
        {"subset__limit": "many"},
        {"subset__where": "nope = $1"},
        {"subset__params": "[1]"},
        {"offset": ""},  # the shape request itself
    ],
    ids=["value", "limit", "column", "params", "offset"],
)
def test_bad_params_are_identical(svc: ServiceProcess, table: str, extra: dict[str, str]) -> None:
    answer = both(svc, subset_params(table, **extra))
    assert status_of(answer) == 400, answer


def test_wrong_handle_is_identical(svc: ServiceProcess, table: str) -> None:
    answer = both(svc, subset_params(table, offset="0_0", handle="12345-678"))
    assert status_of(answer) == 409, answer
    assert b"\r\nelectric-handle: " in answer


def test_wrong_secret_is_identical(svc: ServiceProcess, table: str) -> None:
    for secret in ("wrong", ""):
        answer = both(svc, subset_params(table, secret=secret))
        assert status_of(answer) == 401, answer


def test_admission_limit_is_identical(svc: ServiceProcess, dsn: str, table: str) -> None:
    status, headers, _ = request(svc, {"table": table, "offset": "-1", "secret": SECRET})
    assert status == 200
    handle, offset = headers["electric-handle"], headers["electric-offset"]
    live = {"table": table, "offset": offset, "handle": handle, "live": "true", "secret": SECRET}
    done: list[Any] = []
    parked = threading.Thread(target=lambda: done.append(request(svc, live)))
    parked.start()  # holds the one slot for requests with a handle until the insert below
    try:
        deadline = time.monotonic() + 20
        while _metric(svc, "shapesync_live_waiters ") < 1:  # until the long-poll is parked (no slot taken)
            assert time.monotonic() < deadline and not done, done
            time.sleep(0.02)
        answer = both(svc, subset_params(table, handle=handle, offset=offset))
        assert status_of(answer) == 503, answer
        assert body_of(answer)["code"] == "concurrent_request_limit_exceeded"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO \"{table}\" VALUES (1000, 0, 'wake')")  # ends the long-poll
        parked.join(30)
    assert not parked.is_alive()


def test_saturated_subsets_are_identical(svc: ServiceProcess, dsn: str, table: str) -> None:
    status, _, _ = request(svc, subset_params(table))  # the shape exists before the table is locked
    assert status == 200
    results: list[int] = []
    with psycopg.connect(dsn) as locker:
        locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        blocked = threading.Thread(target=lambda: results.append(request(svc, subset_params(table))[0]))
        blocked.start()
        with psycopg.connect(dsn, autocommit=True) as probe:  # the one subset connection waits on the lock
            waiting = 0
            for _ in range(200):
                waiting = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                ).fetchall()[0][0]
                if waiting:
                    break
                probe.execute("SELECT pg_sleep(0.02)")
            assert waiting == 1
        answer = both(svc, subset_params(table, subset__limit="2"))
        assert status_of(answer) == 503, answer
        assert b"\r\nretry-after: 1\r\n" in answer
        locker.rollback()
    blocked.join(30)
    assert results == [200]


def _metric(svc: ServiceProcess, line_start: str) -> float:
    text = raw_get(svc, "/metrics").partition(b"\r\n\r\n")[2].decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def test_lane_answers_are_counted_and_release_their_slot(svc: ServiceProcess, table: str) -> None:
    requests = 'shapesync_http_requests_total{method="GET",route="/v1/shape",status="200"}'
    sent = 'shapesync_http_response_bytes_total{route="/v1/shape"}'
    before = (_metric(svc, requests), _metric(svc, sent))
    params = subset_params(table, subset__params='{"1":"1"}')
    answers = [raw_get(svc, "/v1/shape?" + urllib.parse.urlencode(params)) for _ in range(3)]
    assert [status_of(a) for a in answers] == [200] * 3
    lengths = sum(len(a.partition(b"\r\n\r\n")[2]) for a in answers)
    assert (_metric(svc, requests), _metric(svc, sent)) == (before[0] + 3, before[1] + lengths)
    # each released its admission slot (one per kind here): a request with a handle is still admitted
    status, headers, _ = request(svc, {"table": table, "offset": "-1", "secret": SECRET})
    assert status == 200
    handle, offset = headers["electric-handle"], headers["electric-offset"]
    for _ in range(3):
        answer = raw_get(
            svc, "/v1/shape?" + urllib.parse.urlencode({**params, "handle": handle, "offset": offset})
        )
        assert status_of(answer) == 200, answer


def _rows(response: bytes) -> list[int]:
    return [int(i["value"]["id"]) for i in body_of(response)["data"]]


def both_raw(svc: ServiceProcess, query: str) -> bytes:
    """:func:`both` for a query string written by hand (repeated or encoded keys)."""
    headers = {"X-Request-Id": REQUEST_ID}
    lane = raw_get(svc, f"/v1/shape?{query}", headers)
    assert masked(lane) == masked(raw_get(svc, f"/v1/shape/?{query}", headers))
    return lane


def test_params_split_off_the_kept_query_decode_as_the_whole(svc: ServiceProcess, table: str) -> None:
    """The lane keeps each query string decoded without its ``subset__params`` field (api/lean_lane.py):
    the same rest with other params gives other rows, and params written any other way (encoded key,
    repeated, bare, blank) are answered as the Falcon path answers them."""
    base = {k: v for k, v in subset_params(table).items() if k != "subset__params"}
    rest = urllib.parse.urlencode(base)
    for value, rows in (("0", [3, 6, 9, 12]), ("1", [1, 4, 7, 10]), ("2", [2, 5, 8, 11])):
        answer = both_raw(svc, rest + "&" + urllib.parse.urlencode({"subset__params": f'{{"1":"{value}"}}'}))
        assert status_of(answer) == 200, answer
        assert _rows(answer) == rows
    one, two = (urllib.parse.quote(f'{{"1":"{v}"}}') for v in ("1", "2"))
    cases = {
        f"{rest}&subset__params={one}&subset__params={two}": [2, 5, 8, 11],  # the last one counts
        f"{rest}&subset%5F%5Fparams={one}&subset__params={two}": [2, 5, 8, 11],
        f"{rest}&subset__params={two}&subset%5F%5Fparams={one}": [1, 4, 7, 10],
        f"subset__params={one}&{rest}": [1, 4, 7, 10],
        f"{rest}&subset__params={one.replace('%3A', ':')}": [1, 4, 7, 10],  # partly encoded
        f"{rest}&subset__params={one.replace('%3A', ':+')}": [1, 4, 7, 10],  # "+" is a space
    }
    for query, rows in cases.items():
        answer = both_raw(svc, query)
        assert status_of(answer) == 200, (query, answer)
        assert _rows(answer) == rows, query
    for query in (f"{rest}&subset__params=", f"{rest}&subset__params", f"{rest}&subset__params=%7B"):
        answer = both_raw(svc, query)
        assert status_of(answer) == 400, (query, answer)


def _header(response: bytes, name: bytes) -> bytes:
    match = re.search(rb"\r\n" + name + rb": ([^\r]*)", response)
    assert match is not None, response
    return match.group(1)


def _until(check: Any, what: str) -> Any:
    """Poll ``check()`` until it is truthy (the engine learns of a DDL through replication)."""
    deadline = time.monotonic() + 30
    while not (result := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return result


def test_kept_repeats_follow_the_shape_and_its_schema(svc: ServiceProcess, dsn: str, table: str) -> None:
    """A repeated subset GET (same query, other params) is answered from what the first one kept: plan,
    statement and header block (api/shape_resource.py ``fast_memo``).  Each repeat re-checks what can change
    between requests, so its answer stays the Falcon path's: bad params, a schema header that followed a
    nullability change, and a shape invalidated by TRUNCATE (409 with the new handle)."""
    status, headers, _ = request(svc, {"table": table, "offset": "-1", "secret": SECRET})
    assert status == 200
    handle = headers["electric-handle"]
    kept = {**subset_params(table), "handle": handle, "offset": headers["electric-offset"]}

    def lane(**extra: str) -> bytes:
        return raw_get(svc, "/v1/shape?" + urllib.parse.urlencode({**kept, **extra}))

    for value, rows in (("1", [1, 4, 7, 10]), ("2", [2, 5, 8, 11]), ("0", [3, 6, 9, 12])):
        answer = both(svc, {**kept, "subset__params": f'{{"1":"{value}"}}'})
        assert status_of(answer) == 200, answer
        assert _rows(answer) == rows
    assert status_of(both(svc, {**kept, "subset__params": '{"1":"x"}'})) == 400
    assert _rows(lane()) == [2, 5, 8, 11]  # kept again after the error
    # a repeat's header lines: the origin, a client's id or one drawn
    answer = both(svc, {**kept, "subset__params": '{"1":"1"}'}, {"Origin": "https://app.example"})
    assert b"\r\naccess-control-allow-origin: https://app.example\r\n" in answer
    assert f"\r\nx-request-id: {REQUEST_ID}\r\n".encode() in answer and _rows(answer) == [1, 4, 7, 10]
    drawn = {_header(lane(), b"x-request-id") for _ in range(2)}
    assert len(drawn) == 2 and all(len(i) == 20 for i in drawn), drawn

    schema = _header(lane(), b"electric-schema")
    assert b'"name":{"type":"text"}' in schema, schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE "{table}" ALTER COLUMN name SET NOT NULL')
        conn.execute(f"INSERT INTO \"{table}\" VALUES (1001, 2, 'after')")  # the Relation message
    falcon_query = "/v1/shape/?" + urllib.parse.urlencode(kept)
    _until(lambda: _header(raw_get(svc, falcon_query), b"electric-schema") != schema, "schema header")
    answer = both(svc, kept)
    assert status_of(answer) == 200, answer
    assert b'"not_null":true' in _header(answer, b"electric-schema").split(b'"name":')[1]

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'TRUNCATE "{table}"')
    _until(lambda: status_of(raw_get(svc, falcon_query)) == 409, "409 after TRUNCATE")
    answer = both(svc, kept)
    assert status_of(answer) == 409, answer
    assert _header(answer, b"electric-handle") != handle.encode()
