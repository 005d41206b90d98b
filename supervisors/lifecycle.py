"""The per-actor lifecycle record: the "process table" that pykka lacks.

Why this module exists: pykka has no links or monitors, and a crash in an ``ask`` handler is invisible
to anyone but the caller. Every `SupervisedActor` owns one `Lifecycle`, reachable from its ``ActorRef``
without asking the actor (so never a self-ask, never an ask cycle, never a deadlock), which records::

    STARTING ──on_start ok──▶ RUNNING ──stop / crash──▶ EXITED(reason)
        │                                                   ▲
        └──────────── on_start raised / killed ─────────────┘

and fires watchers exactly once on each transition. Supervisors, monitors and the name registry are all
watchers. Watchers run in the exiting actor's thread/greenlet (or immediately in the caller's when the
actor already exited), so they must be short and non-blocking: typically a ``tell``.

Monitors follow Erlang's ``erlang:monitor/2``: `monitor` a ref with a callback or an observer actor; it
receives one `Down` with the exit reason, also when the target was already dead. `Monitor.cancel`
is ``erlang:demonitor/1``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from supervisors.errors import ExitReason, NotSupervised
from supervisors.stripes import StripeLock, lock_for

__all__ = ["Down", "Lifecycle", "Monitor", "demonitor", "lifecycle_of", "monitor"]

logger = logging.getLogger(__name__)

ExitWatcher = Callable[[ExitReason, bool], None]
"""Called with ``(reason, started)``: ``started`` is False when the actor died before on_start ended."""

_STARTING, _RUNNING, _EXITED = 0, 1, 2
_SETTLED_SIGNALLED, _EXITED_SIGNALLED = 1, 2  # bits of Lifecycle._signalled
_tokens = itertools.count(1)
_ATTR = "_supervisors_lifecycle"  # where attach() keeps an ActorRef's lifecycle


class Lifecycle:
    """State, exit reason and watchers of one actor incarnation. Thread/greenlet safe.

    Memory: the watcher containers and the events waiters block on are created on first use (most
    actors are only ever watched by their supervisor and never waited for).
    """

    __slots__ = (
        "_events",
        "_exit_watchers",
        "_reason",
        "_signalled",
        "_start_watchers",
        "_started_at_exit",
        "_state",
        "tree",
    )

    def __init__(self) -> None:
        self._state = _STARTING
        self._signalled = 0  # events set (after the watchers of that transition ran)
        self._reason: ExitReason = None
        self._started_at_exit = False
        self._start_watchers: list[Callable[[], None]] | None = None
        self._exit_watchers: list[tuple[int, ExitWatcher]] | None = None  # few: a list, not a dict
        self._events: list[tuple[int, threading.Event]] | None = None  # (bit waited for, event)
        self.tree: Any = None  # a supervisor's published snapshot cell (supervisors.snapshot)

    @property
    def _lock(self) -> StripeLock:  # a striped lock: one Lifecycle per actor, 10,000s of actors
        return lock_for(self)

    @property
    def started(self) -> bool:
        """True once on_start completed (or, for a supervisor, all its children started)."""
        return self._state == _RUNNING or (self._state == _EXITED and self._started_at_exit)

    @property
    def exited(self) -> bool:
        return self._state == _EXITED

    @property
    def reason(self) -> ExitReason:
        """The exit reason once exited (``None`` = normal); ``None`` while alive."""
        return self._reason

    def mark_started(self) -> None:
        with self._lock:
            if self._state != _STARTING:
                return
            self._state = _RUNNING
            watchers, self._start_watchers = self._start_watchers, None
        self._signal(_SETTLED_SIGNALLED)
        for watcher in watchers or ():
            _call(watcher)

    def mark_exited(self, reason: ExitReason) -> bool:
        """Record the exit and fire exit watchers; only the first call counts (returns True)."""
        with self._lock:
            if self._state == _EXITED:
                return False
            started = self._state == _RUNNING
            self._state = _EXITED
            self._reason = reason
            self._started_at_exit = started
            watchers = [watcher for _, watcher in self._exit_watchers or ()]
            self._exit_watchers = None
            self._start_watchers = None
        for watcher in watchers:  # before the events: whoever waited for the exit finds the
            _call(watcher, reason, started)  # supervisor and monitors already told
        self._signal(_SETTLED_SIGNALLED | _EXITED_SIGNALLED)
        return True

    def on_started(self, watcher: Callable[[], None]) -> None:
        """Call ``watcher()`` once when started (now if already started; never if it exited first)."""
        with self._lock:
            if self._state == _STARTING:
                if self._start_watchers is None:
                    self._start_watchers = [watcher]
                else:
                    self._start_watchers.append(watcher)
                return
            if self._state == _EXITED:
                return
        _call(watcher)

    def on_exit(self, watcher: ExitWatcher) -> int | None:
        """Call ``watcher(reason, started)`` once on exit; now if already exited (returns None)."""
        with self._lock:
            if self._state != _EXITED:
                token = next(_tokens)
                if self._exit_watchers is None:
                    self._exit_watchers = [(token, watcher)]
                else:
                    self._exit_watchers.append((token, watcher))
                return token
            reason, started = self._reason, self._started_at_exit
        _call(watcher, reason, started)
        return None

    def cancel(self, token: int | None) -> None:
        if token is not None:
            with self._lock:
                if self._exit_watchers is not None:
                    self._exit_watchers = [w for w in self._exit_watchers if w[0] != token] or None

    def wait_settled(self, timeout: float) -> bool:
        """Wait until started or exited; False on timeout."""
        return self._wait(_SETTLED_SIGNALLED, timeout)

    def wait_exited(self, timeout: float) -> bool:
        """Wait until exited; False on timeout."""
        return self._wait(_EXITED_SIGNALLED, timeout)

    def _wait(self, bit: int, timeout: float) -> bool:
        with self._lock:
            if self._signalled & bit:
                return True
            event = threading.Event()
            if self._events is None:
                self._events = [(bit, event)]
            else:
                self._events.append((bit, event))
        if event.wait(timeout):
            return True
        with self._lock:  # timed out: withdraw the event (unless it was set meanwhile)
            if self._events is not None and (bit, event) in self._events:
                self._events.remove((bit, event))
                if not self._events:
                    self._events = None
        return event.is_set()

    def _signal(self, bits: int) -> None:
        with self._lock:
            self._signalled |= bits
            events = self._events
            if events is not None:
                keep = [(bit, ev) for bit, ev in events if not bit & bits]
                self._events = keep or None
        for bit, event in events or ():
            if bit & bits:
                event.set()


def _call(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except pykka.ActorDeadError:
        logger.debug("lifecycle watcher %r: target actor already dead", fn)
    except Exception:
        logger.exception("lifecycle watcher %r failed", fn)


def attach(ref: pykka.ActorRef[Any], life: Lifecycle) -> None:
    """Bind a lifecycle to the ref (done once by `SupervisedActor.__init__`).

    Kept as an attribute of the ref itself (pykka creates exactly one ActorRef per actor, the one every
    ``actor_ref`` / registry lookup returns), which costs nothing like a weak-keyed table entry."""
    setattr(ref, _ATTR, life)


def lifecycle_of(ref: pykka.ActorRef[Any]) -> Lifecycle:
    """The lifecycle of a `SupervisedActor`'s ref; `NotSupervised` for plain pykka actors."""
    life = getattr(ref, _ATTR, None)
    if not isinstance(life, Lifecycle):
        msg = f"{ref} is not a SupervisedActor: it has no lifecycle to watch"
        raise NotSupervised(msg)
    return life


