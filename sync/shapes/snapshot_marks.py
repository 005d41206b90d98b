"""``SnapshotMarks``: the WAL insert position read with each shape's snapshot, persisted for restarts.

Why: after a restart a consumer must filter resent transactions exactly as before (hard spot 4).  The
snapshot's xmin/xmax/xip are in the log's metadata, but the filter also needs the WAL position read with
the snapshot (``pg_current_wal_insert_lsn()``, see :mod:`sync.shapes.xid`): it ends the filtering, and
without it 32-bit xids could not be widened safely once 2^31 transactions have passed.  The storage
metadata has no room for it, so the ShapeCache keeps this small journal next to the shape logs.

Format: a msgpack stream of ``[handle, lsn]`` records (``lsn = -1`` forgets the handle), appended by the
snapshot worker before it streams any row and made durable (:meth:`SnapshotMarks.sync`) before the snapshot
is recorded complete, so a completed snapshot always has its mark; a log whose snapshot is not complete is
never resumed, mark or not.  The fsync is shared by the snapshots finishing together
(:class:`~sync.storage.shared_fsync.SharedFsync`) and happens after the worker has handed its connection
back: one fsync per snapshot under the journal's lock, before the rows, was what paced shape creation.
On load the journal is read up to its last complete record (a torn tail is dropped) and rewritten
compacted.  It is also rewritten whenever the records of shapes already forgotten reach both
``_COMPACT_MIN`` and the number of live marks: before, it grew by ~64 bytes for every shape created and
deleted until the next restart (measured: 760 KB after 12,000 shapes came and went, with none alive), so a
server whose shapes churn (short-lived subsets, LRU eviction) wrote and then read back an ever longer file.
Without a path the marks live in memory only (tests, MemoryStorage).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import msgpack

from sync import runtime
from sync.storage.files import replace_file
from sync.storage.shared_fsync import SharedFsync

__all__ = ["SnapshotMarks", "marks_path"]

logger = logging.getLogger(__name__)

_FORGET = -1
_COMPACT_MIN = 1024  # records of forgotten shapes in the journal before it is rewritten while running


class SnapshotMarks:
    """Thread-safe: snapshot workers record and sync, the ShapeCache loads, forgets and compacts."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._marks: dict[str, int] = {}
        self._records = 0  # records in the journal file, live or not
        self._fd: int | None = None
        # a gevent-aware lock under monkey patching: its holder waits for the fsync in run_blocking
        self._shared = SharedFsync(self._fsync, threading.Lock())

    def load(self) -> dict[str, int]:
        """Read the journal (dropping a torn tail); returns handle -> WAL LSN."""
        with self._lock:
            self._marks = {}
            self._records = 0
            if self._path is None or not self._path.exists():
                return dict(self._marks)
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
            unpacker.feed(self._path.read_bytes())
            try:
                for record in unpacker:
                    handle, lsn = record
                    self._records += 1
                    if lsn == _FORGET:
                        self._marks.pop(str(handle), None)
                    else:
                        self._marks[str(handle)] = int(lsn)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                logger.warning("snapshot marks: ignoring a damaged tail (%r)", exc)
            return dict(self._marks)

    def get(self, handle: str) -> int | None:
        return self._marks.get(handle)

    def record(self, handle: str, wal_lsn: int) -> None:
        """Remember ``handle``'s snapshot WAL position (called before its rows are streamed); durable once
        :meth:`sync` returns."""
        self._append(handle, wal_lsn)

    def sync(self) -> None:
        """Return once every mark recorded before this call is on disk (one fsync shared by the callers
        that arrive while one runs)."""
        if self._path is not None:
            self._shared.sync()

    def _fsync(self) -> None:
        # A duplicate of the descriptor, taken under the lock: what was written before is in this file, or
        # in the one a compaction replaced it with (written and fsynced by ``compact``), and a concurrent
        # ``close`` cannot close it under the fsync (nor hand its number to another file).
        with self._lock:
            fd = os.dup(self._fd) if self._fd is not None else None
        if fd is None:
            return
        try:
            runtime.run_blocking(os.fsync, fd)
        finally:
            os.close(fd)

    def forget(self, handle: str) -> None:
        """Drop ``handle``'s mark (appended as a record; the journal is rewritten once such records are
        many, see the module docstring)."""
        if handle not in self._marks:
            return
        self._append(handle, _FORGET)
        with self._lock:
            dead = self._records - len(self._marks)
            if self._path is not None and dead >= max(_COMPACT_MIN, len(self._marks)):
                self._rewrite(dict(self._marks))

    def compact(self, live: Iterable[str]) -> None:
        """Rewrite the journal with the marks of ``live`` handles only (atomic replace)."""
        with self._lock:
            self._rewrite({h: self._marks[h] for h in live if h in self._marks})

    def _rewrite(self, keep: dict[str, int]) -> None:
        """Keep only ``keep`` (lock held): the journal replaced by one holding just their marks, written and
        fsynced with its directory before the swap (off the event loop), so a mark recorded before is
        durable in the new file whatever a concurrent :meth:`sync` fsyncs."""
        self._marks = keep
        if self._path is None:
            return
        self._close()
        data = b"".join(msgpack.packb([h, lsn]) for h, lsn in keep.items())
        runtime.run_blocking(replace_file, self._path, data)
        self._records = len(keep)

    def close(self) -> None:
        """Close the journal, its marks on disk (a worker may have recorded one it has not synced yet)."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
            self._close()

    def _append(self, handle: str, lsn: int) -> None:
        with self._lock:
            if lsn == _FORGET:
                self._marks.pop(handle, None)
            else:
                self._marks[handle] = lsn
            if self._path is None:
                return
            if self._fd is None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            os.write(self._fd, msgpack.packb([handle, lsn]))
            self._records += 1

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def marks_path(storage: object) -> Path | None:
    """Next to the shape logs of a FileStorage (``<root>/<stack>/snapshot_marks``); None in memory."""
    shapes_dir = getattr(storage, "shapes_dir", None)
    return Path(shapes_dir).parent / "snapshot_marks" if shapes_dir is not None else None
