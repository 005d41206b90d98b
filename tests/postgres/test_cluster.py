"""The Postgres helper starts a cluster that serves logical replication, and stops without leftovers."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from sync.postgres.cluster import ClusterError, LocalCluster, find_bindir


def _postgres_pids(datadir: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"-D {datadir}"], check=False, capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _gone(pid: int, deadline_s: float = 10.0) -> bool:
    """True once ``pid`` no longer exists or is a zombie waiting to be reaped by init."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def test_start_serves_logical_slot_and_stop_leaves_no_process() -> None:
    cluster = LocalCluster.temporary()
    with cluster:
        pid = cluster.postmaster_pid()
        assert pid is not None
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
            slots = conn.execute("SHOW max_replication_slots").fetchone()
            assert slots is not None
            assert int(slots[0]) >= 20
            conn.execute("CREATE TABLE t (id int primary key)")
            conn.execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
            conn.execute("CREATE PUBLICATION p FOR TABLE t")
            conn.execute("INSERT INTO t VALUES (1)")
            rows = conn.execute(
                "SELECT count(*) FROM pg_logical_slot_get_binary_changes("
                "'s', NULL, NULL, 'proto_version', '1', 'publication_names', 'p')"
            ).fetchone()
            assert rows is not None and rows[0] >= 3  # Begin, Relation, Insert, Commit
            conn.execute("SELECT pg_drop_replication_slot('s')")
    assert not cluster.running
    assert _gone(pid), f"postmaster {pid} still running after stop"
    assert _postgres_pids(cluster.datadir) == []
    cluster.remove()


def test_restart_keeps_data() -> None:
    cluster = LocalCluster.temporary()
    with cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('x')")
        cluster.restart()
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("x",)]
    cluster.remove()


def test_missing_binaries_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("glob.glob", lambda _pattern: [])
    monkeypatch.setattr(Path, "exists", lambda _self: False)
    with pytest.raises(ClusterError, match="apt-get install postgresql"):
        find_bindir()


def test_db_dsn_fixture_gives_isolated_database(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'kept'").fetchone() == (0,)
