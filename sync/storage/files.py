"""The byte stores under a shape log: real files (``DiskFiles``) or bytearrays (``MemoryFiles``).

The log logic (writer, recovery, reader) is written once against :class:`ShapeFiles`; the two backends only
differ in where bytes live.  File names are the ones of :mod:`sync.storage.format` (``log.json`` ...).
Writers append at the size they track; readers use positional reads on their own handles, so a reader never
shares a file position with the writer.  Large writes/reads, small ones that would wait for
the disk (:mod:`sync.storage.coldio`) and every fsync go through :func:`sync.runtime.run_blocking` so they
do not stall the gevent hub.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sync import runtime
from sync.storage import coldio
from sync.storage.fdcache import FdEntry, FdGroup

__all__ = ["BIG_IO", "DiskFiles", "MemoryFiles", "ReadFiles", "ShapeFiles", "read_exact"]

BIG_IO = 1 << 20  # reads/writes above this go to a real OS thread under gevent
_META = "meta.bin"


class ReadFiles(Protocol):
    def pread(self, name: str, pos: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class ShapeFiles(ReadFiles, Protocol):
    def size(self, name: str) -> int: ...

    def append(self, name: str, data: bytes) -> None: ...

    def pwrite(self, name: str, pos: int, data: bytes) -> None: ...

    def truncate(self, name: str, size: int) -> None: ...

    def sync(self, names: Iterable[str], *, entries: bool = False) -> None: ...

    def release(self, names: Iterable[str]) -> None: ...

    def seed_sizes(self, sizes: Mapping[str, int]) -> None: ...

    def read_meta(self) -> bytes | None: ...

    def write_meta(self, data: bytes, *, durable: bool = True) -> None: ...

    def reader(self) -> ReadFiles: ...


def _write_all(fd: int, data: bytes | memoryview, pos: int) -> None:
    written = os.pwrite(fd, data, pos)
    if written == len(data):  # nearly always: no view, no loop
        return
    view = memoryview(data)[written:]
    pos += written
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


def read_exact(fd: int, pos: int, size: int) -> bytes:
    """``size`` bytes at ``pos`` of ``fd`` (pread until complete; OSError if the file ends before)."""
    data = os.pread(fd, size, pos)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, pos + got)
        if not more:
            raise OSError(f"short read: wanted {size} bytes at {pos}, file ends after {got}")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def blocking_parallel(calls: list[Callable[[], object]]) -> None:
    """Run several blocking calls (fsyncs) at once, off the event loop; raise the first error.

    Concurrent fsyncs share one journal commit on ext4/xfs: measured here, 3 files took 0.4 ms in parallel
    against 5-12 ms one after the other.  Under gevent each call runs in gevent's thread pool (one greenlet
    waiting per call); otherwise in a small private pool of OS threads.
    """
    if len(calls) == 1:
        runtime.run_blocking(calls[0])
        return
    if runtime.gevent_active():
        errors: list[BaseException] = []

        def one(call: Callable[[], object]) -> None:
            try:
                runtime.run_blocking(call)
            except BaseException as exc:
                errors.append(exc)

        for handle in [runtime.spawn(one, call, name="fsync") for call in calls]:
            handle.join()
        if errors:
            raise errors[0]
        return
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="storage-fsync")
    for future in [_pool.submit(call) for call in calls]:
        future.result()


class Devices:
    """One read-only descriptor per filesystem holding shape logs, opened before the first write there.

    ``syncfs(fd)`` reports a writeback error of *any* file of the filesystem that happened after ``fd`` was
    opened (Linux >= 5.8), so the descriptor is opened when a log's files are first set up and kept for the
    life of the process: a group fsync through it never misses an error of a file written since.
    """

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def note(self, directory: str) -> int:
        """The device id of ``directory``'s filesystem (whose descriptor is then open)."""
        dev = os.stat(directory).st_dev
        if dev not in self._fds:
            with self._lock:
                if dev not in self._fds:
                    self._fds[dev] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return dev

    def fd(self, dev: int) -> int:
        return self._fds[dev]


DEVICES = Devices()


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Make ``data`` the content of ``path`` atomically and durably: written to ``<path>.tmp`` and fsynced,
    renamed over ``path``, then the directory fsynced.  Blocking: off the event loop, callers use
    ``runtime.run_blocking``."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


