"""Creating shape logs: the filesystem work runs on an OS thread, and shapes created together share the
fsync of their parent directory, each returning only once an fsync that started after its call is done."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sync.storage import FileStorage
from sync.storage import storage as storage_module

ROOT = Path(__file__).resolve().parents[2]
CREATORS = 20


def test_concurrent_creations_share_the_parent_fsync_and_each_is_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FileStorage(tmp_path, "stack")
    starts: list[float] = []
    real = storage_module.fsync_dir

    def slow_fsync_dir(path: str) -> None:  # a disk whose fsync takes a while: callers pile up behind it
        assert path == str(storage.shapes_dir)
        starts.append(time.monotonic())
        time.sleep(0.005)
        real(path)

    monkeypatch.setattr(storage_module, "fsync_dir", slow_fsync_dir)
    barrier = threading.Barrier(CREATORS)
    spans: dict[int, tuple[float, float]] = {}

    def create(i: int) -> None:
        barrier.wait()
        began = time.monotonic()
        storage.create(f"h{i}", {"table": "items"})
        spans[i] = (began, time.monotonic())

    threads = [threading.Thread(target=create, args=(i,)) for i in range(CREATORS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans) == CREATORS
    assert 1 <= len(starts) < CREATORS  # shared
    for began, returned in spans.values():  # covered: an fsync of the parent began after the entry existed
        assert any(began <= s <= returned for s in starts), (began, returned, starts)
    assert sorted(FileStorage(tmp_path, "stack").handles()) == sorted(f"h{i}" for i in range(CREATORS))


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
