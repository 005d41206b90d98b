"""Shared fixture support for the subset / TanStack end-to-end tests: one service per test module.

A service start (gunicorn + engine) costs seconds, so the subset protocol tests share one database and one
service per module; every test uses its own table so tests stay independent.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("svc")
