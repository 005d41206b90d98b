"""Hibernating actors, one scenario for both runtimes.

``test_hibernate.py`` runs `run` in its own (unpatched) process for plain threads and, through
``python -m tests.supervisors.hibernate_scenario --gevent``, under ``gevent.monkey.patch_all()`` in a
subprocess, which prints the result as one JSON line. Both results are asserted on identically.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import _thread
import gc
import json
import os
import signal
import threading
import time
from typing import Any, cast

import pykka

from supervisors import (
    ONE_FOR_ALL,
    ChildSpec,
    Killed,
    Supervisor,
    kill,
    lifecycle_of,
    runners,
    start_tree,
    stop_tree,
)
from supervisors.hibernate import HibernatingActor, hibernating
from sync import runtime
from tests.supervisors.actors import Journal, Worker

T = 10.0


class Recorder(HibernatingActor):
    """Records what it handles; checks that it never handles two messages at once."""

    def __init__(self, journal: Journal | None = None, name: str = "rec") -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.active = 0
        self.max_active = 0
        self.journal = journal
        self.name = name

    def on_start(self) -> None:
        self.seen.append("start")
        if self.journal is not None:
            self.journal.add("started", self.name, self.actor_ref)

    def on_stop(self) -> None:
        if self.journal is not None:
            self.journal.add("stopped", self.name)

    def on_failure(self, *exc_info: Any) -> None:
        if self.journal is not None:
            self.journal.add("failed", self.name)

    def on_receive(self, message: Any) -> Any:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if isinstance(message, tuple) and message[0] == "gate":
                message[1].set()  # "I am running"
                message[2].wait(T)  # held until released
            elif message == "boom":
                raise RuntimeError("boom")
            elif message == "yield":
                time.sleep(0)  # a switch point inside the handler (gevent) / a GIL release (threads)
            self.seen.append(message)
            return len(self.seen)
        finally:
            self.active -= 1

    def get_seen(self) -> list[Any]:
        return list(self.seen)

    def get_max_active(self) -> int:
        return self.max_active


HibWorker = hibernating(Worker)


class HibSupervisor(HibernatingActor, Supervisor):
    """A hibernating one_for_all supervisor, as the engine's per-shape subtree."""


def _order_and_ask() -> dict[str, Any]:
    ref = Recorder.start()
    for i in range(500):  # sent at once after start: on_start still runs first
        ref.tell(i)
    n = ref.ask("last", timeout=T)
    seen = ref.proxy().get_seen().get(timeout=T)
    ok = seen == ["start", *range(500), "last"]
    ref.stop(timeout=T)
    return {"order": ok, "ask_reply": n}


def _one_at_a_time() -> int:
    ref = Recorder.start()

    def send(k: int) -> None:
        for i in range(200):
            ref.tell("yield" if i % 2 else (k, i))

    senders = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for s in senders:
        s.start()
    for s in senders:
        s.join(T)
    ref.ask("sync", timeout=T)
    seen = ref.proxy().get_seen().get(timeout=T)
    per_sender_ordered = all(
        [m for m in seen if isinstance(m, tuple) and m[0] == k] == [(k, i) for i in range(0, 200, 2)]
        for k in range(4)
    )
    max_active = int(ref.proxy().get_max_active().get(timeout=T))
    ref.stop(timeout=T)
    return max_active if per_sender_ordered else -1


def _stop_idle() -> dict[str, Any]:
    journal = Journal()
    ref = Recorder.start(journal)
    ref.ask("x", timeout=T)
    stopped = ref.stop(timeout=T)
    life = lifecycle_of(ref)
    t0 = time.monotonic()
    try:
        ref.ask("late", timeout=T)
        late = "answered"
    except pykka.ActorDeadError:
        late = "dead"
    return {
        "stopped": stopped,
        "on_stop": journal.count("stopped", "rec"),
        "exited": life.exited,
        "reason": repr(life.reason),
        "late": late,
        "late_fast": time.monotonic() - t0 < 1.0,
    }


