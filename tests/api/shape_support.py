"""Helpers of the tests that drive the shape resource in process, through a Falcon TestClient over the
``backend`` engine (test_shape_resource, test_live, test_live_memo): ``get`` a shape, read the answer's
``body``, ``rows`` and ``controls``, ``follow_snapshot`` to its end, ``caught_up`` on a fresh one-row
table, and run a request in the ``Background``.  (tests/api/e2e_support.py has their counterparts for the
real service over HTTP.)  They live here because a test module must not import from another test module.
"""

from __future__ import annotations

from typing import Any

import orjson
from falcon.testing import Result, TestClient

from tests.api.conftest import Backend
from tests.background import Background

__all__ = ["Background", "body", "caught_up", "controls", "follow_snapshot", "get", "rows"]

CAUGHT_UP_ROWS = [{"id": "1", "title": "a"}]  # the one row of caught_up's table


def get(client: TestClient, query: str, **kwargs: Any) -> Result:
    return client.simulate_get("/v1/shape", query_string=query, **kwargs)


def body(result: Result) -> list[dict[str, Any]]:
    data = orjson.loads(result.content)
    assert isinstance(data, list)
    return data


def controls(result: Result) -> list[str]:
    return [m["headers"]["control"] for m in body(result) if "control" in m["headers"]]


def rows(result: Result) -> list[dict[str, Any]]:
    return [m["value"] for m in body(result) if "key" in m]


def follow_snapshot(client: TestClient, table: str) -> tuple[str, str, list[list[dict[str, Any]]]]:
    """Read the snapshot chunk by chunk; returns handle, final offset and the chunks' bodies."""
    r = get(client, f"table={table}&offset=-1")
    handle, offset = r.headers["electric-handle"], r.headers["electric-offset"]
    chunks = [body(r)]
    while "up-to-date" not in controls(r):
        r = get(client, f"table={table}&offset={offset}&handle={handle}")
        assert r.status_code == 200
        offset = r.headers["electric-offset"]
        chunks.append(body(r))
    return handle, offset, chunks


def caught_up(client: TestClient, backend: Backend) -> tuple[str, str, str]:
    table = backend.create_table(CAUGHT_UP_ROWS)
    handle, offset, _ = follow_snapshot(client, table)
    return table, handle, offset
