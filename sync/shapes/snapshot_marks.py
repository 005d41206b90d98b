"""``SnapshotMarks``: the WAL insert position read with each shape's snapshot, persisted for restarts.

Why: after a restart a consumer must filter resent transactions exactly as before (hard spot 4).  The
snapshot's xmin/xmax/xip are in the log's metadata, but the filter also needs the WAL position read with
the snapshot (``pg_current_wal_insert_lsn()``, see :mod:`sync.shapes.xid`): it ends the filtering, and
without it 32-bit xids could not be widened safely once 2^31 transactions have passed.  The storage
metadata has no room for it, so the ShapeCache keeps this small journal next to the shape logs.

Format: a msgpack stream of ``[handle, lsn]`` records (``lsn = -1`` forgets the handle), appended and
fsynced by the snapshot worker *before* it streams any row, so a completed snapshot always has its mark.
On load the journal is read up to its last complete record (a torn tail is dropped) and rewritten
compacted.  Without a path the marks live in memory only (tests, MemoryStorage).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import msgpack

from sync import runtime

__all__ = ["SnapshotMarks", "marks_path"]

logger = logging.getLogger(__name__)

_FORGET = -1


class SnapshotMarks:
    """Thread-safe: snapshot workers record, the ShapeCache loads, forgets and compacts."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._marks: dict[str, int] = {}
        self._fd: int | None = None

    def load(self) -> dict[str, int]:
        """Read the journal (dropping a torn tail); returns handle -> WAL LSN."""
        with self._lock:
            self._marks = {}
            if self._path is None or not self._path.exists():
                return dict(self._marks)
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
            unpacker.feed(self._path.read_bytes())
            try:
                for record in unpacker:
                    handle, lsn = record
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
        """Durably remember ``handle``'s snapshot WAL position (called before its rows are streamed)."""
        self._append(handle, wal_lsn)

    def forget(self, handle: str) -> None:
        if handle in self._marks:
            self._append(handle, _FORGET)

    def compact(self, live: Iterable[str]) -> None:
        """Rewrite the journal with the marks of ``live`` handles only (atomic replace)."""
        with self._lock:
            keep = {h: self._marks[h] for h in live if h in self._marks}
            self._marks = keep
            if self._path is None:
                return
            self._close()
            tmp = self._path.with_suffix(".tmp")
            data = b"".join(msgpack.packb([h, lsn]) for h, lsn in keep.items())
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(self._path)
            _fsync_dir(self._path.parent)

    def close(self) -> None:
        with self._lock:
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
            if lsn != _FORGET:  # forgetting needs no fsync: a stale mark is harmless
                runtime.run_blocking(os.fsync, self._fd)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def marks_path(storage: object) -> Path | None:
    """Next to the shape logs of a FileStorage (``<root>/<stack>/snapshot_marks``); None in memory."""
    shapes_dir = getattr(storage, "shapes_dir", None)
    return Path(shapes_dir).parent / "snapshot_marks" if shapes_dir is not None else None
