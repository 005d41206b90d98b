"""SnapshotMarks: the snapshot WAL positions survive restarts, a torn tail is dropped, compaction forgets;
recording waits for no disk, and concurrent syncs share their fsyncs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sync.shapes.snapshot_marks import SnapshotMarks
from tests.storage.group_commit import assert_shared_and_covered, slowed

WORKERS = 20


def test_marks_round_trip_forget_and_compact(tmp_path: Path) -> None:
    path = tmp_path / "marks"
    marks = SnapshotMarks(path)
    marks.load()
    marks.record("1-1", 100)
    marks.record("2-1", 200)
    marks.record("3-1", 300)
    marks.forget("2-1")
    marks.close()
    again = SnapshotMarks(path)
    assert again.load() == {"1-1": 100, "3-1": 300}
    again.compact(["3-1"])
    again.record("4-1", 400)
    again.close()
    assert SnapshotMarks(path).load() == {"3-1": 300, "4-1": 400}


def test_a_torn_tail_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "marks"
    marks = SnapshotMarks(path)
    marks.record("1-1", 100)
    marks.record("2-1", 2**40)
    marks.close()
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # a crash in the middle of the last record
    assert SnapshotMarks(path).load() == {"1-1": 100}


def test_in_memory_marks() -> None:
    marks = SnapshotMarks()
    marks.record("1-1", 5)
    assert marks.get("1-1") == 5
    marks.forget("1-1")
    assert marks.get("1-1") is None
    marks.compact([])


def test_record_writes_and_sync_fsyncs_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "marks"
    marks = SnapshotMarks(path)
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    marks.record("1-1", 100)
    assert synced == []  # recording alone waits for no disk
    marks.sync()
    assert synced == [path.stat().st_ino]
    marks.compact(["1-1"])  # a new file (written and fsynced by the compaction itself)
    marks.record("2-1", 200)
    synced.clear()
    marks.sync()
    assert synced == [path.stat().st_ino]  # the file the new mark went to
    marks.close()
    assert SnapshotMarks(path).load() == {"1-1": 100, "2-1": 200}


def test_concurrent_syncs_share_fsyncs_and_each_is_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks = SnapshotMarks(tmp_path / "marks")
    starts: list[float] = []
    monkeypatch.setattr(os, "fsync", slowed(os.fsync, starts))
    assert_shared_and_covered(
        WORKERS, lambda i: marks.sync(), starts, before=lambda i: marks.record(f"{i}-1", i)
    )
    marks.close()
    assert SnapshotMarks(tmp_path / "marks").load() == {f"{i}-1": i for i in range(WORKERS)}


def test_the_journal_stays_bounded_while_shapes_come_and_go(tmp_path: Path) -> None:
    """Every shape created and deleted appended two records until the next restart's compaction: a server
    whose shapes churn grew the file without bound.  Forgotten records are now compacted away as they pile
    up, and what is live survives every rewrite."""
    path = tmp_path / "marks"
    marks = SnapshotMarks(path)
    marks.load()
    for k in range(10):  # long-lived shapes
        marks.record(f"keep-{k}", 1000 + k)
    sizes = []
    for n in range(20_000):
        marks.record(f"{n}-1", n + 1)
        if n % 7 == 0:
            marks.sync()
        marks.forget(f"{n}-1")
        sizes.append(path.stat().st_size if path.exists() else 0)
    marks.record("last-1", 7)
    marks.sync()
    assert max(sizes) < 2 * 1100 * 40  # about two records for each of ~1,000 forgotten, not 40,000 records
    assert SnapshotMarks(path).load() == {**{f"keep-{k}": 1000 + k for k in range(10)}, "last-1": 7}
    marks.close()
    assert SnapshotMarks(path).load() == {**{f"keep-{k}": 1000 + k for k in range(10)}, "last-1": 7}
