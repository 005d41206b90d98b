"""Random requests to the real service never get a 5xx, and never hurt the shapes other clients follow.

Hypothesis combines the shape request's parameters, each valid, adversarial or garbage (WHERE clauses that
only fail when Postgres runs them, unicode, NULs, quotes, huge values, bad offsets and handles, stray
``params[n]`` and ``subset__*``), over GET, POST and DELETE.  Every answer must be a 2xx, a 4xx with the
spec's JSON error body, or the spec's 503 for a snapshot that Postgres fails (a WHERE whose cast or
division fails on the table's rows); and a shape a client follows still serves its log after the worst of
them.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.api.e2e_support import MUST_REFETCH, Http, Resp, Tables, running_service
from tests.fixtures.pg import ClusterInfo

EXTRA: dict[str, dict[str, Any]] = {
    "http": {
        "allow_shape_deletion": True,
        "long_poll_timeout_ms": 300,
        "sse_timeout_s": 1,
        "sse_keepalive_s": 0.5,
    }
}

TABLE_SQL = (
    "CREATE TABLE items (id int PRIMARY KEY, title text, n int, price numeric, ts timestamptz, flag boolean,"
    " tags text[], data jsonb)",
    "INSERT INTO items SELECT g, 't' || g, g % 7, g * 1.5, now(), g % 2 = 0, ARRAY['a', 'b'], '{\"k\": 1}'"
    " FROM generate_series(1, 20) g",
)

GARBAGE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["", "\x00", "'", '"', "%", "\\", "$1", "()", "x" * 5000, "-1", "0_0", "9" * 30])
TABLES = st.sampled_from(
    ["items", "public.items", '"items"', "Items", '"Items"', "a.b.c", "nope", "pg_catalog.pg_class", "items;"]
)
WHERES = st.sampled_from(
    [
        "n = 3",
        "n > $1",
        "title LIKE 't1%'",
        "1 / 0 = 1",
        "n / (n - 3) > 0",
        "CAST(title AS int) > 1",
        "ts > 'not a time'",
        "price > 1e400",
        "n IN (1, 2, NULL)",
        "flag AND NOT flag",
        "tags @> ARRAY['a']",
        "data ->> 'k' = '1'",
        "n = 99999999999999999999",
        "id = 1) OR (1=1",
        "pg_sleep(1) IS NULL",
        "title = $1 || $2",
    ]
)
OFFSETS = st.sampled_from(["-1", "now", "0_0", "0_inf", "10", "-2", "1_-1", "99999999999999999999_0"])
LIVE = st.sampled_from(["true", "false", "", "1"])
COLUMNS = st.sampled_from(["id,title", '"id","n"', "title", "id,nope", ",", '""', "id,id", "ID"])
REPLICAS = st.sampled_from(["default", "full", "FULL", ""])
PARAM_KEYS = st.sampled_from(["params[1]", "params[2]", "params[0]", "params[x]", "params[]", "params"])
SUBSET_KEYS = st.sampled_from(
    ["subset__where", "subset__params", "subset__limit", "subset__offset", "subset__order_by"]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None]:
    """(method, query string, body) of one shape request: a valid request, with one parameter made
    adversarial or garbage half of the time; any mix of parameters; or a live shape's follow-up request."""
    params: dict[str, str] = {}
    mode = draw(st.integers(0, 2))  # hypothesis leans to 0, the simplest: the valid requests
    if mode == 2:  # a request of a live shape's client: its real handle (@real), any offset, live or not
        params = {"table": "items", "handle": "@real", "offset": draw(st.just("@latest") | OFFSETS | GARBAGE)}
        if draw(st.booleans()):
            params["live"] = draw(LIVE)
        if draw(st.booleans()):
            params[draw(st.sampled_from(["cursor", "live_sse", "where", "replica"]))] = draw(GARBAGE)
    elif mode == 0:
        params = {"table": "items", "offset": "-1"}
        if draw(st.booleans()):
            params["where"] = draw(st.sampled_from(["n = 3", "n > 2", "title LIKE 't1%'", "flag"]))
        if draw(st.booleans()):
            params["columns"] = draw(st.sampled_from(["id,title", '"id","n"', "id,n,ts,data,tags"]))
        if draw(st.booleans()):
            name = draw(
                st.sampled_from(["table", "offset", "where", "columns", "replica", "log", "params[1]"])
            )
            params[name] = draw(
                {"table": TABLES, "offset": OFFSETS, "where": WHERES}.get(name, GARBAGE) | GARBAGE
            )
    else:
        for name, values, p in [
            ("table", TABLES, 0.9),
            ("offset", OFFSETS, 0.9),
            ("handle", st.sampled_from(["h", "1-2", "0" * 60]), 0.3),
            ("live", LIVE, 0.3),
            ("where", WHERES, 0.6),
            ("columns", COLUMNS, 0.3),
            ("replica", REPLICAS, 0.2),
            ("log", st.sampled_from(["full", "changes_only", "x"]), 0.2),
            ("cursor", GARBAGE, 0.1),
        ]:
            if draw(st.floats(0, 1)) < p:
                params[name] = draw(values | GARBAGE)
        for _ in range(draw(st.integers(0, 2))):
            params[draw(PARAM_KEYS)] = draw(GARBAGE | st.sampled_from(["1", "t1", "3"]))
    if draw(st.integers(0, 3)) == 0:
        params[draw(SUBSET_KEYS)] = draw(GARBAGE | st.sampled_from(["2", "n > 1", "id DESC", '{"1":"2"}']))
    method = draw(st.sampled_from(["GET", "GET", "GET", "GET", "POST", "DELETE"]))
    body = None
    if method == "POST":
        body = draw(st.sampled_from([b"", b"{", b"[]", b'{"where": "n > 1"}', b'{"params": 5}', b"\xff"]))
    return method, urllib.parse.urlencode(list(params.items())), body


