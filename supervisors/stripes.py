"""Striped locks: many small objects sharing a fixed pool of locks instead of owning one each.

Why this module exists: there are three actors per shape and 10,000s of shapes; a ``threading.Lock`` costs
88 bytes (176 under gevent) and an ``Event`` 1.2 KB on plain threads, so per-actor bookkeeping (mailbox,
lifecycle, stop flag, tree cell) locks ``lock_for(self)`` from this pool. Safe because every critical
section guarded this way is a few field updates that never block, call out, take another lock or switch
greenlets: two objects sharing a stripe can only make each other wait for nanoseconds. (Nor may code run
by the garbage collector, finalisers and weakref callbacks, send to actors: a stripe is not meant to be
entered twice.)

The locks are OS-thread locks (:func:`native_lock`) even under gevent monkey patching, where
``threading.Lock`` is a greenlet lock costing ~0.25 µs more per acquire and release (a few per actor
visit, two visits per shape a burst). That is sound because nothing switches greenlets inside a critical
section: a greenlet never finds a stripe held by another greenlet of its own thread, and between OS threads
(gevent's threadpool telling an actor) the native lock is what excludes them.
"""

from __future__ import annotations

import _thread
import os
from types import TracebackType
from typing import Protocol

__all__ = ["StripeLock", "lock_for", "native_lock"]

_SIZE = 64  # a power of two


class StripeLock(Protocol):
    """What a stripe offers: a context manager (``with lock_for(obj):``)."""

    def __enter__(self) -> bool: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> None: ...


def native_lock() -> StripeLock:
    """A lock of the OS thread under gevent monkey patching too: ``_thread.RLock``, which gevent leaves native
    (it replaces ``allocate_lock``/``LockType``, hence ``threading.Lock``, with a greenlet lock). Only for
    critical sections that never switch greenlets (see the module docstring); it is reentrant, but the
    stripes are never entered twice."""
    return _thread.RLock()


_locks = tuple(native_lock() for _ in range(_SIZE))


def lock_for(obj: object) -> StripeLock:
    """The pool's lock for ``obj`` (the same one for the object's whole life)."""
    return _locks[(id(obj) >> 4) & (_SIZE - 1)]


def _after_fork() -> None:
    global _locks  # a lock held by another thread at fork time would stay held forever in the child
    _locks = tuple(native_lock() for _ in range(_SIZE))


os.register_at_fork(after_in_child=_after_fork)