def _stop_running() -> dict[str, Any]:
    journal = Journal()
    ref = Recorder.start(journal)
    running, release = threading.Event(), threading.Event()
    ref.tell(("gate", running, release))
    assert running.wait(T)
    ref.tell("before-stop")
    stop = ref.stop(block=False)
    ref_alive_after_stop_request = ref.is_alive()
    release.set()
    stopped = stop.get(timeout=T)
    life = lifecycle_of(ref)
    try:
        ref.tell("after-stop")
        after = "accepted"
    except pykka.ActorDeadError:
        after = "dead"
    return {
        "alive_until_handled": ref_alive_after_stop_request,
        "stopped": stopped,
        "exited": life.wait_exited(T),
        "on_stop": journal.count("stopped", "rec"),
        "after": after,
    }


def _stop_with_queued_ask() -> str:
    """An ask queued behind the stop request is answered ActorDeadError, not left to time out."""
    ref = Recorder.start()
    running, release = threading.Event(), threading.Event()
    ref.tell(("gate", running, release))
    assert running.wait(T)
    ref.stop(block=False)
    pending = ref.ask("queued", block=False)
    release.set()
    try:
        pending.get(timeout=T)
    except pykka.ActorDeadError:
        return "dead"
    except pykka.Timeout:
        return "timeout"
    return "answered"


def _crash_and_restart() -> dict[str, Any]:
    journal = Journal()
    spec = ChildSpec("w", lambda: HibWorker.start("w", journal))
    root = start_tree(lambda: HibSupervisor.start([spec], name="hib-root"), timeout=T)
    first = journal.ref("w")
    assert first.proxy().incr().get(timeout=T) == 1
    try:
        first.ask("boom", timeout=T)
        ask_error = None
    except RuntimeError as exc:
        ask_error = str(exc)
    journal.wait_count("started", "w", 2)
    second = journal.ref("w")
    reply = second.ask("ping", timeout=T)
    reason = lifecycle_of(first).reason
    second.tell("boom")  # a tell crash: reported the same way
    journal.wait_count("started", "w", 3)
    result = {
        "ask_error": ask_error,
        "failed": journal.count("failed", "w"),
        "first_reason": repr(reason),
        "restarted_reply": reply,
        "fresh_ref": second is not first and journal.ref("w") is not second,
        "stopped": stop_tree(root, T),
    }
    result["all_stopped"] = journal.count("stopped", "w") == 1  # the third incarnation, stopped by the tree
    return result


def _one_for_all_subtree() -> dict[str, Any]:
    """The per-shape pattern: a hibernating one_for_all supervisor without restarts, under a parent."""
    journal = Journal()
    children = [
        ChildSpec("a", lambda: HibWorker.start("a", journal)),
        ChildSpec("b", lambda: HibWorker.start("b", journal)),
    ]
    sub = ChildSpec(
        "sub",
        lambda: HibSupervisor.start(children, strategy=ONE_FOR_ALL, max_restarts=0, name="sub"),
        kind="supervisor",
    )
    root = start_tree(lambda: Supervisor.start([sub], name="root", max_restarts=1, max_seconds=30), timeout=T)
    journal.wait_count("started", "b", 1)
    journal.ref("b").tell("boom")  # b crashes: a is stopped, sub gives up, root restarts sub once
    journal.wait_count("started", "b", 2)
    return {
        "a_stopped": journal.count("stopped", "a"),
        "a_started": journal.count("started", "a"),
        "b_failed": journal.count("failed", "b"),
        "stopped": stop_tree(root, T),
    }


def _kill_idle() -> dict[str, Any]:
    ref = Recorder.start()
    ref.ask("x", timeout=T)
    kill(ref, "test")
    life = lifecycle_of(ref)
    try:
        ref.tell("y")
        tell = "accepted"
    except pykka.ActorDeadError:
        tell = "dead"
    return {"killed": isinstance(life.reason, Killed), "tell": tell}


def _threads_and_greenlets() -> int:
    """Live threads, plus live greenlets under gevent (where threads are greenlets, not always Threads)."""
    greenlet = sys.modules.get("greenlet")
    kind = getattr(greenlet, "greenlet", None)
    live = 0 if kind is None else sum(1 for o in gc.get_objects() if isinstance(o, kind) and not o.dead)
    return threading.active_count() + live


