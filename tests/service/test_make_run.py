"""`make run`'s path: `shapesync serve --dev` starts its own Postgres, seeds the demo and serves health."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sync.postgres.cluster import free_port
from tests.fixtures.service import ROOT


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder the postgres OS user can reach (pytest's own tmp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="shapesync-devtest-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_dev_serve_answers_health_within_60s_with_seeded_demo(world_readable_dir: Path) -> None:
    tmp_path = world_readable_dir
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SHAPESYNC_CONFIG"}}
    env |= {"SHAPESYNC_PORT": str(port), "SHAPESYNC_STORAGE_DIR": str(tmp_path / "storage")}
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sync.cli", "serve", "--dev", "--dev-data", str(tmp_path / "data")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as resp:
                    status = resp.status
                    if status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        assert status == 200, log.read_text()
        url = next(
            line.split(" at ")[1].split(" ")[0]
            for line in log.read_text().splitlines()
            if " at postgresql" in line
        )
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM items").fetchone() == (3,)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    # the dev cluster is stopped with the server, its data kept for the next run
    assert (tmp_path / "data" / "postgres" / "pgdata" / "PG_VERSION").exists()
    assert not (tmp_path / "data" / "postgres" / "pgdata" / "postmaster.pid").exists(), log.read_text()
