"""``ShapeLogWriter``: appends items to a shape log, closes chunks, fsyncs, and publishes to readers.

Pure-ish: no actor, no timers; the storage actor decides *when* to flush.  One writer per shape log, used
from one thread/greenlet at a time.  Write order per append is ``.json``, ``.items``, ``.chunks``,
so a crash between writes leaves entries that point only at bytes already written (see
:mod:`sync.storage.format` for the format and :mod:`sync.storage.recovery` for the trimming on open).
Readers see an appended transaction once it is complete (``LogView`` is replaced after the writes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from sync.offsets import LogOffset
from sync.storage.files import ShapeFiles
from sync.storage.format import CHUNK, ITEM, TXN_END, Durable, encode_meta
from sync.storage.items import AppendItem, WholeTransactions, snapshot_end_json
from sync.storage.log_layout import layout_items
from sync.storage.positions import SeqFiles, SeqPosition, SyncPoint
from sync.storage.reader import LogState, LogView, ShapeLogReader
from sync.storage.snapshot_writer import ITEM_BOUNDARY, SEP_BOUNDARY, Boundary, join_items, layout_block

__all__ = ["ShapeLogWriter"]

log = logging.getLogger(__name__)
_ITEM_SIZE = ITEM.size
_MARKER_EVERY = 512  # items between log.durable markers written after group syncs


class ShapeLogWriter:
    """The single writer of one shape log (live log + snapshot); see the module docstring."""

    def __init__(
        self,
        files: ShapeFiles,
        meta: Mapping[str, object],
        log_pos: SeqPosition,
        snap_pos: SeqPosition,
        *,
        chunk_bytes: int,
        state: LogState | None = None,
    ) -> None:
        self._files = files
        self._meta = dict(meta)
        self._chunk_bytes = chunk_bytes
        self._log = SeqFiles("log", log_pos)
        self._snap = SeqFiles("snapshot", snap_pos)
        # The positions are where the files end (a new log's empty files; what recovery left after trimming a
        # torn tail): appends need no fstat to find their place.  With thousands of shapes each file's first
        # append paid one, per shape.
        files.seed_sizes(self._log.sizes() | self._snap.sizes())
        self._committed_items = log_pos.items
        self._committed_last = log_pos.last
        self._durable = log_pos.last
        self._unsynced_bytes = 0
        # Group fsync (the stack's FlushTicker syncs many logs at once, off this writer's thread): every write
        # bumps ``_writes``; ``_synced`` is the count a flush or group sync covered; ``_marker`` is the
        # log.durable record a group sync earned, written by the owner at its next append or flush.
        self._writes = 0
        self._synced = 0
        self._marker: Durable | None = None
        self._marker_items = log_pos.items  # items the log.durable marker claimed when last written
        snap_complete = bool(meta.get("snapshot_complete"))
        view = LogView(
            log_items=log_pos.items,
            log_json=log_pos.json_len,
            log_chunks=log_pos.chunks,
            log_last=log_pos.last,
            snap_chunks=snap_pos.chunks,
            snap_complete=snap_complete,
        )
        if state is None:
            state = LogState(view)
        else:
            state.view = view  # a re-opened log: the shared reader continues from here
            if state.reader is not None:
                state.reader.reset_cache()
        self.state = state
        self._closed = False

    # -- introspection -------------------------------------------------------------------------------------

    @property
    def handle(self) -> str:
        return str(self._meta["handle"])

    @property
    def metadata(self) -> dict[str, object]:
        return dict(self._meta)

    @property
    def snapshot_complete(self) -> bool:
        return self.state.view.snap_complete

    @property
    def last_offset(self) -> LogOffset | None:
        """Offset of the last item of the last *complete* transaction."""
        return self._committed_last

    @property
    def durable_offset(self) -> LogOffset | None:
        """Offset of the last complete transaction's last item known to be fsynced."""
        return self._durable

    @property
    def unsynced_bytes(self) -> int:
        return self._unsynced_bytes

    @property
    def has_unsynced(self) -> bool:
        return self._writes != self._synced and (self._log.dirty or self._snap.dirty)

    @property
    def files(self) -> ShapeFiles:
        return self._files

    def sync_point(self) -> SyncPoint:
        """What an fsync of this log's files started after this call makes durable.  Safe from another
        thread/greenlet than the owner's: every value read was written to the files before it was set."""
        return SyncPoint(self._writes, self._committed_items, self._committed_last)

    def note_synced(self, point: SyncPoint) -> None:
        """A group fsync started after ``point`` was taken succeeded (called by the syncing thread)."""
        if point.writes > self._synced:
            self._synced = point.writes
            if point.writes == self._writes:
                self._unsynced_bytes = 0
        last = point.last
        if last is not None and (self._durable is None or last > self._durable):
            self._durable = last
            self._marker = Durable(point.items, last.tx, last.op)

    def reader(self) -> ShapeLogReader:
        """The shared reader of this log (its own read-only handles)."""
        state = self.state
        if state.reader is None:
            state.reader = ShapeLogReader(state, self._files.reader())
        return state.reader

    # -- appends -------------------------------------------------------------------------------------------

    def append(self, items: Sequence[AppendItem], *, complete: bool) -> None:
        """Append a transaction fragment; ``complete`` marks the transaction's end (then readers see it).

        Offsets must be real (``tx > 0``) and strictly increasing across calls.
        """
        seq = self._log
        self._write_marker()
        if items:
            self._write_items(seq, items, txn_end=complete)
        elif complete and seq.pos.items > self._committed_items:
            # the transaction's last fragment was empty: flag its last, still invisible, entry
            flags_at = (seq.pos.items - 1) * _ITEM_SIZE + ITEM.size - 3
            self._files.pwrite(seq.items, flags_at, bytes([TXN_END]))
            seq.dirty_names.add(seq.items)  # the next flush must make the flag durable too
            self._writes += 1
        if complete:
            self._committed_items = seq.pos.items
            self._committed_last = seq.pos.last
            self._publish()

    def append_batch(self, parts: Sequence[tuple[Sequence[AppendItem], bool]]) -> None:
        """Append several transaction fragments ``(items, complete)`` in order with one write per file.

        The same as calling :meth:`append` for each part (readers see every complete transaction at once);
        a :class:`~sync.storage.items.WholeTransactions` part as calling it for each of its items.
        """
        seq = self._log
        flat: list[AppendItem] = []
        ends: list[int] = []  # indexes in ``flat`` of transaction ends
        end_at = -1  # index of the last complete transaction's last item in ``flat``
        for part in parts:
            items, complete = part
            if part.__class__ is WholeTransactions:  # every item ends a transaction
                if items:
                    start = len(flat)
                    flat.extend(items)
                    end_at = len(flat) - 1
                    ends.extend(range(start, end_at + 1))
                continue
            if not items:
                if complete and flat:
                    if ends[-1:] != [len(flat) - 1]:  # ``ends`` stays strictly increasing
                        ends.append(len(flat) - 1)
                    end_at = len(flat) - 1
                elif complete:  # an empty end of a transaction written before this batch
                    self.append((), complete=True)
                continue
            flat.extend(items)
            if complete:
                ends.append(len(flat) - 1)
                end_at = len(flat) - 1
        if not flat:
            return
        self._write_marker()
        base = seq.pos.items
        offsets = self._write_items(seq, flat, ends=ends)
        if end_at >= 0:
            self._committed_items = base + end_at + 1
            self._committed_last = offsets[end_at]
            self._publish()

    def append_snapshot(self, rows: Sequence[tuple[str, bytes]]) -> None:
        """Append snapshot rows ``(key, json)`` (visible chunk by chunk, as chunks close).  The keys are not
        stored: snapshot items are addressed by chunk only (format 2)."""
        self._append_snapshot(join_items([json for _, json in rows]), len(rows), SEP_BOUNDARY)

    def append_snapshot_block(self, block: bytes, count: int) -> None:
        """Append ``count`` snapshot items given as one block, their JSONs joined by ``,`` (each an item
        object ``{"key":…}}``: see :data:`sync.storage.snapshot_writer.ITEM_BOUNDARY`), visible chunk by
        chunk."""
        self._append_snapshot(block, count, ITEM_BOUNDARY)

    def _append_snapshot(self, block: bytes, count: int, boundary: Boundary) -> None:
        seq = self._snap
        if self.state.view.snap_complete:
            raise ValueError("snapshot already complete")
        if self._closed:
            raise ValueError(f"shape log {self.handle} is closed")
        if count == 0:
            return
        self._write_snapshot_block(seq, block, count, boundary)
        self._publish()

    def complete_snapshot(self, xmin: int, xmax: int, xip_list: Sequence[int]) -> None:
        """Append ``snapshot-end``, close the last snapshot chunk, fsync it (and the log's directory entries)
        and record it in metadata."""
        seq = self._snap
        if self.state.view.snap_complete:
            raise ValueError("snapshot already complete")
        if self._closed:
            raise ValueError(f"shape log {self.handle} is closed")
        self._write_snapshot_block(seq, snapshot_end_json(xmin, xmax, xip_list), 1, SEP_BOUNDARY)
        pos = seq.pos
        if pos.chunks == 0 or pos.open_chunk_bytes > 0:
            assert pos.last is not None
            self._files.append(seq.chunks, CHUNK.pack(pos.items, 0, pos.last.op, pos.json_len))
            pos.chunks += 1
            pos.open_chunk_bytes = 0
        names = (seq.json, seq.chunks)
        # Two steps of fsyncs: the snapshot's files with every directory entry of the log (created, never
        # fsynced, with the log) at once; then the metadata that vouches for them.
        self._files.sync(names, entries=True)
        seq.dirty_names.clear()
        self._files.release(names)
        self._meta.update(snapshot_complete=True, xmin=xmin, xmax=xmax, xip_list=list(xip_list))
        self._files.write_meta(encode_meta(self._meta))
        self._publish(snap_complete=True)

    def _write_snapshot_block(self, seq: SeqFiles, block: bytes, count: int, boundary: Boundary) -> None:
        """JSON first, then the chunk entries pointing into it; the position moves once both are written."""
        pos = replace(seq.pos)
        out = layout_block(block, count, pos, self._chunk_bytes, boundary)
        self._files.append(seq.json, out.json)
        self._files.append(seq.json, b",")  # the last item's separator (two writes: no copy of the block)
        seq.dirty_names.add(seq.json)
        if out.chunks:
            self._files.append(seq.chunks, out.chunks)
            seq.dirty_names.add(seq.chunks)
        self._unsynced_bytes += len(out.json) + 1
        self._writes += 1
        seq.pos = pos

    def _write_items(
        self, seq: SeqFiles, items: Sequence[AppendItem], *, txn_end: bool = False, ends: Sequence[int] = ()
    ) -> list[LogOffset]:
        """Append log items (after checking their offsets follow the log's); returns their offsets."""
        if self._closed:
            raise ValueError(f"shape log {self.handle} is closed")
        pos = seq.pos
        out = layout_items(items, pos, self._chunk_bytes, txn_end=txn_end, ends=ends)
        files = self._files
        files.append(seq.json, out.json)
        files.append(seq.items, out.entries)
        dirty = seq.dirty_names
        dirty.add(seq.json)
        dirty.add(seq.items)
        if out.new_chunks:
            files.append(seq.chunks, out.chunks)
            dirty.add(seq.chunks)
        self._unsynced_bytes += out.json_len - pos.json_len
        self._writes += 1
        pos.items += len(items)
        pos.json_len = out.json_len
        pos.chunks += out.new_chunks
        pos.open_chunk_bytes = out.open_chunk_bytes
        pos.last = out.offsets[-1]
        return out.offsets

    def _publish(self, *, snap_complete: bool | None = None) -> None:
        view = self.state.view
        # built directly and by position, not by _replace or keywords (on every append): every field of
        # LogView is given here, in order (tests/storage/test_roundtrip.py checks the fields)
        self.state.view = LogView(
            self._committed_items,
            self._committed_json(),
            self._committed_chunks(),
            self._committed_last,
            self._snap.pos.chunks,
            view.snap_complete if snap_complete is None else snap_complete,
            view.deleted,
        )

    def _committed_json(self) -> int:
        n = self._committed_items
        if n == self._log.pos.items:
            return self._log.pos.json_len
        if n == 0:
            return 0
        return int.from_bytes(self._files.pread(self._log.items, (n - 1) * _ITEM_SIZE + 16, 8), "little")

    def _committed_chunks(self) -> int:
        """Closed log chunks whose end is visible (a chunk may close inside an open transaction)."""
        pos = self._log.pos
        if self._committed_items == pos.items:
            return pos.chunks
        count = pos.chunks
        while count > 0:
            entry = self._files.pread(self._log.chunks, (count - 1) * CHUNK.size, 8)
            if int.from_bytes(entry, "little") <= self._committed_items:
                break
            count -= 1
        return count

    # -- durability ----------------------------------------------------------------------------------------

    def flush(self) -> LogOffset | None:
        """fsync everything written so far; returns the durable offset (last complete transaction)."""
        if self._closed:
            return self._durable
        names: list[str] = []
        for seq in (self._log, self._snap):
            names.extend(sorted(seq.dirty_names))
        log_dirty = self._log.dirty
        committed = self._committed_last
        synced_items = self._log.pos.items
        writes = self._writes
        if names and self._synced < writes:  # else a group sync covered every write already
            self._files.sync(names)
        self._log.dirty_names.clear()
        self._snap.dirty_names.clear()
        self._unsynced_bytes = 0
        self._synced = max(self._synced, writes)
        if log_dirty:
            at = committed if committed is not None else LogOffset(0, 0)
            # written after the fsync above, so it never claims more than is durable (no fsync of its own)
            self._files.pwrite("log.durable", 0, Durable(synced_items, at.tx, at.op).encode())
            self._marker = None
            self._marker_items = synced_items
        elif self._marker is not None:
            self._marker_items = -_MARKER_EVERY  # write it now
            self._write_marker()
        if committed is not None and (self._durable is None or committed > self._durable):
            self._durable = committed
        return self._durable

    def _write_marker(self) -> None:
        """Record what a group sync made durable in log.durable (no fsync: it only ever claims less), every
        ``_MARKER_EVERY`` items (it only spares recovery checksum work; a flush writes it anyway)."""
        marker = self._marker
        if marker is not None and not self._closed and marker.items - self._marker_items >= _MARKER_EVERY:
            self._marker = None
            self._marker_items = marker.items
            self._files.pwrite("log.durable", 0, marker.encode())

    def close(self) -> None:
        """Flush and release the write handles (readers keep working on their own)."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._files.close()

    def abort(self) -> None:
        """Release the write handles without flushing (what a crash leaves; also before deletion)."""
        self._closed = True
        self._files.close()

    def mark_deleted(self) -> None:
        """Tell readers the log is gone (they raise ShapeGone from now on)."""
        self.state.view = self.state.view._replace(deleted=True)
