"""StorageActor: batching fsyncs (size, transaction end, timer), durability reports, deletion, crashes."""

from __future__ import annotations

import contextlib
import os
import queue
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from sync.offsets import LogOffset
from sync.storage import FileStorage, ShapeGone
from sync.storage.storage_actor import (
    AppendSnapshot,
    AppendTransaction,
    CompleteSnapshot,
    DeleteLog,
    Flush,
    GetReader,
    StorageActor,
)
from tests.storage.helpers import follow, item, row, txn

T = 5.0


@pytest.fixture
def durable() -> queue.Queue[LogOffset]:
    return queue.Queue()


@pytest.fixture
def start(file_storage: FileStorage, durable: queue.Queue[LogOffset]) -> Iterator[Any]:
    refs: list[pykka.ActorRef[Any]] = []

    def _start(handle: str = "h", **kw: Any) -> pykka.ActorRef[Any]:
        writer = (
            file_storage.open(handle) if handle in file_storage.handles() else file_storage.create(handle, {})
        )
        ref = StorageActor.start(writer, file_storage, on_durable=durable.put, **kw)
        refs.append(ref)
        return ref

    yield _start
    for ref in refs:
        if ref.is_alive():
            ref.stop(timeout=T)


def snapshot(ref: pykka.ActorRef[Any]) -> None:
    ref.tell(AppendSnapshot((row(1), row(2))))
    ref.ask(CompleteSnapshot(5, 9, (6,)), timeout=T)


def test_sync_at_transaction_end_reports_durable(start: Any, durable: queue.Queue[LogOffset]) -> None:
    ref = start(flush_interval=60)
    snapshot(ref)
    ref.tell(AppendTransaction(tuple(txn(10, 2)), complete=False))
    ref.tell(AppendTransaction((item(10, 4),), complete=True, sync=True))
    assert durable.get(timeout=T) == LogOffset(10, 4)
    reader = ref.ask(GetReader(), timeout=T)
    assert reader.latest_offset() == LogOffset(10, 4)
    assert [len(c) for c in follow(reader).chunks] == [3, 3]


def test_timer_flushes_without_being_asked(start: Any, durable: queue.Queue[LogOffset]) -> None:
    ref = start(flush_interval=0.02)
    snapshot(ref)
    ref.tell(AppendTransaction(tuple(txn(11, 1)), complete=True))
    assert durable.get(timeout=T) == LogOffset(11, 0)
    ref.tell(AppendTransaction(tuple(txn(12, 1)), complete=True))
    assert durable.get(timeout=T) == LogOffset(12, 0)


def test_size_triggers_flush(start: Any, durable: queue.Queue[LogOffset]) -> None:
    ref = start(flush_interval=60, flush_bytes=500)
    snapshot(ref)
    ref.ask(AppendTransaction(tuple(txn(13, 1)), complete=True), timeout=T)
    assert durable.empty()
    ref.ask(AppendTransaction(tuple(txn(14, 1, size=600)), complete=True), timeout=T)
    assert durable.get_nowait() == LogOffset(14, 0)
    assert ref.ask(Flush(), timeout=T) == LogOffset(14, 0)
    assert durable.empty()  # nothing new to report


def test_stop_flushes_and_reopen_resumes(
    start: Any, durable: queue.Queue[LogOffset], file_storage: FileStorage
) -> None:
    ref = start(flush_interval=60)
    snapshot(ref)
    ref.tell(AppendTransaction(tuple(txn(15, 3)), complete=True))
    ref.stop(timeout=T)
    assert durable.get_nowait() == LogOffset(15, 4)
    ref2 = start()
    assert ref2.ask(GetReader(), timeout=T).latest_offset() == LogOffset(15, 4)


def test_crash_leaves_a_consistent_log(start: Any, file_storage: FileStorage) -> None:
    ref = start(flush_interval=60)
    snapshot(ref)
    ref.ask(AppendTransaction(tuple(txn(16, 1)), complete=True, sync=True), timeout=T)
    ref.tell(AppendTransaction(tuple(txn(17, 1)), complete=False))
    with pytest.raises(ValueError, match="does not follow"):  # out of order: crashes the actor
        ref.ask(AppendTransaction((item(16, 0),), complete=True), timeout=T)
    assert ref.actor_stopped.wait(T)
    assert not ref.is_alive()
    assert file_storage.open("h").last_offset == LogOffset(16, 0)


def test_delete(start: Any, file_storage: FileStorage) -> None:
    ref = start()
    snapshot(ref)
    reader = ref.ask(GetReader(), timeout=T)
    ref.ask(DeleteLog(), timeout=T)
    with pytest.raises(ShapeGone):
        reader.read_chunk(LogOffset.BEFORE_ALL)
    assert file_storage.handles() == []
    assert _open_under(file_storage.shapes_dir.parent) == []  # its files' space is freed once removed
    ref.ask(AppendTransaction(tuple(txn(18, 1)), complete=True), timeout=T)  # dropped, no crash
    ref.stop(timeout=T)


def _open_under(root: Path) -> list[str]:
    """The regular files under ``root`` this process holds open (not directories: the background removal of
    a deleted log may hold its directory open for a moment)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{root}/") and stat.S_ISREG(os.stat(f"/proc/self/fd/{fd}").st_mode):
                found.append(target)
    return found


def test_an_aborted_or_failed_new_log_holds_no_descriptor(file_storage: FileStorage) -> None:
    """Creation opens the live log's files into the process-wide descriptor cache; a log dropped without an
    actor (its subtree failed to start: the writer is aborted, the log deleted), or whose creation failed
    half-way, must not keep them open: a deleted file's space is freed only at its last close."""
    writer = file_storage.create("h", {})
    assert _open_under(file_storage.shapes_dir) != []  # kept open for the first appends
    writer.abort()
    file_storage.delete("h")
    assert _open_under(file_storage.shapes_dir.parent) == []
    with pytest.raises(TypeError):
        file_storage.create("g", object())  # its metadata cannot be encoded: fails after opening the files
    assert _open_under(file_storage.shapes_dir.parent) == []
