"""Small file I/O that would wait for the disk: told apart without waiting, and sent to an OS thread.

Why this module exists: a shape log's appends are small (a few KB) and written inline on the gevent hub's
thread, because handing a cached write to an OS thread costs more than the write.  But a write that starts
inside a page the kernel no longer caches makes the kernel read that page back first, synchronously: 20-60
µs on this project's local virtio disks (measured; 3-4 µs when cached), about a millisecond on a network
volume.  The whole worker (every actor, every HTTP request) waits meanwhile, and a transaction burst
reaching thousands of shapes that sat idle long enough for their last pages to be evicted would stall it
for seconds.  The same holds for reading a range of a log that is no longer cached.

So before a small write into a partial page of a file that has not been written for :data:`COLD_AFTER`
seconds, and before a small read (or a piece of a range sent with ``sendfile``), :func:`page_cached` asks
the kernel whether the pages are cached without waiting for them (``cachestat``, see
:mod:`sync.storage.cachestat`, every page of the range in one question; or on older kernels ``preadv``
with ``RWF_NOWAIT``, the first page only: ``EAGAIN`` when it is not; 1-2 µs either way).  The callers
(:mod:`sync.storage.files`) send an uncached one to :func:`sync.runtime.run_blocking`: only the calling
actor or request waits for the disk.  A log written within the last second is assumed cached and costs no
probe.  :data:`COUNTERS` counts both kinds for the metrics endpoint: a steady rate of cold writes says the
page cache is too small for the shapes' working set.

Not covered: an append also updates the file's inode (size, mtime), and ext4 reads an evicted inode table
block back inline (``ext4_read_bh_lock`` under ``pwrite``); nothing tells that without waiting.  Nor the
cost of the page cache's fresh pages on a VM whose host reclaims guest memory (measured on this project's
VMs: kernel CPU, not a wait; it is paid wherever the write runs).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from sync.storage import cachestat

if TYPE_CHECKING:
    from sync.storage.fdcache import FdEntry

__all__ = [
    "COLD_AFTER",
    "COUNTERS",
    "PAGE",
    "PIECE",
    "ColdCounters",
    "page_cached",
    "page_in",
    "read_may_wait",
    "write_may_wait",
]

PAGE = os.sysconf("SC_PAGE_SIZE")
PIECE = 1 << 20  # a file range sent from the page cache (sendfile) is checked and read in this much at once
COLD_AFTER = 1.0  # seconds without a write after which a file's last page may have been evicted
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)  # Linux >= 4.14; elsewhere nothing is probed (writes stay inline)
_monotonic = time.monotonic


class ColdCounters:
    """Process-wide counts of I/O that found its page uncached and went to an OS thread (monotonic).
    Incremented under the GIL by whichever thread does the I/O (the hub's, or a pool thread reading for
    one): an increment lost to a thread switch between two threads is possible and harmless in a metric."""

    __slots__ = ("reads", "writes")

    def __init__(self) -> None:
        self.writes = 0
        self.reads = 0


COUNTERS = ColdCounters()


def page_cached(fd: int, at: int, length: int = 1) -> bool:
    """Whether the pages holding ``fd``'s bytes ``[at, at + length)`` are in the page cache, asked without
    waiting for the disk: with ``cachestat`` where the kernel has it (exact, every page of the range, no
    I/O), else with the ``RWF_NOWAIT`` probe (the first page only).  True where the kernel cannot tell, and
    for the part of the range past the end of the file: the caller then does what it did before this module
    existed."""
    answer = cachestat.cached(fd, at, length)
    if answer is not None:
        if answer:
            return True
        inside = os.fstat(fd).st_size - at  # (an uncached range only: the common case asks once)
        if inside <= 0:
            return True
        return inside < length and bool(cachestat.cached(fd, at, inside))
    if not _NOWAIT:
        return True
    try:
        os.preadv(fd, (bytearray(1),), at, _NOWAIT)
    except BlockingIOError:
        return False
    except OSError:  # EOPNOTSUPP on a filesystem without it: behave as if cached
        return True
    return True


def write_may_wait(entry: FdEntry, pos: int, *, inside: bool = False) -> bool:
    """Whether a small write at ``pos`` through ``entry`` would read a page back first; notes the write's
    time on the entry.  An append (at the end of the file) that starts on a page boundary never reads; a
    write ``inside`` the file is taken to cover part of a page.  A file written through this entry within
    :data:`COLD_AFTER` seconds is not asked (a reopened one is)."""
    now = _monotonic()
    idle = now - entry.written_at
    entry.written_at = now
    if idle < COLD_AFTER:
        return False
    if inside:
        at = pos
    elif pos % PAGE:
        at = pos - 1
    else:
        return False
    if page_cached(entry.fd, at):
        return False
    COUNTERS.writes += 1
    return True


def read_may_wait(fd: int, pos: int, size: int = 1) -> bool:
    """Whether a read of ``size`` bytes at ``pos`` would wait for the disk: a page of it is not cached (with
    ``cachestat``; without it, only the first page is asked about)."""
    if page_cached(fd, pos, size):
        return False
    COUNTERS.reads += 1
    return True


def page_in(fd: int, pos: int, size: int) -> None:
    """Read ``size`` bytes at ``pos`` of ``fd`` and drop them: afterwards they are in the page cache (run on
    an OS thread, before sending the range from the cache with ``sendfile`` on the hub's)."""
    os.pread(fd, size, pos)