class _DiskReader:
    """Descriptors of one shape directory, held in the process-wide :data:`fdcache.CACHE` (opened on use,
    closed when least recently used), pinned around each call: safe to share between threads/greenlets."""

    def __init__(self, directory: str, *, writable: bool = False) -> None:
        self._dir = directory
        self._group = FdGroup(directory, writable=writable)
        self._cache = self._group.cache

    def pread(self, name: str, pos: int, size: int) -> bytes:
        if size <= 0:
            return b""
        cache = self._cache
        entry = cache.pin(self._group, name)
        try:
            if size > BIG_IO or coldio.read_may_wait(entry.fd, pos, size):
                return runtime.run_blocking(read_exact, entry.fd, pos, size)
            return read_exact(entry.fd, pos, size)
        finally:
            cache.unpin(entry)

    def path(self, name: str) -> str:
        """Where ``pread(name, ...)`` reads from (:class:`~sync.storage.reader.PathFiles`: lets a server
        send a closed snapshot chunk straight from the file)."""
        return os.path.join(self._dir, name)

    def close(self) -> None:
        self._group.drop()

    def __del__(self) -> None:
        # readers are shared and dropped, not closed, when a shape is deleted: nobody can be reading now.
        # No lock here: the collector may run this on a thread inside the cache's lock (a deadlock).
        with contextlib.suppress(Exception):
            self._cache.drop_later(self._group)


