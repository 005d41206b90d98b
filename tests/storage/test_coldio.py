"""sync.storage.coldio: small log I/O whose page was evicted is told apart without waiting and leaves the
hub's thread (an OS thread waits for the disk instead); the bytes written and read are the same.

Pages are evicted for real (``fdatasync`` then ``POSIX_FADV_DONTNEED``), on a disk-backed directory: on
tmpfs the page cache is the file and nothing can be evicted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync import runtime
from sync.offsets import LogOffset
from sync.storage import FileStorage, cachestat, coldio
from tests.storage.conftest import CHUNK
from tests.storage.helpers import evict, follow, log_items, row, txn

ROOT = Path(__file__).resolve().parents[2]
# Eviction is advice, and without cachestat (older kernels) the probe itself may read an evicted page back in
# (~1 in 200 here): the tests that need a page evicted when the engine looks evict again rather than fail on
# their precondition.
ATTEMPTS = 5
_MEMORY_FS = {"tmpfs", "ramfs"}


def _fs_type(path: Path) -> str:
    best, kind = "", ""
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            point = fields[1]
            inside = str(path).startswith(point.rstrip("/") + "/") or str(path) == point
            if inside and len(point) > len(best):
                best, kind = point, fields[2]
    return kind


@pytest.fixture
def disk_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, or a directory under the repository when that is in memory."""
    if _fs_type(tmp_path.resolve()) not in _MEMORY_FS:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=ROOT, prefix=".coldio-") as d:
        yield Path(d)


def _kernel_has_cachestat() -> bool:
    version = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert version is not None
    return (int(version[1]), int(version[2])) >= (6, 5)


def test_cachestat_is_used_where_the_kernel_has_it() -> None:
    assert _kernel_has_cachestat() == cachestat.AVAILABLE


