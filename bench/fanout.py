"""Fan-out benchmark: ``python -m bench.fanout``: commit -> the LAST of N long-polling clients answered.

The real service (``python -m sync.cli serve``: gunicorn, one gevent worker) serves one shape; a separate
gevent client process (``bench._load``, raw sockets) parks N live long-polls on it (N = 100, 1,000, 5,000);
once the service's ``shapesync_live_waiters`` gauge shows all N (plus a short settle so each reaches its
consumer), one row is committed.  The figure is the time from just before the COMMIT to the completion of
the last client's response (max over clients; median over ``--repeat`` runs).

Baseline, same run, same client: the HTTP stack's own floor, a trivial WSGI app under the same gunicorn
gevent worker that parks every request on one ``gevent.event.Event`` and answers them all when ``/fire``
sets it (``bench._load.floor_app``); its figure is measured from just before the ``/fire`` request.

Targets: 1,000 clients <= 150 ms, 5,000 clients <= 700 ms.  Prints one JSON line; the headline is the
largest N (lower is better).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg

from bench._common import emit
from bench._load import start_floor_app
from bench._service import ROOT, ServiceProcess, raise_nofile, temp_cluster

TARGETS_MS = {1000: 150, 5000: 700}


def follow(svc: ServiceProcess, query: str) -> tuple[str, str]:
    """Read a shape from the start until up-to-date; return (handle, offset)."""
    code, headers, _ = svc.get(f"/v1/shape?{query}&offset=-1")
    assert code == 200, code
    handle, offset = headers["electric-handle"], headers["electric-offset"]
    return handle, catch_up(svc, query, handle, offset)


def catch_up(svc: ServiceProcess, query: str, handle: str, offset: str) -> str:
    for _ in range(1000):
        code, headers, _ = svc.get(f"/v1/shape?{query}&handle={handle}&offset={offset}")
        assert code == 200, (code, headers)
        offset = headers["electric-offset"]
        if "electric-up-to-date" in headers:
            return offset
    raise RuntimeError("shape never up to date")


def gauge(svc: ServiceProcess, name: str) -> float:
    _, _, body = svc.get("/metrics", timeout=10)
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def start_client(port: int, path: str, n: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._load", "--port", str(port), "--path", path, "--n", str(n)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "SENT":
        proc.kill()
        raise RuntimeError(f"load client failed: {line!r}")
    return proc


def finish_client(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=120)
    if proc.returncode:
        raise RuntimeError(f"load client exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def wait_parked(count: Any, n: int, settle: float) -> None:
    deadline = time.monotonic() + 120
    while count() < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count()} of {n} requests parked")
        time.sleep(0.02)
    time.sleep(settle)  # admitted -> parked in the consumer: no observable event across processes


def summarise(result: dict[str, Any], t0: float, n: int) -> dict[str, float]:
    done = sorted(result["done"])
    ok = sum(1 for s in result["statuses"] if s == 200)
    if len(done) != n or ok != n:
        raise RuntimeError(f"{len(done)} responses, {ok} with 200, of {n}")
    return {
        "last_ms": (done[-1] - t0) * 1000,
        "p99_ms": (done[int(0.99 * (len(done) - 1))] - t0) * 1000,
        "median_ms": (done[len(done) // 2] - t0) * 1000,
        "first_ms": (done[0] - t0) * 1000,
        "over_1s": float(sum(1 for d in done if d - t0 > 1.0)),
    }


def run_ours(svc: ServiceProcess, dsn: str, state: dict[str, Any], n: int, settle: float) -> dict[str, float]:
    query = state["query"]
    path = f"/v1/shape?{query}&handle={state['handle']}&offset={state['offset']}&live=true"
    proc = start_client(svc.port, path, n)
    try:
        wait_parked(lambda: gauge(svc, "shapesync_live_waiters"), n, settle)
        with psycopg.connect(dsn, autocommit=True) as conn:
            state["next_id"] += 1
            t0 = time.monotonic()
            conn.execute("INSERT INTO items VALUES (%s, 'fan-out')", (state["next_id"],))
        result = finish_client(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    state["offset"] = catch_up(svc, query, state["handle"], state["offset"])
    return summarise(result, t0, n)


def run_floor(port: int, n: int, settle: float) -> dict[str, float]:
    import urllib.request  # noqa: PLC0415

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
            return bytes(resp.read())

    proc = start_client(port, "/wait", n)
    try:
        wait_parked(lambda: int(get("/count")), n, settle)
        t0 = time.monotonic()
        get("/fire")
        result = finish_client(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    return summarise(result, t0, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,1000,5000", help="comma-separated N")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after all are admitted")
    args = parser.parse_args()
    ns = [int(x) for x in args.clients.split(",")]
    raise_nofile()
    results: dict[int, dict[str, Any]] = {}
    with temp_cluster() as (_, dsn), tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        workdir = Path(tmp)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL)")
            conn.execute("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 100) g")
        svc = ServiceProcess(dsn, workdir, {"http": {"long_poll_timeout_ms": 40000}}).start()
        floor, floor_port = start_floor_app(workdir)
        try:
            svc.wait_healthy()
            query = "table=items&where=" + urllib.parse.quote("id > 0")
            handle, offset = follow(svc, query)
            state: dict[str, Any] = {"query": query, "handle": handle, "offset": offset, "next_id": 1000}
            for n in ns:
                ours: list[dict[str, float]] = []
                base: list[dict[str, float]] = []
                for rep in range(args.repeat):
                    if rep % 2:
                        base.append(run_floor(floor_port, n, args.settle))
                    ours.append(run_ours(svc, dsn, state, n, args.settle))
                    if not rep % 2:
                        base.append(run_floor(floor_port, n, args.settle))
                o = statistics.median(r["last_ms"] for r in ours)
                b = statistics.median(r["last_ms"] for r in base)
                results[n] = {
                    "ours_last_ms": round(o, 1),
                    "baseline_last_ms": round(b, 1),
                    "ratio": round(o / b, 2),
                    "ours_median_client_ms": round(statistics.median(r["median_ms"] for r in ours), 1),
                    "ours_first_ms": round(statistics.median(r["first_ms"] for r in ours), 1),
                    "ours_runs_last_ms": [round(r["last_ms"], 1) for r in ours],
                    "ours_runs_p99_ms": [round(r["p99_ms"], 1) for r in ours],
                    "ours_runs_over_1s": [int(r["over_1s"]) for r in ours],
                    "baseline_runs_last_ms": [round(r["last_ms"], 1) for r in base],
                    "target_ms": TARGETS_MS.get(n),
                    "target_met": o <= TARGETS_MS[n] if n in TARGETS_MS else None,
                }
        except BaseException:
            sys.stderr.write(svc.output()[-3000:])
            raise
        finally:
            svc.stop()
            os.killpg(floor.pid, signal.SIGTERM)
            floor.wait(30)
    top = results[max(ns)]
    emit(
        {
            "name": "fanout",
            "unit": f"ms from commit to the last of {max(ns)} long-polling clients answered",
            "ours": top["ours_last_ms"],
            "baseline": top["baseline_last_ms"],
            "baseline_name": (
                "floor of the HTTP stack: trivial WSGI app under the same gunicorn gevent worker answering "
                "all parked requests on one gevent Event (same client process)"
            ),
            "ratio": top["ratio"],
            "lower_is_better": True,
            "clients": {str(n): r for n, r in results.items()},
            "targets_ms": TARGETS_MS,
            "repeat": args.repeat,
            "settle_s": args.settle,
        }
    )


if __name__ == "__main__":
    main()
