"""Per-stack shape storage: create, open (recover), delete and measure shape logs.

``FileStorage`` keeps every shape of a stack under ``<root>/<stack_id>/shapes/<handle>/`` (file format and
layout: :mod:`sync.storage.format`); ``MemoryStorage`` offers the same interface over bytearrays for tests
that need no disk.  Both hand out :class:`~sync.storage.writer.ShapeLogWriter` objects (give each to its
``StorageActor``).  The HTTP layer gets the shape's lock-free reader with ``storage.reader(handle)`` (or
``writer.reader()``): one per handle for the life of the process, it keeps working across writer restarts.

Typical life of a shape::

    writer = storage.create(handle, definition)       # definition: any msgpack-serialisable value
    writer.append_snapshot(rows); writer.complete_snapshot(xmin, xmax, xip_list)
    writer.append(items, complete=True); writer.flush() -> durable LogOffset
    ... restart ...
    writer = storage.open(handle)    # trims a torn tail; ShapeMustBeRecreated / StorageCorrupt otherwise
    storage.delete(handle)           # readers then raise ShapeGone

Deletion is a rename into ``<root>/<stack_id>/trash/`` (atomic, immediate: the handle is free at once)
followed by removal in the background; leftovers in the trash are removed again on start.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Protocol

from supervisors.stripes import native_lock
from sync import runtime
from sync.storage import fdcache
from sync.storage.files import DiskFiles, MemoryFiles, ShapeFiles, fsync_dir
from sync.storage.format import FILES, encode_meta
from sync.storage.positions import SeqPosition
from sync.storage.reader import LogState, ShapeLogReader
from sync.storage.recovery import recover
from sync.storage.shared_fsync import SharedFsync
from sync.storage.writer import ShapeLogWriter

__all__ = ["DEFAULT_CHUNK_BYTES", "FileStorage", "MemoryStorage", "Storage"]

log = logging.getLogger(__name__)
DEFAULT_CHUNK_BYTES = 10 * 1024 * 1024  # spec §3 ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD


class Storage(Protocol):
    """What the shape cache, the storage actor and the API need from a storage backend."""

    def create(self, handle: str, definition: object) -> ShapeLogWriter: ...

    def open(self, handle: str) -> ShapeLogWriter: ...

    def reader(self, handle: str) -> ShapeLogReader: ...

    def handles(self) -> list[str]: ...

    def delete(self, handle: str) -> None: ...

    def disk_usage(self, handle: str) -> int: ...


def _new_meta(handle: str, definition: object) -> dict[str, object]:
    return {
        "handle": handle,
        "definition": definition,
        "created_at": time.time(),
        "snapshot_complete": False,
        "xmin": None,
        "xmax": None,
        "xip_list": [],
    }


_APPENDED = ("log.json", "log.items")  # the files every append of the live log writes


class _States:
    """One LogState per handle for the life of the process (readers survive writer restarts)."""

    def __init__(self) -> None:
        self._states: dict[str, LogState] = {}

    def create(self, files: ShapeFiles, handle: str, definition: object, chunk_bytes: int) -> ShapeLogWriter:
        meta = _new_meta(handle, definition)
        files.write_meta(encode_meta(meta), durable=False)  # durable with the completed snapshot
        writer = ShapeLogWriter(files, meta, SeqPosition(), SeqPosition(), chunk_bytes=chunk_bytes)
        self._states[handle] = writer.state
        return writer

    def open(self, files: ShapeFiles, handle: str, chunk_bytes: int) -> ShapeLogWriter:
        try:
            meta, log_pos, snap_pos = recover(files, chunk_bytes)
        except BaseException:
            files.close()
            raise
        # Recovery opened every file of the log; the files every append writes stay in the descriptor cache
        # (as at creation: the next append finds them there unless others needed the room), the others are
        # closed now: most appends never touch them.
        files.release([name for name in FILES if name not in _APPENDED])
        state = self._states.get(handle)
        writer = ShapeLogWriter(files, meta, log_pos, snap_pos, chunk_bytes=chunk_bytes, state=state)
        self._states[handle] = writer.state
        return writer

    def reader(self, handle: str) -> ShapeLogReader:
        state = self._states.get(handle)
        if state is None or state.reader is None:
            raise FileNotFoundError(f"shape log {handle!r} is not open in this process")
        return state.reader

    def deleted(self, handle: str) -> None:
        state = self._states.pop(handle, None)
        if state is not None:
            state.view = state.view._replace(deleted=True)


class FileStorage:
    """Shape logs of one stack on local disk."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        stack_id: str,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_open_files: int | None = None,
    ) -> None:
        """``max_open_files`` sets the cap of the process-wide descriptor cache (:mod:`sync.storage.fdcache`)
        shared by every shape log of every stack; None leaves it as it is (4096 by default)."""
        if max_open_files is not None:
            fdcache.CACHE.set_cap(max_open_files)
        base = Path(root) / stack_id
        self.shapes_dir = base / "shapes"
        self.trash_dir = base / "trash"
        self.chunk_bytes = chunk_bytes
        self._states = _States()
        # logs completing their snapshots together share the fsync of their parent directory
        shapes = str(self.shapes_dir)
        self._shapes_dir_sync = SharedFsync(lambda: fsync_dir(shapes), native_lock())
        self.shapes_dir.mkdir(parents=True, exist_ok=True)
        self.trash_dir.mkdir(parents=True, exist_ok=True)

    def _dir(self, handle: str) -> Path:
        if not handle or "/" in handle or handle.startswith("."):
            raise ValueError(f"invalid shape handle {handle!r}")
        return self.shapes_dir / handle

    def create(self, handle: str, definition: object) -> ShapeLogWriter:
        """Create an empty log (raises FileExistsError if the handle exists).

        Nothing is fsynced yet: a log is resumed after a crash only if its snapshot completed, and
        completing it makes the log durable with its directory's entries and the directory's own entry in
        :attr:`shapes_dir` (one fsync of it shared by the logs completing together); a log left incomplete
        by a crash (even without its metadata) is dropped on restart, its clients told to refetch.  The three
        fsyncs creation used to do (metadata, directory, parent) protected nothing and cost journal commits.

        On an OS thread (:func:`~sync.runtime.run_blocking`): creating files and directories waits for the
        filesystem's journal, which every concurrent fsync holds up (measured: 1,000 shapes created 100 at a
        time spent ~1.6 ms per shape in ``open(O_CREAT)`` alone, on the hub)."""
        return runtime.run_blocking(self._create, handle, definition)

    def _create(self, handle: str, definition: object) -> ShapeLogWriter:
        path = self._dir(handle)
        path.mkdir()  # FileExistsError for an existing handle: nothing below needs O_EXCL
        files = DiskFiles(str(path), parent_sync=self._shapes_dir_sync.sync)
        try:
            for name in FILES:
                if name not in _APPENDED:
                    os.close(os.open(path / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            # The live log's two files are created by opening them into the descriptor cache, where the first
            # appends find them: opened, closed, then reopened by the first write, they cost two more system
            # calls per file, on the hub (measured: 10,000 new shapes' first appends spent ~270 ms reopening).
            files.keep_open(_APPENDED)
            writer = self._states.create(files, handle, definition, self.chunk_bytes)
            writer.reader()
        except BaseException:
            files.close()  # no descriptor of a log that does not exist stays in the cache
            raise
        return writer

    def open(self, handle: str) -> ShapeLogWriter:
        """Open an existing log, trimming a torn tail.  Raises FileNotFoundError, ShapeMustBeRecreated."""
        path = self._dir(handle)
        if not path.is_dir():
            raise FileNotFoundError(str(path))
        files = DiskFiles(str(path), parent_sync=self._shapes_dir_sync.sync)
        writer = self._states.open(files, handle, self.chunk_bytes)
        writer.reader()
        return writer

    def reader(self, handle: str) -> ShapeLogReader:
        """The shared lock-free reader of a log created or opened in this process (FileNotFoundError)."""
        return self._states.reader(handle)

    def handles(self) -> list[str]:
        return sorted(p.name for p in self.shapes_dir.iterdir() if p.is_dir())

    def delete(self, handle: str) -> None:
        """Rename the shape into the trash (immediate), then remove it in the background."""
        self._states.deleted(handle)
        path = self._dir(handle)
        target = self.trash_dir / f"{handle}.{secrets.token_hex(4)}"
        try:
            path.rename(target)
        except FileNotFoundError:
            return
        fsync_dir(str(self.shapes_dir))
        runtime.spawn(self._remove, target, name=f"storage-rm-{handle}")

    @staticmethod
    def _remove(path: Path) -> None:
        runtime.run_blocking(shutil.rmtree, path, True)

    def purge_trash(self) -> None:
        """Remove whatever a previous run left in the trash (blocking; call at start-up)."""
        for p in self.trash_dir.iterdir():
            shutil.rmtree(p, ignore_errors=True)

    def disk_usage(self, handle: str) -> int:
        """Bytes allocated on disk by the shape's files (0 if it does not exist)."""
        try:
            with os.scandir(self._dir(handle)) as it:
                return sum(e.stat().st_blocks * 512 for e in it if e.is_file())
        except FileNotFoundError:
            return 0


class MemoryStorage:
    """The same interface in memory; ``open`` runs the same recovery over the bytes kept since ``create``."""

    def __init__(self, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self._shapes: dict[str, MemoryFiles] = {}
        self._states = _States()

    def create(self, handle: str, definition: object) -> ShapeLogWriter:
        if handle in self._shapes:
            raise FileExistsError(handle)
        files = self._shapes[handle] = MemoryFiles()
        writer = self._states.create(files, handle, definition, self.chunk_bytes)
        writer.reader()
        return writer

    def open(self, handle: str) -> ShapeLogWriter:
        files = self._shapes.get(handle)
        if files is None:
            raise FileNotFoundError(handle)
        writer = self._states.open(files, handle, self.chunk_bytes)
        writer.reader()
        return writer

    def reader(self, handle: str) -> ShapeLogReader:
        return self._states.reader(handle)

    def handles(self) -> list[str]:
        return sorted(self._shapes)

    def delete(self, handle: str) -> None:
        self._states.deleted(handle)
        self._shapes.pop(handle, None)

    def disk_usage(self, handle: str) -> int:
        files = self._shapes.get(handle)
        return files.total_size() if files is not None else 0
