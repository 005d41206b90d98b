"""Whether a page of a file is in the page cache, asked with Linux's ``cachestat`` (6.5+): no I/O, ~2 µs.

:func:`sync.storage.coldio.page_cached` asks here first.  Its other way, a one-byte ``preadv`` with
``RWF_NOWAIT``, answers ``EAGAIN`` for an uncached page but starts reading it in on its way (readahead);
on a disk fast enough, the read is done before the probe looks again and the page is reported cached.
Measured on this project's VMs: ~1 probe in 200 right after an eviction here, and on CI's machine every
one of five in a row.  ``cachestat`` only counts, so its answer is exact and has no side effect.

Python has no binding for it (3.11), so it is called through libc's ``syscall`` with :mod:`ctypes`: the
number is the same on every Linux architecture (451).  Where the call does not exist (an older kernel, a
seccomp filter, not Linux), :data:`AVAILABLE` is false (asked once, at import) and callers use the probe.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable

__all__ = ["AVAILABLE", "cached"]

_SYS_CACHESTAT = 451


# struct cachestat_range {u64 off, len} then struct cachestat {u64 nr_cache, nr_dirty, nr_writeback,
# nr_evicted, nr_recently_evicted}: one array per call (thread-safe), passed as two pointers into it.
_Args = ctypes.c_uint64 * 7
_NR_CACHE = 2


def _syscall() -> Callable[..., int] | None:
    """libc's ``syscall``, called holding the GIL (``PyDLL``): the call never waits, and letting go of the
    GIL for it let a busy thread take it for up to the switch interval (measured: ~2 µs a call holding
    it, ~210 µs releasing it beside a thread running Python).  Without declared argument types: ~1 µs
    cheaper per call; Python ints go as C ints (libffi widens them to the register), pointers as
    ``byref``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.PyDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    return fn


def _answers(call: Callable[..., int] | None) -> bool:
    """Whether the call exists here: asked about no file, it says "bad file descriptor" (not ENOSYS)."""
    if call is None:
        return False
    args = _Args(0, 1)
    return call(_SYS_CACHESTAT, -1, ctypes.byref(args), ctypes.byref(args, 16), 0) != 0 and (
        ctypes.get_errno() == errno.EBADF
    )


_call = _syscall()
AVAILABLE = _answers(_call)
_PAGE = os.sysconf("SC_PAGE_SIZE")
_byref = ctypes.byref


def cached(fd: int, at: int, length: int = 1) -> bool | None:
    """Whether every page holding a byte of ``fd``'s range ``[at, at + length)`` is in the page cache (one
    question, whatever the length); None when this cannot be asked (see :data:`AVAILABLE`; also a file
    ``cachestat`` refuses, such as one on hugetlbfs).  A page past the end of the file is not cached: the
    caller tells that case apart."""
    if not AVAILABLE or _call is None:
        return None
    first = at - at % _PAGE
    pages = -(-(at + max(length, 1) - first) // _PAGE)
    args = _Args(first, pages * _PAGE)  # (~1.9 µs in all here; a RWF_NOWAIT probe is ~0.5 µs)
    if _call(_SYS_CACHESTAT, fd, _byref(args), _byref(args, 16), 0) == 0:
        return args[_NR_CACHE] >= pages
    return None
