"""Creating shape logs: the filesystem work runs on an OS thread and fsyncs nothing; completing their
snapshots makes them durable, logs completing together sharing the fsync of their parent directory, each
returning only once an fsync that started after its call is done."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from sync.storage import FileStorage, files
from sync.storage import storage as storage_module
from sync.storage.errors import ShapeMustBeRecreated
from sync.storage.format import FILES
from tests.storage.group_commit import assert_shared_and_covered, slowed

ROOT = Path(__file__).resolve().parents[2]
CREATORS = 20


def test_creating_logs_fsyncs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = FileStorage(tmp_path, "stack")
    fsyncs: list[str] = []
    for module, name in (
        (os, "fsync"),
        (os, "fdatasync"),
        (storage_module, "fsync_dir"),
        (files, "fsync_dir"),
    ):
        monkeypatch.setattr(module, name, lambda *a, _name=name: fsyncs.append(_name))
    for i in range(5):
        storage.create(f"h{i}", {"table": "items"})
    assert fsyncs == []
    assert sorted(storage.handles()) == [f"h{i}" for i in range(5)]


def test_completed_snapshots_share_the_parent_fsync_and_each_is_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FileStorage(tmp_path, "stack")
    writers = [storage.create(f"h{i}", {"table": "items"}) for i in range(CREATORS)]
    starts: list[float] = []
    parent = slowed(files.fsync_dir, starts)  # storage's, imported from files

    def fsync_dir(path: str) -> None:
        assert path == str(storage.shapes_dir)
        parent(path)

    monkeypatch.setattr(storage_module, "fsync_dir", fsync_dir)
    assert_shared_and_covered(CREATORS, lambda i: writers[i].complete_snapshot(10, 12, [11]), starts)
    again = FileStorage(tmp_path, "stack")
    for i in range(CREATORS):
        assert again.open(f"h{i}").metadata["xip_list"] == [11]


def test_a_log_whose_snapshot_never_completed_is_not_resumed_even_without_metadata(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, "stack")
    storage.create("h1", {"table": "items"})
    storage.create("h2", {"table": "items"})
    (storage.shapes_dir / "h2" / "meta.bin").unlink()  # a crash before the kernel wrote it back
    again = FileStorage(tmp_path, "stack")
    for handle in ("h1", "h2"):
        with pytest.raises(ShapeMustBeRecreated):
            again.open(handle)


def test_under_gevent_a_log_is_created_on_an_os_thread(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from gevent import monkey; monkey.patch_all()
        import gevent
        from gevent.monkey import get_original
        from sync.storage import FileStorage
        os_thread = get_original("_thread", "get_ident")
        hub_thread = os_thread()
        storage = FileStorage({str(tmp_path)!r}, "stack")
        seen = []
        real = storage._create
        storage._create = lambda *a: (seen.append(os_thread()), real(*a))[1]
        ticks = []
        def ticker():
            while True:
                ticks.append(1); gevent.sleep(0)
        t = gevent.spawn(ticker)
        writers = [gevent.spawn(storage.create, f"h{{i}}", {{"table": "items"}}) for i in range(5)]
        gevent.joinall(writers, raise_error=True)
        t.kill()
        assert len(seen) == 5 and hub_thread not in seen, seen
        assert sorted(storage.handles()) == ["h0", "h1", "h2", "h3", "h4"]
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert proc.stdout.strip() == "ok", proc.stderr


def test_completing_rewrites_the_metadata_in_place_and_a_torn_rewrite_drops_the_log(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, "stack")
    writers = [storage.create(f"h{i}", {"table": "items"}) for i in range(2)]
    meta = [storage.shapes_dir / f"h{i}" / "meta.bin" for i in range(2)]
    inodes = [m.stat().st_ino for m in meta]
    for w in writers:
        w.complete_snapshot(10, 12, [11])
    assert [m.stat().st_ino for m in meta] == inodes  # no new file: no inode allocated, none freed
    assert sorted(p.name for p in meta[0].parent.iterdir()) == sorted([*FILES, "meta.bin"])
    data = meta[1].read_bytes()
    meta[1].write_bytes(data[: len(data) // 2])  # a crash in the middle of the rewrite
    again = FileStorage(tmp_path, "stack")
    assert again.open("h0").snapshot_complete
    with pytest.raises(ShapeMustBeRecreated):
        again.open("h1")


def test_completion_fsyncs_files_and_entries_together_then_the_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FileStorage(tmp_path, "stack")
    writer = storage.create("h1", {"table": "items"})
    shape_dir = str(storage.shapes_dir / "h1")
    together = threading.Barrier(4, timeout=10)  # passes only while all four run at once
    events: list[str] = []
    real_fdatasync, real_fsync, real_dir = os.fdatasync, os.fsync, files.fsync_dir

    def fdatasync(fd: int) -> None:
        together.wait()
        real_fdatasync(fd)
        events.append("data")

    def fsync_dir(path: str) -> None:
        if path in (shape_dir, str(storage.shapes_dir)):
            together.wait()
        real_dir(path)
        events.append("shapes dir" if path == str(storage.shapes_dir) else "dir")

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):  # (fsync_dir fsyncs directories through it too)
            events.append("meta")
        real_fsync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(files, "fsync_dir", fsync_dir)
    monkeypatch.setattr(storage_module, "fsync_dir", fsync_dir)
    writer.complete_snapshot(10, 12, [11])
    # snapshot.json and .chunks, the shape's directory and its entry in shapes/ at once; then the metadata
    assert sorted(events[:4]) == ["data", "data", "dir", "shapes dir"]
    assert events[4:] == ["meta"]
    monkeypatch.undo()
    assert FileStorage(tmp_path, "stack").open("h1").snapshot_complete
