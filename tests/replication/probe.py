"""Subprocess entry points for tests that need a process of their own.

``python -m tests.replication.probe instance DSN STREAM``: run a Connection subtree until killed; prints
``active`` once it streams (failover test).
``python -m tests.replication.probe memory DSN STREAM ROWS MAX_BATCH``: stream one ROWS-row transaction
into a counting sink; prints JSON with the count and RSS figures (memory-bound test).
``python -m tests.replication.probe gevent DSN STREAM ROWS``: the same pipeline under gevent monkey
patching, with a heartbeat greenlet measuring the longest hub stall (wall, and CPU time spent in it, which
excludes the OS descheduling the process on a busy machine); prints JSON.
"""

from __future__ import annotations

import sys

if len(sys.argv) > 1 and sys.argv[1] == "gevent":
    from gevent import monkey

    monkey.patch_all()

import json
import resource
import threading
import time
from typing import Any

import psycopg

from supervisors import stop_tree, wait_started
from sync import runtime
from sync.replication.changes import ReplicationEvent, TransactionFragment
from sync.replication.connection import ConnectionConfig, ConnectionHandles, start_connection_supervisor
from sync.replication.sink import CallbackSink, Pending


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def _reset_peak() -> None:
    """Reset the peak-RSS mark (Linux >= 4.0); ``ru_maxrss`` would include the parent's at fork."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


class Counter:
    def __init__(self) -> None:
        self.changes = 0
        self.handles: ConnectionHandles | None = None
        self.done = threading.Event()
        self.target = -1

    def deliver(self, event: ReplicationEvent) -> Pending | None:
        if isinstance(event, TransactionFragment):
            self.changes += len(event.changes)
            if event.commit and self.handles is not None:
                self.handles.ack(event.commit_lsn)
            if self.changes >= self.target >= 0:
                self.done.set()
        return None


def _start(dsn: str, stream: str, max_batch: int, counter: Counter) -> tuple[Any, ConnectionHandles]:
    config = ConnectionConfig(dsn=dsn, stream_id=stream, max_batch=max_batch, status_interval=1.0)
    handles = ConnectionHandles(config)
    counter.handles = handles
    sup = start_connection_supervisor(config, CallbackSink(counter.deliver), handles)
    wait_started(sup, 30)
    deadline = time.monotonic() + 30
    while handles.state() != "active":
        if time.monotonic() > deadline:
            raise SystemExit(f"not active: {handles.health()}")
        runtime.sleep(0.02)
    return sup, handles


def _table(dsn: str, stream: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS big (id int PRIMARY KEY, v text)")
    conn.execute(f"ALTER PUBLICATION shapesync_pub_{stream} ADD TABLE big")
    return conn


def instance(dsn: str, stream: str) -> None:
    _start(dsn, stream, 100, Counter())
    print("active", flush=True)
    while True:
        time.sleep(1)


def memory(dsn: str, stream: str, rows: int, max_batch: int) -> None:
    counter = Counter()
    sup, _handles = _start(dsn, stream, max_batch, counter)
    conn = _table(dsn, stream)
    _reset_peak()
    base = _rss_kb()
    counter.target = rows
    t0 = time.monotonic()
    conn.execute("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, %s) g", (rows,))
    ok = counter.done.wait(600)
    elapsed = time.monotonic() - t0
    peak = _peak_kb()
    stop_tree(sup, 30)
    print(
        json.dumps(
            {"ok": ok, "changes": counter.changes, "base_kb": base, "peak_kb": peak, "seconds": elapsed}
        ),
        flush=True,
    )


def gevent_run(dsn: str, stream: str, rows: int) -> None:
    counter = Counter()
    sup, _handles = _start(dsn, stream, 100, counter)
    conn = _table(dsn, stream)
    stall = [0.0, 0.0]  # longest gap between heartbeats: wall time, and CPU time this process used in it
    stop = threading.Event()

    def heartbeat() -> None:
        last, last_cpu = time.monotonic(), time.process_time()
        while not stop.is_set():
            runtime.sleep(0.005)
            now, cpu = time.monotonic(), time.process_time()
            stall[0] = max(stall[0], now - last - 0.005)
            stall[1] = max(stall[1], cpu - last_cpu)  # a busy hub, not the OS descheduling us
            last, last_cpu = now, cpu

    beat = runtime.spawn(heartbeat)
    counter.target = rows
    conn.execute("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, %s) g", (rows,))
    ok = counter.done.wait(120)
    stop.set()
    beat.join(5)
    stop_tree(sup, 30)
    print(
        json.dumps(
            {
                "ok": ok,
                "changes": counter.changes,
                "max_stall_s": stall[0],
                "max_busy_stall_s": stall[1],
                "gevent": runtime.gevent_active(),
                "os_threads": threading.active_count(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    mode, dsn, stream, *rest = sys.argv[1:]
    if mode == "instance":
        instance(dsn, stream)
    elif mode == "memory":
        memory(dsn, stream, int(rest[0]), int(rest[1]))
    elif mode == "gevent":
        gevent_run(dsn, stream, int(rest[0]))
    else:
        raise SystemExit(f"unknown mode {mode}")
