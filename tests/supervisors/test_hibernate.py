"""Hibernating actors (``supervisors.hibernate``): the same scenario on plain threads and under gevent,
plus the Mailbox on its own."""

from __future__ import annotations

from typing import Any

import pykka
import pytest

from supervisors.hibernate import Mailbox
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
    assert out["forked_child"] is True
    assert out["left"] == 0


def test_hibernating_actors_on_threads() -> None:
    out = hibernate_scenario.run()
    _check(out)
    assert out["forked_child_patched"] is True  # a child patching gevent after the fork (gunicorn's way)


def test_hibernating_actors_under_gevent() -> None:
    _check(run_scenario("tests.supervisors.hibernate_scenario", "--gevent", timeout=120))


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
