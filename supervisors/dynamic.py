"""`DynamicSupervisor`: children started and terminated at run time (OTP ``simple_one_for_one`` /
Elixir's ``DynamicSupervisor``).

Why this module exists: the engine runs one subtree per shape, created and deleted while it serves;
there may be 10,000 of them, so every event costs O(1) (dicts keyed by id and by ref; no list scans)
and shutdown stops children concurrently (at most `STOP_WINDOW` at a time) rather than one after the other.

Rules (as in OTP): the strategy is always one_for_one; a child whose *first* start fails is not added
(`start_child` raises `StartError`) and does not count against the restart intensity; a failed
*restart* counts and is retried; a child that is not restarted (temporary, or transient exiting
normally) is forgotten.

Lifecycle of one dynamic child::

    start_child(spec) ─▶ StartChild ─▶ spec.start() ─▶ STARTING ─on_start ok─▶ RUNNING
                                         │ raises         │ raises                 │ crash
                                         ▼                ▼                        ▼
                                 StartError value   forgotten, StartError   restart (intensity)
    terminate_child(id) ─▶ stop, wait ≤ spec.shutdown, else abandon (`kill`) ─▶ forgotten
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

import pykka

from supervisors.child_spec import ChildSpec
from supervisors.errors import AlreadyStarted, ExitReason, StartError, describe_reason
from supervisors.lifecycle import lifecycle_of
from supervisors.strategies import ONE_FOR_ONE
from supervisors.supervisor import Supervisor, _Child

__all__ = ["DynamicSupervisor", "StartChild", "TerminateChild", "start_child", "terminate_child"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StartChild:
    """Command (ask) -> ``ActorRef`` or a `SupervisorError` *value* (never raised by the handler)."""

    spec: ChildSpec


@dataclass(frozen=True, slots=True)
class TerminateChild:
    """Command (ask) -> bool: True if the child existed and was stopped (or abandoned)."""

    child_id: str


class DynamicSupervisor(Supervisor):
    """A one_for_one supervisor without static children; children come and go at run time.

    Owns:       children by id and by ref, restart intensity window, the published `TreeCell`.
    Receives:   StartChild (ask) -> ActorRef | SupervisorError; TerminateChild (ask) -> bool;
                ChildStarted, ChildDown (tell, from children's lifecycles).
    Sends:      stop to children.
    Crashes on: restart intensity exceeded (MaxRestartsExceeded).
    """

    def __init__(
        self,
        *,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str = "dynamic_supervisor",
        max_children: int | None = None,
    ) -> None:
        super().__init__(
            (), strategy=ONE_FOR_ONE, max_restarts=max_restarts, max_seconds=max_seconds, name=name
        )
        self._max_children = max_children

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StartChild):
            return self._start_child(message.spec)
        if isinstance(message, TerminateChild):
            return self._terminate_child(message.child_id)
        return super().on_receive(message)

    def _start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any] | BaseException:
        if self._stopping:
            return StartError(spec.id, RuntimeError(f"{self} is shutting down"))
        if spec.id in self._children:
            return AlreadyStarted(f"{self}: child id {spec.id!r} is already in use")
        if self._max_children is not None and len(self._children) >= self._max_children:
            return StartError(spec.id, RuntimeError(f"{self}: max_children reached"))
        child = self._add(spec)
        error = self._spawn(child)
        if error is not None:
            self._remove(child)
            logger.warning("%s: child %r failed to start (%s)", self, spec.id, describe_reason(error))
            return StartError(spec.id, error)
        assert child.ref is not None
        return child.ref

    def _terminate_child(self, child_id: str) -> bool:
        child = self._children.get(child_id)
        if child is None:
            return False
        self._terminate(child)
        self._remove(child)
        self._pump()  # it may have been the queue head, waiting for a restart
        return True

    def _first_start_failed(self, child: _Child, reason: ExitReason) -> None:
        logger.warning(
            "%s: child %r died while starting (%s), not added", self, child.spec.id, describe_reason(reason)
        )
        self._remove(child)

    def _exited_for_good(self, child: _Child) -> None:
        self._remove(child)

    def _shutdown(self) -> None:
        """Stop all children concurrently, at most `STOP_WINDOW` at a time, each bounded by its own
        shutdown timeout counted from its own stop (not from the first child's)."""
        self._stopping = True
        self._queue.clear()
        self._queued.clear()
        window = _StopWindow(self)
        for child in reversed(list(self._children.values())):
            ref = self._detach(child)
            if ref is not None:
                window.make_room()
                window.stop(child, ref)
        stopped = window.drain()
        logger.info("%s stopped (%d children)", self, stopped)


STOP_WINDOW = 128
"""Children of a `DynamicSupervisor` stopping at once at shutdown.

Why a window: stopping 10,000 children at once queued their stops (runners, on_stop work) behind one
another on the same hub, so each child's shutdown timeout, started with all the others, mostly measured
its wait in that queue and thousands of children stopping normally were abandoned. A window keeps the
stops concurrent (a hanging child holds one slot for its timeout, not the whole shutdown) while each
timeout starts when that child is asked to stop."""


class _StopWindow:
    """The children of one shutdown that are stopping; told of each exit by the child's lifecycle."""

    __slots__ = ("_done", "_flying", "_sup", "_wake", "count")

    def __init__(self, sup: DynamicSupervisor) -> None:
        self._sup = sup
        self._flying: dict[pykka.ActorRef[Any], tuple[_Child, float]] = {}
        self._done: list[pykka.ActorRef[Any]] = []
        self._wake = threading.Event()
        self.count = 0

    def stop(self, child: _Child, ref: pykka.ActorRef[Any]) -> None:
        self._flying[ref] = (child, time.monotonic() + child.spec.shutdown)
        self.count += 1
        ref.stop(block=False)
        lifecycle_of(ref).on_exit(_Exited(ref, self._done, self._wake))

    def make_room(self) -> None:
        """Wait until fewer than `STOP_WINDOW` children are stopping (abandoning those past their time)."""
        flying = self._flying
        while len(flying) >= STOP_WINDOW:
            earliest = min(deadline for _, deadline in flying.values())
            self._wake.wait(max(0.0, earliest - time.monotonic()))
            self._wake.clear()  # before reading _done: an exit appended later sets it again
            self._reap()

    def drain(self) -> int:
        """Wait for (or abandon) every child still stopping; returns how many children were stopped."""
        for ref, (child, deadline) in list(self._flying.items()):
            self._sup._await_exit(child, ref, deadline)  # the supervisor's own helper
        self._flying.clear()
        return self.count

    def _reap(self) -> None:
        flying, done = self._flying, self._done
        while done:
            flying.pop(done.pop(), None)
        now = time.monotonic()
        late = [(ref, child, deadline) for ref, (child, deadline) in flying.items() if deadline <= now]
        for ref, child, deadline in late:
            del flying[ref]
            self._sup._await_exit(child, ref, deadline)  # logs and abandons it


class _Exited:
    """A stopping child's exit watcher: records the ref and wakes the shutdown (runs in the child)."""

    __slots__ = ("done", "ref", "wake")

    def __init__(
        self, ref: pykka.ActorRef[Any], done: list[pykka.ActorRef[Any]], wake: threading.Event
    ) -> None:
        self.ref = ref
        self.done = done
        self.wake = wake

    def __call__(self, _reason: ExitReason, _started: bool) -> None:
        self.done.append(self.ref)  # list.append is atomic
        self.wake.set()


def start_child(
    sup: pykka.ActorRef[Any], spec: ChildSpec, *, timeout: float = 5.0, wait: bool = True
) -> pykka.ActorRef[Any]:
    """Start ``spec`` under the dynamic supervisor ``sup`` and return the child's ref.

    With ``wait`` (default) it also waits, in the caller, until the child's on_start completed and
    raises `StartError` if it died there (OTP's ``{error, Reason}``). Never call it from ``sup``.
    """
    deadline = time.monotonic() + timeout
    result = cast("pykka.ActorRef[Any] | BaseException", sup.ask(StartChild(spec), timeout=timeout))
    if isinstance(result, BaseException):
        raise result
    ref = result
    if wait:
        life = lifecycle_of(ref)
        if not life.wait_settled(max(0.0, deadline - time.monotonic())):
            msg = f"child {spec.id!r} did not finish starting within {timeout} s"
            raise pykka.Timeout(msg)
        if not life.started:
            raise StartError(spec.id, life.reason)
    return ref


def terminate_child(sup: pykka.ActorRef[Any], child_id: str, *, timeout: float = 10.0) -> bool:
    """Stop and forget a dynamic child (OTP ``terminate_child``); False if there is no such id.
    ``timeout`` must exceed the child's ``shutdown``."""
    return bool(sup.ask(TerminateChild(child_id), timeout=timeout))
