"""`HibernatingActor`: a `SupervisedActor` that holds no thread or greenlet while its inbox is empty.

Why this module exists: a pykka actor owns one thread (one greenlet under gevent) for its whole life,
parked in ``inbox.get()`` while idle: 7-14 KB of saved greenlet stack plus the Thread/Greenlet objects.
The engine runs three actors per shape and most shapes are idle most of the time, so that is most of the
memory of an idle shape. Erlang has the same problem and the same answer, ``proc_lib:hibernate/3``; here
an idle actor simply has no runner at all:

* its inbox is a `Mailbox`. ``put`` appends the message and, when no runner is active, marks one active
  and schedules it (`supervisors.runners`: a parked greenlet under gevent monkey patching, a parked
  OS thread otherwise, or a new one when none is parked);
* the runner handles messages one at a time, in order, exactly like `SupervisedActor`'s loop, and
  exits as soon as the inbox is empty (the check and the "no runner" mark are one step under the
  mailbox's lock, so a message is never left behind and two runners never overlap);
* the first runner is started by ``start()`` and runs ``on_start`` before any message;
* the runner that sees the actor stopped (``stop()``, a crash, `kill`) closes the mailbox: queued and
  later ``ask``\\ s fail at once with ``ActorDeadError`` (pykka's loop leaves a late ``ask`` unanswered
  until its timeout), then it marks the lifecycle exited, so the supervisor and monitors are told.

Everything else (crash rule, on_start/on_stop/on_failure, ``ask`` futures, proxies, supervision, the
lifecycle) is inherited unchanged from `SupervisedActor`. Handlers may block as before (``ask`` another
actor, wait on I/O): the runner stays alive while a handler runs. The cost is one hand-over to a
runner per *burst* of messages, and no state may be kept in thread-locals across messages (each burst
may run on a different thread/greenlet).

Use: subclass `HibernatingActor` instead of `SupervisedActor`, or `hibernating(SomeActor)` for an
existing class (a cached subclass with `HibernatingActor` first in its MRO).
"""

from __future__ import annotations

import logging
import queue
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import pykka
from pykka.messages import _ActorStop

from supervisors.actor import SupervisedActor
from supervisors.runners import schedule
from supervisors.stripes import lock_for

__all__ = ["HibernatingActor", "Mailbox", "hibernating"]

logger = logging.getLogger(__name__)

A = TypeVar("A", bound=SupervisedActor)

_IDLE, _RUNNING, _CLOSED = 0, 1, 2


class Mailbox:
    """The FIFO inbox of a `HibernatingActor`: starts a runner when a message arrives and none runs.

    Any thread/greenlet may ``put``; only the active runner calls ``take`` and ``close``. ``qsize`` and
    ``empty`` count the messages not yet taken (read by the ShapeLogCollector for backpressure).
    """

    __slots__ = ("_in", "_lock", "_out", "_run", "_state")

    def __init__(self) -> None:
        self._in: list[Any] | None = None  # newest last; lists only while non-empty
        self._out: list[Any] | None = None  # oldest last (a reversed batch of ``_in``)
        self._run: Callable[[], None] | None = None
        self._state = _IDLE
        self._lock = lock_for(self)  # its stripe, looked up once (three times per actor visit otherwise)

    def open(self, first: Callable[[], None], run: Callable[[], None]) -> None:
        """Schedule ``first`` (the actor's first burst: on_start, then messages) and bind ``run`` for
        every later burst."""
        with self._lock:
            self._run = run
            self._state = _RUNNING
        schedule(first)

    def put(self, item: Any, /) -> None:
        run = None
        with self._lock:
            state = self._state
            if state != _CLOSED:
                if self._in is None:
                    self._in = [item]
                else:
                    self._in.append(item)
                if state == _IDLE and self._run is not None:
                    self._state = _RUNNING
                    run = self._run
        if state == _CLOSED:
            _reject(item)
        elif run is not None:
            schedule(run)

    def take(self) -> Any | None:
        """The oldest message, or None after marking the mailbox idle (the runner must then return)."""
        with self._lock:
            out = self._head()
            if out is None:
                self._state = _IDLE
                return None
            return self._pop(out)

    def take_tells(self, kinds: tuple[type[Any], ...], limit: int) -> list[Any]:
        """The oldest messages while they are ``tell``\\ s (no reply expected) of one of ``kinds``, at most
        ``limit``: taken from the head only, so the order of every message is kept (only the active
        runner may call this)."""
        taken: list[Any] = []
        with self._lock:
            while len(taken) < limit:
                out = self._head()
                if out is None:
                    break
                envelope = out[-1]
                if envelope.reply_to is not None or not isinstance(envelope.message, kinds):
                    break
                taken.append(self._pop(out).message)
        return taken

    def close(self) -> list[Any]:
        """Refuse every later message; return those not taken, oldest first. Drops the runner."""
        with self._lock:
            self._state = _CLOSED
            self._run = None
            rest = list(reversed(self._out or ())) + (self._in or [])
            self._out = self._in = None
        return rest

    def get(self) -> Any:
        """pykka's inbox protocol: the oldest message, never blocking (``queue.Empty`` if none)."""
        with self._lock:
            out = self._head()
            if out is None:
                raise queue.Empty
            return self._pop(out)

    def _head(self) -> list[Any] | None:
        """Under the lock: the list with the oldest message last (``_in`` moved over, reversed, once
        ``_out`` is used up), or None when the mailbox is empty."""
        out = self._out
        if out is None and self._in is not None:
            out = self._in
            out.reverse()
            self._out, self._in = out, None
        return out

    def _pop(self, out: list[Any]) -> Any:
        """Under the lock: take the oldest message from ``out`` (the list :meth:`_head` returned)."""
        item = out.pop()
        if not out:
            self._out = None
        return item

    def empty(self) -> bool:
        return self._out is None and self._in is None

    def qsize(self) -> int:
        return len(self._out or ()) + len(self._in or ())


