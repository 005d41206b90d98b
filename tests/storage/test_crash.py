"""A writer process killed with SIGKILL at random points: reopening gives a consistent prefix."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import orjson

from sync.offsets import LogOffset
from sync.storage import FileStorage
from tests.storage.crash_writer import txn_items
from tests.storage.helpers import follow

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 20_000


def run_until_killed(directory: Path, lines: int, seed: int | None = None) -> tuple[int, int]:
    """Start the writer and SIGKILL it after ``lines`` progress lines (or let it kill itself mid-write with
    ``seed``); return (last appended, last durable) as reported."""
    extra = [] if seed is None else [str(seed)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_writer", str(directory), str(CHUNK), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    appended = durable = 0
    try:
        assert proc.stdout is not None
        for _ in range(lines):
            line = proc.stdout.readline()
            if not line and seed is not None:
                break  # killed itself
            assert line, proc.stderr.read() if proc.stderr else "writer exited"
            kind, tx = line.split()
            if kind == "A":
                appended = int(tx)
            else:
                durable = int(tx)
        proc.kill()  # SIGKILL, while the writer keeps appending
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -9, err
    return appended, durable


def test_sigkill_at_random_points(tmp_path: Path) -> None:
    rnd = random.Random(1234)
    previous = 0
    for round_ in range(10):
        seed = rnd.randint(0, 10**6) if round_ % 2 else None
        appended, durable = run_until_killed(tmp_path, rnd.randint(1, 60) if seed is None else 10**6, seed)
        storage = FileStorage(tmp_path, "s", chunk_bytes=CHUNK)
        writer = storage.open("h")
        last = writer.last_offset
        assert last is not None
        kept = last.tx
        # everything whose append returned is there (the page cache survives a process kill), and the log
        # ends at a complete transaction: exactly transactions 1..kept, byte for byte
        assert kept >= max(appended, durable, previous)
        chain = follow(writer.reader(), LogOffset(0, 0))
        expected = [orjson.loads(i.json) for t in range(1, kept + 1) for i in txn_items(t)]
        assert chain.items == expected
        assert chain.ends[-1] == last == txn_items(kept)[-1].offset
        writer.close()
        previous = kept
