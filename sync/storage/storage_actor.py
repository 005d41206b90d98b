"""``StorageActor``: the one writer of a shape log, batching fsyncs and reporting durability.

It exists so that appends from the shape consumer are serialised on one actor and made durable in batches
(on size, at transaction boundaries when asked, and within ``flush_interval`` through the stack's shared
:class:`~sync.storage.ticker.FlushTicker`, which group-commits every log with unsynced data in one round),
and so the ShapeLogCollector learns which offset is on disk and may acknowledge the LSN: through the
collector's batched report sink once the consumer passed it (``ReportTo``), else ``on_durable``.  A
transaction that added nothing to the log (``AppendBatch.settle``) is reported durable once everything
written before it is.  The log logic itself is the pure-ish :class:`~sync.storage.writer.ShapeLogWriter`;
readers never come through here (``writer.reader()``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from supervisors import SupervisedActor
from sync.offsets import LogOffset
from sync.storage.files import ShapeFiles
from sync.storage.inbox import LightInbox
from sync.storage.items import AppendItem
from sync.storage.positions import SyncPoint
from sync.storage.reader import ShapeLogReader
from sync.storage.storage import Storage
from sync.storage.ticker import FlushTicker
from sync.storage.writer import ShapeLogWriter

__all__ = [
    "AppendBatch",
    "AppendSnapshot",
    "AppendSnapshotBlock",
    "AppendTransaction",
    "CompleteSnapshot",
    "DeleteLog",
    "Flush",
    "GetReader",
    "ReportTo",
    "StorageActor",
    "SyncFailed",
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
class AppendBatch:
    """tell/ask: transaction fragments ``(items, complete)`` in order, written at once; ``settle`` is the
    commit LSN of the newest transaction that added nothing to the log (0: none): the log is reported
    durable up to ``<settle>_0`` once everything written before this message is durable."""

    parts: tuple[tuple[Sequence[AppendItem], bool], ...]  # items never modified once sent
    settle: int = 0


@dataclass(frozen=True, slots=True)
class ReportTo:
    """tell (the consumer, once registered): report durability as ``report(handle, offset)`` (the
    collector's batched sink) instead of ``on_durable``."""

    handle: str
    report: Callable[[str, LogOffset], None]


@dataclass(frozen=True, slots=True)
class SyncFailed:
    """tell (from the group fsync): the log's files could not be made durable: crash."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class AppendSnapshot:
    """tell/ask: snapshot rows ``(key, json)``."""

    rows: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class AppendSnapshotBlock:
    """tell/ask: ``count`` snapshot items as one block, their JSONs joined by ``,`` (what the snapshot worker
    reads from Postgres; see :meth:`~sync.storage.writer.ShapeLogWriter.append_snapshot_block`)."""

    block: bytes
    count: int


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


class _Member:
    """The actor's part in the ticker's group fsync (see :class:`~sync.storage.ticker.SyncMember`), and
    its durability reporting: ``capture``/``synced`` run on the ticker's greenlet/thread, the rest on the
    actor's.  Values shared between the two only ever move forward, and a report never claims more than a
    completed fsync (or one started after the value was set) covered."""

    __slots__ = (
        "_round_settle",
        "handle",
        "on_durable",
        "ref",
        "registered",
        "report_to",
        "reported",
        "settle",
        "writer",
    )

    def __init__(self, writer: ShapeLogWriter, on_durable: Callable[[LogOffset], None] | None) -> None:
        self.writer = writer
        self.on_durable = on_durable
        self.report_to: Callable[[str, LogOffset], None] | None = None
        self.handle = writer.handle
        self.ref: pykka.ActorRef[Any] | None = None
        self.registered = False  # with the ticker's group (cleared by the ticker when it takes us)
        self.reported: LogOffset | None = writer.durable_offset
        self.settle = 0  # newest empty transaction's commit LSN handed to us
        self._round_settle = 0

    @property
    def files(self) -> ShapeFiles:
        return self.writer.files

    def capture(self) -> SyncPoint | None:
        self.registered = False  # before taking the point: a later write registers again
        self._round_settle = self.settle
        return self.writer.sync_point()

    def synced(self, point: SyncPoint, error: BaseException | None) -> None:
        if error is not None:
            if self.ref is not None:
                try:
                    self.ref.tell(SyncFailed(error))
                except pykka.ActorDeadError:
                    return
            return
        self.writer.note_synced(point)
        self.report(point.last, self._round_settle)

    def report(self, durable: LogOffset | None, settle: int) -> LogOffset | None:
        """Report ``durable`` raised to ``<settle>_0`` if that is news; returns the reported offset."""
        if settle and (durable is None or durable.tx < settle):
            durable = LogOffset(settle, 0)
        reported = self.reported
        if durable is not None and (reported is None or durable > reported):
            self.reported = durable
            if self.report_to is not None:
                self.report_to(self.handle, durable)
            elif self.on_durable is not None:
                self.on_durable(durable)
        return durable


_APPENDS = (AppendBatch,)


class StorageActor(SupervisedActor):
    """Owns one shape log's writer; one per shape, supervised (one_for_all) with its consumer.

    Owns:       the ShapeLogWriter (its write handles), the last reported durable offset, its own
                FlushTicker only when started without a shared one (``ticker=None``, tests).
    Receives:   AppendBatch (those queued back to back are written as one), AppendTransaction,
                AppendSnapshot (tell/ask) -> None; CompleteSnapshot (ask) -> None; Flush (ask) ->
                LogOffset | None; GetReader (ask) -> ShapeLogReader; DeleteLog (ask) -> None;
                ReportTo (tell, consumer); SyncFailed (tell, from the ticker's group fsync);
                Tick (tell, from a ticker it registered with as an actor: kept for compatibility).
    Sends:      durability (a complete transaction's last item, or ``<settle>_0``) after each fsync that
                advanced it: ``report(handle, offset)`` given by ReportTo (the collector's batched sink),
                else ``on_durable(offset)``; both may be called from the ticker's greenlet/thread.
    Crashes on: I/O errors (SyncFailed included) and out-of-order offsets (the shape subtree restarts and
                re-opens the log, which trims anything not made durable; Postgres resends from the
                acknowledged LSN).
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
        self._flush_bytes = flush_bytes
        self._member = _Member(writer, on_durable)
        self._deleted = False
        self._own_ticker = ticker is None
        self._ticker = ticker if ticker is not None else FlushTicker(flush_interval, Tick())

    def on_start(self) -> None:
        self._member.ref = self.actor_ref
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
        if self._deleted and isinstance(message, AppendSnapshotBlock):
            return None
        if self._deleted and isinstance(message, AppendBatch | AppendTransaction | AppendSnapshot | Tick):
            return None
        writer = self._writer
        match message:
            case AppendBatch(parts, settle):
                queued = self.take_queued(_APPENDS)
                if queued:  # appends queued back to back: one write per file for all of them
                    parts = tuple(p for batch in (message, *queued) for p in batch.parts)
                    settle = max(settle, *(batch.settle for batch in queued))
                writer.append_batch(parts)
                if settle:
                    self._member.settle = max(self._member.settle, settle)
                    if not writer.has_unsynced:
                        self._report()  # nothing written before it awaits an fsync
                if writer.unsynced_bytes >= self._flush_bytes:
                    self._flush()
            case AppendTransaction(items, complete, sync):
                writer.append(items, complete=complete)
                if (complete and sync) or writer.unsynced_bytes >= self._flush_bytes:
                    self._flush()
            case AppendSnapshot(rows):
                writer.append_snapshot(rows)
                if writer.unsynced_bytes >= self._flush_bytes:
                    self._flush()
            case AppendSnapshotBlock(block, count):
                self._writer.append_snapshot_block(block, count)
                if self._writer.unsynced_bytes >= self._flush_bytes:
                    self._flush()
            case CompleteSnapshot(xmin, xmax, xip_list):
                writer.complete_snapshot(xmin, xmax, xip_list)
            case Tick():
                if writer.has_unsynced:
                    self._flush()
            case Flush():
                return self._flush()
            case GetReader():
                return self._reader()
            case ReportTo(handle, report):
                self._member.handle = handle
                self._member.report_to = report
                self._member.reported = None  # the new recipient learns where the log stands
                if not writer.has_unsynced:
                    self._report()
            case SyncFailed(error):
                raise error
            case DeleteLog():
                self._delete()
            case _:
                msg = f"{type(self).__name__}: unexpected message {message!r}"
                raise TypeError(msg)
        member = self._member
        if not member.registered and not self._deleted and writer.has_unsynced:
            member.registered = True
            self._ticker.join_group(member)
        return None

    def _reader(self) -> ShapeLogReader:
        return self._writer.reader()

    def _flush(self) -> LogOffset | None:
        self._writer.flush()
        member = self._member
        if member.registered:
            member.registered = False
            self._ticker.leave_group(member)
        return self._report()

    def _leave_ticker(self) -> None:
        if self._own_ticker:
            self._ticker.stop()
        elif self._member.registered:
            self._member.registered = False
            self._ticker.leave_group(self._member)

    def _report(self) -> LogOffset | None:
        """Report what is durable now (everything written is, or nothing of it needs reporting yet)."""
        member = self._member
        durable = self._writer.durable_offset
        if self._writer.has_unsynced:
            member.report(durable, 0)
            return durable
        member.report(durable, member.settle)
        return durable

    def _delete(self) -> None:
        if self._deleted:
            return
        self._deleted = True
        self._leave_ticker()
        self._writer.mark_deleted()
        self._writer.abort()
        self._storage.delete(self._writer.handle)
