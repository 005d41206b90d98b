"""Write -> client latency benchmark: ``python -m bench.latency``.

The real service (gunicorn, one gevent worker).  One client long-polls the shape ``id > 1000000`` of
``items``; each sample: once the service's ``shapesync_live_waiters`` gauge shows the request admitted (and a
2 ms settle), one row with a new id > 1,000,000 is committed; the sample is the time from just before the
INSERT (autocommit) to the client having the complete response.  Measured with only that shape alive, then
with ``--shapes`` shapes alive (the others are ``id = k``, k = 1..N-1, on the same table, created through
HTTP beforehand and not matched by the writes).  Target: p50 <= 10 ms with 10,000 shapes.

Baseline, same run: Postgres' own write -> listener path: the same INSERT plus ``NOTIFY`` in one transaction,
received by a psycopg ``LISTEN`` connection (``conn.notifies()``).

Prints one JSON line; the headline is p50 with the most shapes alive (lower is better).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from bench._common import emit
from bench._service import ServiceProcess, raise_nofile, temp_cluster

MEASURED = "table=items&where=" + urllib.parse.quote("id > 1000000")


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def up_to_date(conn: http.client.HTTPConnection, query: str) -> tuple[str, str]:
    """Follow a shape from the start to up-to-date like a client: 503 -> retry after the hint, 409 ->
    start again from the new handle."""
    path = f"/v1/shape?{query}&offset=-1"
    for _ in range(200):
        status, headers, _ = _get(conn, path)
        if status == 503:
            time.sleep(float(headers.get("retry-after", "1")) / 4)
            continue
        if status == 409:
            path = f"/v1/shape?{query}&offset=-1"
            continue
        assert status == 200, status
        handle, offset = headers["electric-handle"], headers["electric-offset"]
        if "electric-up-to-date" in headers:
            return handle, offset
        path = f"/v1/shape?{query}&handle={handle}&offset={offset}"
    raise RuntimeError(f"{query}: never up to date")


def live_waiters(conn: http.client.HTTPConnection) -> float:
    _, _, body = _get(conn, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("shapesync_live_waiters "):
            return float(line.split()[1])
    return 0.0


def measure_ours(svc: ServiceProcess, dsn: str, samples: int, next_id: list[int]) -> list[float]:
    client = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
    probe = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
    handle, offset = up_to_date(client, MEASURED)
    out: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as db:
        for _ in range(samples):
            client.request("GET", f"/v1/shape?{MEASURED}&handle={handle}&offset={offset}&live=true")
            deadline = time.monotonic() + 10
            while live_waiters(probe) < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the live request was never admitted")
            time.sleep(0.002)
            next_id[0] += 1
            t0 = time.perf_counter()
            db.execute("INSERT INTO items VALUES (%s, 'latency')", (next_id[0],))
            resp = client.getresponse()
            resp.read()
            out.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise RuntimeError(f"live request answered {resp.status}")
            offset = resp.getheader("electric-offset") or offset
    client.close()
    probe.close()
    return out


def measure_notify(dsn: str, samples: int, next_id: list[int]) -> list[float]:
    out: list[float] = []
    got = threading.Event()
    received: list[float] = []
    ready = threading.Event()

    def listen() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("LISTEN bench")
            ready.set()
            for _ in conn.notifies(timeout=120, stop_after=samples):
                received.append(time.perf_counter())
                got.set()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(30)
    with psycopg.connect(dsn, autocommit=True) as db:
        for _ in range(samples):
            got.clear()
            time.sleep(0.002)
            next_id[0] += 1
            t0 = time.perf_counter()
            with db.transaction():
                db.execute("INSERT INTO items VALUES (%s, 'notify')", (next_id[0],))
                db.execute("NOTIFY bench")
            if not got.wait(30):
                raise RuntimeError("notification not received")
            out.append(received[-1] - t0)
    thread.join(30)
    return out


def create_shapes(svc: ServiceProcess, n: int, concurrency: int) -> float:
    def one(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=300)
        try:
            up_to_date(conn, "table=items&where=" + urllib.parse.quote(f"id = {k}"))
        finally:
            conn.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(1, n + 1)))
    return time.perf_counter() - t0


def stats(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {
        "p50_ms": round(statistics.median(s) * 1000, 2),
        "p99_ms": round(s[min(len(s) - 1, int(0.99 * len(s)))] * 1000, 2),
        "max_ms": round(s[-1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=10_000, help="shapes alive in the second phase")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent shape creations")
    args = parser.parse_args()
    limit = raise_nofile()
    if 2 * args.shapes + 200 > limit:  # measured: 2 per shape read once (reader), 4 more once it has log data
        sys.stderr.write(
            f"warning: {args.shapes} shapes need ~{2 * args.shapes} descriptors in the service (its reader "
            f"keeps snapshot.json/.chunks open per shape); the limit here is {limit}: expect EMFILE\n"
        )
    phases: dict[str, Any] = {}
    next_id = [1_000_000]
    with temp_cluster() as (_, dsn), tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL)")
            conn.execute(
                "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, %s) g", (args.shapes,)
            )
        svc = ServiceProcess(dsn, Path(tmp), {"http": {"long_poll_timeout_ms": 20000}}).start()
        try:
            svc.wait_healthy()
            base = measure_notify(dsn, args.samples, next_id)
            phases["1"] = {"ours": stats(measure_ours(svc, dsn, args.samples, next_id))}
            create_s = create_shapes(svc, args.shapes - 1, args.concurrency)
            phases[str(args.shapes)] = {
                "ours": stats(measure_ours(svc, dsn, args.samples, next_id)),
                "create_shapes_s": round(create_s, 1),
            }
            base2 = measure_notify(dsn, args.samples, next_id)
        except BaseException:
            import shutil  # noqa: PLC0415

            shutil.copy(svc.log, "/tmp/bench-latency-service.log")
            sys.stderr.write("service log kept in /tmp/bench-latency-service.log\n")
            raise
        finally:
            svc.stop()
    baseline = stats(base + base2)
    top = phases[str(args.shapes)]["ours"]
    emit(
        {
            "name": "latency",
            "unit": f"ms p50, write -> long-polling client, {args.shapes} shapes alive",
            "ours": top["p50_ms"],
            "baseline": baseline["p50_ms"],
            "baseline_name": "Postgres LISTEN/NOTIFY: INSERT + NOTIFY committed -> psycopg listener (p50)",
            "ratio": round(top["p50_ms"] / baseline["p50_ms"], 2),
            "lower_is_better": True,
            "target_p50_ms": 10,
            "target_met": top["p50_ms"] <= 10,
            "shapes_alive": phases,
            "baseline_stats": baseline,
            "samples": args.samples,
        }
    )


if __name__ == "__main__":
    main()
