"""``FlushTicker``: one timer per stack that makes buffered shape-log appends durable within an interval.

One timer greenlet per storage actor swamped the gevent hub at 1,000+ shapes (every shape woke its own
greenlet every ``flush_interval``), and one fsync per shape per interval cost ~300 µs per shape.  A stack
therefore shares one ticker, and the ticker *group-commits*: a storage actor registers a
:class:`SyncMember` (not itself) when it first buffers unsynced data; at most ``interval`` later the ticker
takes every registered member's :class:`~sync.storage.positions.SyncPoint`, makes all their files durable
together (:func:`sync.storage.group_sync.sync_files`: one ``syncfs`` per filesystem, in an OS thread), and
hands each member its result (``synced``), which reports durability without any message to the actor.
A round that takes long lets the next one gather more: the cost per round is nearly flat.

Actor refs may still register (``register``) to be told ``tick`` instead (the older protocol, kept for
actors that fsync on their own).  An idle stack costs no wake-ups at all (the loop sleeps until a
registration).

Not an actor: the loop is a plain :func:`sync.runtime.spawn` background loop owned by whoever created the
ticker (the ShapeCache of the stack, or a StorageActor started without a shared ticker).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import pykka

from supervisors.stripes import native_lock
from sync import runtime
from sync.storage.files import ShapeFiles
from sync.storage.group_sync import sync_files
from sync.storage.positions import SyncPoint

__all__ = ["FlushTicker", "SyncMember"]

log = logging.getLogger(__name__)


class SyncMember(Protocol):
    """One shape log taking part in group fsyncs (the storage actor's :class:`~sync.storage.storage_actor`
    helper).  ``capture`` and ``synced`` run on the ticker's greenlet/thread."""

    @property
    def files(self) -> ShapeFiles: ...

    def capture(self) -> SyncPoint | None:
        """Forget the registration and return what an fsync started now covers (None: nothing, skip)."""
        ...

    def synced(self, point: SyncPoint, error: BaseException | None) -> None: ...


class FlushTicker:
    """Group-syncs registered members (and tells ``tick`` to registered actors) at most ``interval``
    seconds after they registered."""

    __slots__ = ("_due", "_handle", "_lock", "_members", "_name", "_pending", "_stopped", "_tick", "interval")

    def __init__(self, interval: float, tick: object, *, name: str = "flush-ticker") -> None:
        self.interval = interval
        self._tick = tick  # the message told to due actors (the storage actor's ``Tick``)
        self._name = name
        self._lock = native_lock()  # an OS-thread lock under gevent too: never held across a switch
        self._pending: set[pykka.ActorRef[Any]] = set()
        self._members: dict[SyncMember, None] = {}
        self._due = runtime.Event()  # set while ``_pending`` or ``_members`` is not empty
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
        return len(self._pending) + len(self._members)

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

    def join_group(self, member: SyncMember) -> None:
        """``member`` has unsynced data: sync it with the next round (idempotent, cheap)."""
        with self._lock:
            self._members[member] = None
        if not self._due.is_set():
            self._due.set()

    def leave_group(self, member: SyncMember) -> None:
        with self._lock:
            self._members.pop(member, None)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._due.wait()
            if self._stopped.wait(self.interval):
                return
            with self._lock:
                due, self._pending = self._pending, set()
                members, self._members = list(self._members), {}
                self._due.clear()
            for ref in due:
                try:
                    ref.tell(self._tick)
                except pykka.ActorDeadError:
                    continue
            if members:
                self._round(members)

    @staticmethod
    def _round(members: list[SyncMember]) -> None:
        taken = [(m, m.capture()) for m in members]
        batch = [(m, p) for m, p in taken if p is not None]
        if not batch:
            return
        try:
            results = sync_files([m.files for m, _ in batch])
        except Exception as exc:  # every member's owner crashes on it: nothing may be claimed durable
            log.exception("group fsync failed")
            results = [exc] * len(batch)
        for (member, point), error in zip(batch, results, strict=True):
            member.synced(point, error)
