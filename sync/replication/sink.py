"""What the replication client hands its events to: the downstream contract (the ShapeLogCollector).

Why this module exists: the client must not know the shape engine, yet it needs four things from it:

* what the connection found: :meth:`ReplicationSink.connected` is called once per connection, before
  anything else, with :class:`Connected` (the client's ``IDENTIFY_SYSTEM`` answer and the slot it is about
  to stream), so that a downstream which keeps shapes to one history (the
  :class:`~sync.replication.history.HistoryGuard`) needs no connection of its own;
* where to resume: :meth:`ReplicationSink.resume_point` returns the commit LSN of the last transaction the
  downstream fully processed (replayed transactions up to it are skipped) and of the last one it made
  durable (the client may acknowledge up to there at once);
* delivery with backpressure: :meth:`ReplicationSink.deliver` returns ``None`` when the event was handled
  synchronously, or a :class:`Pending` (a pykka future fits) the client waits for before it lets more than
  ``max_in_flight`` events be outstanding.  A failed pending re-raises in the client, which crashes;
* durability: later, the downstream tells the client actor ``AckLsn(commit_lsn)`` meaning "every
  transaction delivered with a commit LSN <= commit_lsn is durable (or affected no shape)".  When that
  covers everything delivered, nothing is pending and the client acknowledges the server's ``wal_end``.
  Acknowledgements also pace the client: between transactions it holds the stream while more than
  ``ReaderConfig.max_unacked_changes`` delivered changes are unacknowledged, for as long as they keep
  advancing (see :mod:`sync.replication.reader`), so acknowledge as soon as a transaction is durable.
  Before each report of a higher flush position to Postgres the client calls
  :meth:`ReplicationSink.flushing` (a sink may record it; the report waits for it to return).

Two replay rules the downstream must follow:

* a transaction cut by a reconnect (some fragments delivered, not its commit) is delivered again whole,
  from its first fragment (``begin=True``): drop the partial one (or deduplicate by ``(commit_lsn, op)``);
* after :class:`~sync.replication.changes.SlotRecreated` the positions of the old slot mean nothing (the
  client does not ask for the resume point then): forget them, along with every shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pykka

from sync.replication.changes import ReplicationEvent
from sync.replication.stream import SlotState, SystemInfo

__all__ = ["ActorSink", "CallbackSink", "Connected", "Pending", "ReplicationSink", "ResumePoint"]


@dataclass(frozen=True, slots=True)
class Connected:
    """What the client found on a new connection, before it streams: the server's ``IDENTIFY_SYSTEM``
    answer (system identifier, timeline, WAL position) and the slot (its confirmed position, and why it was
    created now if it was: :class:`~sync.replication.changes.SlotRecreated` follows then)."""

    system: SystemInfo
    slot: SlotState


@dataclass(frozen=True, slots=True)
class ResumePoint:
    processed_lsn: int = 0  # commit LSN of the last transaction fully processed downstream
    durable_lsn: int = 0  # commit LSN of the last transaction durable everywhere (<= processed_lsn)


class Pending(Protocol):
    """A delivery in progress; ``get`` raises ``pykka.Timeout`` if it is not done within ``timeout``."""

    def get(self, *, timeout: float | None = None) -> Any: ...


class ReplicationSink(Protocol):
    def connected(self, connection: Connected) -> None:
        """Once per connection, before ``resume_point`` and any delivery."""

    def resume_point(self) -> ResumePoint:
        """Once per connection, before streaming, when the slot was reused (not when it was created)."""

    def deliver(self, event: ReplicationEvent) -> Pending | None: ...

    def flushing(self, lsn: int) -> None:
        """The client is about to report ``lsn`` to Postgres as flushed (only ever higher than before)."""


class CallbackSink:
    """A sink from plain callables (tests, the benchmark)."""

    def __init__(
        self,
        deliver: Callable[[ReplicationEvent], Pending | None],
        resume_point: Callable[[], ResumePoint] = ResumePoint,
    ) -> None:
        self._deliver = deliver
        self._resume_point = resume_point

    def connected(self, connection: Connected) -> None:
        pass

    def resume_point(self) -> ResumePoint:
        return self._resume_point()

    def deliver(self, event: ReplicationEvent) -> Pending | None:
        return self._deliver(event)

    def flushing(self, lsn: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class GetResumePoint:
    """Ask (ActorSink -> downstream actor) -> ResumePoint."""


class ActorSink:
    """Deliver events to an actor: ``ask(event, block=False)`` (its future is the backpressure) and
    ``ask(GetResumePoint(), timeout=...)`` for the resume point."""

    def __init__(self, ref: pykka.ActorRef[Any], *, timeout: float = 30.0) -> None:
        self._ref = ref
        self._timeout = timeout

    def connected(self, connection: Connected) -> None:
        pass

    def resume_point(self) -> ResumePoint:
        point = self._ref.ask(GetResumePoint(), timeout=self._timeout)
        if not isinstance(point, ResumePoint):
            raise TypeError(f"{self._ref} answered GetResumePoint with {point!r}")
        return point

    def deliver(self, event: ReplicationEvent) -> Pending:
        future: Pending = self._ref.ask(event, block=False)
        return future

    def flushing(self, lsn: int) -> None:
        pass
