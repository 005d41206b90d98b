"""Subset snapshot latency benchmark: ``python -m bench.subset``.

A 1,000,000-row table (``events``: bigint PK, ``account_id`` with a B-tree index, four more columns) in a
private Postgres cluster, the real service (gunicorn + gevent, ``python -m sync.cli serve``) over it, and a
``log=changes_only`` shape on the table (what TanStack DB's on-demand mode creates).  Measured, interleaved
request by request with the same random ``account_id`` values:

* ours: ``GET /v1/shape?...&handle=H&offset=O&subset__where=account_id = $1&subset__params={"1":"<n>"}
  &subset__order_by=id&subset__limit=50`` (as TanStack DB sends it once its stream started) over one
  keep-alive HTTP connection, until the whole body is read: request parsing,
  validation and WHERE compilation, one ``REPEATABLE READ READ ONLY`` statement (prepared per subset
  connection) returning the snapshot metadata and the rows as shape log items built by Postgres;
* baseline: the same ``SELECT ... WHERE account_id = %s ORDER BY id LIMIT 50`` run directly with psycopg
  (autocommit, ``fetchall``) on its own connection.

Prints one JSON line: median latencies in ms (``ours``, ``baseline``), ``ratio`` = ours / baseline
(lower is better; target <= 2), p95s, ``http_floor_ms`` (the median of a shape request that runs no
query, interleaved in the same loop: what any request through the service costs), ``wsgi_floor_ms`` (the
bare HTTP round trip, same client and connection reuse: a trivial WSGI app under the same gunicorn gevent
worker, ``bench._load.floor_app``) and ``floor_ratio`` = (wsgi floor + direct query) / direct query, the
ratio no HTTP service running the same query could beat on this machine, ``ours_worker_cpu_us`` /
``wsgi_worker_cpu_us`` (the HTTP worker's CPU per request, subset requests alone / the trivial app's round
trip, measured after the latencies) and parameters.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import psycopg

from bench._common import emit, process_cpu_seconds
from bench._load import start_floor_app
from sync.postgres.cluster import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = """
CREATE TABLE events (id bigint PRIMARY KEY, account_id int NOT NULL, kind text NOT NULL,
                     amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL, note text);
"""
LOAD = """
INSERT INTO events
SELECT g, (g::bigint * 7919) %% %(accounts)s, (ARRAY['debit','credit','fee'])[1 + g %% 3],
       (g %% 100000) / 100.0, timestamptz '2026-01-01' + g * interval '1 second', 'note ' || g
FROM generate_series(1, %(rows)s) g
"""
DIRECT = (
    "SELECT id, account_id, kind, amount, created_at, note FROM events "
    "WHERE account_id = %s ORDER BY id LIMIT 50"
)


def start_service(dsn: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = workdir / "bench.toml"
    config.write_text(
        f'[database]\nurl = "{dsn}"\n[http]\nport = {port}\n[storage]\ndir = "{workdir / "storage"}"\n'
        '[logging]\nlevel = "WARNING"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SHAPESYNC_CONFIG"}}
    log = (workdir / "service.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((workdir / "service.log").read_text()[-3000:])
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/health")
            body = conn.getresponse().read()
            conn.close()
            if json.loads(body).get("status") == "active":
                return proc, port
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError("service did not become active")


def subset_path(account: int, handle: str, offset: str) -> str:
    query = {
        "table": "events",
        "offset": offset,
        "handle": handle,
        "log": "changes_only",
        "subset__where": "account_id = $1",
        "subset__params": json.dumps({"1": str(account)}),
        "subset__order_by": "id",
        "subset__limit": "50",
    }
    return "/v1/shape?" + urllib.parse.urlencode(query)


def fetch(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"subset request failed: {resp.status} {body[:300]!r}")
    return body


def _leaf_process(pid: int) -> int:
    """The last-started process at the bottom of ``pid``'s tree (the gunicorn worker under the master)."""
    while True:
        children: list[int] = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
        if not children:
            return pid
        pid = max(children)


def worker_cpu_us(pid: int, conn: http.client.HTTPConnection, paths: list[str]) -> float:
    """CPU (user + system) of the HTTP worker under ``pid`` per request, over ``paths`` fetched in a row."""
    worker = _leaf_process(pid)
    before = process_cpu_seconds(worker)
    for path in paths:
        fetch(conn, path)
    return (process_cpu_seconds(worker) - before) / len(paths) * 1e6


