"""``DurableReports``: the shapes' durability reports to the ShapeLogCollector, batched.

Why: with thousands of shapes every flush round makes thousands of logs durable at once; one message per
shape per round to the collector cost more than the fsync.  The collector owns one ``DurableReports`` and
hands it to each consumer at registration (the answer to ``RegisterShape``), which passes it to its
storage.  Storages call :meth:`DurableReports.report` from any thread/greenlet (the stack's flush ticker,
mostly); the first report into an empty buffer tells the collector one :class:`DrainDurable`, and the
collector takes everything gathered meanwhile with :meth:`DurableReports.drain`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pykka

from supervisors.stripes import native_lock
from sync.offsets import LogOffset

__all__ = ["DrainDurable", "DurableReports"]


@dataclass(frozen=True, slots=True)
class DrainDurable:
    """tell (DurableReports -> its collector): durability reports are waiting; ``drain`` them."""


class DurableReports:
    """Newest durable offset per shape since the last drain; thread-safe."""

    __slots__ = ("_buf", "_lock", "_ref")

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        self._ref = ref
        self._buf: dict[str, LogOffset] = {}
        self._lock = native_lock()  # an OS-thread lock under gevent too: never held across a switch

    def report(self, handle: str, offset: LogOffset) -> None:
        """Everything of shape ``handle`` up to ``offset`` is durable."""
        with self._lock:
            first = not self._buf
            prev = self._buf.get(handle)
            if prev is None or offset > prev:
                self._buf[handle] = offset
        if first:
            try:
                self._ref.tell(DrainDurable())
            except pykka.ActorDeadError:
                return  # the collector is gone: what it would have acknowledged is replayed anyway

    def drain(self) -> dict[str, LogOffset]:
        with self._lock:
            out, self._buf = self._buf, {}
        return out
