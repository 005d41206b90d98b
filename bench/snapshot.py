"""Initial sync benchmark: ``python -m bench.snapshot``.

A table of ``--rows`` rows (id, two ints, a timestamp, a 40-character text).  The real service (gunicorn,
one gevent worker) is asked for the whole table as a new shape: one HTTP client (``http.client``, one
keep-alive connection) reads from ``offset=-1`` chunk by chunk until ``electric-up-to-date``; the time
covers creating the shape, the snapshot query, storing it and serving every byte.  Baseline, same run:
``psql -c "COPY (SELECT <the shape's columns>::text ...) TO STDOUT"`` of the same rows to /dev/null.
Target: <= 1.5x COPY's time.

A second client then reads the same shape again (served from storage only) and we report its MB/s.
Also reported: the engine worker's CPU seconds per initial sync (``/proc``), to tell our cost from the
machine's load, ``ratio_of_fastest`` (our fastest sync / the fastest COPY), to tell when the median COPY
fell in its slow mode, and ``ratio_of_pairs``: the median of each sync's time over the COPY run right next
to it (the two share the machine's state; this VM's speed shifts between runs for both alike).  The
headline ``ratio`` stays median over median.  Seven syncs and seven COPY runs by default, interleaved (the
COPY before the sync on odd runs, after it on even ones).  Prints one JSON line (lower is better: seconds).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import psycopg

from bench._common import emit, process_cpu_seconds
from bench._service import ServiceProcess, temp_cluster

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, aid int NOT NULL, bid int, mtime timestamptz NOT NULL,
                    label text NOT NULL);
INSERT INTO items SELECT g, g %% 1000, g %% 7, '2026-01-01'::timestamptz + g * interval '1 second',
                         md5(g::text) || 'abcdefgh' FROM generate_series(1, %s) g;
"""
COPY_SQL = "COPY (SELECT id::text, aid::text, bid::text, mtime::text, label FROM items) TO STDOUT"


def read_shape(port: int, query: str) -> tuple[float, int, int]:
    """(seconds, bytes, requests) to read a shape from offset -1 to up-to-date."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    total = 0
    requests = 0
    t0 = time.perf_counter()
    conn.request("GET", f"/v1/shape?{query}&offset=-1")
    while True:
        resp = conn.getresponse()
        body = resp.read()
        requests += 1
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {body[:300]!r}")
        total += len(body)
        if resp.getheader("electric-up-to-date") is not None:
            break
        handle = resp.getheader("electric-handle")
        offset = resp.getheader("electric-offset")
        conn.request("GET", f"/v1/shape?{query}&handle={handle}&offset={offset}")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed, total, requests


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0 when unknown)."""
    return 0.0 if pid is None else process_cpu_seconds(pid)


def copy_baseline(bindir: str, dsn: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [f"{bindir}/psql", "-X", "-q", "-d", dsn, "-c", COPY_SQL],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--repeat", type=int, default=7, help="fresh shapes (distinct definitions), one COPY run each"
    )
    args = parser.parse_args()
    ours: list[float] = []
    again: list[tuple[float, int]] = []
    copies: list[float] = []
    sizes: list[int] = []
    worker_cpu: list[float] = []
    with temp_cluster() as (cluster, dsn), tempfile.TemporaryDirectory(prefix="bench-snap-") as tmp:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA % args.rows)
            conn.execute("VACUUM ANALYZE items")
        svc = ServiceProcess(dsn, Path(tmp)).start()
        try:
            svc.wait_healthy()
            copy_baseline(str(cluster.bindir), dsn)  # warm the table into shared buffers / page cache
            for rep in range(args.repeat):
                # a distinct definition per run (always true) so each run takes a new snapshot
                query = "table=items&where=" + urllib.parse.quote(f"id > {-rep - 1}")
                if rep % 2:
                    copies.append(copy_baseline(str(cluster.bindir), dsn))
                cpu0 = process_cpu(svc.worker_pid())
                seconds, size, requests = read_shape(svc.port, query)
                worker_cpu.append(process_cpu(svc.worker_pid()) - cpu0)
                ours.append(seconds)
                sizes.append(size)
                if not rep % 2:
                    copies.append(copy_baseline(str(cluster.bindir), dsn))
                s2, size2, _ = read_shape(svc.port, query)
                again.append((s2, size2))
        finally:
            svc.stop()
    o = statistics.median(ours)
    b = statistics.median(copies)
    mbps = statistics.median(size / s / 2**20 for s, size in again)
    emit(
        {
            "name": "snapshot",
            "unit": f"s for one client's initial sync of a {args.rows}-row shape",
            "ours": round(o, 3),
            "baseline": round(b, 3),
            "baseline_name": 'psql -c "COPY (SELECT <columns>::text FROM items) TO STDOUT" > /dev/null',
            "ratio": round(o / b, 3),
            "lower_is_better": True,
            "target_ratio": 1.5,
            "target_met": o / b <= 1.5,
            # COPY's time on this (virtual) machine is bimodal, ~0.55-0.65 s or ~0.85-1.1 s, the same work
            # taking proportionally more CPU time: a median of few runs can land in the slow mode, which
            # flatters the ratio; the ratio of the fastest runs tells when that happened
            "ratio_of_fastest": round(min(ours) / min(copies), 3),
            "ratio_of_pairs": round(statistics.median(x / c for x, c in zip(ours, copies, strict=True)), 3),
            "runs_s": [round(x, 3) for x in ours],
            "baseline_runs_s": [round(x, 3) for x in copies],
            "shape_bytes": sizes[-1],
            "requests_per_sync": requests,
            "worker_cpu_s_runs": [round(x, 2) for x in worker_cpu],
            "second_client_mb_per_s": round(mbps, 1),
            "second_client_runs_s": [round(s, 3) for s, _ in again],
            "rows": args.rows,
            "repeat": args.repeat,
        }
    )


if __name__ == "__main__":
    main()
