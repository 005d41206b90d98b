"""Shared fixture support for the subset / TanStack end-to-end tests: one service per test module.

A service start (gunicorn + engine) costs seconds, so the subset protocol tests share one database and one
service per module; every test uses its own table so tests stay independent.  The helpers of
test_subset.py are here too, to keep that module under the house limit of 400 lines: its table
(``create_items_table``), its requests (``subset``, ``wire``), reading their ids and Postgres's own rows
(``ids``, ``pg_rows``), and the invalid subsets it sends (``INVALID_SUBSETS``).
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fixtures.pg import ClusterInfo, drop_database
from tests.fixtures.service import ServiceProcess


def module_database(pg_cluster: ClusterInfo, name: str) -> Iterator[str]:
    admin = pg_cluster.dsn()
    drop_database(admin, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                psycopg.sql.Identifier(name)
            )
        )
    try:
        yield pg_cluster.dsn(name)
    finally:
        drop_database(admin, name)


def module_service(
    dsn: str, workdir: Path, extra: Mapping[str, Mapping[str, Any]] | None = None
) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(dsn, workdir, extra).start()
    try:
        svc.wait_healthy()
        yield svc
    finally:
        svc.stop()


def request(
    svc: ServiceProcess,
    params: Mapping[str, str],
    *,
    method: str = "GET",
    body: Any = None,
    raw_body: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], Any]:
    """``/v1/shape`` with ``params``; returns (status, lower-cased headers, decoded JSON body or bytes)."""
    url = svc.url + "/v1/shape?" + urllib.parse.urlencode(params)
    data = raw_body if raw_body is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, payload = resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        status, headers, payload = err.code, dict(err.headers.items()), err.read()
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        decoded: Any = json.loads(payload) if payload else None
    except json.JSONDecodeError:
        decoded = payload
    return status, lowered, decoded


def create_items_table(dsn: str, name: str, rows: int) -> None:
    """A fresh table ``name`` with ``rows`` rows: id, grp (0..4), name, score (NULL for every 7th), tag."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        conn.execute(
            f'CREATE TABLE "{name}" (id int PRIMARY KEY, grp int NOT NULL, name text NOT NULL, '
            "score int, tag text)"
        )
        conn.execute(f'CREATE INDEX ON "{name}" (grp)')
        conn.execute(
            f'INSERT INTO "{name}" SELECT i, i % 5, $$n$$ || lpad(i::text, 4, $$0$$), '
            "CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 37) % 50 END, "
            f"CASE WHEN i % 2 = 0 THEN $$even$$ ELSE $$odd$$ END FROM generate_series(1, {rows}) i"
        )


def pg_rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def ids(body: dict[str, Any]) -> list[int]:
    return [int(item["value"]["id"]) for item in body["data"]]


def subset(svc: ServiceProcess, table: str, **sub: str) -> tuple[int, dict[str, str], Any]:
    params = {"table": table, "offset": "-1"}
    params.update({f"subset__{k}": v for k, v in sub.items()})
    return request(svc, params)


def wire(
    svc: ServiceProcess, method: str, path: str, headers: dict[str, str]
) -> tuple[int, list[Any], bytes]:
    """Status, every header in wire order (names lower-cased), body."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        return r.status, [(k.lower(), v) for k, v in r.getheaders()], r.read()
    finally:
        conn.close()


# Invalid subset parameters and the errors they give (test_subset.py, under ``errors.subset``).
INVALID_SUBSETS = [
    ({"limit": "0", "order_by": "id"}, {"limit": ["must be greater than 0"]}),
    ({"limit": "x", "order_by": "id"}, {"limit": ["is invalid"]}),
    ({"offset": "-1", "order_by": "id"}, {"offset": ["must be greater than or equal to 0"]}),
    ({"limit": "5"}, {"order_by": ["order_by is required when limit or offset is present"]}),
    ({"offset": "5"}, {"order_by": ["order_by is required when limit or offset is present"]}),
    (
        {"limit": "0", "offset": "-2"},
        {
            "limit": ["must be greater than 0"],
            "offset": ["must be greater than or equal to 0"],
            "order_by": ["order_by is required when limit or offset is present"],
        },
    ),
    ({"where": "id IN (SELECT id FROM items)"}, {"where": ["Subqueries are not allowed in subsets"]}),
    ({"where": "EXISTS (SELECT 1)"}, {"where": ["Subqueries are not allowed in subsets"]}),
    ({"where": "1 x 1"}, {"where": ['At location 17: syntax error at or near "x"']}),
    ({"where": "nope = 1"}, {"where": ["At location 0: unknown reference nope"]}),
    ({"where": "id = $1", "params": '{"2":"1"}'}, {"params": ["Parameters must be numbered sequentially, starting from 1"]}),
    ({"where": "id = $1", "params": '{"a":"1"}'}, {"params": ["Parameters can only use numbers as keys"]}),
    ({"where": "id = $1", "params": "[1]"}, {"params": ["params must be a JSON object"]}),
    ({"where": "id = $1", "params": "{"}, {"params": ["params must be valid JSON"]}),
]  # fmt: skip


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("svc")
