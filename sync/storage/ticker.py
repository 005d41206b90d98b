"""``FlushTicker``: one timer per stack that makes buffered shape-log appends durable within an interval.

One timer greenlet per storage actor swamped the gevent hub at 1,000+ shapes (every shape woke its own
greenlet every ``flush_interval``).  A stack therefore shares one ticker: a storage actor registers itself
when it first buffers unsynced data, and the ticker tells a ``Tick`` only to the registered actors, at most
``interval`` after they registered, then forgets them.  An actor that flushes on its own (size, transaction
end) or stops unregisters; an idle stack costs no wake-ups at all (the loop sleeps until a registration).

Not an actor: the loop is a plain :func:`sync.runtime.spawn` background loop owned by whoever created the
ticker (the ShapeCache of the stack, or a StorageActor started without a shared ticker).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pykka

from sync import runtime

__all__ = ["FlushTicker"]

log = logging.getLogger(__name__)


class FlushTicker:
    """Tells ``tick`` to every registered actor at most ``interval`` seconds after it registered."""

    __slots__ = ("_due", "_handle", "_lock", "_name", "_pending", "_stopped", "_tick", "interval")

    def __init__(self, interval: float, tick: object, *, name: str = "flush-ticker") -> None:
        self.interval = interval
        self._tick = tick  # the message told to due actors (the storage actor's ``Tick``)
        self._name = name
        self._lock = threading.Lock()  # gevent's under monkey patching; never held across a switch
        self._pending: set[pykka.ActorRef[Any]] = set()
        self._due = runtime.Event()  # set while ``_pending`` is not empty
        self._stopped = runtime.Event()
        self._handle: runtime.Handle | None = None

    def start(self) -> FlushTicker:
        if self._handle is None:
            self._handle = runtime.spawn(self._loop, name=self._name)
        return self

    def stop(self, join: float = 0.0) -> None:
        """End the loop (pending actors get no more ticks); wait up to ``join`` seconds for it."""
        self._stopped.set()
        self._due.set()
        handle = self._handle
        if handle is not None and join > 0:
            handle.join(join)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def register(self, ref: pykka.ActorRef[Any]) -> None:
        """``ref`` has unsynced data: tell it a tick within ``interval`` (idempotent, cheap)."""
        with self._lock:
            self._pending.add(ref)
        if not self._due.is_set():
            self._due.set()

    def unregister(self, ref: pykka.ActorRef[Any]) -> None:
        """``ref`` flushed (or stopped): no tick needed until it registers again."""
        with self._lock:
            self._pending.discard(ref)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._due.wait()
            if self._stopped.wait(self.interval):
                return
            with self._lock:
                due, self._pending = self._pending, set()
                self._due.clear()
            for ref in due:
                try:
                    ref.tell(self._tick)
                except pykka.ActorDeadError:
                    continue
