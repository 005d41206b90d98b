"""StorageActor: batching fsyncs (size, transaction end, timer), durability reports, deletion, crashes."""

from __future__ import annotations

import queue
from collections.abc import Iterator
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
    ref.ask(AppendTransaction(tuple(txn(18, 1)), complete=True), timeout=T)  # dropped, no crash
    ref.stop(timeout=T)


def test_reader_survives_an_actor_restart(start: Any, file_storage: FileStorage) -> None:
    ref = start(flush_interval=60)
    snapshot(ref)
    reader = file_storage.reader("h")
    assert ref.ask(GetReader(), timeout=T) is reader
    ref.ask(AppendTransaction(tuple(txn(20, 2)), complete=True), timeout=T)
    with pytest.raises(ValueError, match="does not follow"):
        ref.ask(AppendTransaction((item(19, 0),), complete=True), timeout=T)
    assert ref.actor_stopped.wait(T)
    ref2 = start()  # what the supervisor's start function does: re-open the log, start a new actor
    ref2.ask(AppendTransaction(tuple(txn(21, 1)), complete=True), timeout=T)
    assert reader.latest_offset() == LogOffset(21, 0)
    assert [len(c) for c in follow(reader).chunks] == [3, 3]
