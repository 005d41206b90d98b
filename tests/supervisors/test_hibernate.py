"""Hibernating actors (``supervisors.hibernate``): the same scenario on plain threads and under gevent,
plus the Mailbox on its own."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from supervisors.hibernate import HibernatingActor, Mailbox
from tests.fixtures.scenario import run_scenario
from tests.supervisors import hibernate_scenario


def _check(out: dict[str, Any]) -> None:
    assert out["order"] is True  # on_start first, then every message in send order
    assert out["ask_reply"] == 502  # "start" + 500 + "last"
    assert out["max_active"] == 1  # never two messages at once, per-sender order kept
    assert out["stop_idle"] == {
        "stopped": True,
        "on_stop": 1,
        "exited": True,
        "reason": "None",
        "late": "dead",
        "late_fast": True,
    }
    assert out["stop_running"] == {
        "alive_until_handled": True,
        "stopped": True,
        "exited": True,
        "on_stop": 1,
        "after": "dead",
    }
    assert out["queued_ask_after_stop"] == "dead"
    crash = out["crash"]
    assert crash["ask_error"] == "w boom"  # the caller gets the exception ...
    assert crash["failed"] == 2  # ... on_failure runs (ask and tell crash) ...
    assert crash["first_reason"] == "RuntimeError('w boom')"  # ... and the supervisor restarted it
    assert crash["restarted_reply"] == "pong"
    assert crash["fresh_ref"] is True
    assert crash["stopped"] is True
    assert crash["all_stopped"] is True
    assert out["subtree"] == {"a_stopped": 1, "a_started": 2, "b_failed": 1, "stopped": True}
    assert out["kill"] == {"killed": True, "tell": "dead"}
    assert out["idle"] == {
        "actors": 300,
        "all_parked": True,
        "runners_bounded": True,
        "idle_actors_hold_none": True,
    }
    assert out["foreign_put"] is True
    assert out["stripes"] == {"native": True, "excluded_while_held": True, "taken_after": True}
    assert out["forked_child"] is True
    assert out["left"] == 0


def test_hibernating_actors_on_threads() -> None:
    out = hibernate_scenario.run()
    _check(out)
    assert out["forked_child_patched"] is True  # a child patching gevent after the fork (gunicorn's way)


def test_hibernating_actors_under_gevent() -> None:
    _check(run_scenario("tests.supervisors.hibernate_scenario", "--gevent", timeout=120))


def test_a_task_taken_in_turn_has_its_first_wake_up_run_next() -> None:
    out = run_scenario("tests.supervisors.runnext_scenario", timeout=60)
    # w1 ran next itself, so its sink waits its turn; every other worker's sink runs right after it
    assert out["fan_out"] == ["p", "w1", "w2", "s2", "w3", "s3", "w4", "s4", "w5", "s5", "s1"]
    # a, then b (next), then c: a task run next never puts another ahead of the queue (a ping-pong of two
    # actors would otherwise hold the runner for its 200 hops)
    assert out["c_at"] == 2


class _Envelope:
    def __init__(self, message: Any, reply_to: Any = None) -> None:
        self.message = message
        self.reply_to = reply_to


def test_mailbox_fifo_across_refills_and_counts() -> None:
    box = Mailbox()  # never opened: puts queue without starting a runner
    for i in range(3):
        box.put(i)
    assert box.qsize() == 3 and not box.empty()
    assert box.take() == 0
    box.put(3)  # arrives while a batch is being drained
    assert [box.take(), box.take(), box.take()] == [1, 2, 3]
    assert box.empty() and box.qsize() == 0
    assert box.take() is None


def test_mailbox_close_returns_the_rest_and_refuses_later_asks() -> None:
    box = Mailbox()
    for i in range(4):
        box.put(i)
    assert box.take() == 0
    box.put(4)
    assert box.close() == [1, 2, 3, 4]
    future = pykka.ThreadingFuture[Any]()
    box.put(_Envelope("late", future))
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=1)
    assert box.empty()


def test_mailbox_take_tells_takes_only_leading_tells_of_the_kinds() -> None:
    box = Mailbox()
    future = pykka.ThreadingFuture[Any]()
    for env in (_Envelope(1, None), _Envelope(2, None), _Envelope("x", None), _Envelope(3, None)):
        box.put(env)
    assert box.take_tells((int,), 10) == [1, 2]  # stops at the first message of another kind
    taken = box.take()
    assert taken is not None
    assert taken.message == "x"
    box.put(_Envelope(4, future))  # an ask: its caller waits for its own answer, never merged
    box.put(_Envelope(5, None))
    assert box.take_tells((int,), 10) == [3]
    taken = box.take()
    assert taken is not None
    assert taken.message == 4
    for i in range(6, 9):
        box.put(_Envelope(i, None))
    assert box.take_tells((int,), 2) == [5, 6]  # the limit
    assert box.take_tells((int,), 10) == [7, 8]
    assert box.take_tells((int,), 10) == [] and box.take() is None


class _Batcher(HibernatingActor):
    """Blocks on a gate, then answers how each handled message saw the queue behind it."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.handled: list[list[Any]] = []

    def on_receive(self, message: Any) -> Any:
        if message == "gate":
            self.gate.wait(10)
            return None
        if message == "report":
            return self.handled
        self.handled.append([message, *self.take_queued((int,))])
        return None


def test_handler_takes_the_tells_queued_behind_it_in_order() -> None:
    gate = threading.Event()
    ref = _Batcher.start(gate)
    try:
        ref.tell("gate")  # holds the runner while the rest queues up
        for i in range(5):
            ref.tell(i)
        ref.tell("str")  # another kind ends the batch
        ref.tell(5)
        gate.set()
        assert ref.ask("report", timeout=10) == [[0, 1, 2, 3, 4], ["str", 5]]
    finally:
        ref.stop(timeout=10)
