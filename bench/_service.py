"""The system under benchmark: a temporary Postgres, the engine in-process, or the real service.

``temp_cluster()`` starts a private PG15 (fsync off: we measure our engine, not the disk), ``start_engine``
runs :class:`sync.engine.Engine` in this process (plain threads unless the caller patched gevent), and
``ServiceProcess`` runs ``python -m sync.cli serve`` (gunicorn + one gevent worker) in a subprocess, the same
way the end-to-end tests do (copied here: benchmarks do not import test code).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg

from sync.postgres.cluster import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[1]


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
    """Start the real engine in this process and wait until it streams (status ``active``)."""
    from sync.engine import Engine  # noqa: PLC0415 - after a caller's gevent patching
    from sync.settings import Settings  # noqa: PLC0415

    raise_nofile()
    settings = Settings().replace("database", url=dsn)
    settings = settings.replace("storage", dir=storage_dir)
    settings = settings.replace("replication", stream_id=stream_id)
    for name, values in sections.items():
        settings = settings.replace(name, **values)
    engine = Engine.start(settings, timeout=120)
    deadline = time.monotonic() + 60
    while engine.status() != "active":
        if time.monotonic() > deadline:
            raise RuntimeError(f"engine not active: {engine.health_details()}")
        time.sleep(0.02)
    return engine


class ServiceProcess:
    """``python -m sync.cli serve`` in a subprocess against ``dsn``, on a free port."""

    def __init__(self, dsn: str, workdir: Path, extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "shapesync.toml"
        self.log = workdir / "service.log"
        sections: dict[str, dict[str, Any]] = {
            "database": {"url": dsn},
            "http": {"port": self.port, "graceful_timeout_s": 5},
            "storage": {"dir": str(workdir / "storage")},
            "replication": {"stream_id": "bench"},
            "logging": {"level": "WARNING"},
        }
        for name, values in (extra or {}).items():
            sections.setdefault(name, {}).update(values)
        self.config.write_text(
            "\n".join(
                f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                for name, values in sections.items()
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        raise_nofile()
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SHAPESYNC_CONFIG"}}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sync.cli", "serve", "--config", str(self.config)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read()

    def wait_healthy(self, deadline_s: float = 90.0) -> None:
        deadline = time.monotonic() + deadline_s
        last: object = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.output()[-5000:]}")
            try:
                code, _, body = self.get("/v1/health", timeout=2)
                last = (code, body)
                if json.loads(body).get("status") == "active":
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(
            f"service not active after {deadline_s}s (last: {last!r}):\n{self.output()[-5000:]}"
        )

    def worker_pid(self) -> int | None:
        """The gunicorn worker's pid (the only child of the master)."""
        assert self.proc is not None
        with contextlib.suppress(OSError):
            # sync.cli -> gunicorn master -> worker
            for pid in _children(self.proc.pid):
                for worker in _children(pid):
                    return worker
        return None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as f:
        return [int(p) for p in f.read().split()]


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
