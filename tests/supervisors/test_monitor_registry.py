"""Monitors (a non-child learns that an actor died, with the reason) and the per-stack registry."""

from __future__ import annotations

import queue
from typing import Any

import pykka
import pytest

from supervisors import (
    AlreadyStarted,
    Down,
    NotSupervised,
    Registry,
    SupervisedActor,
    Supervisor,
    crash,
    demonitor,
    lifecycle_of,
    monitor,
    start_tree,
    stop_tree,
)
from tests.supervisors.actors import Journal, Worker, spec


class Observer(SupervisedActor):
    """Collects Down messages into a queue the test reads."""

    def __init__(self, out: queue.Queue[Down]) -> None:
        super().__init__()
        self.out = out

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Down):
            self.out.put(message)
        return None


def test_monitor_callback_gets_crash_reason(journal: Journal) -> None:
    ref = Worker.start("w", journal)
    got: queue.Queue[Down] = queue.Queue()
    mon = monitor(ref, got.put)
    crash(ref, KeyError("gone"))
    down = got.get(timeout=5)
    assert down.ref is ref
    assert down.monitor is mon
    assert isinstance(down.reason, KeyError)


def test_monitor_observer_actor_gets_down_message(journal: Journal) -> None:
    out: queue.Queue[Down] = queue.Queue()
    observer = Observer.start(out)
    ref = Worker.start("w", journal)
    monitor(ref, observer)
    with pytest.raises(RuntimeError):
        ref.ask("boom", timeout=2)  # an ask crash is visible to monitors too
    down = out.get(timeout=5)
    assert isinstance(down.reason, RuntimeError)
    assert stop_tree(observer, 5)


def test_monitor_normal_stop_reason_is_none(journal: Journal) -> None:
    ref = Worker.start("w", journal)
    got: queue.Queue[Down] = queue.Queue()
    monitor(ref, got.put)
    assert stop_tree(ref, 5)
    assert got.get(timeout=5).reason is None


def test_monitor_already_dead_delivers_immediately(journal: Journal) -> None:
    ref = Worker.start("w", journal)
    crash(ref, ValueError("x"))
    assert lifecycle_of(ref).wait_exited(5)
    got: list[Down] = []
    monitor(ref, got.append)
    assert len(got) == 1
    assert isinstance(got[0].reason, ValueError)


def test_demonitor_stops_notifications(journal: Journal) -> None:
    ref = Worker.start("w", journal)
    got: list[Down] = []
    kept: queue.Queue[Down] = queue.Queue()
    demonitor(monitor(ref, got.append))
    monitor(ref, kept.put)
    assert stop_tree(ref, 5)
    kept.get(timeout=5)  # the remaining monitor fired, so the cancelled one would have too
    assert got == []


def test_monitor_plain_pykka_actor_is_refused() -> None:
    class Plain(pykka.ThreadingActor):
        pass

    ref = Plain.start()
    try:
        with pytest.raises(NotSupervised):
            monitor(ref, lambda _d: None)
    finally:
        ref.stop(timeout=5)


def test_registry_register_whereis_and_auto_unregister(journal: Journal) -> None:
    reg = Registry("stack-a")
    assert Registry("stack-a") is reg
    ref = Worker.start("w", journal)
    reg.register("cache", ref)
    assert reg.whereis("cache") is ref
    assert Registry("stack-b").whereis("cache") is None  # names are scoped per stack
    other = Worker.start("o", journal)
    with pytest.raises(AlreadyStarted):
        reg.register("cache", other)
    Registry("stack-b").register("cache", other)  # same name, other stack: fine
    crash(ref, RuntimeError("x"))
    assert lifecycle_of(ref).wait_exited(5)
    assert reg.whereis("cache") is None
    assert "cache" not in reg.names()
    assert stop_tree(other, 5)
    assert Registry("stack-b").whereis("cache") is None


def test_registry_restarted_child_reregisters(journal: Journal) -> None:
    reg = Registry("stack-r")
    root = start_tree(
        lambda: Supervisor.start([spec("w", journal, register_as=("stack-r", "worker"))]),
        timeout=5,
    )
    first = reg.whereis("worker")
    assert first is not None
    first.tell("boom")
    journal.wait_count("started", "w", 2)
    second = reg.whereis("worker")
    assert second is not None
    assert second is not first
    assert second.ask("ping", timeout=2) == "pong"
    assert stop_tree(root, 5)
    assert reg.whereis("worker") is None


def test_registry_unregister(journal: Journal) -> None:
    reg = Registry("stack-u")
    ref = Worker.start("w", journal)
    reg.register("x", ref)
    reg.register("x", ref)  # idempotent for the same ref
    reg.unregister("x")
    reg.unregister("x")
    assert reg.whereis("x") is None
    assert stop_tree(ref, 5)
