"""Spec §1-§2 request rules against the real service over real HTTP: auth, CORS and preflight, paths, health,
every bad-parameter error body, table name forms, unknown parameters and the admission limit.

One service (gunicorn + one gevent worker) per module, on its own database, configured with a secret, DELETE
disabled and an initial-request limit of 1, so each of those rules is observable.  Every shape request
below carries the secret unless the test is about its absence.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.api.e2e_support import MUST_REFETCH, Http, Resp, Tables, q, running_service
from tests.fixtures.pg import ClusterInfo

SECRET = "s3cret"
EXTRA: dict[str, dict[str, Any]] = {
    "http": {"secret": SECRET, "allow_shape_deletion": False, "max_concurrent_initial": 1},
}
EXPOSE = (
    "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,electric-up-to-date,"
    "electric-internal-known-error,retry-after"
)
SHAPE_METHODS = "GET, POST, HEAD, DELETE, OPTIONS"
ROWS = [{"id": "1", "title": "t1"}, {"id": "2", "title": "t2"}]
LONGEST = "l" * 63  # the longest name Postgres allows


@pytest.fixture(scope="module")
def env(pg_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Http, Tables]]:
    workdir: Path = tmp_path_factory.mktemp("protocol_e2e_rules")
    with running_service(pg_cluster, workdir, "protocol_e2e_rules", EXTRA) as (svc, dsn):
        db = Tables(dsn)
        db.sql(
            "CREATE TABLE items (id int PRIMARY KEY, title text)",
            "INSERT INTO items VALUES (1, 't1'), (2, 't2')",
            'CREATE SCHEMA "Quoted"',
            'CREATE TABLE "Quoted"."Name" (id int PRIMARY KEY, title text)',
            'CREATE TABLE public."with spaces" (id int PRIMARY KEY, title text)',
            'INSERT INTO "Quoted"."Name" VALUES (1, \'q\')',
            "INSERT INTO public.\"with spaces\" VALUES (1, 's')",
            f"CREATE TABLE {LONGEST} (id int PRIMARY KEY, title text)",
            f"INSERT INTO {LONGEST} VALUES (1, 'l')",
            "CREATE VIEW items_view AS SELECT * FROM items",
            "CREATE MATERIALIZED VIEW items_mat AS SELECT * FROM items",
            "CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)",
            "CREATE TABLE parted (id int PRIMARY KEY, title text) PARTITION BY RANGE (id)",
            "CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100)",
            "CREATE TABLE parted_high PARTITION OF parted FOR VALUES FROM (100) TO (200)",
        )
        yield Http(svc.port), db


@pytest.fixture
def http(env: tuple[Http, Tables]) -> Http:
    return env[0]


@pytest.fixture
def db(env: tuple[Http, Tables]) -> Tables:
    return env[1]


def shape(http: Http, query: str, headers: dict[str, str] | None = None, method: str = "GET") -> Resp:
    return http.shape(f"{query}&secret={SECRET}", headers, method)


def invalid(errors: dict[str, list[str]]) -> dict[str, Any]:
    return {"message": "Invalid request", "errors": errors}


# ------------------------------------------------------------------------------------------------ auth (§1)


def test_auth_with_secret(http: Http) -> None:
    for query in (
        "table=items&offset=-1",
        "table=items&offset=-1&secret=wrong",
        "table=items&offset=-1&secret=",
    ):
        r = http.shape(query, {"Origin": "https://a.example"})
        assert r.status == 401
        assert r.json() == {"message": "Unauthorized - Invalid API secret"}
        assert r.headers["access-control-allow-origin"] == "https://a.example"
        assert "electric-handle" not in r.headers
    assert http.shape(f"table=items&offset=-1&secret={SECRET}").status == 200
    assert http.shape(f"table=items&offset=-1&api_secret={SECRET}").status == 200  # legacy name
    # Every spelling of the path authenticates as /v1/shape; so do HEAD, POST and DELETE.
    for path in ("/v1/shape/", "/v1//shape", "/v1/%73hape"):
        assert http.request("GET", f"{path}?table=items&offset=-1").status == 401
    for method in ("HEAD", "POST", "DELETE"):
        assert http.request(method, "/v1/shape?table=items&offset=-1").status == 401, method
    # OPTIONS, health and the root need no secret.
    assert http.request("OPTIONS", "/v1/shape").status == 204
    assert http.request("GET", "/v1/health").status == 200
    assert http.request("GET", "/").status == 200


def test_delete_disabled_is_405(http: Http) -> None:
    r = shape(http, "table=items", method="DELETE")
    assert r.status == 405
    assert r.json() == {"message": "DELETE not allowed"}
    r = http.request("DELETE", f"/v1/shape?handle=x&secret={SECRET}")
    assert r.status == 405


# ------------------------------------------------------------------------------------- CORS and headers (§1)


def test_cors_and_common_headers_on_every_response(http: Http) -> None:
    ok = shape(http, "table=items&offset=-1")
    origin = {"Origin": "https://a.example"}
    responses = {
        200: shape(http, "table=items&offset=-1", origin),
        304: shape(http, "table=items&offset=-1", {**origin, "If-None-Match": ok.headers["etag"]}),
        400: shape(http, "table=items", origin),
        401: http.shape("table=items&offset=-1", origin),
        404: http.request("GET", "/nowhere", origin),
        405: shape(http, "table=items", origin, method="DELETE"),
        409: shape(http, "table=items&offset=0_0&handle=1-1", origin),
        204: http.request("OPTIONS", "/v1/shape", origin),
    }
    for status, r in responses.items():
        assert r.status == status, (status, r.body)
        h = r.headers
        assert h["access-control-allow-origin"] == "https://a.example", status
        assert h["access-control-expose-headers"] == EXPOSE, status
        assert h["access-control-allow-methods"] == ("GET, HEAD" if status == 404 else SHAPE_METHODS), status
        assert h["electric-server"].startswith("ElectricSQL/"), status
        assert 20 <= len(h["x-request-id"]) <= 200, status
    assert responses[409].json() == MUST_REFETCH
    assert ok.headers["access-control-allow-origin"] == "*"  # no Origin: any
    rid = "abcdefghijklmnopqrstuvwxyz"
    assert shape(http, "table=items&offset=-1", {"x-request-id": rid}).headers["x-request-id"] == rid


def test_long_urls_are_served_and_the_server_s_own_refusals_are_json_with_the_common_headers(
    http: Http,
) -> None:
    """A WHERE of ~6,000 URL bytes (an IN list, as Electric's clients send it) is served; what the HTTP server
    refuses before the app (a request line over 8190 bytes: 414; a header over its limit: 431; a malformed
    request line: 400) still answers JSON with the headers of every response."""
    ids = ",".join(str(i) for i in range(1, 1000))
    served = shape(http, f"table=items&offset=-1&where={q(f'id IN ({ids})')}")
    assert served.status == 200, served.body
    assert len(served.rows()) == 2
    refused = {
        414: shape(http, f"table=items&offset=-1&where={'x' * 9000}"),
        431: shape(http, "table=items&offset=-1", {"x-big": "y" * 9000}),
    }
    with socket.create_connection(("127.0.0.1", http.port), timeout=10) as sock:
        sock.sendall(b"NOT A REQUEST LINE\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
    refused[int(status_line.split()[1])] = Resp(int(status_line.split()[1]), headers, body, 0.0)
    assert sorted(refused) == [400, 414, 431], refused.keys()
    for status, r in refused.items():
        assert r.headers["content-type"] == "application/json; charset=utf-8", status
        assert r.json()["message"], status
        assert r.headers["access-control-allow-origin"] == "*", status
        assert r.headers["access-control-expose-headers"] == EXPOSE, status
        assert r.headers["electric-server"].startswith("ElectricSQL/"), status
        assert len(r.headers["x-request-id"]) == 20, status
    message = refused[414].json()["message"]
    assert message.startswith("URI Too Long: Request Line is too large (") and message.endswith(" > 8190)")


def test_options_preflight(http: Http) -> None:
    for requested in ("if-none-match", "traceparent"):
        r = http.request(
            "OPTIONS",
            "/v1/shape",
            {"Origin": "https://a.example", "Access-Control-Request-Headers": requested},
        )
        assert r.status == 204 and r.body == b""
        assert r.headers["access-control-max-age"] == "86400"
        assert r.headers["access-control-allow-headers"] == requested
        assert r.headers["access-control-allow-origin"] == "https://a.example"
        assert r.headers["connection"].lower() == "keep-alive"
    for requested in ("if-none-match, x-other", "x-other"):
        r = http.request("OPTIONS", "/v1/shape", {"Access-Control-Request-Headers": requested})
        assert r.status == 204
        assert "access-control-allow-headers" not in r.headers


@pytest.mark.parametrize("path", ["/v1/shape/", "/v1//shape", "/v1/%73hape"])
def test_path_normalisation(http: Http, path: str) -> None:
    r = http.request("GET", f"{path}?table=items&offset=-1&secret={SECRET}")
    assert r.status == 200
    assert r.rows() == ROWS
    assert r.headers["access-control-allow-methods"] == SHAPE_METHODS


def test_root_health_and_404(http: Http) -> None:
    r = http.request("GET", "/")
    assert (r.status, r.body) == (200, b"")
    r = http.request("GET", "/v1/health")
    assert r.status == 200 and r.json() == {"status": "active"}
    assert r.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    for path in ("/nowhere", "/v1/shapes", "/v2/shape"):
        r = http.request("GET", path)
        assert (r.status, r.body) == (404, b"Not found"), path


# ------------------------------------------------------------------------------------- parameters (§2)

MISSING_TABLE = (
    'Table "public"."{}" does not exist. If the table name contains capitals or special characters you must '
    "quote it."
)
UNPUBLISHED = 'Table "{}"."{}" cannot be synced: logical replication does not publish {}'
BAD_PARAMS: list[tuple[str, dict[str, list[str]]]] = [
    ("table=items", {"offset": ["can't be blank"]}),
    ("table=items&live=true", {"offset": ["can't be blank"]}),  # checks stop early
    ("offset=-1", {"table": ["can't be blank"]}),
    ("table=&offset=-1", {"table": ["can't be blank"]}),
    ("table=items&offset=10", {"offset": ["has invalid format"]}),
    ("table=items&offset=0_-1", {"offset": ["has invalid format"]}),
    ("table=items&offset=abc", {"offset": ["has invalid format"]}),
    ("table=items&offset=-2", {"offset": ["has invalid format"]}),
    ("table=items&offset=0_0", {"handle": ["can't be blank when offset != -1"]}),
    ("table=items&offset=0_0&handle=", {"handle": ["can't be blank when offset != -1"]}),
    ("table=items&offset=-1&live=true", {"live": ["can't be true when offset == -1"]}),
    ("table=items&offset=-1&live", {"live": ["can't be true when offset == -1"]}),  # a bare live is true
    ("table=items&offset=now&live=yes", {"live": ["can't be true when offset is 'now'"]}),
    ("table=items&offset=-1&live_sse=true", {"live_sse": ["can't be true unless live is also true"]}),
    (
        "table=items&offset=0_0&handle=h&live=false&experimental_live_sse",
        {"live_sse": ["can't be true unless live is also true"]},
    ),
    ("table=items&offset=-1&replica=partial", {"replica": ["is invalid"]}),
    (
        "table=items&offset=-1&where=id%3D%241&params%5Ba%5D=1",
        {"params": ["Parameters can only use numbers as keys"]},
    ),
    (
        "table=items&offset=-1&where=id%3D%242&params%5B2%5D=1",
        {"params": ["Parameters must be numbered sequentially, starting from 1"]},
    ),
    (
        "table=items&offset=-1&where=id%20%3D%20%241",
        {"where": ["At location 5: parameter $1 was not provided"]},
    ),
    ("table=items&offset=-1&where=1%20x%201", {"where": ['At location 17: syntax error at or near "x"']}),
    ("table=items&offset=-1&where=id", {"where": ["WHERE clause must return a boolean"]}),
    ("table=a.b.c&offset=-1", {"table": ["Invalid relation identifier, too many delimiters: a.b.c"]}),
    (
        f"table={'a' * 64}&offset=-1",
        {"table": [f"Invalid identifier, longer than 63 characters: {'a' * 64}"]},
    ),
    ("table=nope&offset=-1", {"table": [MISSING_TABLE.format("nope")]}),
    ("table=%22Items%22&offset=-1", {"table": [MISSING_TABLE.format("Items")]}),  # quoted: case kept
    (
        "table=it-ems&offset=-1",
        {"table": ["Invalid unquoted identifier contains special characters: it-ems"]},
    ),
    (
        "table=Quoted.Name&offset=-1",
        {
            "table": [
                'Table "quoted"."name" does not exist. If the table name contains capitals or special characters you must quote it.'
            ]
        },
    ),
    (
        "table=items&offset=-1&columns=title",
        {"columns": ["The list of columns must include all primary key columns, missing: id"]},
    ),
    (
        "table=items&offset=-1&columns=id,nope",
        {"columns": ["The following columns are not found on the table: nope"]},
    ),
    ("table=items&offset=-1&columns=id,,title", {"columns": ["Invalid zero-length delimited identifier"]}),
    (
        "table=parted&offset=-1",
        {
            "table": [
                'Table "public"."parted" is partitioned: shapes of partitioned tables are not supported yet'
                " (use partitions)"
            ]
        },
    ),
    # relations logical replication does not publish: their publication would fail on every retry
    ("table=items_view&offset=-1", {"table": [UNPUBLISHED.format("public", "items_view", "views")]}),
    (
        "table=items_mat&offset=-1",
        {"table": [UNPUBLISHED.format("public", "items_mat", "materialized views")]},
    ),
    ("table=scratch&offset=-1", {"table": [UNPUBLISHED.format("public", "scratch", "unlogged tables")]}),
    (
        "table=pg_catalog.pg_class&offset=-1",
        {"table": [UNPUBLISHED.format("pg_catalog", "pg_class", "system tables")]},
    ),
    (
        "table=information_schema.tables&offset=-1",
        {"table": [UNPUBLISHED.format("information_schema", "tables", "views")]},
    ),
]


@pytest.mark.parametrize(("query", "errors"), BAD_PARAMS, ids=[p[0][:60] for p in BAD_PARAMS])
def test_bad_parameters_are_400_with_the_exact_body(
    http: Http, query: str, errors: dict[str, list[str]]
) -> None:
    r = shape(http, query)
    assert r.status == 400, r.body
    assert r.json() == invalid(errors)
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["surrogate-control"] == "no-store"
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    for name in ("electric-handle", "electric-offset", "electric-has-data", "etag"):
        assert name not in r.headers, name


@pytest.mark.parametrize(
    ("table", "relation", "rows"),
    [
        ("items", ["public", "items"], ROWS),
        ("ITEMS", ["public", "items"], ROWS),  # unquoted: downcased
        ("public.items", ["public", "items"], ROWS),
        ('"Quoted"."Name"', ["Quoted", "Name"], [{"id": "1", "title": "q"}]),
        ('public."with spaces"', ["public", "with spaces"], [{"id": "1", "title": "s"}]),
        ('"with spaces"', ["public", "with spaces"], [{"id": "1", "title": "s"}]),
        (LONGEST.upper(), ["public", LONGEST], [{"id": "1", "title": "l"}]),
    ],
)
def test_table_name_forms(http: Http, table: str, relation: list[str], rows: list[dict[str, str]]) -> None:
    r = shape(http, f"table={q(table)}&offset=-1")
    assert r.status == 200, r.body
    assert r.rows() == rows
    assert {tuple(m["headers"]["relation"]) for m in r.items() if "key" in m} == {tuple(relation)}


def test_a_partition_s_shape_follows_the_changes_made_through_its_parent(http: Http, db: Tables) -> None:
    first = shape(http, "table=parted_low&offset=-1")
    assert first.status == 200, first.body
    db.sql(
        "INSERT INTO parted VALUES (7, 'low'), (107, 'high')",
        "UPDATE parted SET title = 'moved' WHERE id = 7",
    )
    offset = first.offset
    seen: list[tuple[str, dict[str, str]]] = []
    while len(seen) < 2:  # each live request returns once the shape has new data
        r = shape(http, f"table=parted_low&offset={offset}&handle={first.handle}&live=true")
        assert r.status == 200, r.body
        seen += [(m["headers"]["operation"], m["value"]) for m in r.items() if "key" in m]
        offset = r.offset
    assert seen == [("insert", {"id": "7", "title": "low"}), ("update", {"id": "7", "title": "moved"})]


def test_table_forms_of_one_relation_share_the_shape(http: Http) -> None:
    handles = {shape(http, f"table={q(t)}&offset=-1").handle for t in ("items", "ITEMS", "public.items")}
    assert len(handles) == 1


def test_handle_is_ignored_at_minus_one_and_now(http: Http) -> None:
    handle = shape(http, "table=items&offset=-1").handle
    for offset in ("-1", "now"):
        r = shape(http, f"table=items&offset={offset}&handle=1-1")
        assert r.status == 200 and r.handle == handle, offset


def test_columns_and_where_params(http: Http, db: Tables) -> None:
    table = db.create(
        columns='id int PRIMARY KEY, "has,comma" text, "has""quote" text, "has space" text, rest text'
    )
    db.sql(f"INSERT INTO {table} VALUES (1, 'c', 'q', 's', 'r'), (2, 'c2', 'q2', 's2', 'r2')")
    cols = q('"id","has,comma","has""quote",HAS space'.replace("HAS space", '"has space"'))
    r = shape(http, f"table={table}&offset=-1&columns={cols}")
    assert r.status == 200, r.body
    assert r.rows()[0] == {"id": "1", "has,comma": "c", 'has"quote': "q", "has space": "s"}
    assert list(orjson.loads(r.headers["electric-schema"])) == ["id", "has,comma", 'has"quote', "has space"]
    r = shape(
        http,
        f"table={table}&offset=-1&columns=ID,REST&where={q('id = $1 AND rest <> $2')}"
        "&params%5B1%5D=2&params%5B2%5D=x",
    )
    assert r.status == 200, r.body
    assert r.rows() == [{"id": "2", "rest": "r2"}]


def test_unknown_parameters_are_ignored(http: Http) -> None:
    plain = shape(http, "table=items&offset=-1")
    extra = "&log=full&cursor=123&expired_handle=1-2&cache-buster=xyz&foo=bar&foo[1]=2&bare"
    r = shape(http, f"table=items&offset=-1{extra}")
    assert r.status == 200
    assert r.handle == plain.handle and r.body == plain.body
    r = shape(http, f"table=items&offset=0_0&handle={q(plain.handle)}{extra}")
    assert r.status == 200 and r.controls() == ["up-to-date"]


def test_post_without_subset_is_a_get_with_no_cache(http: Http) -> None:
    get = shape(http, "table=items&offset=-1")
    for payload in (b"", b"{}"):
        r = http.request("POST", f"/v1/shape?table=items&offset=-1&secret={SECRET}", body=payload)
        assert r.status == 200
        assert r.body == get.body and r.handle == get.handle
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["electric-schema"] == get.headers["electric-schema"]
    url = f"/v1/shape?table=items&offset=-1&secret={SECRET}"
    r = http.request("POST", url, body=b"{nope")
    assert r.status == 400 and r.json()["error"] == "Invalid JSON in request body" and "details" in r.json()
    r = http.request("POST", url, body=b"[1]")
    assert (r.status, r.json()) == (400, {"error": "Request body must be a JSON object"})
    r = http.request("POST", url, body=b" " * (1024 * 1024 + 10))
    assert (r.status, r.json()) == (413, {"error": "Request body too large"})


# ------------------------------------------------------------------------------------------- admission (§2)


def test_admission_limit_on_initial_requests(http: Http, db: Tables) -> None:
    """With ``max_concurrent_initial`` = 1, a second request for a new client is refused while one is in
    flight.  The request held open is a ``-1`` read of a 24 MB row that the test does not read: the worker is
    stuck writing it until the test closes the socket, and the slot is released then."""
    big = db.create(columns="id int PRIMARY KEY, payload text", prefix="big")
    db.sql(f"INSERT INTO {big} VALUES (1, repeat('x', 24 * 1024 * 1024))")
    first = shape(http, f"table={big}&offset=-1")  # creates the shape (snapshot) and reads it whole
    assert first.status == 200 and len(first.body) > 24 * 1024 * 1024
    items = shape(http, "table=items&offset=-1").handle
    held = socket.create_connection(("127.0.0.1", http.port))
    try:
        held.sendall(
            f"GET /v1/shape?table={big}&offset=-1&secret={SECRET} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        assert held.recv(12) == b"HTTP/1.1 200"  # the response started; the test reads no more of it
        r = shape(http, "table=items&offset=-1", {"Origin": "https://a.example"})
        assert r.status == 503
        assert r.json() == {
            "code": "concurrent_request_limit_exceeded",
            "message": "Concurrent initial request limit exceeded (limit: 1), please retry",
        }
        assert 6 <= int(r.headers["retry-after"]) <= 10
        assert r.headers["electric-internal-known-error"] == "true"
        assert r.headers["access-control-allow-origin"] == "https://a.example"
        # Requests for an existing shape have their own budget.
        ok = shape(http, f"table=items&offset=0_0&handle={q(items)}")
        assert ok.status == 200
    finally:
        held.close()
    deadline = time.monotonic() + 10  # the worker notices the closed socket on its next write
    while (r := shape(http, "table=items&offset=-1")).status == 503:
        assert time.monotonic() < deadline, "the held slot was never released"
        time.sleep(0.05)
    assert r.status == 200