@dataclass(frozen=True, slots=True)
class Down:
    """Sent (tell) to an observer actor, or passed to a callback, when a monitored actor exited."""

    monitor: Monitor
    ref: pykka.ActorRef[Any]
    reason: ExitReason


@dataclass(eq=False, slots=True)
class Monitor:
    """A live monitor; `cancel` (or `demonitor`) stops it. Identity-compared."""

    ref: pykka.ActorRef[Any]
    _life: Lifecycle = field(repr=False)
    _token: int | None = field(default=None, repr=False)
    _notify: pykka.ActorRef[Any] | Callable[[Down], None] | None = field(default=None, repr=False)

    def cancel(self) -> None:
        self._life.cancel(self._token)

    def _deliver(self, reason: ExitReason, _started: bool) -> None:
        # A method rather than a closure: one monitor per shape exists (the ShapeCache's).
        down = Down(self, self.ref, reason)
        notify = self._notify
        if isinstance(notify, pykka.ActorRef):
            notify.tell(down)
        elif notify is not None:
            notify(down)


def monitor(
    ref: pykka.ActorRef[Any],
    notify: pykka.ActorRef[Any] | Callable[[Down], None],
) -> Monitor:
    """Watch ``ref``: on exit, ``notify`` gets one `Down` (a tell if it is an ActorRef).

    If ``ref`` already exited, the `Down` is delivered immediately with the recorded reason.
    Callbacks run in the dying actor's thread/greenlet: keep them short (set an event, tell an actor).
    """
    life = lifecycle_of(ref)
    mon = Monitor(ref, life, None, notify)
    mon._token = life.on_exit(mon._deliver)
    return mon


def demonitor(mon: Monitor) -> None:
    """Stop a monitor; a `Down` already delivered is not recalled (as in Erlang without flush)."""
    mon.cancel()
