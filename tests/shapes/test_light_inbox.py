"""LightInbox: FIFO across refills, qsize/empty as the collector reads them, a blocked get woken by a put
from another thread, and actors using it (consumer, storage, shape subtree) handle messages in order."""

from __future__ import annotations

import threading
from typing import Any

import pykka

from sync.storage.inbox import LightInbox


def test_fifo_across_refills_and_sizes() -> None:
    inbox = LightInbox()
    assert inbox.empty() and inbox.qsize() == 0
    for i in range(3):
        inbox.put(i)
    assert inbox.get() == 0  # the batch moved to the out list
    inbox.put(3)
    assert inbox.qsize() == 3 and not inbox.empty()
    assert [inbox.get() for _ in range(3)] == [1, 2, 3]
    assert inbox.empty()


def test_blocked_get_is_woken_by_a_put_from_another_thread() -> None:
    inbox = LightInbox()
    got: list[Any] = []
    done = threading.Event()

    def reader() -> None:
        got.extend(inbox.get() for _ in range(1000))
        done.set()

    t = threading.Thread(target=reader)
    t.start()
    writers = [threading.Thread(target=lambda k=k: [inbox.put((k, i)) for i in range(250)]) for k in range(4)]  # type: ignore[func-returns-value]  # puts in a lambda
    for w in writers:
        w.start()
    for w in writers:
        w.join(10)
    assert done.wait(10)
    t.join(10)
    for k in range(4):  # each writer's items arrive in its order, none lost or repeated
        assert [i for kk, i in got if kk == k] == list(range(250))


class _Echo(pykka.ThreadingActor):
    _create_actor_inbox = staticmethod(LightInbox)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def on_receive(self, message: Any) -> Any:
        if message == "seen":
            return list(self.seen)
        self.seen.append(message)
        return None


def test_an_actor_on_the_light_inbox() -> None:
    ref = _Echo.start()
    try:
        for i in range(500):
            ref.tell(i)
        assert ref.ask("seen", timeout=10) == list(range(500))
    finally:
        ref.stop(timeout=10)
