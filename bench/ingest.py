"""Ingest benchmark: ``python -m bench.ingest``: commit -> durable in the shape logs, rows/s.

Table ``bench (seq bigserial PRIMARY KEY, id int, aid int, delta int, mtime timestamp, filler char(22))``.
Two workloads, each in a fresh subprocess with its own Postgres:

* ``one``: one shape without WHERE (it matches every row);
* ``many``: ``--shapes`` shapes ``id = k`` (k = 1..N) sharing the rows (row i has ``id = i % N + 1``).

Each run: the engine (``sync.engine.Engine``, in the subprocess) creates the shapes and finishes their
snapshots, then stops; ``--rows`` rows are committed in ``--batch``-row transactions (both slots exist, so
both consumers read the same WAL); then the engine is started again (its shapes reload from storage) and we
measure from the moment its replication stream is active (``ConnectionStatus.set_state("active")``) to the
moment the collector acknowledges the last transaction's commit LSN, i.e. every shape affected by every
transaction has it durably in its log (fsynced).  The baseline is ``pg_recvlogical`` (pgoutput, proto 1,
same publication, to /dev/null, until the end LSN; process wall time including connecting) reading the same
WAL from its own slot in the same run.  Runs alternate which consumer goes first; medians are reported.

That is the ``restart`` method (catch-up; the default for ``one``).  The ``live`` method (the default for
``many``: restarting 10,000 shapes would time their reload, not the ingest) keeps the engine streaming
while a separate process (:class:`WorkloadProcess`, connected beforehand) commits the workload, and
measures from its start to the acknowledgement of the last commit; ``pg_recvlogical`` then reads the same
WAL.

The engine runs on plain threads for ``one`` and under gevent (as in the gunicorn worker) for ``many``:
on plain threads every shape costs two OS threads, and 20,000 threads do not fit this machine's pid space
(``--mode-one`` / ``--mode-many`` change that).

Each workload also reports ``cpu_us_per_row``: CPU time of the whole engine process (every thread) over the
measured window per row, steadier than wall time on a shared machine.

Prints one JSON line; the headline is the workload with the lower ratio to its target.  Diagnostics of the
measured window (handler and system-call times, batches, flush rounds, a profiler attached to the engine):
:mod:`bench._ingest_trace`, through the environment.  ``--storage-parent`` puts the engine's storage on a
chosen volume (a tmpfs, say, to tell the file system's share from the engine's).
"""

from __future__ import annotations

import sys

if "--worker" in sys.argv and sys.argv[sys.argv.index("--mode") + 1] == "gevent":
    from gevent import monkey

    monkey.patch_all()

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from typing import Any

import psycopg

from bench import _service
from bench._common import emit
from bench._ingest_trace import Trace, attach_profiler
from bench._service import lsn_int, raise_nofile, start_engine, temp_cluster
from bench._spawn import LineChild, wait
from sync.storage.fdlimit import RESERVE

STREAM = "bench"
PUB = f"shapesync_pub_{STREAM}"
RECV_SLOT = "bench_recvlogical"
TARGETS = {"one": 0.5, "many": 0.4}

SCHEMA = """
CREATE TABLE bench (seq bigserial PRIMARY KEY, id int NOT NULL, aid int, delta int, mtime timestamp,
                    filler char(22));
"""


