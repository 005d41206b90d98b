"""Shape count benchmark: ``python -m bench.shapes``.

Two figures of the real engine (in this process, ``sync.engine.Engine``), on a table of ``--rows`` rows:

* **create**: ``--create`` shapes ``id = k`` requested concurrently (``--concurrency`` request threads, each
  going through the same adapter the HTTP layer uses, ``api.engine_adapter.EngineShapes.get_or_create``)
  until every shape's snapshot is complete; reported as seconds and snapshots/s.  Baseline, same run: the
  same snapshot queries (``REPEATABLE READ READ ONLY`` transaction, ``pg_current_snapshot()``, the shape's
  ``SELECT``, streamed with ``COPY ... TO STDOUT``) issued by psycopg over as many connections as the
  engine's snapshot pool has: Postgres' own floor for taking those snapshots.
* **memory**: RSS of this process after ``gc.collect()`` before and after ``--idle`` more idle shapes
  (snapshots done, no waiter), divided by their number (target <= 20 KB per shape).

The process is patched with gevent first (actors run on greenlets, as in the gunicorn worker: the
production mode); ``--threads`` runs the engine on plain threads instead.  Either way a shape's three
actors (its supervisor, consumer and storage) hibernate while idle (``supervisors.hibernate``): they hold
no thread/greenlet of their own, so the memory figure is the shape's data and bookkeeping, not parked
stacks.

Prints one JSON line; the headline is the creation time (lower is better) against the baseline.
"""

from __future__ import annotations

import sys

if "--threads" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse
import gc
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from bench._common import emit
from bench._service import rss_bytes, start_engine, temp_cluster

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, value int NOT NULL, label text NOT NULL);
INSERT INTO items SELECT g, g %% 100, md5(g::text) FROM generate_series(1, %(rows)s) g;
ANALYZE items;
"""


def create_shapes(engine: Any, keys: range, concurrency: int) -> list[str]:
    """Request one shape ``id = k`` per key concurrently; return handles once every snapshot is done."""
    from api.engine_adapter import EngineShapes  # noqa: PLC0415
    from api.engine_port import ShapeDefinition  # noqa: PLC0415

    port = EngineShapes(engine)
    directory = engine.services.directory

    def one(k: int) -> str:
        return str(port.get_or_create(ShapeDefinition("items", where=f"id = {k}")))

    with ThreadPoolExecutor(concurrency) as pool:
        handles = list(pool.map(one, keys))
    # Snapshots complete about in request order: each poll goes on from the first one not complete yet (a
    # poll of every pending shape each 5 ms took ~5% of the engine's event loop, in this very process).
    deadline = time.monotonic() + 600
    done = 0
    while done < len(handles):
        if directory.get(handles[done]).reader.snapshot_complete:
            done += 1
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(handles) - done} snapshots not complete")
        time.sleep(0.005)
    return handles


def baseline_snapshots(dsn: str, keys: range, connections: int) -> float:
    """Seconds for psycopg to take the same snapshots over ``connections`` connections."""
    todo = iter(keys)
    lock = threading.Lock()

    def worker() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                with lock:
                    k = next(todo, None)
                if k is None:
                    return
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    conn.execute("SELECT pg_current_snapshot()").fetchone()
                    with conn.cursor().copy(
                        f"COPY (SELECT id::text, value::text, label FROM items WHERE id = {k}) TO STDOUT"
                    ) as copy:
                        for _ in copy:
                            pass

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--create", type=int, default=1_000, help="shapes created concurrently")
    parser.add_argument("--idle", type=int, default=2_000, help="idle shapes for the memory figure")
    parser.add_argument("--concurrency", type=int, default=100, help="concurrent creating requests")
    parser.add_argument("--repeat", type=int, default=2, help="creation rounds (fresh shapes each)")
    parser.add_argument("--threads", action="store_true", help="run the engine on plain threads, not gevent")
    args = parser.parse_args()
    pool_size = 8  # the engine's default snapshot_pool_size, used by both sides

    with temp_cluster() as (_, dsn), tempfile.TemporaryDirectory(prefix="bench-shapes-") as root:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA % {"rows": args.rows})
        engine = start_engine(dsn, root, database={"snapshot_pool_size": pool_size})
        try:
            create_shapes(engine, range(args.rows, args.rows + 1), 1)  # publication + catalog warm
            ours: list[float] = []
            base: list[float] = []
            next_key = 1
            for rep in range(args.repeat):
                keys = range(next_key, next_key + args.create)
                next_key += args.create
                if rep % 2:
                    base.append(baseline_snapshots(dsn, keys, pool_size))
                t0 = time.perf_counter()
                create_shapes(engine, keys, args.concurrency)
                ours.append(time.perf_counter() - t0)
                if not rep % 2:
                    base.append(baseline_snapshots(dsn, keys, pool_size))
            gc.collect()
            time.sleep(0.5)
            gc.collect()
            before = rss_bytes()
            shapes_before = len(engine.services.directory.handles())
            create_shapes(engine, range(next_key, next_key + args.idle), args.concurrency)
            time.sleep(1.0)  # let flush timers and snapshot workers settle
            gc.collect()
            after = rss_bytes()
            shapes_after = len(engine.services.directory.handles())
        finally:
            engine.stop(60)
    per_shape = (after - before) / max(1, shapes_after - shapes_before)
    ours_s = statistics.median(ours)
    base_s = statistics.median(base)
    emit(
        {
            "name": "shapes",
            "unit": f"s to create {args.create} shapes concurrently",
            "ours": round(ours_s, 3),
            "baseline": round(base_s, 3),
            "baseline_name": (
                f"psycopg: the same {args.create} snapshot transactions (REPEATABLE READ READ ONLY, "
                f"pg_current_snapshot(), COPY of the shape's rows) over {pool_size} connections"
            ),
            "ratio": round(ours_s / base_s, 3),
            "lower_is_better": True,
            "snapshots_per_s": round(args.create / ours_s, 1),
            "baseline_snapshots_per_s": round(args.create / base_s, 1),
            "runs_s": [round(x, 3) for x in ours],
            "baseline_runs_s": [round(x, 3) for x in base],
            "memory_per_idle_shape_kb": round(per_shape / 1024, 2),
            "memory_target_kb": 20,
            "memory_target_met": per_shape <= 20 * 1024,
            "idle_shapes_measured": shapes_after - shapes_before,
            "shapes_alive_at_end": shapes_after,
            "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "mode": "threads" if args.threads else "gevent",
            "rows": args.rows,
            "create": args.create,
            "concurrency": args.concurrency,
            "snapshot_pool_size": pool_size,
            "repeat": args.repeat,
        }
    )


if __name__ == "__main__":
    main()
