"""TanStack DB's electric collection and ``@electric-sql/client`` (real npm packages) over the real service.

``tests/node/tanstack/run.mjs`` runs one scenario per call and prints one JSON line:

* ``modes``: eager, on-demand and progressive collections, each with two live queries (WHERE + ORDER BY +
  LIMIT, and a WHERE alone) that must equal the same queries on Postgres initially and after each of 12
  rounds of random insert/update/delete transactions (waiting on each round's txid with ``awaitTxId``);
* ``optimistic``: optimistic insert/update/delete through a small backend endpoint that returns
  ``pg_current_xact_id()::xid::text`` from the write transaction; each mutation resolves once its txid
  arrives on the stream, and the collection equals Postgres afterwards (eager and on-demand);
* ``request-snapshot``: ``ShapeStream.requestSnapshot`` on a ``log=changes_only`` stream injects exactly
  the subset rows, and a later write to one of them arrives with its txid.

The Node project is installed by ``npm ci`` in ``tests/node/tanstack`` (see its package.json).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.api.subset_support import module_database, module_service, module_tmp
from tests.fixtures.pg import ClusterInfo
from tests.fixtures.service import ServiceProcess

__all__ = ["module_tmp"]

NODE_DIR = Path(__file__).resolve().parents[1] / "node" / "tanstack"


@pytest.fixture(scope="module")
def dsn(pg_cluster: ClusterInfo) -> Iterator[str]:
    yield from module_database(pg_cluster, "tanstack_e2e")


@pytest.fixture(scope="module")
def svc(dsn: str, module_tmp: Path) -> Iterator[ServiceProcess]:
    yield from module_service(dsn, module_tmp, {"http": {"long_poll_timeout_ms": 3000}})


def run_scenario(svc: ServiceProcess, dsn: str, scenario: str, seed: int = 1) -> Any:
    node = shutil.which("node")
    assert node, "node is not on PATH"
    assert (NODE_DIR / "node_modules" / "@tanstack" / "electric-db-collection").is_dir(), (
        "the TanStack test project is not installed: run `npm ci` in tests/node/tanstack"
    )
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {
        **os.environ,
        "SHAPESYNC_URL": svc.url,
        "PG_HOST": str(info["host"]),
        "PG_PORT": str(info["port"]),
        "PG_USER": str(info["user"]),
        "PG_DATABASE": str(info["dbname"]),
        "SEED": str(seed),
    }
    proc = subprocess.run(
        [node, "run.mjs", scenario],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from {scenario} (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{scenario} failed: {result['error']}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0
    return result["result"]


def test_eager_on_demand_and_progressive_live_queries_match_postgres(svc: ServiceProcess, dsn: str) -> None:
    result = run_scenario(svc, dsn, "modes", seed=11)
    assert [r["mode"] for r in result] == ["eager", "on-demand", "progressive"]
    sizes = {r["mode"]: r["collectionSize"] for r in result}
    # on-demand loaded only what its queries needed; eager and progressive hold the whole table
    assert sizes["on-demand"] < sizes["eager"]
    assert sizes["progressive"] > sizes["on-demand"]


def test_optimistic_mutations_resolve_on_their_txid(svc: ServiceProcess, dsn: str) -> None:
    result = run_scenario(svc, dsn, "optimistic")
    assert [r["mode"] for r in result] == ["eager", "on-demand"]
    assert all(len(r["txids"]) == 3 for r in result)


def test_request_snapshot_on_a_changes_only_stream(svc: ServiceProcess, dsn: str) -> None:
    result = run_scenario(svc, dsn, "request-snapshot")
    assert result["snapshot"] == 8
