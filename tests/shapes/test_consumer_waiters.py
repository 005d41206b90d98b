"""WaiterList bookkeeping (pure) and DataWaiter against a live consumer stand-in."""

from __future__ import annotations

from typing import Any

import pykka
from hypothesis import given
from hypothesis import strategies as st

from supervisors import SupervisedActor
from sync.offsets import LogOffset
from sync.shapes.waiters import AwaitData, CancelWait, DataWaiter, WaiterList, WaitResult


class Recorder:
    def __init__(self) -> None:
        self.results: list[WaitResult | None] = []

    def set(self, value: WaitResult | None = None) -> None:
        self.results.append(value)


def off(tx: int, op: int = 0) -> LogOffset:
    return LogOffset(tx, op)


def test_notify_completes_exactly_the_waiters_behind_the_new_data() -> None:
    waiters = WaiterList()
    futures = {tx: Recorder() for tx in (10, 20, 30)}
    for tx, f in futures.items():
        waiters.add(tx, off(tx), f, deadline=100.0)
    assert waiters.notify(off(20)) == 1
    assert futures[10].results == [WaitResult("data", off(20))]
    assert futures[20].results == [] and futures[30].results == []
    assert waiters.notify(off(31)) == 2
    assert len(waiters) == 0
    assert all(len(f.results) == 1 for f in futures.values())  # never completed twice


def test_cancel_prune_and_complete_all() -> None:
    waiters = WaiterList()
    a, b, c = Recorder(), Recorder(), Recorder()
    waiters.add(1, off(5), a, deadline=1.0)
    waiters.add(2, off(5), b, deadline=50.0)
    waiters.add(3, off(5), c, deadline=60.0)
    assert waiters.cancel(2) is True
    assert waiters.cancel(2) is False
    assert waiters.prune(now=10.0) == 1  # a expired
    assert len(waiters) == 1
    assert waiters.complete_all(WaitResult("rotated", reason="gone")) == 1
    assert c.results == [WaitResult("rotated", reason="gone")]
    assert a.results == [] and b.results == []  # removed waiters are never completed
    assert waiters.notify(off(100)) == 0


def test_a_reused_token_is_not_dropped_by_its_predecessors_stale_heap_items() -> None:
    # Tokens are id(future): CPython reuses the id of a completed request's future for a later one.  The
    # earlier registration's heap items must not act on the later waiter (it lost its wake-up and sat out
    # its whole long-poll timeout).
    waiters = WaiterList()
    first, second = Recorder(), Recorder()
    waiters.add(7, off(5), first, deadline=10.0)
    assert waiters.notify(off(6)) == 1  # completed; its deadline item stays in the heap
    waiters.add(7, off(50), second, deadline=100.0)
    assert waiters.prune(now=20.0) == 0  # the first's deadline passed, not the second's
    assert len(waiters) == 1
    assert waiters.notify(off(51)) == 1
    assert second.results == [WaitResult("data", off(51))]
    waiters.add(7, off(60), first, deadline=100.0)
    waiters.cancel(7)
    waiters.add(7, off(90), second, deadline=200.0)
    assert waiters.notify(off(61)) == 0  # the cancelled one's offset item must not wake the new waiter
    assert second.results == [WaitResult("data", off(51))]


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=200), st.integers(0, 60))
def test_heaps_stay_bounded_by_live_waiters(ops: list[tuple[int, bool]], latest: int) -> None:
    waiters = WaiterList()
    live: dict[int, int] = {}
    for token, (tx, cancel) in enumerate(ops):
        waiters.add(token, off(tx), Recorder(), deadline=1e9)
        live[token] = tx
        if cancel:
            waiters.cancel(token)
            del live[token]
        waiters.prune(0.0)
    assert len(waiters) == len(live)
    assert waiters.notify(off(latest)) == sum(1 for tx in live.values() if tx < latest)
    assert len(waiters._by_offset) <= max(64, 4 * len(live)) + len(live)  # memory bound


class FakeConsumer(SupervisedActor):
    """Answers AwaitData at once with data, or parks it and honours CancelWait (like the real consumer)."""

    def __init__(self, latest: LogOffset) -> None:
        super().__init__()
        self.latest = latest
        self.parked: dict[int, Any] = {}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, AwaitData):
            if self.latest > message.after:
                message.future.set(WaitResult("data", self.latest))
            else:
                self.parked[id(message.future)] = message.future
        elif isinstance(message, CancelWait):
            self.parked.pop(id(message.future), None)
        elif message == "count":
            return len(self.parked)
        return None


def test_data_waiter_gets_data_or_times_out_and_cancels() -> None:
    ref = FakeConsumer.start(off(10))
    try:
        assert DataWaiter(ref, off(5), timeout=5).wait(5) == WaitResult("data", off(10))
        waiter = DataWaiter(ref, off(10), timeout=5)
        assert waiter.wait(0.05) is None
        assert ref.ask("count", timeout=5) == 0  # the timed-out registration was withdrawn
        waiter.cancel()  # idempotent
    finally:
        ref.stop()
    try:
        DataWaiter(ref, off(1), timeout=1)
    except pykka.ActorDeadError:
        pass
    else:
        raise AssertionError("a gone consumer must raise ActorDeadError")
