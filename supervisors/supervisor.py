"""`Supervisor`: a static OTP supervisor on pykka.

Why this module exists: it is the restart machinery of the whole engine (architecture §2). Vocabulary
and behaviour follow Erlang/OTP's ``supervisor`` (https://www.erlang.org/doc/man/supervisor and
https://learnyousomeerlang.com/supervisors): child specs, one_for_one / one_for_all / rest_for_one,
restart intensity with escalation, ordered start and reverse-ordered shutdown.

Lifecycle of a supervisor::

    start() ─▶ on_start: start child 1 ─ChildStarted─▶ child 2 ─▶ … ─▶ all started: lifecycle STARTED
                          │ start fn raised / child died in on_start
                          ▼
                        crash(StartError)  (already started children are stopped, reverse order)

    running ─ChildDown(reason)─▶ restart type says restart? ──no──▶ forget (temporary) / keep down
                                    │ yes
                                    ▼
                        intensity exceeded? ──yes──▶ crash(MaxRestartsExceeded): parent decides
                                    │ no
                                    ▼
                        stop affected siblings (reverse order), restart affected (start order)

    stop() / crash ─▶ stop children in reverse start order, each bounded by its ChildSpec.shutdown;
                      a child still running after its timeout is abandoned (`kill`).

Never blocking on a child's start: a child is started with ``spec.start()`` (non-blocking in pykka) and
the supervisor keeps handling its inbox until the child's lifecycle reports ``ChildStarted`` (tell).
The only blocking waits are bounded ones while stopping children (orderly shutdown / restart of
siblings), on the child's lifecycle event, never an ``ask``. Children must be `SupervisedActor`s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pykka

from supervisors.actor import SupervisedActor, kill
from supervisors.child_spec import ChildSpec, Restart, should_restart
from supervisors.errors import (
    ExitReason,
    MaxRestartsExceeded,
    StartError,
    describe_reason,
)
from supervisors.lifecycle import lifecycle_of
from supervisors.snapshot import ChildView, TreeCell
from supervisors.strategies import ONE_FOR_ONE, OneForOne, RestartIntensity, Strategy

__all__ = ["ChildDown", "ChildStarted", "Supervisor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChildStarted:
    """Event (tell, from the child's lifecycle): this incarnation finished starting."""

    ref: pykka.ActorRef[Any]


@dataclass(frozen=True, slots=True)
class ChildDown:
    """Event (tell, from the child's lifecycle): this incarnation exited; ``started`` False if it
    died before its on_start completed."""

    ref: pykka.ActorRef[Any]
    reason: ExitReason
    started: bool


class _Child:
    """The supervisor's mutable bookkeeping for one child id."""

    __slots__ = (
        "ever_started",
        "last_failure",
        "last_failure_at",
        "order",
        "ref",
        "restarts",
        "spec",
        "started",
    )

    def __init__(self, spec: ChildSpec, order: int) -> None:
        self.spec = spec
        self.order = order
        self.ref: pykka.ActorRef[Any] | None = None
        self.started = False
        self.ever_started = False
        self.restarts = 0
        self.last_failure: str | None = None
        self.last_failure_at: float | None = None


class _Watch:
    """Tells the supervisor about one child incarnation's start and exit (slotted, not two closures)."""

    __slots__ = ("child", "sup")

    def __init__(self, sup: pykka.ActorRef[Any], child: pykka.ActorRef[Any]) -> None:
        self.sup = sup
        self.child = child

    def started(self) -> None:
        self.sup.tell(ChildStarted(self.child))

    def exited(self, reason: ExitReason, was_started: bool) -> None:
        self.sup.tell(ChildDown(self.child, reason, was_started))


class Supervisor(SupervisedActor):
    """Starts, watches and restarts a fixed list of children.

    Owns:       children bookkeeping, restart intensity window, the published `TreeCell`.
    Receives:   ChildStarted, ChildDown (tell, from children's lifecycles).
    Sends:      stop to children; starts them through ``ChildSpec.start``.
    Crashes on: a child's first start failing (StartError), restart intensity exceeded
                (MaxRestartsExceeded): its own parent then decides.
    """

    _defer_started = True

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = ONE_FOR_ONE,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str = "supervisor",
    ) -> None:
        super().__init__()
        self.name = name
        self._strategy = strategy
        self._intensity = RestartIntensity(max_restarts, max_seconds)
        self._children: dict[str, _Child] = {}
        self._by_ref: dict[pykka.ActorRef[Any], str] = {}
        # ids to (re)start, in start order: a list and a dict, as a deque and a set cost ~1 KB even empty
        self._queue: list[str] = []
        self._queued: dict[str, None] = {}  # the ids of _queue still wanted
        self._order = 0
        self._starting = True
        self._stopping = False
        self._cell = TreeCell(name, strategy.name)
        self.lifecycle.tree = self._cell
        for spec in children:
            if spec.id in self._children:
                msg = f"supervisor {name!r}: duplicate child id {spec.id!r}"
                raise ValueError(msg)
            self._add(spec)

    def __str__(self) -> str:
        return f"{type(self).__name__}[{self.name}]"

    # -- pykka hooks ---------------------------------------------------------------------------

    def on_start(self) -> None:
        logger.debug("%s starting %d children", self, len(self._children))
        self._queue = list(self._children)
        self._queued = dict.fromkeys(self._children)
        self._pump()

    def on_stop(self) -> None:
        self._shutdown()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._shutdown()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildStarted):
            return self._on_child_started(message.ref)
        if isinstance(message, ChildDown):
            return self._on_child_down(message.ref, message.reason, message.started)
        return super().on_receive(message)

    # -- starting ------------------------------------------------------------------------------

    def _add(self, spec: ChildSpec) -> _Child:
        self._order += 1
        child = _Child(spec, self._order)
        self._children[spec.id] = child
        self._publish(child)
        return child

    def _spawn(self, child: _Child) -> BaseException | None:
        """Start one incarnation and watch it; returns the error if the start function failed."""
        try:
            ref = child.spec.start()
        except Exception as exc:  # start failures are handled as in OTP, not re-raised
            return exc
        try:
            life = lifecycle_of(ref)
        except Exception as exc:
            ref.stop(block=False)
            return exc
        child.ref, child.started = ref, False
        self._by_ref[ref] = child.spec.id
        watch = _Watch(self.actor_ref, ref)
        life.on_started(watch.started)
        life.on_exit(watch.exited)
        self._publish(child)
        return None

    def _pump(self) -> None:
        """Start queued children one at a time, each after the previous one reported started."""
        while self._queue and not self._stopping:
            head = self._queue[0]
            child = self._children.get(head)
            if child is None or child.started or head not in self._queued:
                self._queued.pop(self._queue.pop(0), None)
                continue
            if child.ref is not None:
                return  # waiting for its ChildStarted
            error = self._spawn(child)
            if error is not None:
                self._failed(child, error)
                if self._start_failed(child, error):  # raises, or counts a restart and retries
                    child.restarts += 1
                    self._publish(child)
                else:
                    self._queued.pop(self._queue.pop(0), None)
        if not self._queue:  # fresh ones: drained containers keep their grown size
            self._queue, self._queued = [], {}
        if self._starting and not self._stopping:
            self._starting = False
            logger.info("%s started (%s, %d children)", self, self._strategy, len(self._children))
            self.lifecycle.mark_started()

    def _on_child_started(self, ref: pykka.ActorRef[Any]) -> None:
        child = self._child_of(ref)
        if child is None:
            return
        child.started = child.ever_started = True
        self._publish(child)
        self._pump()

    # -- failures ------------------------------------------------------------------------------

    def _on_child_down(self, ref: pykka.ActorRef[Any], reason: ExitReason, started: bool) -> None:
        child = self._child_of(ref)
        if child is None:
            return  # an incarnation we stopped on purpose, or an old one
        del self._by_ref[ref]
        child.ref, child.started = None, False
        self._failed(child, reason)
        if not started:
            if self._start_failed(child, reason):
                self._enqueue([child.spec.id])
                self._pump()
            return
        if not should_restart(child.spec.restart, reason):
            logger.info(
                "%s: child %r exited (%s), not restarted (%s)",
                self,
                child.spec.id,
                describe_reason(reason),
                child.spec.restart.value,
            )
            self._queued.pop(child.spec.id, None)  # lazily dropped from the queue by _pump
            self._exited_for_good(child)
            self._pump()
            return
        logger.warning(
            "%s: child %r exited (%s), restarting (%s)",
            self,
            child.spec.id,
            describe_reason(reason),
            self._strategy,
        )
        self._count_restart()
        affected = self._strategy.affected(self._children.keys(), child.spec.id)
        for sibling_id in reversed(affected):
            sibling = self._children[sibling_id]
            if sibling is not child:
                self._terminate(sibling)
                if sibling.spec.restart is Restart.TEMPORARY:
                    self._remove(sibling)
        self._enqueue([i for i in affected if i in self._children])
        self._pump()

    def _start_failed(self, child: _Child, reason: ExitReason) -> bool:
        """A start function raised or a child died in on_start; True if it is to be retried."""
        if not child.ever_started:
            self._first_start_failed(child, reason)
            return False
        logger.warning("%s: restart of %r failed (%s)", self, child.spec.id, describe_reason(reason))
        self._count_restart()
        return True

    def _first_start_failed(self, child: _Child, reason: ExitReason) -> None:
        """OTP: a static child that cannot start fails the supervisor's start."""
        raise StartError(child.spec.id, reason)

    def _exited_for_good(self, child: _Child) -> None:
        if child.spec.restart is Restart.TEMPORARY:
            self._remove(child)
        else:
            self._publish(child)

    def _count_restart(self) -> None:
        if not self._intensity.allow(time.monotonic()):
            raise MaxRestartsExceeded(self.name, self._intensity.max_restarts, self._intensity.max_seconds)

    def _enqueue(self, ids: list[str]) -> None:
        """Queue restarts; the queue stays in start order (O(1) for a single id at the tail)."""
        for child_id in ids:
            self._children[child_id].restarts += 1
        new = [i for i in ids if i not in self._queued]
        self._queued.update(dict.fromkeys(new))
        order = self._children
        if not new:
            return
        if len(new) == 1:
            tail = order.get(self._queue[-1]) if self._queue else None
            # one_for_one children are independent: their restart order is irrelevant
            if isinstance(self._strategy, OneForOne) or tail is None or tail.order < order[new[0]].order:
                self._queue.append(new[0])
                return
        merged = sorted((*self._queue, *new), key=lambda i: order[i].order if i in order else -1)
        self._queue = merged

    def _failed(self, child: _Child, reason: ExitReason) -> None:
        if reason is not None:
            child.last_failure = describe_reason(reason)
            child.last_failure_at = time.time()
        self._publish(child)

    # -- stopping ------------------------------------------------------------------------------

    def _terminate(self, child: _Child) -> None:
        """Stop one child and wait for it, at most ``spec.shutdown`` seconds (then abandon it)."""
        ref = self._detach(child)
        if ref is not None:
            ref.stop(block=False)
            self._await_exit(child, ref, time.monotonic() + child.spec.shutdown)

    def _detach(self, child: _Child) -> pykka.ActorRef[Any] | None:
        ref = child.ref
        if ref is not None:
            self._by_ref.pop(ref, None)
            child.ref, child.started = None, False
            self._publish(child)
        return ref

    def _await_exit(self, child: _Child, ref: pykka.ActorRef[Any], deadline: float) -> None:
        if not lifecycle_of(ref).wait_exited(max(0.0, deadline - time.monotonic())):
            logger.warning(
                "%s: child %r did not stop within %g s, abandoning it",
                self,
                child.spec.id,
                child.spec.shutdown,
            )
            kill(ref)
            self._failed(child, lifecycle_of(ref).reason)

    def _shutdown(self) -> None:
        """Stop every child in reverse start order."""
        self._stopping = True
        self._queue.clear()
        self._queued.clear()
        for child in reversed(list(self._children.values())):
            self._terminate(child)
        logger.info("%s stopped", self)

    def _remove(self, child: _Child) -> None:
        self._detach(child)
        self._children.pop(child.spec.id, None)
        self._cell.remove(child.spec.id)

    # -- helpers -------------------------------------------------------------------------------

    def _child_of(self, ref: pykka.ActorRef[Any]) -> _Child | None:
        child_id = self._by_ref.get(ref)
        return None if child_id is None else self._children.get(child_id)

    def _publish(self, child: _Child) -> None:
        status = "running" if child.started else "starting" if child.ref is not None else "down"
        self._cell.publish(
            ChildView(
                id=child.spec.id,
                kind=child.spec.kind,
                ref=child.ref,
                status=status,
                restarts=child.restarts,
                last_failure=child.last_failure,
                last_failure_at=child.last_failure_at,
            )
        )
