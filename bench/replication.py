"""Replication throughput benchmark: ``python -m bench.replication``.

Two workloads, committed before measuring so both consumers read the same WAL from their own slot:
100,000 rows in 1,000-row transactions (``batched``) and 100,000 single-row transactions (``single``, a
procedure that COMMITs in a loop).  Each is received by ``pg_recvlogical`` (pgoutput, proto_version 1, the
same publication, to /dev/null, until ``--endpos``: the walsender's send path is the limit) and by our
pipeline (the Connection subtree: advisory lock, ReplicationClient, pgoutput decoder and fragment
assembly into a counting sink).  Both times include connecting.  Each workload is repeated
``--repeat`` times with the consumer order alternating, and medians are reported.

Prints one JSON line; the headline ``ours``/``baseline``/``ratio`` is the workload with the lower ratio
(target >= 0.8 on both), the per-workload figures are under ``workloads``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time
from typing import Any

import psycopg

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


def recvlogical(cluster: LocalCluster, dbname: str, end_lsn: str) -> float:
    cmd = [
        str(cluster.bindir / "pg_recvlogical"),
        "-d",
        cluster.dsn(dbname),
        "--slot",
        RECV_SLOT,
        "--start",
        "--no-loop",
        "-o",
        "proto_version=1",
        "-o",
        f"publication_names={PUB}",
        "-E",
        end_lsn,
        "-f",
        "/dev/null",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def ours(dsn: str, rows: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to receive ``rows`` rows."""
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
    cluster: LocalCluster, dbname: str, kind: str, rows: int, batch: int, rep: int
) -> tuple[float, float, float]:
    dsn = cluster.dsn(dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for slot in (OUR_SLOT, RECV_SLOT):
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        end_lsn = run_workload(conn, kind, rows, batch)
        conn.execute("CHECKPOINT")
        if rep % 2 == 0:
            base = recvlogical(cluster, dbname, end_lsn)
            mine, cpu = ours(dsn, rows)
        else:
            mine, cpu = ours(dsn, rows)
            base = recvlogical(cluster, dbname, end_lsn)
        for slot in (OUR_SLOT, RECV_SLOT):
            drop_slot(conn, slot)
        conn.execute("TRUNCATE bench")
    return rows / mine, rows / base, cpu / mine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
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
                measure(cluster, "bench", kind, args.rows, args.batch, rep) for rep in range(args.repeat)
            ]
            our_rate = statistics.median(r[0] for r in results)
            base_rate = statistics.median(r[1] for r in results)
            workloads[kind] = {
                "ours": round(our_rate),
                "baseline": round(base_rate),
                "ratio": round(our_rate / base_rate, 3),
                "ours_cpu_share": round(statistics.median(r[2] for r in results), 2),
                "runs": [{"ours": round(a), "baseline": round(b)} for a, b, _ in results],
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
        }
    )


if __name__ == "__main__":
    main()