class Probe:
    """Hooks the engine's ack path and stream state (class-level wrappers, installed once)."""

    def __init__(self) -> None:
        from sync.replication.connection import ConnectionHandles  # noqa: PLC0415
        from sync.replication.status import ConnectionStatus  # noqa: PLC0415

        self.active_at: float | None = None
        self.active_cpu = 0.0  # process CPU seconds (every thread of the engine) at those moments
        self.done_cpu = 0.0
        self.target = 1 << 64
        self.done = threading.Event()
        self.done_at = 0.0
        self.acks: list[tuple[int, float, float]] = []  # (lsn, when, process CPU) for the live method
        self.ack_times: list[float] = []  # every acknowledgement's time (for Trace)
        probe = self
        orig_ack = ConnectionHandles.ack
        orig_state = ConnectionStatus.set_state

        def ack(handles: Any, lsn: int) -> None:
            probe.acks.append((lsn, time.perf_counter(), time.process_time()))
            probe.ack_times.append(probe.acks[-1][1])
            if lsn >= probe.target and not probe.done.is_set():
                probe.done_at = time.perf_counter()
                probe.done_cpu = time.process_time()
                probe.done.set()
            orig_ack(handles, lsn)

        def set_state(status: Any, state: Any) -> None:
            if state == "active" and probe.active_at is None:
                probe.active_at = time.perf_counter()
                probe.active_cpu = time.process_time()
            orig_state(status, state)

        ConnectionHandles.ack = ack  # type: ignore[method-assign,assignment]
        ConnectionStatus.set_state = set_state  # type: ignore[method-assign,assignment]

    def arm(self, target: int) -> None:
        self.active_at = None
        self.target = target
        self.done.clear()
        for lsn, when, cpu in self.acks:  # the live method arms after the fact
            if lsn >= target:
                self.done_at = when
                self.done_cpu = cpu
                self.done.set()
                break
        self.acks.clear()


def recvlogical(bindir: str, dsn: str, end_lsn: str) -> float:
    return _service.recvlogical(bindir, dsn, RECV_SLOT, PUB, end_lsn)[0]


def commit_workload(conn: psycopg.Connection[Any], rows: int, batch: int, shapes: int) -> tuple[int, str]:
    """Insert ``rows`` rows; return (an LSN the last commit is after, the WAL end for pg_recvlogical)."""
    last_before = 0
    for start in range(0, rows, batch):
        with conn.transaction():
            conn.execute(
                "INSERT INTO bench (id, aid, delta, mtime, filler) "
                "SELECT g %% %s + 1, g, g, now(), 'x' FROM generate_series(%s::int, %s::int) g",
                (shapes, start, min(rows, start + batch) - 1),
            )
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            last_before = lsn_int(str(row[0]))
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return last_before, str(row[0])


class WorkloadProcess:
    """``commit_workload`` in a process of its own, as any application writing to Postgres: run inside the
    engine's process, its client competed with the engine for the interpreter (and, under gevent, for the
    hub's turns), so the commits themselves slowed down with the engine's work and the engine never fell
    behind them, which is not what a write burst from other processes does.  The process connects first
    and then waits for ``go`` on stdin, so ``run`` times the commits only."""

    def __init__(self, dsn: str, rows: int, batch: int, shapes: int) -> None:
        cmd = [sys.executable, "-m", "bench.ingest", "--commit-workload", dsn]
        cmd += ["--rows", str(rows), "--batch", str(batch), "--shapes", str(shapes)]
        self._child = LineChild(cmd)  # not forked from the engine's process: see bench._spawn
        if self._child.receive() != "ready":
            self._child.kill()
            raise RuntimeError("workload process failed to connect")

    def __enter__(self) -> WorkloadProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._child.kill()

    def run(self) -> tuple[int, str]:
        """Start the commits; return (an LSN the last commit is after, the WAL end) once they are done."""
        self._child.send("go")
        out = json.loads(self._child.receive())
        return int(out["target"]), str(out["end_lsn"])


def _commit_workload_main(args: argparse.Namespace) -> None:
    with psycopg.connect(args.commit_workload, autocommit=True) as conn:
        conn.execute("SELECT 1")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()
        target, end_lsn = commit_workload(conn, args.rows, args.batch, args.shapes)
    sys.stdout.write(json.dumps({"target": target, "end_lsn": end_lsn}) + "\n")
    sys.stdout.flush()


def create_shapes(engine: Any, wheres: list[str | None], concurrency: int) -> None:
    from api.engine_adapter import EngineShapes  # noqa: PLC0415
    from api.engine_port import ShapeDefinition  # noqa: PLC0415

    port = EngineShapes(engine)

    def one(where: str | None) -> str:
        return str(port.get_or_create(ShapeDefinition("bench", where=where)))

    if concurrency <= 1:
        handles = [one(w) for w in wheres]
    else:
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        with ThreadPoolExecutor(concurrency) as pool:
            handles = list(pool.map(one, wheres))
    directory = engine.services.directory
    deadline = time.monotonic() + 900
    pending = set(handles)
    while pending:
        pending = {h for h in pending if not directory.get(h).reader.snapshot_complete}
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} snapshots not complete")
        time.sleep(0.01)


