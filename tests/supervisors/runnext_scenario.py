"""The runners' ``runnext`` rule under gevent (one OS thread: the order of tasks is deterministic).

Run as ``python -m tests.supervisors.runnext_scenario``; prints one JSON object that ``test_hibernate.py``
asserts on. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import threading  # noqa: E402
from typing import Any  # noqa: E402

import pykka  # noqa: E402

from supervisors.hibernate import HibernatingActor  # noqa: E402

T = 10.0


class Node(HibernatingActor):
    """Records its name in ``order`` for every message, then tells each of ``targets`` the same message
    (while it carries a positive count, one less each hop)."""

    def __init__(self, name: str, order: list[str], done: threading.Event, last: str = "") -> None:
        super().__init__()
        self.name = name
        self.order = order
        self.done = done
        self.last = last
        self.targets: list[pykka.ActorRef[Any]] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, list):
            self.targets = message
            return None
        self.order.append(self.name)
        if self.name == self.last:
            self.done.set()
        if message > 0:
            for target in self.targets:
                target.tell(message - 1)
        return None


def _fan_out() -> list[str]:
    """A parent tells 5 workers; each worker tells its sink: every sink but the first runs right after its
    worker (the first worker ran next itself, so its sink waits its turn)."""
    order: list[str] = []
    done = threading.Event()
    sinks = [Node.start(f"s{i}", order, done, last="s1") for i in range(1, 6)]
    workers = [Node.start(f"w{i}", order, done) for i in range(1, 6)]
    parent = Node.start("p", order, done)
    for worker, sink in zip(workers, sinks, strict=True):
        worker.ask([sink], timeout=T)
    parent.ask(workers, timeout=T)
    order.clear()
    parent.tell(2)
    done.wait(T)
    for ref in (*sinks, *workers, parent):
        ref.stop(timeout=T)
    return order


def _ping_pong_does_not_starve() -> int:
    """Two actors telling each other 200 times cannot hold the runner: a third one told right after the
    first ping runs within a few of their hops."""
    order: list[str] = []
    done = threading.Event()
    a = Node.start("a", order, done)
    b = Node.start("b", order, done)
    c = Node.start("c", order, done, last="c")
    a.ask([b], timeout=T)
    b.ask([a], timeout=T)
    order.clear()
    a.tell(200)  # no switch between the two tells: both are queued before any runner runs
    c.tell(0)
    done.wait(T)
    for ref in (a, b, c):
        ref.stop(timeout=T)
    return order.index("c")


def main() -> dict[str, Any]:
    return {"fan_out": _fan_out(), "c_at": _ping_pong_does_not_starve()}


if __name__ == "__main__":
    print(json.dumps(main()))
