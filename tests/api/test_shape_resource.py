"""Spec §3/§4/§7 through real Falcon request handling, over the ``backend`` engine (fake by default).

These tests only use the port and the backend driver, so they can be re-run against the real engine.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from falcon.testing import TestClient

from api.engine_port import LogChunk
from sync.offsets import LogOffset
from tests.api.conftest import TEST_SETTINGS, Backend, build_app
from tests.api.fake_engine import FakeEngine
from tests.api.shape_support import body, controls, follow_snapshot, get, rows

ROWS = [{"id": str(i), "title": f"t{i}"} for i in range(1, 3)]
MUST_REFETCH = [{"headers": {"control": "must-refetch"}}]


def test_initial_snapshot(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    r = get(client, f"table={table}&offset=-1")
    assert r.status_code == 200
    assert rows(r) == ROWS
    assert controls(r) == ["snapshot-end"]  # a -1 response never has up-to-date
    h = r.headers
    handle = h["electric-handle"]
    assert h["electric-offset"] == "0_0"
    assert "electric-up-to-date" not in h
    assert h["electric-has-data"] == "true"
    assert orjson.loads(h["electric-schema"])["id"]["pk_index"] == 0
    assert h["etag"] == f'"{handle}:-1:0_0"'
    assert h["cache-control"] == "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746"
    assert h["content-type"] == "application/json; charset=utf-8"
    assert "electric-cursor" not in h


def test_empty_table_sequence(client: TestClient, backend: Backend) -> None:
    table = backend.create_table([])
    r = get(client, f"table={table}&offset=-1")
    assert body(r) == [body(r)[0]] and controls(r) == ["snapshot-end"]
    handle = r.headers["electric-handle"]
    r = get(client, f"table={table}&offset=0_0&handle={handle}")
    assert r.status_code == 200
    assert controls(r) == ["up-to-date"] and len(body(r)) == 1
    assert r.headers["electric-offset"] == "0_inf"
    assert r.headers["electric-up-to-date"] == ""
    assert r.headers["cache-control"] == "public, max-age=1, stale-while-revalidate=3"
    assert "electric-schema" in r.headers
    lsn = body(r)[0]["headers"]["global_last_seen_lsn"]
    assert isinstance(lsn, str) and lsn.isdigit()


def test_snapshot_chunks_then_log_chunks(client: TestClient, backend: Backend) -> None:
    many = [{"id": str(i), "title": "x"} for i in range(1, 8)]
    table = backend.create_table(many)
    handle, offset, chunks = follow_snapshot(client, table)
    seen = [m["value"] for chunk in chunks for m in chunk if "key" in m]
    assert seen == many
    assert offset == "0_inf"
    ends = [m["headers"].get("control") for chunk in chunks for m in chunk if "key" not in m]
    assert ends == ["snapshot-end", "up-to-date"]

    for i in range(8, 14):
        backend.insert(table, {"id": str(i), "title": "y"})
    got: list[dict[str, Any]] = []
    previous = offset
    while True:
        r = get(client, f"table={table}&offset={offset}&handle={handle}")
        assert r.status_code == 200
        got += rows(r)
        offset = r.headers["electric-offset"]
        assert offset != previous
        previous = offset
        if "up-to-date" in controls(r):
            assert r.headers["electric-up-to-date"] == ""
            assert body(r)[-1]["headers"]["global_last_seen_lsn"] == offset.split("_")[0]
            break
        assert "electric-up-to-date" not in r.headers
    assert [g["id"] for g in got] == [str(i) for i in range(8, 14)]
    items = [m for m in body(r) if "key" in m]
    assert all(m["headers"]["operation"] == "insert" for m in items)


def test_304_on_matching_if_none_match(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    r = get(client, f"table={table}&offset=-1")
    etag = r.headers["etag"]
    r2 = get(client, f"table={table}&offset=-1", headers={"If-None-Match": f'"other", {etag}'})
    assert r2.status_code == 304
    assert r2.content == b""
    assert r2.headers["etag"] == etag
    assert r2.headers["electric-handle"] == r.headers["electric-handle"]
    assert r2.headers["electric-offset"] == "0_0"
    assert r2.headers["cache-control"] == r.headers["cache-control"]
    assert r2.headers["electric-has-data"] == "true"
    assert "electric-schema" not in r2.headers
    r3 = get(client, f"table={table}&offset=-1", headers={"If-None-Match": '"nope"'})
    assert r3.status_code == 200


def test_unknown_handle_gets_409_with_the_shape_handle(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    handle = get(client, f"table={table}&offset=-1").headers["electric-handle"]
    r = get(client, f"table={table}&offset=0_0&handle=999-1")
    assert r.status_code == 409
    assert orjson.loads(r.content) == MUST_REFETCH
    assert r.headers["electric-handle"] == handle
    assert r.headers["cache-control"] == "public, max-age=60, must-revalidate"
    assert r.headers["etag"] == f'"{handle}::"'
    assert "electric-offset" not in r.headers
    assert "electric-cursor" not in r.headers
    assert "electric-has-data" not in r.headers


def test_unknown_handle_for_new_definition_creates_the_shape(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    r = get(client, f"table={table}&offset=0_0&handle=999-1&live")
    assert r.status_code == 409
    new = r.headers["electric-handle"]
    r = get(client, f"table={table}&offset=-1")
    assert r.headers["electric-handle"] == new


def test_rotated_shape_gets_409_with_new_handle(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    handle, offset, _ = follow_snapshot(client, table)
    backend.truncate(table)
    r = get(client, f"table={table}&offset={offset}&handle={handle}")
    assert r.status_code == 409
    assert r.headers["electric-handle"] != handle
    assert orjson.loads(r.content) == MUST_REFETCH
    r = get(client, f"table={table}&offset=-1")
    assert r.status_code == 200
    assert rows(r) == []


def test_offset_now(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    r = get(client, f"table={table}&offset=now")
    assert r.status_code == 200
    handle = r.headers["electric-handle"]
    assert r.headers["electric-offset"] == "0_inf"
    assert r.headers["electric-has-data"] == "false"
    assert r.headers["electric-up-to-date"] == ""
    assert "electric-schema" in r.headers
    assert r.headers["etag"] == f'"{handle}:now:0_inf"'
    [msg] = body(r)
    assert msg["headers"]["control"] == "up-to-date"
    assert msg["headers"]["global_last_seen_lsn"].isdigit()
    backend.insert(table, {"id": "9", "title": "n"})
    r = get(client, f"table={table}&offset=now&handle=ignored")
    assert r.status_code == 200
    assert r.headers["electric-handle"] == handle
    tx = r.headers["electric-offset"].split("_")[0]
    assert int(body(r)[0]["headers"]["global_last_seen_lsn"]) >= int(tx) > 0


def test_out_of_bounds_offset(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    handle, _, _ = follow_snapshot(client, table)
    r = get(client, f"table={table}&offset=99999999_0&handle={handle}")
    assert r.status_code == 400
    assert orjson.loads(r.content) == {
        "message": "Invalid request",
        "errors": {"offset": ["out of bounds for this shape"]},
    }
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["surrogate-control"] == "no-store"


def test_bad_params_are_400_with_exact_body(client: TestClient, backend: Backend) -> None:
    r = get(client, "table=t")
    assert r.status_code == 400
    assert orjson.loads(r.content) == {"message": "Invalid request", "errors": {"offset": ["can't be blank"]}}
    assert r.headers["cache-control"] == "no-store"
    assert "electric-has-data" not in r.headers
    assert "electric-offset" not in r.headers
    r = get(client, "offset=-1&table=t&live")
    assert orjson.loads(r.content)["errors"] == {"live": ["can't be true when offset == -1"]}


def test_engine_definition_errors_are_400(client: TestClient, backend: Backend) -> None:
    backend.create_table(ROWS)
    r = get(client, "table=nope_missing&offset=-1")
    assert r.status_code == 400
    assert orjson.loads(r.content) == {
        "message": "Invalid request",
        "errors": {
            "table": [
                'Table "public"."nope_missing" does not exist. If the table name contains capitals or special '
                "characters you must quote it."
            ]
        },
    }
    table = backend.create_table(ROWS)
    r = get(client, f"table={table}&offset=-1&where=1%20x%201")
    assert r.status_code == 400
    assert orjson.loads(r.content) == {
        "message": "Invalid request",
        "errors": {"where": ['At location 17: syntax error at or near "x"']},
    }


def test_head_has_get_headers_and_no_body(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    g = get(client, f"table={table}&offset=-1")
    h = client.simulate_head("/v1/shape", query_string=f"table={table}&offset=-1")
    assert h.status_code == 200
    assert h.content == b""
    for name in ("electric-handle", "electric-offset", "etag", "cache-control", "electric-schema"):
        assert h.headers[name] == g.headers[name]


@pytest.mark.parametrize("path", ["/v1/shape/", "/v1//shape", "/v1/%73hape"])
def test_path_normalisation(client: TestClient, backend: Backend, path: str) -> None:
    table = backend.create_table(ROWS)
    r = client.simulate_get(path, query_string=f"table={table}&offset=-1")
    assert r.status_code == 200
    assert rows(r) == ROWS
    assert r.headers["access-control-allow-methods"] == "GET, POST, HEAD, DELETE, OPTIONS"


def test_common_and_cors_headers_on_every_response(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    for r in (
        get(client, f"table={table}&offset=-1", headers={"Origin": "https://a.example"}),
        get(client, "table=t", headers={"Origin": "https://a.example"}),
        client.simulate_get("/nowhere", headers={"Origin": "https://a.example"}),
    ):
        assert r.headers["access-control-allow-origin"] == "https://a.example"
        assert r.headers["access-control-expose-headers"].startswith("electric-cursor,electric-handle")
        assert r.headers["electric-server"].startswith("ElectricSQL/")
        assert len(r.headers["x-request-id"]) >= 20
    r = client.simulate_get("/nowhere")
    assert r.status_code == 404
    assert r.text == "Not found"
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-methods"] == "GET, HEAD"
    rid = "abcdefghijklmnopqrstuvwxyz"
    r = get(client, f"table={table}&offset=-1", headers={"x-request-id": rid})
    assert r.headers["x-request-id"] == rid


def test_options_preflight(client: TestClient) -> None:
    r = client.simulate_options(
        "/v1/shape",
        headers={"Origin": "https://a.example", "Access-Control-Request-Headers": "if-none-match"},
    )
    assert r.status_code == 204
    assert r.headers["access-control-max-age"] == "86400"
    assert r.headers["access-control-allow-headers"] == "if-none-match"
    assert r.headers["access-control-allow-origin"] == "https://a.example"
    r = client.simulate_options(
        "/v1/shape", headers={"Access-Control-Request-Headers": "if-none-match, x-other"}
    )
    assert "access-control-allow-headers" not in r.headers


def test_delete_by_definition_and_by_handle(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    handle = get(client, f"table={table}&offset=-1").headers["electric-handle"]
    r = client.simulate_delete("/v1/shape", query_string=f"table={table}")
    assert r.status_code == 202
    assert r.content == b""
    assert r.headers["cache-control"] == "no-cache"
    r = get(client, f"table={table}&offset=0_0&handle={handle}")
    assert r.status_code == 409
    new = r.headers["electric-handle"]
    assert new != handle
    r = client.simulate_delete("/v1/shape", query_string=f"handle={new}")
    assert r.status_code == 202
    r = client.simulate_delete("/v1/shape", query_string=f"handle={new}")
    assert r.status_code == 404
    assert orjson.loads(r.content) == {"message": "No existing shape found"}


def test_delete_errors(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    other = backend.create_table(ROWS)
    get(client, f"table={table}&offset=-1")
    other_handle = get(client, f"table={other}&offset=-1").headers["electric-handle"]
    r = client.simulate_delete("/v1/shape", query_string=f"table={table}&handle={other_handle}")
    assert r.status_code == 400
    assert orjson.loads(r.content)["message"].startswith(
        "The specified shape definition and handle do not match."
    )
    r = client.simulate_delete("/v1/shape")
    assert r.status_code == 400
    assert orjson.loads(r.content) == {
        "message": "Invalid request",
        "errors": {"handle": ["can't be blank when shape definition is missing"]},
    }
    fresh = backend.create_table(ROWS)
    r = client.simulate_delete("/v1/shape", query_string=f"table={fresh}")
    assert r.status_code == 404


def test_delete_disabled(make_client: Any, backend: Backend, settings: Any) -> None:
    client = make_client(replace(settings, allow_shape_deletion=False))
    r = client.simulate_delete("/v1/shape", query_string="handle=x")
    assert r.status_code == 405
    assert orjson.loads(r.content) == {"message": "DELETE not allowed"}


def test_auth_with_secret(make_client: Any, backend: Backend, settings: Any) -> None:
    client = make_client(replace(settings, secret="s3cret"))
    table = backend.create_table(ROWS)
    for query in (f"table={table}&offset=-1", f"table={table}&offset=-1&secret=wrong"):
        r = get(client, query)
        assert r.status_code == 401
        assert orjson.loads(r.content) == {"message": "Unauthorized - Invalid API secret"}
        assert r.headers["access-control-allow-origin"] == "*"
    assert get(client, f"table={table}&offset=-1&secret=s3cret").status_code == 200
    assert get(client, f"table={table}&offset=-1&api_secret=s3cret").status_code == 200
    assert client.simulate_get("/v1//shape/", query_string=f"table={table}&offset=-1").status_code == 401
    assert client.simulate_delete("/v1/shape", query_string="handle=x").status_code == 401
    assert client.simulate_options("/v1/shape").status_code == 204


def test_post_without_body_is_get_with_no_cache(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    for payload in (b"", b"{}"):
        r = client.simulate_post("/v1/shape", query_string=f"table={table}&offset=-1", body=payload)
        assert r.status_code == 200
        assert rows(r) == ROWS
        assert r.headers["cache-control"] == "no-cache"
        assert "electric-schema" in r.headers


def test_post_body_errors(client: TestClient, backend: Backend) -> None:
    table = backend.create_table(ROWS)
    q = f"table={table}&offset=-1"
    r = client.simulate_post("/v1/shape", query_string=q, body=b"{nope")
    assert r.status_code == 400
    assert orjson.loads(r.content)["error"] == "Invalid JSON in request body"
    assert r.headers["cache-control"] == "no-cache"
    r = client.simulate_post("/v1/shape", query_string=q, body=b"[1]")
    assert (r.status_code, orjson.loads(r.content)) == (400, {"error": "Request body must be a JSON object"})
    r = client.simulate_post("/v1/shape", query_string=q, body=b" " * (1024 * 1024 + 10))
    assert (r.status_code, orjson.loads(r.content)) == (413, {"error": "Request body too large"})


class SnapshotIsTheWholeLog(FakeEngine):
    """A shape whose latest offset is the end of its only snapshot chunk (``0_0``)."""

    def read(self, handle: str, offset: LogOffset, *, per_item: bool = False) -> LogChunk:
        chunk = super().read(handle, offset, per_item=per_item)
        return replace(chunk, latest_offset=chunk.end_offset) if offset.is_before_all else chunk


def test_before_all_response_never_has_up_to_date() -> None:
    engine = SnapshotIsTheWholeLog()
    table = engine.create_table(ROWS)
    r = get(TestClient(build_app(engine, TEST_SETTINGS)), f"table={table}&offset=-1")
    assert r.status_code == 200
    assert controls(r) == ["snapshot-end"]
    assert "electric-up-to-date" not in r.headers