def _rows_of_run(rows: int, rep: int) -> int:
    """``BENCH_INGEST_ROWS_SEQ=10000,100000``: the live runs commit these row counts in turn instead of
    ``--rows`` (a diagnostic: per-visit against per-row cost at the same number of shapes visited; the
    headline figures then mean nothing)."""
    seq = os.environ.get("BENCH_INGEST_ROWS_SEQ")
    if not seq:
        return rows
    counts = [int(n) for n in seq.split(",")]
    return counts[rep % len(counts)]


def wait_acked(probe: Probe, engine: Any, n_shapes: int, timeout: float = 900) -> None:
    """Wait for the target ack; fail fast if shapes were lost on the way (e.g. EMFILE: see the log)."""
    deadline = time.monotonic() + timeout
    while not probe.done.wait(1.0):
        alive = len(engine.services.directory.handles())
        if alive < n_shapes:
            msg = f"only {alive} of {n_shapes} shapes left (invalidated during the run; see stderr)"
            raise RuntimeError(msg)
        if time.monotonic() > deadline:
            raise RuntimeError(f"not acknowledged: {engine.health_details()}")


def worker(args: argparse.Namespace) -> dict[str, Any]:
    probe = Probe()
    trace = Trace() if os.environ.get("BENCH_INGEST_TRACE") else None
    wheres: list[str | None] = (
        [None] if args.worker == "one" else [f"id = {k}" for k in range(1, args.shapes + 1)]
    )
    n_shapes = 1 if args.worker == "one" else args.shapes
    runs: list[dict[str, float]] = []
    with temp_cluster() as (cluster, dsn):
        storage = tempfile.mkdtemp(prefix="bench-ingest-", dir=args.storage_parent)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(SCHEMA)
            engine = start_engine(dsn, storage, STREAM)
            t0 = time.perf_counter()
            create_shapes(engine, wheres, args.concurrency)
            create_s = time.perf_counter() - t0
            live = args.method == "live"
            if not live:
                engine.stop(120)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (RECV_SLOT,))
                for rep in range(args.repeat):
                    if live:  # the engine streams while the workload commits (from a process of its own)
                        probe.arm(1 << 64)
                        rows = _rows_of_run(args.rows, rep)
                        with WorkloadProcess(dsn, rows, args.batch, n_shapes) as workload:
                            spy = attach_profiler(rep)
                            if trace is not None:
                                trace.begin()
                            w0 = time.perf_counter()
                            c0 = time.process_time()
                            target, end_lsn = workload.run()
                        workload_s = time.perf_counter() - w0
                        probe.arm(target)
                        wait_acked(probe, engine, n_shapes)
                        if spy is not None:
                            wait(spy)
                        run = {"ours_s": probe.done_at - w0, "workload_commit_s": workload_s}
                        run["cpu_us_per_row"] = (probe.done_cpu - c0) / rows * 1e6
                        if rows != args.rows:
                            run["rows"] = rows
                            run["cpu_s"] = probe.done_cpu - c0
                        if trace is not None:
                            trace.report(probe, probe.done_at)
                        run["baseline_s"] = recvlogical(str(cluster.bindir), dsn, end_lsn)
                    else:  # committed while no consumer reads, then the engine restarts and catches up
                        target, end_lsn = commit_workload(conn, args.rows, args.batch, n_shapes)
                        conn.execute("CHECKPOINT")
                        if rep % 2:
                            base = recvlogical(str(cluster.bindir), dsn, end_lsn)
                        probe.arm(target)
                        r0 = time.perf_counter()
                        engine = start_engine(dsn, storage, STREAM)
                        wait_acked(probe, engine, n_shapes)
                        assert probe.active_at is not None
                        run = {"ours_s": probe.done_at - probe.active_at, "reload_s": probe.active_at - r0}
                        run["cpu_us_per_row"] = (probe.done_cpu - probe.active_cpu) / args.rows * 1e6
                        engine.stop(120)
                        if not rep % 2:
                            base = recvlogical(str(cluster.bindir), dsn, end_lsn)
                        run["baseline_s"] = base
                    runs.append(run)
                    # the next run starts from an empty pg_recvlogical backlog: advance its slot
                    conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (RECV_SLOT, end_lsn))
            if live:
                engine.stop(120)
        except BaseException:
            # free the engine's descriptors first: after EMFILE even removing the cluster fails
            with contextlib.suppress(Exception):
                engine.stop(30)
            raise
        finally:
            shutil.rmtree(storage, ignore_errors=True)
    ours_rate = statistics.median(args.rows / r["ours_s"] for r in runs)
    base_rate = statistics.median(args.rows / r["baseline_s"] for r in runs)
    return {
        "workload": args.worker,
        "mode": args.mode,
        "shapes": n_shapes,
        "ours": round(ours_rate),
        "baseline": round(base_rate),
        "ratio": round(ours_rate / base_rate, 3),
        "target_ratio": TARGETS[args.worker],
        "target_met": ours_rate / base_rate >= TARGETS[args.worker],
        "method": args.method,
        "cpu_us_per_row": round(statistics.median(r["cpu_us_per_row"] for r in runs), 2),
        "create_shapes_s": round(create_s, 2),
        "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--shapes", type=int, default=10_000, help="shapes id = k in the 'many' workload")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent shape creations")
    parser.add_argument("--mode-one", default="threads", choices=("threads", "gevent"))
    parser.add_argument("--mode-many", default="gevent", choices=("threads", "gevent"))
    parser.add_argument("--method-one", default="restart", choices=("restart", "live"))
    parser.add_argument("--method-many", default="live", choices=("restart", "live"))
    parser.add_argument("--only", choices=("one", "many"), help="run one workload only")
    parser.add_argument(
        "--storage-parent",
        metavar="DIR",
        help="where the engine's storage directory is made (default: TMPDIR)",
    )
    parser.add_argument("--method", default="restart", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("one", "many"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="threads", help=argparse.SUPPRESS)
    parser.add_argument("--commit-workload", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.commit_workload:
        _commit_workload_main(args)
        return
    if args.worker:
        sys.stdout.write(json.dumps(worker(args)) + "\n")
        return
    limit = raise_nofile()
    if args.only != "one" and 2 * args.shapes > limit - RESERVE:  # (bench._service.start_engine's cap)
        sys.stderr.write(
            f"note: a window writes {2 * args.shapes} files (each shape's log.items and log.json); the "
            f"open-files limit here is {limit}, so the engine's descriptor cache reopens some of them\n"
        )
    workloads: dict[str, dict[str, Any]] = {}
    for kind in ("one", "many"):
        if args.only and kind != args.only:
            continue
        mode = args.mode_one if kind == "one" else args.mode_many
        method = args.method_one if kind == "one" else args.method_many
        cmd = [sys.executable, "-m", "bench.ingest", "--worker", kind, "--mode", mode, "--method", method]
        for flag in ("rows", "batch", "shapes", "repeat", "concurrency"):
            cmd += [f"--{flag}", str(getattr(args, flag))]
        if args.storage_parent:
            cmd += ["--storage-parent", args.storage_parent]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        workloads[kind] = json.loads(out.strip().splitlines()[-1])
    worst = min(workloads.values(), key=lambda w: w["ratio"] / w["target_ratio"])
    emit(
        {
            "name": "ingest",
            "unit": "rows/s (commit -> durable in the shape logs)",
            "ours": worst["ours"],
            "baseline": worst["baseline"],
            "baseline_name": "pg_recvlogical (pgoutput proto 1, same publication and WAL, to /dev/null)",
            "ratio": worst["ratio"],
            "headline": f"workload '{worst['workload']}' (the lower ratio to its target)",
            "targets": TARGETS,
            "workloads": workloads,
            "rows": args.rows,
            "batch_rows": args.batch,
            "repeat": args.repeat,
        }
    )


if __name__ == "__main__":
    main()
