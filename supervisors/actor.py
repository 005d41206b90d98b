"""`SupervisedActor`: the base of every actor, making every crash visible to its supervisor.

Why this module exists: plain pykka calls ``on_failure`` only for exceptions escaping a ``tell``
handler; an exception escaping an ``ask`` handler (or a proxy method call) goes back to the caller and
the actor keeps running with possibly damaged state, unseen by anyone else. We adopt Erlang/OTP's rule
instead ("let it crash"):

**Any exception escaping a handler crashes the actor**, whether the message came by ``tell``, ``ask`` or
a proxy call, or the exception escaped ``on_start``. The actor stops processing messages at once, the
``ask`` caller still receives the exception, ``on_failure`` is called once (also for ask crashes and
on_start crashes, unlike pykka), and the exit reason is delivered to the supervisor and to every monitor.
An error that is part of an actor's contract (``not found``, ``invalid request``) must therefore be
*returned as a value* (e.g. a result dataclass), never raised, just as OTP servers reply
``{error, Reason}``.

Lifecycle of one incarnation (a restart is always a fresh actor built by ``ChildSpec.start``)::

    __init__ (caller's thread)
       │  start()
       ▼
    on_start ──raises──────────────────────────────┐
       │ ok: lifecycle STARTED (supervisors defer it │
       ▼         until their children are started)   │
    handle messages ──handler raises / crash(exc)──▶ on_failure ──┐
       │ stop()                                                   │
       ▼                                                          ▼
    on_stop ─────────────────────────────────────────▶ EXITED(reason): watchers fire
                                                     (supervisor, monitors, registry)

Implementation note: we replace pykka's private loop methods (``_actor_loop*``, ``_handle_failure``)
of pykka 4.x; pyproject pins ``pykka<5``. Actor threads are daemon threads so that an actor abandoned
after its shutdown timeout (see `kill`) never hangs process exit.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar

import pykka
from pykka import messages as pykka_messages
from pykka._envelope import Envelope

from supervisors.errors import Crashed, ExitReason, Killed
from supervisors.lifecycle import Lifecycle, attach, lifecycle_of
from supervisors.refs_table import install as _install_refs_table
from supervisors.stripes import lock_for

__all__ = ["StopFlag", "SupervisedActor", "crash", "kill"]

logger = logging.getLogger(__name__)

_install_refs_table()  # pykka's registry list made O(1) per stop: 10,000s of actors stop at once


@dataclass(frozen=True, slots=True)
class Crash:
    """Command (tell): crash with this exception, as if a handler had raised it."""

    exc: BaseException


# The messages pykka's own ``_handle_receive`` acts on (stop, proxy calls) and ``Crash``: any other goes
# straight to ``on_receive`` (one call and four isinstance checks fewer per message: twice per shape a burst;
# by exact class: none of these is subclassed).
_PYKKA_OWN: frozenset[type[Any]] = frozenset(
    {
        Crash,
        pykka_messages._ActorStop,  # pykka's stop message
        pykka_messages.ProxyCall,
        pykka_messages.ProxyGetAttr,
        pykka_messages.ProxySetAttr,
    }
)


class StopFlag:
    """An actor's "stopped" flag: ``set`` / ``is_set`` / ``wait`` of ``threading.Event`` (all pykka and
    callers use), without an Event's Condition unless someone actually waits on it."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with lock_for(self):
            self._set = True
            event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        with lock_for(self):
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


