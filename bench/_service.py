"""The system under benchmark: a temporary Postgres, the engine in-process, or the real service.

``temp_cluster()`` starts a private PG15 (fsync off: we measure our engine, not the disk), ``start_engine``
runs :class:`sync.engine.Engine` in this process (plain threads unless the caller patched gevent), and
``ServiceProcess`` runs ``python -m sync.cli serve`` (gunicorn + one gevent worker) in a subprocess through
:mod:`sync.devserver`, exactly as the end-to-end tests do.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg

from bench import _spawn
from sync import devserver
from sync.postgres.cluster import LocalCluster

ROOT = devserver.ROOT


def raise_nofile(want: int = 200_000) -> int:
    """Raise the open-files limit towards ``want`` (the hard limit too when allowed, e.g. as root: every
    shape holds a few descriptors, so 10,000 shapes exceed a 20,000 limit); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def temp_cluster(dbname: str = "bench") -> Iterator[tuple[LocalCluster, str]]:
    """A started temporary cluster and the DSN of a fresh database in it; removed on exit."""
    cluster = LocalCluster.temporary(fsync=False)
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {dbname}")
        yield cluster, cluster.dsn(dbname)
    finally:
        cluster.remove()


def current_lsn(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def lsn_int(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def rss_bytes() -> int:
    """Resident set size of this process (from /proc, current, not peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def start_engine(dsn: str, storage_dir: str, stream_id: str = "bench", **sections: Mapping[str, Any]) -> Any:
    """Start the real engine in this process and wait until it streams (status ``active``).

    The engine serves no HTTP here, so its shape logs get the descriptors that the automatic
    ``storage.max_open_files`` keeps for HTTP sockets (``sync.storage.fdlimit``): the open-files limit less
    the reserve, as a deployment sized for its shapes has (a caller's ``storage`` section may say
    otherwise)."""
    from sync import heap  # noqa: PLC0415
    from sync.engine import Engine  # noqa: PLC0415 - after a caller's gevent patching
    from sync.settings import Settings  # noqa: PLC0415
    from sync.storage import fdlimit  # noqa: PLC0415

    limit = raise_nofile()
    settings = Settings().replace("database", url=dsn)
    settings = settings.replace("storage", dir=storage_dir, max_open_files=max(64, limit - fdlimit.RESERVE))
    settings = settings.replace("replication", stream_id=stream_id)
    for name, values in sections.items():
        settings = settings.replace(name, **values)
    heap.tune()  # as the gunicorn worker does
    engine = Engine.start(settings, timeout=120)
    heap.freeze_startup_heap()
    deadline = time.monotonic() + 60
    while engine.status() != "active":
        if time.monotonic() > deadline:
            raise RuntimeError(f"engine not active: {engine.health_details()}")
        time.sleep(0.02)
    return engine


class ServiceProcess(devserver.ServiceProcess):
    """The real service as the end-to-end tests run it, with a benchmark's stream id, quieter logs and a
    raised open-files limit (every shape holds a few descriptors)."""

    def __init__(self, dsn: str, workdir: Path, extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__(dsn, workdir, extra, stream_id="bench", log_level="WARNING")

    def start(self) -> ServiceProcess:
        raise_nofile()
        super().start()
        return self


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def recvlogical(
    bindir: str | Path, dsn: str, slot: str, publication: str, end_lsn: str
) -> tuple[float, float]:
    """The baseline: ``pg_recvlogical`` (pgoutput v1, ``publication``) receiving ``slot`` up to ``end_lsn``
    into /dev/null; returns (wall seconds, its CPU seconds)."""
    cmd = [
        str(Path(bindir) / "pg_recvlogical"),
        *("-d", dsn, "--slot", slot, "--start", "--no-loop"),
        *("-o", "proto_version=1", "-o", f"publication_names={publication}"),
        *("-E", end_lsn, "-f", "/dev/null"),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    _spawn.run(cmd)  # not forked from this process, which may hold the engine: see bench._spawn
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
