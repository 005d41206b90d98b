"""Group fsync: make the unsynced writes of many shape logs durable together, once per flush round.

Why: an ``fdatasync`` costs ~100 µs per file on this kind of disk even with many in parallel, and a shape
log has two files written per append (``log.json``, ``log.items``); with thousands of shapes each
receiving a little data per round that is seconds of fsyncs per round.  On Linux one ``syncfs(2)`` per
filesystem writes back every dirty file of it at once (measured: ~5-25 µs per dirty file) and, since Linux
5.8, reports a writeback error of any of them that happened after the descriptor passed to it was opened
(:class:`~sync.storage.files.Devices` opens that descriptor before the first write of any shape log).
Where ``syncfs`` is not available (other systems, older kernels) every dirty descriptor is fdatasync'ed in
a few OS threads instead, still once per round for all logs.

Callers take a :class:`~sync.storage.positions.SyncPoint` of each writer *before* calling :func:`sync_files`;
when it returns without an error for a log, everything written to that log before its point is durable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sync import runtime
from sync.storage.fdcache import CACHE, FdEntry
from sync.storage.files import DEVICES, DiskFiles, ShapeFiles

__all__ = ["set_method", "sync_files", "syncfs_available"]

log = logging.getLogger(__name__)

_FSYNC_THREADS = 16


def _load_syncfs() -> ctypes._FuncPointer | None:
    release = os.uname().release.split(".")
    try:
        if (int(release[0]), int(release[1].split("-")[0])) < (5, 8):
            return None  # syncfs does not report writeback errors before 5.8
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except (ValueError, IndexError, OSError):
        return None
    fn = getattr(libc, "syncfs", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_AVAILABLE = _load_syncfs()
_SYNCFS = _AVAILABLE
if _SYNCFS is not None:
    CACHE.sync_dirty_on_close = False


def syncfs_available() -> bool:
    return _SYNCFS is not None


def set_method(method: str) -> None:
    """``storage.sync_method``: ``"syncfs"`` (an error where the kernel cannot report its writeback
    errors), ``"fdatasync"`` or ``"auto"`` (syncfs when available).  Process-wide; call before any shape log
    is written (the engine does, as its stack is built)."""
    global _SYNCFS
    if method == "syncfs" and _AVAILABLE is None:
        raise ValueError(
            "storage.sync_method = 'syncfs' needs Linux >= 5.8 (syncfs reporting writeback errors)"
        )
    if method not in ("auto", "syncfs", "fdatasync"):
        raise ValueError(f"unknown storage.sync_method {method!r}")
    _SYNCFS = None if method == "fdatasync" else _AVAILABLE
    # without syncfs, a dirty file closed by the descriptor cache must be fsynced before it is closed
    CACHE.sync_dirty_on_close = _SYNCFS is None


def _syncfs(fd: int) -> None:
    assert _SYNCFS is not None
    if _SYNCFS(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


def _fdatasync_all(fds: list[int]) -> list[OSError | None]:
    def one(fd: int) -> OSError | None:
        try:
            os.fdatasync(fd)
        except OSError as exc:
            return exc
        return None

    if len(fds) <= 1:
        return [one(fd) for fd in fds]
    with ThreadPoolExecutor(min(_FSYNC_THREADS, len(fds)), thread_name_prefix="group-fsync") as pool:
        return list(pool.map(one, fds))


def sync_files(files: Sequence[ShapeFiles]) -> list[BaseException | None]:
    """Make every write issued so far to each of ``files`` durable; one result per element (its error)."""
    results: list[BaseException | None] = [None] * len(files)
    disk: list[tuple[int, DiskFiles]] = [(i, f) for i, f in enumerate(files) if isinstance(f, DiskFiles)]
    if not disk:
        return results  # memory files: written is durable
    # the writes each descriptor has seen now; the sync below covers them
    marks: list[list[tuple[FdEntry, int]]] = [
        [(e, e.writes) for e in list(f.group.entries.values()) if e.writes != e.synced] for _, f in disk
    ]
    if _SYNCFS is not None:
        errors: dict[int, BaseException | None] = {}
        for dev in {f.device for _, f in disk}:
            try:
                runtime.run_blocking(_syncfs, DEVICES.fd(dev))
                errors[dev] = None
            except OSError as exc:
                log.error("syncfs failed: %s", exc)
                errors[dev] = exc
        for (i, f), entries in zip(disk, marks, strict=True):
            results[i] = errors[f.device]
            if results[i] is None:
                for entry, mark in entries:
                    entry.synced = max(entry.synced, mark)
    else:
        _sync_each(disk, marks, results)
    for i, f in disk:
        if results[i] is None and f.group.error is not None:
            results[i] = f.group.error  # a dirty file closed by the descriptor cache failed its fsync
    return results


def _sync_each(
    disk: list[tuple[int, DiskFiles]],
    marks: list[list[tuple[FdEntry, int]]],
    results: list[BaseException | None],
) -> None:
    """The fallback: fdatasync every dirty descriptor (pinned meanwhile) in a few OS threads."""
    cache = disk[0][1].group.cache
    pinned: list[tuple[int, FdEntry, int]] = []
    try:
        for (i, f), entries in zip(disk, marks, strict=True):
            for entry, mark in entries:
                if entry.closed:
                    continue  # evicted since: the cache fsynced it before closing it
                pinned.append((i, cache.pin(f.group, entry.name), mark))
                if pinned[-1][1] is not entry:
                    pinned[-1] = (i, pinned[-1][1], 0)  # reopened since: the cache fsynced the old one
        outcome = runtime.run_blocking(_fdatasync_all, [e.fd for _, e, _ in pinned])
        for (i, entry, mark), err in zip(pinned, outcome, strict=True):
            if err is not None:
                results[i] = err
            elif mark:
                entry.synced = max(entry.synced, mark)
    finally:
        for _, entry, _ in pinned:
            cache.unpin(entry)