def test_page_cached_tells_an_evicted_page_exactly(disk_dir: Path) -> None:
    path = disk_dir / "f"
    path.write_bytes(b"x" * 10_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert coldio.page_cached(fd, 9_999)
        if cachestat.AVAILABLE:  # exact: asking reads nothing in, however often it is asked
            assert any(evict(disk_dir) and not coldio.page_cached(fd, 9_999) for _ in range(ATTEMPTS))
            assert [coldio.page_cached(fd, at) for at in (0, 9_999, 9_999)] == [False, False, False]
            assert not cachestat.cached(fd, 9_999)  # (the RWF_NOWAIT probe would have started reading it in)
        # (without cachestat the probe's answer for an evicted page depends on the disk: the next test)
        assert os.pread(fd, 1, 9_999) == b"x"
        assert coldio.page_cached(fd, 9_999)
        assert coldio.page_cached(fd, 20_000)  # past the end: nothing to wait for
        evict(disk_dir)
        assert coldio.page_cached(fd, 20_000)  # (also when the file's last page is not cached)
    finally:
        os.close(fd)


def test_without_cachestat_the_probe_answers_uncached_or_reads_the_page_in(
    disk_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``RWF_NOWAIT`` probe starts reading an uncached page in (readahead); on a fast enough disk it is
    in before the probe looks again, and the answer "cached" is then true.  Which of the two happens is the
    disk's doing: the answer is checked against the page cache, not expected to be one of them."""
    path = disk_dir / "f"
    path.write_bytes(b"x" * 10_000)
    fd = os.open(path, os.O_RDONLY)
    exact = cachestat.AVAILABLE
    try:
        monkeypatch.setattr(cachestat, "AVAILABLE", False)
        assert coldio.page_cached(fd, 9_999)
        assert coldio.page_cached(fd, 20_000)
        for _ in range(ATTEMPTS):
            evict(disk_dir)
            answer = coldio.page_cached(fd, 9_999)
            if exact and answer:  # "cached" only when it is: read in by the probe itself
                monkeypatch.setattr(cachestat, "AVAILABLE", True)
                assert cachestat.cached(fd, 9_999)
                monkeypatch.setattr(cachestat, "AVAILABLE", False)
        assert os.pread(fd, 1, 9_999) == b"x"
        assert coldio.page_cached(fd, 9_999)
    finally:
        os.close(fd)


def test_a_range_is_cached_when_every_page_of_it_is(disk_dir: Path) -> None:
    """A sendfile'd piece (1 MiB) or a small read that starts in a cached page and runs into an evicted one
    would wait on the event loop: with cachestat the whole range is asked about, at the same cost."""
    page = coldio.PAGE
    path = disk_dir / "f"
    path.write_bytes(b"x" * (10 * page))
    fd = os.open(path, os.O_RDONLY)
    try:
        if not cachestat.AVAILABLE:  # the probe asks about the first page only
            assert coldio.page_cached(fd, 0, 10 * page)
            return
        assert any(evict(disk_dir) and not cachestat.cached(fd, 0, 10 * page) for _ in range(ATTEMPTS))
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # a read brings in its own page, no readahead
        for k in (0, 1, 2, 3, 4, 6, 7, 8, 9):
            os.pread(fd, 1, k * page)
        assert not coldio.page_cached(fd, 5 * page)  # every page but the sixth
        assert coldio.page_cached(fd, 0, 5 * page)
        assert not coldio.page_cached(fd, 0, 10 * page)
        assert not coldio.page_cached(fd, 4 * page + 100, page)  # two pages, the second evicted
        assert coldio.page_cached(fd, 6 * page, 100 * page)  # the part past the end does not count
        assert not coldio.page_cached(fd, 5 * page, 100 * page)
        reads = coldio.COUNTERS.reads
        assert not coldio.read_may_wait(fd, 0, 5 * page)
        assert coldio.read_may_wait(fd, 0, 10 * page)
        assert coldio.COUNTERS.reads == reads + 1
    finally:
        os.close(fd)


@pytest.fixture
def offloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions the storage files send to ``run_blocking`` (still run there), fsyncs
    left out."""
    calls: list[str] = []
    real = runtime.run_blocking

    def recording(fn: Any, *args: Any) -> Any:
        name = getattr(fn, "__name__", None)  # (fsyncs may come as partials)
        if name in ("_write_all", "read_exact"):
            calls.append(name)
        return real(fn, *args)

    monkeypatch.setattr(runtime, "run_blocking", recording)  # sync.storage.files.runtime
    return calls


def test_appends_to_an_evicted_tail_and_reads_of_evicted_items_leave_the_loop(
    disk_dir: Path, offloads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FileStorage(disk_dir, "stack", chunk_bytes=CHUNK)
    w = storage.create("h", {"table": "items"})
    w.append_snapshot([row(i) for i in range(3)])
    w.complete_snapshot(10, 20, [])
    w.append(txn(100, 3), complete=True)
    w.flush()
    w.append(txn(101, 2), complete=True)  # cached tails: inline
    assert offloads == []
    w.flush()

    monkeypatch.setattr(coldio, "COLD_AFTER", 0.0)  # every write asks (instead of one idle second)
    w.append(txn(102, 2), complete=True)  # asked, and cached: inline
    assert offloads == []
    w.flush()
    before = (coldio.COUNTERS.writes, coldio.COUNTERS.reads)
    appended = [(100, 3), (101, 2), (102, 2)]
    for tx in range(103, 103 + ATTEMPTS):  # see ATTEMPTS
        offloads.clear()
        assert evict(disk_dir) >= 3
        w.append(txn(tx, 2), complete=True)
        appended.append((tx, 2))
        w.flush()
        # log.json and log.items both end inside an evicted page (log.durable's marker may follow)
        if offloads.count("_write_all") >= 2:
            break
    assert offloads.count("_write_all") >= 2
    assert coldio.COUNTERS.writes - before[0] >= 2

    for _ in range(ATTEMPTS):
        evict(disk_dir)
        offloads.clear()
        chain = follow(storage.reader("h"))
        if "read_exact" in offloads:
            break
    assert "read_exact" in offloads
    assert coldio.COUNTERS.reads > before[1]
    ids = [i["value"]["id"] for i in log_items(chain)]  # type: ignore[index]
    assert ids == [f"{tx}-{2 * k}" for tx, n in appended for k in range(n)]
    assert chain.ends[-1] == LogOffset(appended[-1][0], 2)

    w.close()
    reopened = FileStorage(disk_dir, "stack", chunk_bytes=CHUNK).open("h")  # recovery reads the same log
    assert [i["value"]["id"] for i in log_items(follow(reopened.reader()))] == ids  # type: ignore[index]


def test_under_gevent_an_evicted_tail_is_written_by_another_os_thread(disk_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        from gevent import monkey; monkey.patch_all()
        import os, threading
        from pathlib import Path
        from sync.storage import FileStorage, coldio
        from tests.storage.helpers import row, txn
        from tests.storage.helpers import evict
        coldio.COLD_AFTER = 0.0
        hub = threading.get_ident()
        writers = []
        real = os.pwrite
        def pwrite(fd, data, pos):
            writers.append(threading.get_ident() == hub)
            return real(fd, data, pos)
        os.pwrite = pwrite
        d = Path({str(disk_dir)!r})
        w = FileStorage(d, "stack", chunk_bytes=1000).create("h", {{"table": "items"}})
        w.append_snapshot([row(i) for i in range(3)]); w.complete_snapshot(10, 20, [])
        w.append(txn(100, 3), complete=True); w.flush()
        writers.clear()
        w.append(txn(101, 1), complete=True)
        assert writers and all(writers), writers  # cached: on the hub's thread
        for tx in range(102, 107):  # evicted pages are occasionally back before the write: see ATTEMPTS
            w.flush(); evict(d); writers.clear()
            w.append(txn(tx, 1), complete=True)
            if writers.count(False) >= 2:
                break
        assert writers.count(False) >= 2, writers  # evicted: json and items from the pool's threads
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert proc.stdout.strip() == "ok", proc.stderr