def _reject(item: Any) -> None:
    """Answer a message sent to an exited actor as pykka's teardown does."""
    reply_to = getattr(item, "reply_to", None)
    if reply_to is None:
        return
    try:
        if isinstance(item.message, _ActorStop):
            reply_to.set(None)
        else:
            exc = pykka.ActorDeadError("actor stopped before handling the message")
            reply_to.set_exception((pykka.ActorDeadError, exc, None))
    except queue.Full:  # already answered
        return


class HibernatingActor(SupervisedActor):
    """A `SupervisedActor` without a thread/greenlet while idle (see the module docstring).

    Owns:       its `Mailbox` and, while messages are waiting, one runner.
    Receives:   `Crash` (tell) besides the subclass's own messages.
    Sends:      nothing itself; its lifecycle watchers tell the supervisor / monitors on exit.
    Crashes on: any exception escaping on_start or a handler (tell, ask or proxy call).
    """

    @staticmethod
    def _create_actor_inbox() -> Mailbox:
        return Mailbox()

    def _start_actor_loop(self) -> None:
        self._mailbox().open(self._first_burst, self._run_burst)

    def _mailbox(self) -> Mailbox:
        inbox = self.actor_inbox
        assert isinstance(inbox, Mailbox), "a HibernatingActor's inbox is a Mailbox"
        return inbox

    def take_queued(self, kinds: tuple[type[Any], ...], limit: int = 1024) -> list[Any]:
        """For a handler: the messages queued right behind the current one while they are tells of
        ``kinds`` (at most ``limit``), taken now so the handler can treat them as one batch (a consumer
        merges routed transactions into one append; a storage merges appends into one write).  The
        rest of the inbox is untouched and keeps its order."""
        return self._mailbox().take_tells(kinds, limit)

    def _first_burst(self) -> None:
        """The first runner: on_start, then messages as any runner."""
        try:
            self._actor_loop_setup()
        except BaseException:  # a fault of the loop itself (on_start's own errors are handled there)
            self._crash_now(sys.exc_info())
        self._run_burst()

    def _run_burst(self) -> None:
        """One runner: messages until the inbox is empty (hibernate) or the actor stops (exit)."""
        mailbox = self._mailbox()
        stopped = self.actor_stopped
        try:
            while not stopped.is_set():
                envelope = mailbox.take()
                if envelope is None:
                    return  # hibernate: the next put starts a new runner
                self._handle_envelope(envelope)
        except BaseException:  # a fault of the loop itself, not of a handler: never leave it hanging
            self._crash_now(sys.exc_info())
        self._finish()

    def _finish(self) -> None:
        try:
            for envelope in self._mailbox().close():
                _reject(envelope)
        finally:
            self._lifecycle.mark_exited(self._exit_reason)

    def _actor_loop_teardown(self) -> None:  # pykka's, unused here: _finish replaces it
        self._finish()


_cache: dict[type[Any], type[Any]] = {}


def hibernating(cls: type[A]) -> type[A]:
    """A subclass of ``cls`` that hibernates (cached: one class per ``cls``)."""
    sub = _cache.get(cls)
    if sub is None:
        if issubclass(cls, HibernatingActor):
            return cls
        sub = type(cls.__name__, (HibernatingActor, cls), {"__module__": cls.__module__})
        _cache[cls] = sub
    return sub