@pytest.fixture(scope="module")
def env(pg_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Http, Tables]]:
    workdir: Path = tmp_path_factory.mktemp("fuzz_e2e")
    with running_service(pg_cluster, workdir, "fuzz_e2e", EXTRA) as (svc, dsn):
        db = Tables(dsn)
        db.sql(*TABLE_SQL)
        yield Http(svc.port), db


def _live_shape(http: Http, query: str) -> str:
    """``query`` with ``@real`` / ``@latest`` replaced by the handle and latest offset of ``table=items``."""
    if "%40" not in query:
        return query
    r = http.shape("table=items&offset=-1")
    assert r.status == 200, r.body
    return query.replace("%40real", urllib.parse.quote(r.handle)).replace("%40latest", r.offset)


def _check(r: Resp, method: str, query: str) -> None:
    where = f"{method} /v1/shape?{query} -> {r.status} {r.body[:300]!r}"
    # spec §2: a snapshot that Postgres fails (a cast or a division in the WHERE on the table's rows) is a 503
    if r.status == 503:
        assert r.json()["message"].startswith("Snapshot query failed"), where
        assert r.headers["retry-after"] == "10", where
        return
    assert r.status < 500, where
    if r.status == 409:
        assert r.json() == MUST_REFETCH, where
    elif r.status >= 400:
        body = orjson.loads(r.body) if r.body else {}
        assert isinstance(body, dict) and ("message" in body or "error" in body), where
        if r.status == 400 and "errors" in body:
            assert body["message"] == "Invalid request", where


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_random_requests_get_no_5xx(env: tuple[Http, Tables], request: tuple[str, str, bytes | None]) -> None:
    http, _ = env
    method, query, body = request
    query = _live_shape(http, query)
    headers = {"content-type": "application/json"} if body is not None else None
    r = http.request(method, f"/v1/shape?{query}", headers, body=body, timeout=15)
    event(f"{method} {r.status}")  # the spread of answers: --hypothesis-show-statistics
    _check(r, method, query)


NASTY = [
    ("GET", "table=items&offset=-1&where=1%20%2F%200%20%3D%201", None),  # fails only when Postgres runs it
    ("GET", "table=items&offset=-1&where=CAST(title%20AS%20int)%20%3E%201", None),
    ("GET", "table=items&offset=-1&where=n%20%3E%20%241&params%5B1%5D=abc", None),
    ("GET", "table=items&offset=-1&where=" + "(" * 2000 + "1", None),
    ("GET", "table=items&offset=-1&columns=" + ",".join(["id"] * 3000), None),
    ("GET", "table=" + "x" * 100000 + "&offset=-1", None),
    ("POST", "table=items&offset=-1", b"\xff\xfe"),
    ("POST", "table=items&offset=-1&subset__limit=-5", b'{"where": "1/0 = 1"}'),
    ("DELETE", "handle=nope", None),
]


def test_a_followed_shape_survives_bad_requests(env: tuple[Http, Tables]) -> None:
    http, db = env
    first = http.shape("table=items&offset=-1&where=n%20%3D%201")
    assert first.status == 200, first.body
    handle, offset = first.handle, first.offset
    for method, query, body in NASTY:
        _check(http.request(method, f"/v1/shape?{query}", body=body, timeout=15), method, query)
    health = orjson.loads(http.request("GET", "/v1/health").body)
    assert health["status"] == "active", health
    db.sql("INSERT INTO items VALUES (1001, 'new', 1)")
    got: list[str] = []
    for _ in range(50):  # each live request returns as soon as the shape has new data
        r = http.shape(f"table=items&where=n%20%3D%201&offset={offset}&handle={handle}&live=true")
        assert r.status == 200, r.body
        got += [m["value"]["id"] for m in r.items() if "key" in m]
        offset = r.offset
        if got:
            break
    assert got == ["1001"]
