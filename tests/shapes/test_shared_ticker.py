"""One FlushTicker per stack: storage actors sharing it are made durable within the interval, only actors
with unsynced data are ticked, and no actor starts a timer thread/greenlet of its own."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from sync.offsets import LogOffset
from sync.storage import FileStorage
from sync.storage.storage_actor import AppendSnapshot, AppendTransaction, CompleteSnapshot, StorageActor, Tick
from sync.storage.ticker import FlushTicker
from tests.storage.helpers import row, txn

T = 10.0


@pytest.fixture
def ticker() -> Iterator[FlushTicker]:
    t = FlushTicker(0.05, Tick(), name="test-ticker").start()
    yield t
    t.stop(join=T)


@pytest.fixture
def actors(tmp_path: Path) -> Iterator[Any]:
    storage = FileStorage(tmp_path, "stack", chunk_bytes=1000)
    refs: list[pykka.ActorRef[Any]] = []

    def start(n: int, ticker: FlushTicker, durable: queue.Queue[tuple[int, LogOffset]]) -> list[Any]:
        for i in range(n):
            writer = storage.create(f"h{i}", {})
            ref = StorageActor.start(
                writer,
                storage,
                on_durable=lambda off, i=i: durable.put((i, off)),
                flush_interval=60,  # ignored: the shared ticker decides
                ticker=ticker,
            )
            ref.tell(AppendSnapshot((row(1),)))
            ref.ask(CompleteSnapshot(5, 9, ()), timeout=T)
            refs.append(ref)
        return refs[-n:]

    yield start
    for ref in refs:
        if ref.is_alive():
            ref.stop(timeout=T)


def _wait(cond: Any, deadline: float = T) -> None:
    end = time.monotonic() + deadline
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_shared_ticker_makes_every_actor_durable(ticker: FlushTicker, actors: Any) -> None:
    durable: queue.Queue[tuple[int, LogOffset]] = queue.Queue()
    refs = actors(30, ticker, durable)
    _wait(lambda: ticker.pending == 0)  # the snapshot's fsync left nothing pending
    while not durable.empty():
        durable.get_nowait()
    started = time.monotonic()
    for ref in refs[::2]:  # only half of them get data: the others must not be pending
        ref.tell(AppendTransaction(tuple(txn(20, 2)), complete=True))
    seen: dict[int, LogOffset] = {}
    while len(seen) < 15:
        i, off = durable.get(timeout=T)
        seen[i] = off
    elapsed = time.monotonic() - started
    assert set(seen) == set(range(0, 30, 2))
    assert all(off == LogOffset(20, 2) for off in seen.values())
    assert elapsed < 2.0, elapsed  # within the interval (0.05 s), with generous slack for a busy machine
    _wait(lambda: ticker.pending == 0)


def test_flush_on_transaction_end_leaves_nothing_pending(ticker: FlushTicker, actors: Any) -> None:
    durable: queue.Queue[tuple[int, LogOffset]] = queue.Queue()
    (ref,) = actors(1, ticker, durable)
    ticker.stop(join=T)  # no more ticks: only the synchronous fsync can make it durable
    ref.ask(AppendTransaction(tuple(txn(30, 1)), complete=False), timeout=T)
    assert ticker.pending == 1  # buffered, registered for a tick
    ref.ask(AppendTransaction(tuple(txn(31, 1)), complete=True, sync=True), timeout=T)
    assert ticker.pending == 0  # flushed at the transaction end: unregistered
    offsets = []
    while not durable.empty():
        offsets.append(durable.get_nowait()[1])
    assert offsets[-1] == LogOffset(31, 0)


def test_stopped_actor_leaves_the_ticker(ticker: FlushTicker, actors: Any) -> None:
    durable: queue.Queue[tuple[int, LogOffset]] = queue.Queue()
    (ref,) = actors(1, ticker, durable)
    ticker.stop(join=T)
    ref.ask(AppendTransaction(tuple(txn(40, 1)), complete=True), timeout=T)
    assert ticker.pending == 1
    ref.stop(timeout=T)
    assert ticker.pending == 0


def test_shared_ticker_starts_no_thread_per_actor(ticker: FlushTicker, actors: Any) -> None:
    durable: queue.Queue[tuple[int, LogOffset]] = queue.Queue()
    before = threading.active_count()
    refs = actors(20, ticker, durable)
    for ref in refs:
        ref.ask(AppendTransaction(tuple(txn(50, 1)), complete=True), timeout=T)
    assert threading.active_count() - before == 20  # one thread per actor, no timer threads
