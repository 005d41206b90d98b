"""``StorageActor``: the one writer of a shape log, batching fsyncs and reporting durability.

It exists so that appends from the shape consumer are serialised on one actor and made durable in batches
(on size, at transaction boundaries when asked, and on a timer), and so the ShapeLogCollector learns which
offset is on disk (``on_durable``) and may acknowledge the LSN.  The log logic itself is the pure-ish
:class:`~sync.storage.writer.ShapeLogWriter`; readers never come through here (``writer.reader()``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from supervisors import SupervisedActor
from sync import runtime
from sync.offsets import LogOffset
from sync.storage.items import AppendItem
from sync.storage.reader import ShapeLogReader
from sync.storage.storage import Storage
from sync.storage.writer import ShapeLogWriter

__all__ = [
    "AppendSnapshot",
    "AppendTransaction",
    "CompleteSnapshot",
    "DeleteLog",
    "Flush",
    "GetReader",
    "StorageActor",
    "Tick",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AppendTransaction:
    """tell/ask: items of one transaction fragment; ``complete`` on its last; ``sync`` fsyncs at that end."""

    items: tuple[AppendItem, ...]
    complete: bool
    sync: bool = False


@dataclass(frozen=True, slots=True)
class AppendSnapshot:
    """tell/ask: snapshot rows ``(key, json)``."""

    rows: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class CompleteSnapshot:
    """ask -> None: write snapshot-end, make the snapshot durable and mark it complete."""

    xmin: int
    xmax: int
    xip_list: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Flush:
    """ask -> LogOffset | None: fsync now; returns the durable offset."""


@dataclass(frozen=True, slots=True)
class Tick:
    """tell (from the actor's own timer loop): fsync whatever is pending."""


@dataclass(frozen=True, slots=True)
class GetReader:
    """ask -> ShapeLogReader: the shared lock-free reader (fetch once, not per request)."""


@dataclass(frozen=True, slots=True)
class DeleteLog:
    """ask -> None: hide the log from readers and delete its files; later appends are dropped."""


class StorageActor(SupervisedActor):
    """Owns one shape log's writer; one per shape, supervised (one_for_all) with its consumer.

    Owns:       the ShapeLogWriter (its write handles), the timer loop, the last reported durable offset.
    Receives:   AppendTransaction, AppendSnapshot (tell/ask) -> None; CompleteSnapshot (ask) -> None;
                Flush (ask) -> LogOffset | None; GetReader (ask) -> ShapeLogReader; DeleteLog (ask) -> None;
                Tick (tell, own timer).
    Sends:      ``on_durable(offset)`` after each fsync that advanced the durable offset (a complete
                transaction's last item), e.g. a ShapeDurable tell to the ShapeLogCollector.
    Crashes on: I/O errors and out-of-order offsets (the shape subtree restarts and re-opens the log,
                which trims anything not made durable; Postgres resends from the acknowledged LSN).
    """

    def __init__(
        self,
        writer: ShapeLogWriter,
        storage: Storage,
        *,
        on_durable: Callable[[LogOffset], None] | None = None,
        flush_bytes: int = 64 * 1024,
        flush_interval: float = 0.05,
    ) -> None:
        super().__init__()
        self._writer = writer
        self._storage = storage
        self._on_durable = on_durable
        self._flush_bytes = flush_bytes
        self._interval = flush_interval
        self._reported: LogOffset | None = writer.durable_offset
        self._deleted = False
        self._stop_timer = runtime.Event()
        self._pending = runtime.Event()  # set while the log has unsynced bytes: the timer sleeps otherwise
        self._tick_queued = False

    def on_start(self) -> None:
        runtime.spawn(self._timer, self.actor_ref, name=f"storage-timer-{self._writer.handle}")

    def on_stop(self) -> None:
        self._stop_timer.set()
        self._pending.set()
        if not self._deleted:
            self._writer.close()
            self._report()

    def on_failure(self, *exc_info: Any) -> None:
        self._stop_timer.set()
        self._pending.set()
        if not self._deleted:
            self._writer.abort()  # reopening trims whatever was not made durable

    def on_receive(self, message: Any) -> Any:
        if self._deleted and isinstance(message, AppendTransaction | AppendSnapshot | Tick):
            return None
        match message:
            case AppendTransaction(items, complete, sync):
                self._writer.append(items, complete=complete)
                if (complete and sync) or self._writer.unsynced_bytes >= self._flush_bytes:
                    self._flush()
            case AppendSnapshot(rows):
                self._writer.append_snapshot(rows)
                if self._writer.unsynced_bytes >= self._flush_bytes:
                    self._flush()
            case CompleteSnapshot(xmin, xmax, xip_list):
                self._writer.complete_snapshot(xmin, xmax, xip_list)
            case Tick():
                self._tick_queued = False
                if self._writer.has_unsynced:
                    self._flush()
            case Flush():
                return self._flush()
            case GetReader():
                return self._reader()
            case DeleteLog():
                self._delete()
            case _:
                msg = f"{type(self).__name__}: unexpected message {message!r}"
                raise TypeError(msg)
        if self._writer.has_unsynced and not self._pending.is_set():
            self._pending.set()
        return None

    def _reader(self) -> ShapeLogReader:
        return self._writer.reader()

    def _flush(self) -> LogOffset | None:
        self._writer.flush()
        return self._report()

    def _report(self) -> LogOffset | None:
        durable = self._writer.durable_offset
        if durable is not None and (self._reported is None or durable > self._reported):
            self._reported = durable
            if self._on_durable is not None:
                self._on_durable(durable)
        return durable

    def _delete(self) -> None:
        if self._deleted:
            return
        self._deleted = True
        self._stop_timer.set()
        self._pending.set()
        self._writer.mark_deleted()
        self._writer.abort()
        self._storage.delete(self._writer.handle)

    def _timer(self, ref: pykka.ActorRef[Any]) -> None:
        # An idle log costs no wake-ups: the timer sleeps until an append leaves unsynced bytes.  Clearing
        # ``_pending`` before the Tick is sent is race-free: an append handled before the Tick is flushed by
        # it, one handled after it sets ``_pending`` again (the actor handles messages in order).
        while True:
            self._pending.wait()
            if self._stop_timer.wait(self._interval):
                return
            if self._tick_queued:
                continue  # the previous Tick is still in the inbox: do not pile them up
            self._pending.clear()
            self._tick_queued = True
            try:
                ref.tell(Tick())
            except pykka.ActorDeadError:
                return