class SupervisedActor(pykka.ThreadingActor):
    """Base class of every supervised actor; same constructor contract as ``pykka.ThreadingActor``.

    Owns:       its `Lifecycle` (exit reason and watchers).
    Receives:   `Crash` (tell) besides the subclass's own messages.
    Sends:      nothing itself; its lifecycle watchers tell the supervisor / monitors on exit.
    Crashes on: any exception escaping on_start or a handler (tell, ask or proxy call).
    """

    use_daemon_thread: ClassVar[bool] = True
    _defer_started: ClassVar[bool] = False  # supervisors report "started" themselves

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stopped = StopFlag()  # instead of pykka's threading.Event: 1.2 KB on threads, 142 B on gevent
        self.actor_stopped = stopped  # type: ignore[assignment]  # the Event subset pykka and we use
        self.actor_ref.actor_stopped = stopped  # type: ignore[assignment]
        self._lifecycle = Lifecycle()
        self._exit_reason: ExitReason = None
        self._crashed = False
        attach(self.actor_ref, self._lifecycle)

    # -- public API ----------------------------------------------------------------------------

    def crash(self, exc: BaseException) -> None:
        """Fail this actor on purpose with ``exc`` (safe from any thread/greenlet, e.g. a reader
        loop the actor owns). Delivered as a message: takes effect when the actor handles it."""
        try:
            self.actor_ref.tell(Crash(exc))
        except pykka.ActorDeadError:
            logger.debug("%s: crash(%r) after exit ignored", self, exc)

    @property
    def lifecycle(self) -> Lifecycle:
        return self._lifecycle

    # -- pykka loop replacement ----------------------------------------------------------------

    def _actor_loop(self) -> None:
        try:
            self._actor_loop_setup()
            self._actor_loop_running()
            self._actor_loop_teardown()
        finally:
            self._lifecycle.mark_exited(self._exit_reason)

    def _actor_loop_setup(self) -> None:
        try:
            self.on_start()
        except BaseException:
            self._crash_now(sys.exc_info())
            return
        if not self._defer_started:
            self._lifecycle.mark_started()

    def _actor_loop_running(self) -> None:
        while not self.actor_stopped.is_set():
            self._handle_envelope(self.actor_inbox.get())

    def take_queued(self, kinds: tuple[type[Any], ...], limit: int = 1024) -> list[Any]:
        """Messages queued behind the current one that a handler may treat as one batch with it (see
        `supervisors.hibernate.HibernatingActor.take_queued`); none on pykka's own inbox."""
        return []

    def _handle_envelope(self, envelope: Envelope[Any]) -> None:
        """Handle one message; any exception escaping the handler crashes the actor."""
        message = envelope.message
        try:
            if message.__class__ not in _PYKKA_OWN:
                response = self.on_receive(message)  # what pykka's _handle_receive ends with, directly
            elif isinstance(message, Crash):
                raise message.exc
            else:
                response = self._handle_receive(message)
        except BaseException:
            exc_info = sys.exc_info()
            self._crash_now(exc_info, notify=False)
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception(exc_info)
            self._call_on_failure(exc_info)
        else:
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Reached from pykka's _stop() when on_stop raises: record the reason; no on_failure.
        self._record_crash(exception_value)
        logger.error(
            "%s crashed in on_stop",
            self,
            exc_info=(exception_type, exception_value, traceback),  # type: ignore[arg-type]
        )

    # -- helpers -------------------------------------------------------------------------------

    def _record_crash(self, exc: BaseException | None) -> None:
        if not self._crashed:
            self._crashed = True
            if exc is not None and not isinstance(exc, Exception):
                reason: BaseException = Crashed(repr(exc))
                reason.__cause__ = exc
                exc = reason
            self._exit_reason = exc if exc is not None else Crashed("unknown")
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()

    def _crash_now(
        self,
        exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None],
        *,
        notify: bool = True,
    ) -> None:
        first = not self._crashed
        self._record_crash(exc_info[1])
        if first:
            logger.error("%s crashed", self, exc_info=exc_info)
        if notify:
            self._call_on_failure(exc_info)

    def _call_on_failure(
        self,
        exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None],
    ) -> None:
        try:
            self.on_failure(*exc_info)
        except Exception:
            logger.exception("%s: on_failure raised", self)


def crash(ref: pykka.ActorRef[Any], exc: BaseException) -> None:
    """Make the actor behind ``ref`` crash with ``exc`` (like ``erlang:exit(Pid, Reason)``)."""
    try:
        ref.tell(Crash(exc))
    except pykka.ActorDeadError:
        logger.debug("crash(%s): already dead", ref)


def kill(ref: pykka.ActorRef[Any], reason: str = "shutdown timeout") -> None:
    """Abandon an actor that does not stop (OTP ``brutal_kill``, as far as threads allow).

    The actor is unregistered and flagged stopped, so it handles no further message and its
    lifecycle exits at once with `Killed`; Python cannot interrupt the code it is running now (a
    thread or greenlet cannot be killed from outside), which finishes on its own as a daemon.
    """
    pykka.ActorRegistry.unregister(ref)
    ref.actor_stopped.set()
    lifecycle_of(ref).mark_exited(Killed(f"{ref}: {reason}"))
