"""SnapshotMarks: the snapshot WAL positions survive restarts, a torn tail is dropped, compaction forgets."""

from __future__ import annotations

from pathlib import Path

from sync.shapes.snapshot_marks import SnapshotMarks


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
