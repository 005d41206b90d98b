"""Replication throughput benchmark: ``python -m bench.replication``.

Two workloads, committed before measuring so both consumers read the same WAL from their own slot:
100,000 rows in 1,000-row transactions (``batched``) and 100,000 single-row transactions (``single``, a
procedure that COMMITs in a loop).  Each is received by ``pg_recvlogical`` (pgoutput, proto_version 1, the
same publication, to /dev/null, until ``--endpos``: the walsender's send path is the limit) and by our
pipeline (the Connection subtree: advisory lock, ReplicationClient, pgoutput decoder and fragment
assembly into a counting sink).  Both times include connecting.  Each workload is repeated
``--repeat`` times with the consumer order alternating, and medians are reported.

Our pipeline runs, by default, as production runs it: in a child process under gevent monkey patching
(``--runtime gevent``; timed from inside, so interpreter start-up is not counted); ``--runtime threads``
runs it in this process on plain threads.  CPU time per row of both consumer processes is reported too:
on a machine shared with other work, the consumer that needs less CPU leaves more to the WAL sender.

Prints one JSON line; the headline ``ours``/``baseline``/``ratio`` is the workload with the lower ratio
(target >= 0.8 on both), the per-workload figures are under ``workloads``.
"""

from __future__ import annotations

import sys

if len(sys.argv) > 1 and sys.argv[1] == "--child":  # our pipeline as production runs it
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import statistics
import subprocess
import threading
import time
from typing import Any

import psycopg

from bench import _service
from bench._common import emit
from supervisors import stop_tree, wait_started
from sync.postgres.cluster import LocalCluster
from sync.replication.changes import ReplicationEvent, TransactionFragment
from sync.replication.connection import ConnectionConfig, ConnectionHandles, start_connection_supervisor
from sync.replication.sink import CallbackSink, Pending

STREAM = "bench"
PUB = f"shapesync_pub_{STREAM}"
OUR_SLOT = f"shapesync_slot_{STREAM}"
RECV_SLOT = "bench_recvlogical"

SCHEMA = """
CREATE TABLE bench (id bigserial PRIMARY KEY, aid int, bid int, tid int, delta int, mtime timestamp,
                    filler char(22));
CREATE PUBLICATION shapesync_pub_bench FOR TABLE bench;
CREATE PROCEDURE single_rows(n int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..n LOOP
    INSERT INTO bench (aid, bid, tid, delta, mtime, filler) VALUES (i, i % 10, i % 100, i, now(), 'x');
    COMMIT;
  END LOOP;
END $$;
"""


def run_workload(conn: psycopg.Connection[Any], kind: str, rows: int, batch: int) -> str:
    if kind == "batched":
        for start in range(0, rows, batch):
            conn.execute(
                "INSERT INTO bench (aid, bid, tid, delta, mtime, filler) "
                "SELECT g, g %% 10, g %% 100, g, now(), 'x' FROM generate_series(%s::int, %s::int) g",
                (start + 1, start + batch),
            )
    else:
        conn.execute("CALL single_rows(%s)", (rows,))
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def recvlogical(cluster: LocalCluster, dbname: str, end_lsn: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of pg_recvlogical) to receive everything up to ``end_lsn``."""
    return _service.recvlogical(cluster.bindir, cluster.dsn(dbname), RECV_SLOT, PUB, end_lsn)


def ours(dsn: str, rows: int, runtime_mode: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for our pipeline to receive ``rows`` rows."""
    if runtime_mode == "threads":
        return ours_here(dsn, rows)
    out = subprocess.run(
        [sys.executable, "-m", "bench.replication", "--child", dsn, str(rows)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["wall"]), float(result["cpu"])


def ours_here(dsn: str, rows: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to receive ``rows`` rows, in this process."""
    done = threading.Event()
    count = [0]

    def deliver(event: ReplicationEvent) -> Pending | None:
        if isinstance(event, TransactionFragment):
            count[0] += len(event.changes)
            if count[0] >= rows:
                done.set()
        return None

    config = ConnectionConfig(dsn=dsn, stream_id=STREAM, max_batch=500, status_interval=1.0)
    handles = ConnectionHandles(config)
    t0 = time.perf_counter()
    c0 = time.process_time()
    sup = start_connection_supervisor(config, CallbackSink(deliver), handles)
    try:
        wait_started(sup, 30)
        if not done.wait(600):
            raise RuntimeError(f"only {count[0]} of {rows} rows received: {handles.health()}")
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        stop_tree(sup, 30)


def drop_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    """Drop once its WAL sender has noticed that the consumer went away."""
    deadline = time.monotonic() + 30
    while True:
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return


def measure(
    cluster: LocalCluster, dbname: str, kind: str, rows: int, batch: int, rep: int, runtime_mode: str
) -> tuple[float, float, float, float]:
    """(our rows/s, baseline rows/s, our CPU µs per row, baseline CPU µs per row)."""
    dsn = cluster.dsn(dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for slot in (OUR_SLOT, RECV_SLOT):
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        end_lsn = run_workload(conn, kind, rows, batch)
        conn.execute("CHECKPOINT")
        if rep % 2 == 0:
            base, base_cpu = recvlogical(cluster, dbname, end_lsn)
            mine, cpu = ours(dsn, rows, runtime_mode)
        else:
            mine, cpu = ours(dsn, rows, runtime_mode)
            base, base_cpu = recvlogical(cluster, dbname, end_lsn)
        for slot in (OUR_SLOT, RECV_SLOT):
            drop_slot(conn, slot)
        conn.execute("TRUNCATE bench")
    return rows / mine, rows / base, cpu / rows * 1e6, base_cpu / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runtime", choices=("gevent", "threads"), default="gevent")
    args = parser.parse_args()

    cluster = LocalCluster.temporary(fsync=False)
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        with psycopg.connect(cluster.dsn("bench"), autocommit=True) as conn:
            conn.execute(SCHEMA)
        workloads: dict[str, dict[str, Any]] = {}
        for kind in ("batched", "single"):
            results = [
                measure(cluster, "bench", kind, args.rows, args.batch, rep, args.runtime)
                for rep in range(args.repeat)
            ]
            our_rate = statistics.median(r[0] for r in results)
            base_rate = statistics.median(r[1] for r in results)
            workloads[kind] = {
                "ours": round(our_rate),
                "baseline": round(base_rate),
                "ratio": round(our_rate / base_rate, 3),
                # CPU per row of each consumer process: how much of a (shared) core each one needs
                "ours_cpu_us_per_row": round(statistics.median(r[2] for r in results), 2),
                "baseline_cpu_us_per_row": round(statistics.median(r[3] for r in results), 2),
                "runs": [{"ours": round(r[0]), "baseline": round(r[1])} for r in results],
            }
    finally:
        cluster.remove()
    worst = min(workloads.values(), key=lambda w: w["ratio"])
    emit(
        {
            "name": "replication",
            "unit": "rows/s",
            "ours": worst["ours"],
            "baseline": worst["baseline"],
            "baseline_name": "pg_recvlogical (pgoutput proto_version 1, same publication, to /dev/null)",
            "ratio": worst["ratio"],
            "headline": "workload with the lower ratio",
            "target_ratio": 0.8,
            "workloads": workloads,
            "rows": args.rows,
            "batch_rows": args.batch,
            "repeat": args.repeat,
            "runtime": args.runtime,
        }
    )


def child(dsn: str, rows: int) -> None:
    wall, cpu = ours_here(dsn, rows)
    sys.stdout.write(json.dumps({"wall": wall, "cpu": cpu}) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
