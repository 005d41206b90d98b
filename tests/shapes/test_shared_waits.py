"""Shared live waits (sync/shapes/shared_waits.py): one consumer registration per (shape, offset)."""

from __future__ import annotations

from typing import Any

import pykka
import pytest

from supervisors import SupervisedActor
from sync.offsets import LogOffset
from sync.shapes.shared_waits import SharedWaits
from sync.shapes.waiters import AwaitData, CancelWait, WaitResult


def off(tx: int) -> LogOffset:
    return LogOffset(tx, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class FakeConsumer(SupervisedActor):
    """Answers AwaitData at once when data is there, else parks it; ``("notify", n)`` completes the parked
    ones below ``n`` like WaiterList.notify; honours CancelWait."""

    def __init__(self, latest: LogOffset) -> None:
        super().__init__()
        self.latest = latest
        self.parked: dict[int, AwaitData] = {}
        self.registrations = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, AwaitData):
            self.registrations += 1
            if self.latest > message.after:
                message.future.set(WaitResult("data", self.latest))
            else:
                self.parked[id(message.future)] = message
        elif isinstance(message, CancelWait):
            self.parked.pop(id(message.future), None)
        elif message == "count":
            return len(self.parked), self.registrations
        elif isinstance(message, tuple) and message[0] == "notify":
            self.latest = off(message[1])
            for token, wait in list(self.parked.items()):
                if wait.after < self.latest:
                    del self.parked[token]
                    wait.future.set(WaitResult("data", self.latest))
        return None


@pytest.fixture
def consumer() -> Any:
    ref = FakeConsumer.start(off(10))
    yield ref
    if ref.is_alive():
        ref.stop()


def test_waiters_at_one_offset_share_one_registration(consumer: Any) -> None:
    waits = SharedWaits(budget=10, join_window=1)
    members = [waits.join(consumer, off(10)) for _ in range(3)]
    other = waits.join(consumer, off(11))
    assert consumer.ask("count", timeout=5) == (2, 2)
    consumer.tell(("notify", 11))
    assert [m.wait(5) for m in members] == [WaitResult("data", off(11))] * 3
    assert other.wait(0.05) is None  # 11 is not past 11
    for m in members:
        m.cancel()  # what the resource does after every wait: harmless after completion
    assert len(waits) == 0  # the completed group is withdrawn; the other one left with its last member
    assert consumer.ask("count", timeout=5) == (0, 2)
    late = waits.join(consumer, off(10))  # a fresh registration, answered at once
    assert late.wait(5) == WaitResult("data", off(11))
    assert consumer.ask("count", timeout=5) == (0, 3)


def test_registration_is_withdrawn_with_its_last_member(consumer: Any) -> None:
    waits = SharedWaits(budget=10, join_window=1)
    first, second = waits.join(consumer, off(10)), waits.join(consumer, off(10))
    assert first.wait(0.02) is None
    assert consumer.ask("count", timeout=5) == (1, 1)  # second still waits on it
    assert second.wait(0.02) is None
    assert consumer.ask("count", timeout=5) == (0, 1)
    second.cancel()
    assert len(waits) == 0


def test_a_group_accepts_members_only_within_its_join_window(consumer: Any) -> None:
    clock = Clock()
    waits = SharedWaits(budget=10, join_window=1, monotonic=clock)
    early = waits.join(consumer, off(10))
    clock.now += 1.0
    on_time = waits.join(consumer, off(10))
    clock.now += 0.01
    late = waits.join(consumer, off(10))
    assert consumer.ask("count", timeout=5) == (2, 2)
    early.cancel()
    on_time.cancel()
    assert consumer.ask("count", timeout=5) == (1, 2)  # late's own registration stays
    consumer.tell(("notify", 12))
    assert late.wait(5) == WaitResult("data", off(12))


def test_a_gone_consumer_raises_and_leaves_no_group(consumer: Any) -> None:
    waits = SharedWaits(budget=10, join_window=1)
    consumer.stop()
    with pytest.raises(pykka.ActorDeadError):
        waits.join(consumer, off(10))
    assert len(waits) == 0


def test_join_window_must_fit_in_the_budget() -> None:
    with pytest.raises(ValueError, match="join_window"):
        SharedWaits(budget=1, join_window=1)