def p95(samples: list[float]) -> float:
    return sorted(samples)[max(0, int(len(samples) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--cpu-requests", type=int, default=400, help="requests of the worker CPU fields")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-subset-"))
    cluster = LocalCluster.temporary(fsync=False)
    cluster.start()
    proc: subprocess.Popen[bytes] | None = None
    floor_proc: subprocess.Popen[bytes] | None = None
    try:
        dsn = cluster.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)
            conn.execute(LOAD, {"rows": args.rows, "accounts": args.accounts})
            conn.execute("CREATE INDEX ON events (account_id)")
            conn.execute("VACUUM ANALYZE events")
        proc, port = start_service(dsn, workdir)
        floor_proc, floor_port = start_floor_app(workdir)
        rng = random.Random(42)
        accounts = [rng.randrange(args.accounts) for _ in range(args.warmup + args.requests)]
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        bare = http.client.HTTPConnection("127.0.0.1", floor_port, timeout=30)
        # the collection's first request creates the shape; later subsets name its handle and offset
        client.request("GET", "/v1/shape?table=events&offset=now&log=changes_only")
        first = client.getresponse()
        first.read()
        handle, log_offset = first.getheader("electric-handle"), first.getheader("electric-offset")
        assert handle is not None and log_offset is not None
        ours: list[float] = []
        base: list[float] = []
        floor: list[float] = []
        wsgi: list[float] = []
        now_path = f"/v1/shape?table=events&offset={log_offset}&handle={handle}&log=changes_only"
        rows_seen = 0
        with psycopg.connect(dsn, autocommit=True) as direct:
            for i, account in enumerate(accounts):
                path = subset_path(account, handle, log_offset)
                t0 = time.perf_counter()
                body = fetch(client, path)
                t1 = time.perf_counter()
                rows = direct.execute(DIRECT, (account,)).fetchall()
                t2 = time.perf_counter()
                fetch(client, now_path)
                t3 = time.perf_counter()
                fetch(bare, "/count")
                t4 = time.perf_counter()
                if i >= args.warmup:
                    ours.append((t1 - t0) * 1000)
                    base.append((t2 - t1) * 1000)
                    floor.append((t3 - t2) * 1000)
                    wsgi.append((t4 - t3) * 1000)
                    got = len(json.loads(body)["data"])
                    if got != len(rows):
                        raise RuntimeError(f"subset returned {got} rows, the direct query {len(rows)}")
                    rows_seen += got
        # extra, after the measurement: the worker CPU per request, subset requests alone, then the bare app's
        cpu_paths = [subset_path(account, handle, log_offset) for account in accounts[: args.cpu_requests]]
        ours_cpu = worker_cpu_us(proc.pid, client, cpu_paths)
        wsgi_cpu = worker_cpu_us(floor_proc.pid, bare, ["/count"] * len(cpu_paths))
        client.close()
        bare.close()
        ours_ms, base_ms = statistics.median(ours), statistics.median(base)
        wsgi_ms = statistics.median(wsgi)
        emit(
            {
                "name": "subset_snapshot_latency",
                "unit": "ms",
                "ours": round(ours_ms, 3),
                "baseline": round(base_ms, 3),
                "baseline_name": "psycopg direct query (same SELECT, autocommit, fetchall)",
                "ratio": round(ours_ms / base_ms, 3),
                "lower_is_better": True,
                "target_ratio": 2.0,
                "ours_p95": round(p95(ours), 3),
                # a shape request without any query (the log at its end): the HTTP + service floor
                "http_floor_ms": round(statistics.median(floor), 3),
                # the bare HTTP round trip (trivial WSGI app, same worker class and client) and the best ratio
                # any HTTP service running this query could reach: (round trip + query) / query
                "wsgi_floor_ms": round(wsgi_ms, 3),
                "floor_ratio": round((wsgi_ms + base_ms) / base_ms, 3),
                # worker CPU (user + system, /proc) per request, measured after the latencies: ours for
                # subset requests alone, the trivial app's for its bare round trip (10 ms ticks: +-25 us)
                "ours_worker_cpu_us": round(ours_cpu),
                "wsgi_worker_cpu_us": round(wsgi_cpu),
                "baseline_p95": round(p95(base), 3),
                "rows": args.rows,
                "accounts": args.accounts,
                "requests": args.requests,
                "limit": 50,
                "mean_rows_per_request": round(rows_seen / len(ours), 1),
            }
        )
    finally:
        for started in (proc, floor_proc):
            if started is not None and started.poll() is None:
                os.killpg(started.pid, signal.SIGTERM)
                started.wait(30)
        cluster.remove()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
