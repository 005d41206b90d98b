"""The process-wide descriptor cache: a bounded number of open files whatever the number of shape logs."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.offsets import LogOffset
from sync.storage import FileStorage
from sync.storage.fdcache import CACHE, FdCache, FdGroup
from sync.storage.files import DiskFiles, _DiskReader
from tests.storage.helpers import follow, log_items, txn

ROOT = Path(__file__).resolve().parents[2]


def _files(tmp_path: Path, n: int) -> list[str]:
    names = [f"f{i}" for i in range(n)]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(f"file {i};".encode())
    return names


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.fixture
def small_cap() -> Iterator[int]:
    before = CACHE.cap
    CACHE.set_cap(8)
    try:
        yield 8
    finally:
        CACHE.set_cap(before)


def test_cap_bounds_open_descriptors_and_reopens_transparently(tmp_path: Path) -> None:
    cache = FdCache(4)
    group = FdGroup(str(tmp_path), writable=False, cache=cache)
    names = _files(tmp_path, 20)
    for _ in range(3):
        for i, name in enumerate(names):
            entry = cache.pin(group, name)
            assert os.pread(entry.fd, 100, 0) == f"file {i};".encode()
            cache.unpin(entry)
            assert cache.open_count <= 4
    cache.drop(group)
    assert cache.open_count == 0


def test_a_cyclic_working_set_beyond_the_cap_keeps_a_resident_set_instead_of_thrashing(
    tmp_path: Path,
) -> None:
    """LRU gives 0 hits when files are used in the same order every round and outnumber the cap."""
    cache = FdCache(10)
    group = FdGroup(str(tmp_path), writable=False, cache=cache)
    names = _files(tmp_path, 25)
    fds: set[int] = set()
    for _ in range(4):
        for name in names:
            entry = cache.pin(group, name)
            fds.add(entry.fd)
            cache.unpin(entry)
    assert cache.hits == 3 * 10 and cache.misses == 25 + 3 * 15  # hits = cap / working set of the uses
    assert cache.evictions == 0 and cache.transient == 4 * 15 and cache.open_count == 10
    assert sorted(group.entries) == names[:10]
    assert all(not _is_open(fd) for fd in fds - {e.fd for e in group.entries.values()})  # transients closed


def test_a_cold_resident_gives_its_place_to_a_busy_descriptor(tmp_path: Path) -> None:
    cache = FdCache(2)
    group = FdGroup(str(tmp_path), writable=False, cache=cache)
    old, busy, new = _files(tmp_path, 3)
    cache.unpin(cache.pin(group, old))
    cache.unpin(cache.pin(group, busy))
    for _ in range(8 * 2 - 2):  # ``old`` unused for 8 x cap uses by the next use: still warm
        cache.unpin(cache.pin(group, busy))
    cache.unpin(cache.pin(group, new))  # transient
    assert sorted(group.entries) == sorted([busy, old]) and cache.transient == 1
    cache.unpin(cache.pin(group, new))  # now cold: replaced
    assert sorted(group.entries) == sorted([busy, new]) and cache.evictions == 1


def test_a_writer_evicts_instead_of_going_transient_where_dirty_files_need_an_fsync_on_close(
    tmp_path: Path,
) -> None:
    """A transient dirty descriptor would cost an fdatasync per write in the mode without syncfs."""
    cache = FdCache(2)
    assert cache.sync_dirty_on_close
    group = FdGroup(str(tmp_path), writable=True, cache=cache)
    names = _files(tmp_path, 3)
    for name in names:
        cache.unpin(cache.pin(group, name))
    assert cache.transient == 0 and cache.evictions == 1 and sorted(group.entries) == names[1:]


def test_pinned_descriptor_is_never_closed(tmp_path: Path) -> None:
    cache = FdCache(2)
    group = FdGroup(str(tmp_path), writable=False, cache=cache)
    names = _files(tmp_path, 10)
    held = cache.pin(group, names[0])
    for name in names[1:]:
        cache.unpin(cache.pin(group, name))
    assert _is_open(held.fd) and os.pread(held.fd, 7, 0) == b"file 0;"
    assert cache.open_count == 2  # the pinned one and the latest: the cap holds even so
    fd = held.fd
    cache.drop(group)  # closing a group waits for the pinned descriptor's unpin
    assert _is_open(fd)
    cache.unpin(held)
    assert not _is_open(fd) and cache.open_count == 0


def test_a_finaliser_never_takes_the_cache_lock(tmp_path: Path) -> None:
    """The collector may finalise a reader while this thread is inside the cache (it did: a hang)."""
    cache = FdCache(4)
    names = _files(tmp_path, 2)
    reader = _DiskReader(str(tmp_path))
    reader._group = group = FdGroup(str(tmp_path), writable=False, cache=cache)
    reader._cache = cache
    assert reader.pread(names[0], 0, 7) == b"file 0;"
    entry = group.entries[names[0]]
    reader.cycle = reader  # type: ignore[attr-defined]  # only the cyclic collector can free it
    del reader

    def collect_inside_the_lock() -> None:
        with cache._lock:
            gc.collect()

    worker = threading.Thread(target=collect_inside_the_lock, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "finaliser deadlocked on the cache lock"
    assert _is_open(entry.fd)  # closed at the cache's next open, not in the finaliser
    cache.unpin(cache.pin(FdGroup(str(tmp_path), writable=False, cache=cache), names[1]))
    assert entry.fd == -1 and not group.entries and cache.open_count == 1


def test_clean_descriptors_are_evicted_before_dirty_ones_and_dirty_ones_are_synced(tmp_path: Path) -> None:
    cache = FdCache(3)
    group = FdGroup(str(tmp_path), writable=True, cache=cache)
    names = _files(tmp_path, 5)
    dirty = cache.pin(group, names[0])
    os.pwrite(dirty.fd, b"F", 0)
    dirty.writes += 1
    cache.unpin(dirty)
    for name in names[1:3]:
        cache.unpin(cache.pin(group, name))
    cache.unpin(cache.pin(group, names[3]))  # the least recently used is dirty: a clean one goes instead
    assert names[0] in group.entries and cache.forced_syncs == 0
    for name in names[1:4]:  # pinned: only the dirty one can make room now
        cache.pin(group, name)
    cache.pin(group, names[4])
    assert names[0] not in group.entries and cache.forced_syncs == 1
    assert (tmp_path / names[0]).read_bytes().startswith(b"File 0")


def test_without_sync_on_close_a_dirty_descriptor_is_closed_and_its_data_kept(tmp_path: Path) -> None:
    cache = FdCache(1)
    cache.sync_dirty_on_close = False  # group fsyncs use syncfs, which writes closed files back too
    group = FdGroup(str(tmp_path), writable=True, cache=cache)
    names = _files(tmp_path, 3)
    for name in names[:2]:  # the first stays resident, the second is transient (the resident is warm)
        dirty = cache.pin(group, name)
        os.pwrite(dirty.fd, b"G", 0)
        dirty.writes += 1
        cache.unpin(dirty)
    assert sorted(group.entries) == names[:1] and cache.transient == 1
    for _ in range(8):  # the resident goes cold; the next miss evicts it, dirty, without an fsync
        cache.unpin(cache.pin(group, names[2]))
    assert names[0] not in group.entries and cache.evictions == 1
    assert cache.forced_syncs == 0 and group.error is None
    assert (tmp_path / names[0]).read_bytes().startswith(b"Gile 0")
    assert (tmp_path / names[1]).read_bytes().startswith(b"Gile 1")


def test_failed_sync_of_an_evicted_dirty_file_is_raised_by_the_next_sync(
    tmp_path: Path, small_cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CACHE, "sync_dirty_on_close", True)  # the mode without syncfs (group_sync)
    os.mkfifo(tmp_path / "fifo")  # fdatasync on a FIFO fails (EINVAL): a real failing fsync
    files = DiskFiles(str(tmp_path))
    entry = files._group.pin("fifo")
    entry.writes += 1
    files._group.unpin(entry)
    for name in _files(tmp_path, small_cap + 1):  # every other entry pinned: the dirty FIFO must go
        files._group.pin(name)
    assert "fifo" not in files._group.entries
    with pytest.raises(OSError):
        files.sync(["f0"])
    files.close()


def test_a_new_or_reopened_logs_first_append_finds_its_files_open(tmp_path: Path) -> None:
    """Creating or reopening a log leaves its live log's files in the cache: the first append opens nothing
    (10,000 new shapes' first appends used to spend ~270 ms reopening what creation had just closed)."""
    storage = FileStorage(tmp_path, "stack", chunk_bytes=100_000)
    writer = storage.create("h", {})
    writer.complete_snapshot(1, 2, [])
    misses = CACHE.misses
    writer.append(txn(1, 5, 30), complete=True)
    assert CACHE.misses == misses
    assert writer.flush() == LogOffset(1, 8)
    writer.close()
    with pytest.raises(FileExistsError):
        storage.create("h", {})
    reopened = FileStorage(tmp_path, "stack", chunk_bytes=100_000)
    writer = reopened.open("h")  # recovery read the files: the live log's stay open for the next append
    misses = CACHE.misses
    writer.append(txn(2, 5, 30), complete=True)
    assert CACHE.misses == misses
    assert writer.flush() == LogOffset(2, 8)
    ids = [i["value"]["id"] for i in log_items(follow(reopened.reader("h")))]  # type: ignore[index]
    assert ids == [f"{tx}-{2 * op}" for tx in (1, 2) for op in range(5)]


def test_writer_and_readers_under_a_tiny_cap(tmp_path: Path, small_cap: int) -> None:
    """Readers on several threads read while the writer appends to many logs; all through 8 descriptors."""
    storage = FileStorage(tmp_path, "stack", chunk_bytes=1500)
    writers = [storage.create(f"h{i}", {}) for i in range(6)]
    for w in writers:
        w.complete_snapshot(1, 2, [])
    stop = threading.Event()
    errors: list[BaseException] = []

    def read(h: str) -> None:
        try:
            while not stop.is_set():
                ids = [i["value"]["id"] for i in log_items(follow(storage.reader(h)))]  # type: ignore[index]
                txns = len(ids) // 5  # whole transactions, in order, nothing torn
                assert ids == [f"{tx}-{2 * op}" for tx in range(1, txns + 1) for op in range(5)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(f"h{i % 6}",)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        for tx in range(1, 60):
            for w in writers:
                w.append(txn(tx, 5, 30), complete=True)
                if tx % 3 == 0:
                    w.flush()
            assert CACHE.open_count <= small_cap + len(threads) + 4  # beyond the cap only while pinned
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    for i, w in enumerate(writers):
        assert w.flush() == LogOffset(59, 8)
        assert len(log_items(follow(storage.reader(f"h{i}")))) == 59 * 5


def _many_shapes(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.storage.many_shapes", str(tmp_path), "1200", "200", *extra],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_many_shapes_under_a_1024_open_files_limit(tmp_path: Path) -> None:
    proc = _many_shapes(tmp_path / "cached")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert figures["peak_cached"] <= 200 and figures["process_fds"] < 260, figures
    assert figures["forced_syncs"] > 0, figures  # every log was dirty at once: eviction had to fsync


def test_many_shapes_fail_without_the_cache(tmp_path: Path) -> None:
    proc = _many_shapes(tmp_path / "uncached", "uncached")
    assert proc.returncode != 0
    assert "Too many open files" in proc.stderr, proc.stderr[-2000:]
