"""Group commit: batched appends write what one append per fragment writes, the ticker's group fsync makes
every registered log durable and reports it (``ReportTo``), empty transactions settle only once what was
written before them is durable, and a failed group fsync crashes the log's actor."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from sync.offsets import LogOffset
from sync.storage import FileStorage, Storage, group_sync
from sync.storage.fdcache import CACHE
from sync.storage.files import DiskFiles
from sync.storage.format import ITEM, TXN_END
from sync.storage.group_sync import sync_files
from sync.storage.items import WholeTransactions
from sync.storage.storage_actor import (
    AppendBatch,
    AppendSnapshot,
    CompleteSnapshot,
    Flush,
    ReportTo,
    StorageActor,
    Tick,
)
from sync.storage.ticker import FlushTicker
from tests.storage.helpers import follow, row, txn

T = 5.0
Reports = queue.Queue[tuple[str, LogOffset]]


def _parts() -> list[tuple[tuple[Any, ...], bool]]:
    a, b, c = txn(10, 3), txn(11, 2, size=300), txn(12, 4, size=200)
    return [
        (tuple(a), True),
        (tuple(b[:1]), False),  # a transaction in two fragments
        (tuple(b[1:]), True),
        (tuple(c[:2]), False),
        ((), False),
        (tuple(c[2:]), False),
        ((), True),  # its end comes without items
    ]


def _appended_and_batched(
    storage: Storage, parts: list[tuple[tuple[Any, ...], bool]], names: tuple[str, str] = ("one", "batched")
) -> tuple[Any, Any]:
    """Two new logs after the same snapshot: ``parts`` appended one by one to the first, as one
    ``append_batch`` to the second."""
    one, batched = storage.create(names[0], {}), storage.create(names[1], {})
    for w in (one, batched):
        w.complete_snapshot(5, 9, ())
    for items, complete in parts:
        one.append(items, complete=complete)
    batched.append_batch(parts)
    return one, batched


def test_append_batch_writes_what_appends_write(storage: Storage) -> None:
    one, batched = storage.create("one", {}), storage.create("batched", {})
    for w in (one, batched):
        w.append_snapshot([row(1)])
        w.complete_snapshot(5, 9, ())
    parts = _parts()
    for items, complete in parts:
        one.append(items, complete=complete)
    batched.append_batch(parts[:4])  # ends inside transaction 12 ...
    assert batched.last_offset == LogOffset(11, 2)  # ... which readers do not see yet
    batched.append_batch(parts[4:])
    for w in (one, batched):
        w.flush()
    expected = follow(one.reader())
    assert follow(batched.reader()).items == expected.items
    assert batched.last_offset == one.last_offset == LogOffset(12, 6)
    if isinstance(storage, FileStorage):
        for name in ("log.json", "log.items", "log.chunks"):
            left = (storage.shapes_dir / "one" / name).read_bytes()
            assert left == (storage.shapes_dir / "batched" / name).read_bytes(), name


def test_empty_ends_in_a_row_flag_one_item(storage: Storage) -> None:
    """Empty transaction ends right after a complete part name its last item again: the batch still flags
    only the items that end a transaction (not the fragment that follows them, in a run of more than a few
    items: the batched layout, where every item is flagged when there are as many ends as items)."""
    first = txn(20, 1)
    rest = txn(21, 4)  # as many items in the batch (5) as ends named (1 + 4 empty ones)
    parts = [(tuple(first), True), ((), True), ((), True), ((), True), ((), True), (tuple(rest), False)]
    one, batched = _appended_and_batched(storage, parts)
    for w in (one, batched):
        w.append((), complete=True)
        w.flush()
    entries = [w.files.pread("log.items", 0, 5 * ITEM.size) for w in (one, batched)]
    flags = [fields[5] for fields in ITEM.iter_unpack(entries[1])]
    assert flags == [TXN_END, 0, 0, 0, TXN_END]
    assert entries[0] == entries[1]


def test_whole_transactions_part_writes_what_one_part_per_item_writes(tmp_path: Path) -> None:
    """A ``WholeTransactions`` part is one ``(item, True)`` part per item: same entries (TXN_END on each),
    chunks, visibility; around other parts, in small and large runs, and across a chunk end."""
    singles = [txn(tx, 1, size=29 * tx % 300 + 10)[0] for tx in range(100, 160, 2)]
    split = (tuple(txn(107, 2)[:1]), False)  # between singles[3] and singles[4], ended by ((), True)
    parts_whole: list[Any] = [
        WholeTransactions(singles[:3]),
        WholeTransactions(singles[3:4]),
        split,
        ((), True),
        WholeTransactions(()),
        WholeTransactions(singles[4:30]),
    ]
    parts_single = [
        *[((it,), True) for it in singles[:4]],
        split,
        ((), True),
        *[((it,), True) for it in singles[4:30]],
    ]
    file_storage = FileStorage(tmp_path, "stack", chunk_bytes=1000)
    whole, single = file_storage.create("whole", {}), file_storage.create("single", {})
    for w in (whole, single):
        w.complete_snapshot(5, 9, ())
    whole.append_batch(parts_whole[:2])
    single.append_batch(parts_single[:4])
    assert whole.last_offset == single.last_offset == singles[3].offset
    whole.append_batch(parts_whole[2:])
    single.append_batch(parts_single[4:])
    for w in (whole, single):
        w.flush()
    assert whole.last_offset == single.last_offset == singles[29].offset
    assert whole.state.view == single.state.view and whole.state.view.log_chunks > 2
    for name in ("log.json", "log.items", "log.chunks", "log.durable"):
        left = (file_storage.shapes_dir / "whole" / name).read_bytes()
        assert left == (file_storage.shapes_dir / "single" / name).read_bytes(), name


def test_small_appends_write_the_bytes_of_one_big_batch(tmp_path: Path) -> None:
    """Appends of up to a few items take a scalar path of their own: same entries, crcs, flags, chunks."""
    parts = [(tuple(txn(tx, tx % 4 + 1, size=37 * tx % 400)), tx % 3 != 0) for tx in range(10, 60)]
    parts.append(((), True))
    exact = sum(
        len(it.json) for items, _ in parts[:3] for it in items
    )  # a chunk ends exactly at the threshold
    file_storage = FileStorage(tmp_path, "stack", chunk_bytes=exact)
    small, big = _appended_and_batched(file_storage, parts, ("small", "big"))
    for w in (small, big):
        w.flush()
    assert small.last_offset == big.last_offset == LogOffset(59, 6)
    assert small.state.view == big.state.view and small.state.view.log_chunks > 5
    for name in ("log.json", "log.items", "log.chunks", "log.durable"):
        left = (file_storage.shapes_dir / "small" / name).read_bytes()
        assert left == (file_storage.shapes_dir / "big" / name).read_bytes(), name


def test_batch_ending_an_earlier_fragment_survives_reopen(file_storage: FileStorage) -> None:
    w = file_storage.create("h", {})
    w.append_snapshot([row(1)])
    w.complete_snapshot(5, 9, ())
    w.append_batch([(tuple(txn(20, 2)), False)])
    w.append_batch([((), True), (tuple(txn(21, 1)), True)])
    w.flush()
    w.close()
    again = file_storage.open("h")
    assert again.last_offset == LogOffset(21, 0)
    headers = [i.get("headers") for i in follow(again.reader()).items]
    assert [h["lsn"] for h in headers if isinstance(h, dict) and "lsn" in h] == ["20", "20", "21"]
    again.close()


def test_sync_files_marks_every_dirty_descriptor_synced(tmp_path: Path) -> None:
    files = [DiskFiles(str(tmp_path)), DiskFiles(str(tmp_path))]
    files[0].append("a", b"x" * 100)
    files[0].append("b", b"y")
    files[1].append("c", b"z")
    assert sync_files(files) == [None, None]
    for f in files:
        entries = list(f.group.entries.values())
        assert entries and all(e.writes == e.synced for e in entries)
    assert sync_files([]) == []


def test_fdatasync_method_syncs_each_file_and_closed_files_first(tmp_path: Path) -> None:
    """storage.sync_method = "fdatasync": no syncfs; every dirty descriptor is fdatasync'ed, and the
    descriptor cache fsyncs a dirty file before closing it (nothing else would write it back)."""
    try:
        group_sync.set_method("fdatasync")
        assert not group_sync.syncfs_available()
        assert CACHE.sync_dirty_on_close
        files = [DiskFiles(str(tmp_path)), DiskFiles(str(tmp_path))]
        files[0].append("a", b"x" * 100)
        files[1].append("c", b"z")
        assert sync_files(files) == [None, None]
        for f in files:
            entries = list(f.group.entries.values())
            assert entries and all(e.writes == e.synced for e in entries)
        with pytest.raises(ValueError, match="sync_method"):
            group_sync.set_method("fsync")
    finally:
        group_sync.set_method("auto")
    assert group_sync.syncfs_available() == (group_sync._AVAILABLE is not None)
    assert CACHE.sync_dirty_on_close == (group_sync._AVAILABLE is None)


@pytest.fixture
def ticker() -> Iterator[FlushTicker]:
    t = FlushTicker(0.02, Tick(), name="test-group").start()
    yield t
    t.stop(join=T)


@pytest.fixture
def actors(file_storage: FileStorage) -> Iterator[Any]:
    refs: list[pykka.ActorRef[Any]] = []

    def start(handle: str, ticker: FlushTicker | None, reports: Reports) -> tuple[pykka.ActorRef[Any], Any]:
        writer = file_storage.create(handle, {})
        ref = StorageActor.start(writer, file_storage, ticker=ticker, flush_interval=60)
        ref.tell(AppendSnapshot((row(1),)))
        ref.ask(CompleteSnapshot(5, 9, ()), timeout=T)
        ref.tell(ReportTo(handle, lambda h, off: reports.put((h, off))))
        refs.append(ref)
        return ref, writer

    yield start
    for ref in refs:
        if ref.is_alive():
            ref.stop(timeout=T)


def _until(reports: Reports, handle: str, offset: LogOffset) -> None:
    deadline = time.monotonic() + T
    while True:
        h, off = reports.get(timeout=max(0.0, deadline - time.monotonic()))
        if h == handle and off >= offset:
            assert off == offset
            return


def test_group_round_reports_every_log(ticker: FlushTicker, actors: Any) -> None:
    reports: Reports = queue.Queue()
    refs = [actors(f"h{i}", ticker, reports)[0] for i in range(20)]
    for i, ref in enumerate(refs):
        ref.tell(AppendBatch(((tuple(txn(100 + i, 2)), True),)))
    seen: dict[str, LogOffset] = {}
    deadline = time.monotonic() + T
    while len(seen) < len(refs) or any(o.tx < 100 for o in seen.values()):
        h, off = reports.get(timeout=max(0.0, deadline - time.monotonic()))
        seen[h] = off
    assert seen == {f"h{i}": LogOffset(100 + i, 2) for i in range(20)}
    assert ticker.pending == 0


def test_settle_waits_for_what_was_written_before(actors: Any) -> None:
    reports: Reports = queue.Queue()
    ref, _ = actors("h", None, reports)  # its own ticker, 60 s: nothing syncs unless asked
    ref.ask(AppendBatch(((tuple(txn(30, 1)), True),), settle=31), timeout=T)
    with pytest.raises(queue.Empty):
        reports.get(timeout=0.1)  # transaction 31 added nothing, but 30 is not durable yet
    assert ref.ask(Flush(), timeout=T) == LogOffset(30, 0)
    _until(reports, "h", LogOffset(31, 0))
    ref.tell(AppendBatch((), settle=32))  # nothing unsynced: settled at once
    _until(reports, "h", LogOffset(32, 0))


def test_failed_group_sync_crashes_the_actor(ticker: FlushTicker, actors: Any) -> None:
    reports: Reports = queue.Queue()
    ref, writer = actors("h", ticker, reports)
    ref.ask(AppendBatch(((tuple(txn(40, 1)), True),)), timeout=T)
    _until(reports, "h", LogOffset(40, 0))
    # injected where a failed fsync of a file the descriptor cache closed is recorded
    writer.files.group.error = OSError(5, os.strerror(5))
    ref.tell(AppendBatch(((tuple(txn(41, 1)), True),)))
    deadline = time.monotonic() + T
    while ref.is_alive():
        assert time.monotonic() < deadline, "the actor survived a failed fsync"
        time.sleep(0.01)
    while not reports.empty():
        assert reports.get_nowait()[1] < LogOffset(41, 0)  # never claimed durable


def test_a_flush_after_a_group_sync_fsyncs_nothing_again(file_storage: FileStorage) -> None:
    w = file_storage.create("h", {})
    w.append_snapshot([row(1)])
    w.complete_snapshot(5, 9, ())
    w.append_batch([(tuple(txn(50, 2)), True)])
    point = w.sync_point()
    assert sync_files([w.files]) == [None]
    w.note_synced(point)
    assert not w.has_unsynced and w.durable_offset == LogOffset(50, 2)
    synced: list[list[str]] = []
    real_sync = w.files.sync

    def spy(names: Iterable[str]) -> None:
        synced.append(list(names))
        real_sync(synced[-1])

    w.files.sync = spy  # type: ignore[method-assign, assignment]  # a spy without sync's entries keyword
    assert w.flush() == LogOffset(50, 2)
    assert synced == []  # closing thousands of logs at shutdown costs no fsync each
    w.append_batch([(tuple(txn(51, 1)), True)])  # written after the group sync: the flush covers it
    assert w.flush() == LogOffset(51, 0)
    assert synced and "log.items" in synced[0]
    w.close()
    again = file_storage.open("h")
    assert again.durable_offset == LogOffset(51, 0)
    again.close()


def test_the_stack_applies_the_configured_method(tmp_path: Path) -> None:
    from sync.settings import Settings  # noqa: PLC0415 - the engine's wiring, only for this test
    from sync.stack import build_services  # noqa: PLC0415

    settings = Settings().replace("storage", dir=str(tmp_path), sync_method="fdatasync")
    try:
        services = build_services(settings)
        services.resolver.close()
        assert not group_sync.syncfs_available()
    finally:
        group_sync.set_method("auto")