def _idle_actors_hold_no_runner() -> dict[str, Any]:
    before = _threads_and_greenlets()
    refs = [Recorder.start() for _ in range(300)]
    for ref in refs:
        ref.ask("x", timeout=T)
    deadline = time.monotonic() + T
    live, parked = runners.counts()
    while live != parked and time.monotonic() < deadline:
        time.sleep(0.01)  # runners finishing their last burst: poll an observable condition
        live, parked = runners.counts()
    held = _threads_and_greenlets() - before
    for ref in refs:
        ref.stop(timeout=T)
    return {
        "actors": len(refs),
        "all_parked": live == parked,
        "runners_bounded": live <= runners.MAX_IDLE,
        "idle_actors_hold_none": held <= runners.MAX_IDLE + 2,  # at most the pool (and its waker)
    }


def _put_from_os_thread() -> Any:
    """A tell from a real OS thread (gevent's threadpool under gevent; the caller's thread otherwise)."""
    ref = Recorder.start()
    ref.ask("x", timeout=T)
    runtime.run_blocking(ref.tell, "from-thread")
    reply = ref.ask("after", timeout=T)
    seen = ref.proxy().get_seen().get(timeout=T)
    ref.stop(timeout=T)
    return seen == ["start", "x", "from-thread", "after"] and reply == 4


def _stripes_are_os_thread_locks() -> dict[str, Any]:
    """The stripes and the runners' lock are OS-thread locks under gevent too (not greenlet locks): a stripe
    held here keeps a real OS thread out (gevent's threadpool under gevent) until it is released."""
    from supervisors import stripes  # noqa: PLC0415

    def elsewhere(fn: Any, *args: Any) -> Any:  # in another OS thread: gevent's threadpool, or a thread
        if runtime.gevent_active():
            return runtime.run_blocking(fn, *args)
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(fn(*args)))
        thread.start()
        thread.join(T)
        return result[0]

    lock = cast(_thread.RLock, stripes.lock_for(object()))  # what native_lock() makes
    kinds = {type(lock).__module__, type(runners._lock).__module__}
    with lock:
        while_held = elsewhere(lock.acquire, True, 0.05)

    def take_and_release() -> bool:
        taken = lock.acquire(True, 5.0)
        if taken:
            lock.release()
        return taken

    after = elsewhere(take_and_release)
    return {"native": kinds == {"_thread"}, "excluded_while_held": not while_held, "taken_after": after}


def _forked_child_works(*, patch_child: bool = False) -> bool:
    """After a fork (gunicorn forks its workers) the child's actors get runners of the child's own.

    ``patch_child``: the child patches gevent after the fork, as gunicorn's gevent worker does."""
    ref = Recorder.start()
    ref.ask("warm", timeout=T)  # the parent has parked runners (and under gevent its waker)
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 if a hibernating actor answers
        code = 1
        try:
            if patch_child:
                from gevent import monkey  # noqa: PLC0415 - only in this forked child

                monkey.patch_all()
            child = Recorder.start()
            if child.ask("x", timeout=5) == 2:
                code = 0
            child.stop(timeout=5)
        finally:
            os._exit(code)
    ref.stop(timeout=T)
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:  # no event for a child's exit: poll it, bounded
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # a hung child (its hub stuck): fail, do not hang the test
    os.waitpid(pid, 0)
    return False


def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    out.update(_order_and_ask())
    out["max_active"] = _one_at_a_time()
    out["stop_idle"] = _stop_idle()
    out["stop_running"] = _stop_running()
    out["queued_ask_after_stop"] = _stop_with_queued_ask()
    out["crash"] = _crash_and_restart()
    out["subtree"] = _one_for_all_subtree()
    out["kill"] = _kill_idle()
    out["idle"] = _idle_actors_hold_no_runner()
    out["foreign_put"] = _put_from_os_thread()
    out["stripes"] = _stripes_are_os_thread_locks()
    out["forked_child"] = _forked_child_works()
    if not runners._gevent_patched():  # which runtime this scenario runs on
        out["forked_child_patched"] = _forked_child_works(patch_child=True)
    out["left"] = len(pykka.ActorRegistry.get_all())
    return out


if __name__ == "__main__":
    print(json.dumps(run()))  # the subprocess's result for test_hibernate.py
