"""Test actors and a thread-safe journal for the supervisor tests (no sleeps: waits on a Condition)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from supervisors import ChildSpec, Registry, Restart, SupervisedActor


@dataclass
class Journal:
    """Records (event, name) pairs from actors; tests wait for conditions on it."""

    events: list[tuple[str, str]] = field(default_factory=list)
    refs: dict[str, pykka.ActorRef[Any]] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, event: str, name: str, ref: pykka.ActorRef[Any] | None = None) -> None:
        with self.cond:
            self.events.append((event, name))
            if ref is not None:
                self.refs[name] = ref
            self.cond.notify_all()

    def count(self, event: str, name: str) -> int:
        with self.cond:
            return sum(1 for e in self.events if e == (event, name))

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting; journal: {self.events}")
                self.cond.wait(remaining)

    def wait_count(self, event: str, name: str, n: int, timeout: float = 5.0) -> None:
        self.wait(lambda: sum(1 for e in self.events if e == (event, name)) >= n, timeout)

    def ref(self, name: str) -> pykka.ActorRef[Any]:
        with self.cond:
            return self.refs[name]

    def names(self, event: str) -> list[str]:
        with self.cond:
            return [n for e, n in self.events if e == event]


class Worker(SupervisedActor):
    """Journals its lifecycle; crashes on demand through tell, ask or proxy calls."""

    def __init__(
        self,
        name: str,
        journal: Journal,
        *,
        fail_on_start: bool = False,
        hang_on_stop: threading.Event | None = None,
        gate: threading.Event | None = None,
        register_as: tuple[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.journal = journal
        self.fail_on_start = fail_on_start
        self.hang_on_stop = hang_on_stop
        self.gate = gate
        self.register_as = register_as
        self.value = 0

    def on_start(self) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_on_start:
            self.journal.add("start_failed", self.name)
            raise RuntimeError(f"{self.name} cannot start")
        if self.register_as is not None:
            stack_id, name = self.register_as
            Registry(stack_id).register(name, self.actor_ref)
        self.journal.add("started", self.name, self.actor_ref)

    def on_stop(self) -> None:
        self.journal.add("stopping", self.name)
        if self.hang_on_stop is not None:
            self.hang_on_stop.wait(10)
        self.journal.add("stopped", self.name)

    def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.journal.add("failed", self.name)

    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError(f"{self.name} boom")
        if message == "ping":
            return "pong"
        if message == "stop-self":
            self.stop()
            return None
        return super().on_receive(message)

    def explode(self) -> int:
        self.value = -1  # damaged state
        raise ValueError(f"{self.name} exploded")

    def incr(self) -> int:
        self.value += 1
        return self.value


def spec(
    name: str,
    journal: Journal,
    restart: Restart = Restart.PERMANENT,
    shutdown: float = 2.0,
    **kwargs: Any,
) -> ChildSpec:
    return ChildSpec(name, lambda: Worker.start(name, journal, **kwargs), restart=restart, shutdown=shutdown)


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll-with-deadline for conditions that have no event (e.g. a supervisor's bookkeeping)."""
    deadline = time.monotonic() + timeout
    done = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        done.wait(0.005)
