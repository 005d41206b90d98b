"""`DynamicSupervisor`: children started and terminated at run time (OTP ``simple_one_for_one`` /
Elixir's ``DynamicSupervisor``).

Why this module exists: the engine runs one subtree per shape, created and deleted while it serves;
there may be 10,000 of them, so every event costs O(1) (dicts keyed by id and by ref; no list scans)
and shutdown stops all children concurrently rather than one after the other.

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
        """Stop all children concurrently, each bounded by its own shutdown timeout."""
        self._stopping = True
        self._queue.clear()
        self._queued.clear()
        now = time.monotonic()
        stopping: list[tuple[_Child, pykka.ActorRef[Any], float]] = []
        for child in reversed(list(self._children.values())):
            ref = self._detach(child)
            if ref is not None:
                ref.stop(block=False)
                stopping.append((child, ref, now + child.spec.shutdown))
        for child, ref, deadline in stopping:
            self._await_exit(child, ref, deadline)
        logger.info("%s stopped (%d children)", self, len(stopping))


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
