"""A small pool of runner threads/greenlets for `supervisors.hibernate`.

Why this module exists: a hibernating actor needs a runner each time a message arrives while it is idle.
Starting a fresh greenlet or thread per wake-up costs 5-10 times a switch to a parked one (measured on
this stack: ~50 µs against ~5-8 µs for ``gevent.sleep(0)`` under load), and wake-ups are frequent (every
routed transaction wakes a consumer and its storage). So finished runners park here, at most
``MAX_IDLE`` of them process-wide, and `schedule` hands a task to a parked runner (the latest parked,
whose stack is warm) or starts a new one when none is parked. The pool therefore grows with the number
of actors *busy at once*, never with the number of actors.

Runners are greenlets under gevent monkey patching (started without waiting for them: `schedule` never
switches greenlets, so a ``tell`` never yields), daemon ``threading.Thread``\\ s otherwise. Under gevent a
runner must belong to the hub's OS thread (the first to schedule); `schedule` called from another OS
thread (a thread of gevent's threadpool, say) hands the task to a waker greenlet of the hub's thread
through a list and an Event (gevent's ``Event.set`` is safe from other threads) instead.
"""

from __future__ import annotations

import _thread
import logging
import os
import threading
from collections.abc import Callable
from itertools import count

__all__ = ["MAX_IDLE", "counts", "schedule"]

logger = logging.getLogger(__name__)

MAX_IDLE = 32
"""Parked runners kept process-wide; more finish instead of parking."""

Task = Callable[[], None]


class _Runner:
    __slots__ = ("gate", "task")

    def __init__(self, task: Task) -> None:
        self.task: Task | None = task
        self.gate = _thread.allocate_lock()  # held while parked; released to hand over a task
        self.gate.acquire()


_lock = threading.Lock()
_idle: list[_Runner] = []
_live = 0  # runners started and not finished (running a task or parked)
_names = count(1)
_waker: list[tuple[int, threading.Event]] = []  # (hub thread's native id, its waker's event); gevent only
_pending: list[Task] = []  # tasks handed over by other OS threads (gevent only)


def schedule(task: Task) -> None:
    """Run ``task()`` soon on a runner of its own (never in the caller). ``task`` must not raise."""
    if _gevent_patched() and _foreign(task):
        return
    with _lock:
        runner = _idle.pop() if _idle else None
        if runner is not None:
            runner.task = task
    if runner is not None:
        runner.gate.release()
    else:
        _start(_Runner(task))


def counts() -> tuple[int, int]:
    """``(live, parked)`` runners of this process (live includes parked ones)."""
    with _lock:
        return _live, len(_idle)


def _start(runner: _Runner) -> None:
    global _live  # the pool's own counter
    with _lock:
        _live += 1
    if _gevent_patched():
        # A raw greenlet: ``threading.Thread.start`` would wait for it to run, i.e. switch greenlets inside
        # the caller's ``tell``, which must never yield (it did not with a parked actor either).
        _thread.start_new_thread(_run, (runner,))
        return
    thread = threading.Thread(target=_run, args=(runner,), name=f"actor-runner-{next(_names)}", daemon=True)
    thread.start()


def _run(runner: _Runner) -> None:
    global _live  # the pool's own counter
    while True:
        task = runner.task
        runner.task = None
        if task is not None:
            try:
                task()
            except Exception:  # a task must not raise; keep the runner usable anyway (a BaseException
                logger.exception("actor runner task %r raised", task)  # such as GreenletExit ends it)
        with _lock:
            if len(_idle) >= MAX_IDLE:
                _live -= 1
                return
            _idle.append(runner)
        runner.gate.acquire()  # parked until schedule() hands over the next task


def _gevent_patched() -> bool:
    # Without importing gevent: monkey patching replaces _thread's functions with gevent.thread's.
    return getattr(_thread.start_new_thread, "__module__", "").startswith("gevent")


def _foreign(task: Task) -> bool:
    """Under gevent: hand ``task`` to the hub thread's waker if called from another OS thread (True).

    The hub's thread is the one that schedules first (where the engine starts its actors; never a thread
    of gevent's threadpool, which only runs blocking calls). It is recorded then, not taken from
    ``threading.main_thread()``, whose ``native_id`` is the parent's after a fork (gunicorn's workers).
    """
    me = _thread.get_native_id()
    if not _waker:
        with _lock:
            if not _waker:
                _waker.append((me, threading.Event()))
                _thread.start_new_thread(_wake_loop, (_waker[0][1],))  # a greenlet of this hub
    home, wake = _waker[0]
    if me == home:
        return False
    _pending.append(task)  # list.append is atomic
    wake.set()  # gevent's Event.set may be called from any thread
    return True


def _wake_loop(wake: threading.Event) -> None:
    while True:
        wake.wait()
        wake.clear()
        while _pending:
            schedule(_pending.pop(0))


def _after_fork() -> None:
    """A forked child has none of its parent's runners (gunicorn forks its workers)."""
    global _lock, _live  # the parent's lock may have been held at fork time
    _lock = threading.Lock()
    _live = 0
    _idle.clear()
    _waker.clear()
    _pending.clear()


os.register_at_fork(after_in_child=_after_fork)
