"""``LightInbox``: a smaller actor inbox for the actors that exist once per shape.

pykka's default inbox is a ``queue.Queue``; under gevent that is gevent's queue with three ``deque``\\ s
(items, getters, putters) of ~630 bytes each even when empty, about 2 KB per actor and 6 KB per shape
(consumer, storage and the shape's supervisor).  This inbox keeps its items in two lists (empty lists are
56 bytes) and wakes the actor with one :class:`sync.runtime.Event`.  It offers what pykka and the
ShapeLogCollector use: ``put``, ``get`` (blocking), ``empty`` and ``qsize``.

Use: ``_create_actor_inbox = staticmethod(LightInbox)`` in an actor class.
"""

from __future__ import annotations

from typing import Any

from supervisors.stripes import native_lock
from sync import runtime

__all__ = ["LightInbox"]


class LightInbox:
    """FIFO of envelopes; any thread/greenlet may ``put``, the actor's own loop ``get``\\ s."""

    __slots__ = ("_in", "_lock", "_out", "_ready")

    def __init__(self) -> None:
        self._in: list[Any] = []  # newest last
        self._out: list[Any] = []  # oldest last (reversed batch of ``_in``)
        self._lock = native_lock()  # an OS-thread lock under gevent too: never held across a switch
        self._ready = runtime.Event()  # set when an item may be waiting

    def put(self, item: Any, /) -> None:
        with self._lock:
            self._in.append(item)
        self._ready.set()

    def get(self) -> Any:
        while True:
            with self._lock:
                if not self._out and self._in:
                    self._in.reverse()
                    self._out, self._in = self._in, []
                if self._out:
                    return self._out.pop()
                self._ready.clear()  # under the lock: a put after this sets it again
            self._ready.wait()

    def empty(self) -> bool:
        return not self._out and not self._in

    def qsize(self) -> int:
        return len(self._out) + len(self._in)
