"""``StorageActor``: the one writer of a shape log, batching fsyncs and reporting durability.

It exists so that appends from the shape consumer are serialised on one actor and made durable in batches
(on size, at transaction boundaries when asked, and within ``flush_interval`` through the stack's shared
:class:`~sync.storage.ticker.FlushTicker`), and so the ShapeLogCollector learns which
offset is on disk (``on_durable``) and may acknowledge the LSN.  The log logic itself is the pure-ish
:class:`~sync.storage.writer.ShapeLogWriter`; readers never come through here (``writer.reader()``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supervisors import SupervisedActor
from sync.offsets import LogOffset
from sync.storage.inbox import LightInbox
from sync.storage.items import AppendItem
from sync.storage.reader import ShapeLogReader
from sync.storage.storage import Storage
from sync.storage.ticker import FlushTicker
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
    """tell (from the stack's FlushTicker): fsync whatever is pending."""


@dataclass(frozen=True, slots=True)
class GetReader:
    """ask -> ShapeLogReader: the shared lock-free reader (fetch once, not per request)."""


@dataclass(frozen=True, slots=True)
class DeleteLog:
    """ask -> None: hide the log from readers and delete its files; later appends are dropped."""


class StorageActor(SupervisedActor):
    """Owns one shape log's writer; one per shape, supervised (one_for_all) with its consumer.

    Owns:       the ShapeLogWriter (its write handles), the last reported durable offset, its own
                FlushTicker only when started without a shared one (``ticker=None``, tests).
    Receives:   AppendTransaction, AppendSnapshot (tell/ask) -> None; CompleteSnapshot (ask) -> None;
                Flush (ask) -> LogOffset | None; GetReader (ask) -> ShapeLogReader; DeleteLog (ask) -> None;
                Tick (tell, from the ticker it registered with while it had unsynced data).
    Sends:      ``on_durable(offset)`` after each fsync that advanced the durable offset (a complete
                transaction's last item), e.g. a ShapeDurable tell to the ShapeLogCollector.
    Crashes on: I/O errors and out-of-order offsets (the shape subtree restarts and re-opens the log,
                which trims anything not made durable; Postgres resends from the acknowledged LSN).
    """

    _create_actor_inbox = staticmethod(LightInbox)  # one actor per shape: a smaller inbox

    def __init__(
        self,
        writer: ShapeLogWriter,
        storage: Storage,
        *,
        on_durable: Callable[[LogOffset], None] | None = None,
        flush_bytes: int = 64 * 1024,
        flush_interval: float = 0.05,
        ticker: FlushTicker | None = None,
    ) -> None:
        super().__init__()
        self._writer = writer
        self._storage = storage
        self._on_durable = on_durable
        self._flush_bytes = flush_bytes
        self._reported: LogOffset | None = writer.durable_offset
        self._deleted = False
        self._own_ticker = ticker is None
        self._ticker = ticker if ticker is not None else FlushTicker(flush_interval, Tick())
        self._registered = False  # with the ticker: set while the log has unsynced bytes

    def on_start(self) -> None:
        if self._own_ticker:
            self._ticker.start()

    def on_stop(self) -> None:
        self._leave_ticker()
        if not self._deleted:
            self._writer.close()
            self._report()

    def on_failure(self, *exc_info: Any) -> None:
        self._leave_ticker()
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
                self._registered = False  # the ticker forgot us when it sent the Tick
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
        if not self._registered and not self._deleted and self._writer.has_unsynced:
            self._registered = True
            self._ticker.register(self.actor_ref)
        return None

    def _reader(self) -> ShapeLogReader:
        return self._writer.reader()

    def _flush(self) -> LogOffset | None:
        self._writer.flush()
        if self._registered:
            self._registered = False
            self._ticker.unregister(self.actor_ref)
        return self._report()

    def _leave_ticker(self) -> None:
        if self._own_ticker:
            self._ticker.stop()
        elif self._registered:
            self._registered = False
            self._ticker.unregister(self.actor_ref)

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
        self._leave_ticker()
        self._writer.mark_deleted()
        self._writer.abort()
        self._storage.delete(self._writer.handle)
