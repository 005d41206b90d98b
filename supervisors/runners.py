"""A small pool of runner threads/greenlets draining one run queue, for `supervisors.hibernate`.

Why this module exists: a hibernating actor needs a runner each time a message arrives while it is idle.
Starting a fresh greenlet or thread per wake-up costs 5-10 times a switch to a parked one (measured on
this stack: ~50 µs against ~5-8 µs for ``gevent.sleep(0)`` under load), and even a switch per wake-up is
most of the cost of a short burst: one routed transaction wakes a consumer and its storage for each shape
it reaches, a thousand of them at once for a wide transaction. So wake-ups go through one FIFO run queue
(as Erlang's schedulers do), drained by as few runners as keep it moving:

* `schedule` appends the task and, when no runner is already on its way to the queue, wakes one (the
  latest parked, whose stack is warm) or starts one when none is parked;
* except that the first task scheduled by a task that was taken in turn goes to the head of the queue
  instead, to run next (Go's scheduler has the same ``runnext`` slot): a consumer's storage then writes
  the items the consumer just encoded while they are fresh, instead of after every other consumer the
  collector woke with it, and those items die young (measured at 10,000 shapes: 30-45 instead of 36-160 ms
  of young collections per burst, the burst's log items no longer all alive at once).  A task run next
  never puts another ahead of the queue, so the queue keeps moving (at most every other task taken is
  one run next) and two actors telling each other cannot hold a runner;
* a runner takes tasks one after another without any switch; when it takes one and more are queued, it
  first makes sure another runner is on its way, so a task that blocks (an ``ask``, I/O) never holds up
  the tasks behind it: the queue always has a runner coming while it is not empty;
* a runner that finds the queue empty parks (at most ``MAX_IDLE`` process-wide; more finish);
* a runner that has run tasks for ``YIELD_S`` without a pause yields (under gevent for a turn of the
  hub's loop, I/O included; ``sleep(0)`` would only run the greenlets ready now), so a long queue never
  starves the replication stream or the HTTP server; while it pauses it counts as on its way to the
  queue, so the pause sends no spare.

The pool therefore grows with the number of actors *blocked at once*, never with the number of actors
or of wake-ups.

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
import time
from collections import deque
from collections.abc import Callable
from itertools import count

from supervisors.stripes import native_lock

__all__ = ["MAX_IDLE", "backlog", "counts", "schedule"]

logger = logging.getLogger(__name__)

MAX_IDLE = 32
"""Parked runners kept process-wide; more finish instead of parking."""

YIELD_S = 0.005
"""Longest run of tasks without a pause (gevent's default switch interval)."""

_PAUSE_S = 0.0001  # under gevent a timer, not sleep(0): the next turn of the loop, so I/O is polled first

Task = Callable[[], None]


class _Runner:
    __slots__ = ("gate",)

    def __init__(self) -> None:
        self.gate = _thread.allocate_lock()  # held while parked; released to send it to the queue
        self.gate.acquire()


_lock = native_lock()  # an OS-thread lock under gevent too: its critical sections never switch greenlets
_queue: deque[Task] = deque()
_idle: list[_Runner] = []
_coming = 0  # runners woken or started that have not reached the queue yet
_live = 0  # runners started and not finished (running a task, on their way, or parked)
_names = count(1)
# (a native lock the hub's OS thread holds for good, its waker's event); gevent only: see _foreign
_waker: list[tuple[_thread.RLock, threading.Event]] = []
_pending: list[Task] = []  # tasks handed over by other OS threads (gevent only)


_next_allowed = False  # the task running now was taken in turn: the first task it schedules runs next
_head_is_next = False  # the task at the head of the queue was put there to run next


def schedule(task: Task) -> None:
    """Run ``task()`` soon on a runner (never in the caller); next, if it is the first scheduled by a task
    taken in turn (see the module docstring). ``task`` must not raise."""
    global _next_allowed, _head_is_next  # the queue's own state, under _lock
    if _gevent_patched() and _foreign(task):
        return
    with _lock:
        if _next_allowed:
            _next_allowed = False
            _queue.appendleft(task)
            _head_is_next = True
        else:
            _queue.append(task)
        send, runner = _send_if_needed()
    if send:
        _wake(runner)


def counts() -> tuple[int, int]:
    """``(live, parked)`` runners of this process (live includes parked ones)."""
    with _lock:
        return _live, len(_idle)


def backlog() -> int:
    """Tasks waiting for a runner now: above 0 while the actors have more queued work than the runners have
    reached (a burst being worked through).  Read without the lock: a snapshot, for heuristics."""
    return len(_queue)


def _send_if_needed() -> tuple[bool, _Runner | None]:
    """Under ``_lock``: while tasks wait and no runner is on its way, send one: ``(True, the parked runner
    to wake, or None to start one)``; else ``(False, None)``."""
    if _queue and not _coming:
        return True, _send_one()
    return False, None


def _send_one() -> _Runner | None:
    """Under ``_lock``: count one more runner on its way; the parked one to wake (None: start one)."""
    global _coming, _live  # the pool's own counters
    _coming += 1
    if _idle:
        return _idle.pop()
    _live += 1
    return None


def _wake(runner: _Runner | None) -> None:
    """Outside ``_lock``: release a parked runner, or start a new one (``None``)."""
    if runner is not None:
        runner.gate.release()
    elif _gevent_patched():
        # A raw greenlet: ``threading.Thread.start`` would wait for it to run, i.e. switch greenlets inside
        # the caller's ``tell``, which must never yield (it did not with a parked actor either).
        _thread.start_new_thread(_run, (_Runner(),))
    else:
        name = f"actor-runner-{next(_names)}"
        threading.Thread(target=_run, args=(_Runner(),), name=name, daemon=True).start()


def _run(runner: _Runner) -> None:
    global _coming, _live, _next_allowed, _head_is_next  # the pool's own state
    arrived = True  # on its way to the queue (started or woken), counted in _coming
    clock = time.monotonic
    since = clock()  # the last pause
    while True:
        send, spare = False, None
        with _lock:
            if arrived:
                _coming -= 1
                arrived = False
            if _queue:
                task = _queue.popleft()
                # Read by `schedule` while the task runs; another task (a runner in another OS thread, or
                # while this one blocks) may change it meanwhile: that only changes which task runs next.
                _next_allowed = not _head_is_next
                _head_is_next = False
                send, spare = _send_if_needed()  # more to do: someone must come, in case this task blocks
            elif len(_idle) >= MAX_IDLE:
                _live -= 1
                return
            else:
                _idle.append(runner)
                task = None
        if task is None:
            runner.gate.acquire()  # parked until _send_one picks it
            arrived = True
            since = clock()
            continue
        if send:
            _wake(spare)
        try:
            task()
        except Exception:  # a task must not raise; keep the runner usable anyway (a BaseException
            logger.exception("actor runner task %r raised", task)  # such as GreenletExit ends it)
        _next_allowed = False  # what is scheduled between tasks (a waker, another greenlet) waits its turn
        if clock() - since >= YIELD_S:
            # Let the others run. Back at the queue right after, so it counts as on its way (no spare is
            # sent for it: a spare per pause would make every turn of the hub longer by one runner's run).
            with _lock:
                _coming += 1
            try:
                time.sleep(_PAUSE_S if _gevent_patched() else 0)
            except BaseException:  # killed while pausing (GreenletExit): it will not come back
                with _lock:
                    _coming -= 1
                    _live -= 1
                    send, spare = _send_if_needed()
                if send:
                    _wake(spare)  # the queue must not wait for the next schedule()
                raise
            arrived = True
            since = clock()


_patched_memo: tuple[object, bool] = (None, False)  # (_thread.start_new_thread, whether it is gevent's)


def _gevent_patched() -> bool:
    # Without importing gevent: monkey patching replaces _thread's functions with gevent.thread's.  Twice per
    # actor visit: the answer is kept for the function it was given for (patching replaces the function).
    global _patched_memo  # a cache of a process-wide fact
    start = _thread.start_new_thread
    memo = _patched_memo
    if memo[0] is not start:
        memo = _patched_memo = (start, getattr(start, "__module__", "").startswith("gevent"))
    return memo[1]


def _foreign(task: Task) -> bool:
    """Under gevent: hand ``task`` to the hub thread's waker if called from another OS thread (True).

    The hub's thread is the one that schedules first (where the engine starts its actors; never a thread
    of gevent's threadpool, which only runs blocking calls). It is recorded then, not taken from
    ``threading.main_thread()``, whose ``native_id`` is the parent's after a fork (gunicorn's workers):
    that thread acquires a native ``RLock`` and never releases it, so ``_is_owned()`` (what
    ``threading.Condition`` asks a lock) is True in that OS thread only.  It answers without a system call,
    where ``_thread.get_native_id()`` made one (``gettid``) per schedule, twice per actor visit.
    """
    if not _waker:
        with _lock:
            if not _waker:
                home = _thread.RLock()  # native under gevent too (see supervisors.stripes.native_lock)
                home.acquire()  # held for good by this OS thread
                _waker.append((home, threading.Event()))
                _thread.start_new_thread(_wake_loop, (_waker[0][1],))  # a greenlet of this hub
    home, wake = _waker[0]
    if home._is_owned():  # type: ignore[attr-defined]  # the C lock's, as threading.Condition uses it
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
    global _lock, _live, _coming, _next_allowed, _head_is_next  # the parent's lock may have been held
    _lock = native_lock()
    _live = 0
    _coming = 0
    _next_allowed = _head_is_next = False
    _idle.clear()
    _queue.clear()
    _waker.clear()
    _pending.clear()


os.register_at_fork(after_in_child=_after_fork)
