"""shapesync started while Postgres is down (a host reboot, a compose file starting both at once), against
the real service and a cluster of the test's own (the suite's shared one must stay up): the stored shapes
are reloaded once Postgres answers, and clients keep their handles.

Reloading a shape compiles it against the catalog; the reload took a catalog that did not answer for a
shape that no longer compiles, and deleted every log: every client had to refetch everything.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from sync.postgres.cluster import LocalCluster
from tests.fixtures.service import ServiceProcess


def _until_logged(svc: ServiceProcess, *lines: str, deadline_s: float = 60.0) -> str:
    """Poll the service's log until one of ``lines`` is in it (no event crosses the process boundary)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        output = svc.output()
        for line in lines:
            if line in output:
                return line
        time.sleep(0.1)
    raise AssertionError(f"none of {lines} logged within {deadline_s} s")


def test_shapes_stored_while_postgres_is_down_at_start_are_kept(tmp_path: Path) -> None:
    cluster = LocalCluster.temporary(fsync=False).start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO t VALUES (1, 'a')")
        svc = ServiceProcess(cluster.dsn(), tmp_path).start()
        try:
            svc.wait_healthy()
            code, headers, _ = svc.get("/v1/shape?table=t&offset=-1")
            assert code == 200
            handle = headers["electric-handle"]
            assert svc.stop() == 0
            cluster.stop()
            svc.start()
            seen = _until_logged(svc, "waiting for the database before reloading", "cannot be reloaded")
            cluster.start()
            svc.wait_healthy()
            code, headers, _ = svc.get("/v1/shape?table=t&offset=-1")
            assert (code, headers["electric-handle"], seen) == (
                200,
                handle,
                "waiting for the database before reloading",
            )
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute("INSERT INTO t VALUES (2, 'b')")
            code, _, body = svc.get(f"/v1/shape?table=t&offset=0_0&handle={handle}&live=true")
            assert code == 200 and b'"id":"2"' in body
        finally:
            svc.stop()
    finally:
        cluster.remove()