class DiskFiles(_DiskReader):
    """Read-write descriptors of one shape directory (owned by the single writer).

    Sizes are tracked here, not per descriptor, so they survive the cache closing and reopening a file.
    Every write marks its descriptor dirty until :meth:`sync` covers it (the cache fsyncs a dirty file
    before closing it; a failure there is raised by the next :meth:`sync`).  ``parent_sync`` makes the
    directory's own entry in its parent durable (called by :meth:`sync` with ``entries``).
    """

    def __init__(self, directory: str, *, parent_sync: Callable[[], None] | None = None) -> None:
        super().__init__(directory, writable=True)
        self._sizes: dict[str, int] = {}
        self._parent_sync = parent_sync
        self.device = DEVICES.note(directory)  # before any write: syncfs reports errors from then on

    @property
    def group(self) -> FdGroup:
        """The descriptors (for :mod:`sync.storage.group_sync`)."""
        return self._group

    def _pin(self, name: str) -> FdEntry:
        return self._cache.pin(self._group, name)

    def seed_sizes(self, sizes: Mapping[str, int]) -> None:
        """Take these as the files' sizes (what the writer established: a new log's empty files, or what
        recovery left after trimming), sparing an ``fstat`` at each file's first use.  A wrong size would put
        appended bytes in the wrong place: only the single writer, from positions it checked, calls this."""
        self._sizes.update(sizes)

    def size(self, name: str) -> int:
        size = self._sizes.get(name)
        if size is None:
            entry = self._pin(name)
            try:
                size = self._sizes[name] = os.fstat(entry.fd).st_size
            finally:
                self._cache.unpin(entry)
        return size

    def append(self, name: str, data: bytes) -> None:
        entry = self._pin(name)
        try:
            pos = self._sizes.get(name)
            if pos is None:  # not seeded: ask the file
                pos = os.fstat(entry.fd).st_size
            entry.writes += 1
            if len(data) > BIG_IO or coldio.write_may_wait(entry, pos):
                runtime.run_blocking(_write_all, entry.fd, data, pos)
            else:
                _write_all(entry.fd, data, pos)
            self._sizes[name] = pos + len(data)
        finally:
            self._cache.unpin(entry)

    def pwrite(self, name: str, pos: int, data: bytes) -> None:
        entry = self._pin(name)
        try:
            entry.writes += 1
            if coldio.write_may_wait(entry, pos, inside=True):
                runtime.run_blocking(_write_all, entry.fd, data, pos)
            else:
                _write_all(entry.fd, data, pos)
            size = self._sizes.get(name)
            if size is not None and pos + len(data) > size:  # an unknown size stays unknown (fstat on use)
                self._sizes[name] = pos + len(data)
        finally:
            self._cache.unpin(entry)

    def truncate(self, name: str, size: int) -> None:
        entry = self._pin(name)
        try:
            entry.writes += 1
            os.ftruncate(entry.fd, size)
            self._sizes[name] = size
        finally:
            self._cache.unpin(entry)

    def sync(self, names: Iterable[str], *, entries: bool = False) -> None:
        """fdatasync ``names``; with ``entries`` also the directory (every file created in it) and the
        directory's own entry in its parent, all at once."""
        self._group.check()
        pinned: list[FdEntry] = []
        try:
            for name in names:
                pinned.append(self._pin(name))
            calls: list[Callable[[], object]] = [functools.partial(os.fdatasync, e.fd) for e in pinned]
            if entries:
                calls.append(functools.partial(fsync_dir, self._dir))
                if self._parent_sync is not None:
                    calls.append(self._parent_sync)
            if calls:
                marks = [e.writes for e in pinned]
                blocking_parallel(calls)
                for entry, mark in zip(pinned, marks, strict=True):
                    entry.synced = mark
        finally:
            for entry in pinned:
                self._cache.unpin(entry)
        self._group.check()

    def keep_open(self, names: Iterable[str]) -> None:
        """Open ``names`` (created if missing) into the descriptor cache now, for writes to come; the cache
        may close them again like any other idle descriptor."""
        for name in names:
            self._cache.unpin(self._pin(name))

    def release(self, names: Iterable[str]) -> None:
        names = list(names)
        self._group.drop(names)
        for name in names:
            self._sizes.pop(name, None)

    def read_meta(self) -> bytes | None:
        try:
            with open(os.path.join(self._dir, _META), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_meta(self, data: bytes, *, durable: bool = True) -> None:
        """Write the metadata in place; fsync it when ``durable`` (the files and entries it vouches for are
        made durable before, by :meth:`sync` with ``entries``).

        A log's metadata is written twice: when it is created (not durable: a log is only ever resumed once
        its snapshot completed) and when its snapshot completes (durable).  In place, not a new file renamed
        over the old one, because a torn write is harmless here: it fails the checksum, and a log with damaged
        metadata is dropped on restart exactly like one whose snapshot never completed (clients refetch).  A
        new file per completion allocated an inode and freed another, and inode allocation is where ext4
        spends most of its CPU when many shapes are created (``recently_deleted`` scans over freed inodes).
        On an OS thread under gevent: these calls wait for the filesystem's journal."""
        runtime.run_blocking(self._write_meta, data, durable)

    def _write_meta(self, data: bytes, durable: bool) -> None:
        fd = os.open(os.path.join(self._dir, _META), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data, 0)
            os.ftruncate(fd, len(data))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def reader(self) -> ReadFiles:
        return _DiskReader(self._dir)


class MemoryFiles:
    """The same interface over bytearrays; "durable" means "written" (for tests without disk)."""

    def __init__(self) -> None:
        self._data: dict[str, bytearray] = {}
        self._meta: bytes | None = None

    def _buf(self, name: str) -> bytearray:
        return self._data.setdefault(name, bytearray())

    def pread(self, name: str, pos: int, size: int) -> bytes:
        return bytes(self._buf(name)[pos : pos + size]) if size > 0 else b""

    def close(self) -> None:
        return None

    def size(self, name: str) -> int:
        return len(self._buf(name))

    def append(self, name: str, data: bytes) -> None:
        self._buf(name).extend(data)

    def pwrite(self, name: str, pos: int, data: bytes) -> None:
        buf = self._buf(name)
        if len(buf) < pos:
            buf.extend(bytes(pos - len(buf)))
        buf[pos : pos + len(data)] = data

    def truncate(self, name: str, size: int) -> None:
        del self._buf(name)[size:]

    def sync(self, names: Iterable[str], *, entries: bool = False) -> None:
        return None

    def release(self, names: Iterable[str]) -> None:
        return None

    def seed_sizes(self, sizes: Mapping[str, int]) -> None:
        """Checks what :meth:`DiskFiles.seed_sizes` takes on trust (the writer's tests run over these)."""
        for name, size in sizes.items():
            if len(self._buf(name)) != size:
                raise ValueError(f"{name}: seeded size {size}, but the file has {len(self._buf(name))} bytes")

    def read_meta(self) -> bytes | None:
        return self._meta

    def write_meta(self, data: bytes, *, durable: bool = True) -> None:
        self._meta = data

    def reader(self) -> ReadFiles:
        return self

    def total_size(self) -> int:
        return sum(len(b) for b in self._data.values()) + len(self._meta or b"")
