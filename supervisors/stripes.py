"""Striped locks: many small objects sharing a fixed pool of locks instead of owning one each.

Why this module exists: there are three actors per shape and 10,000s of shapes; a ``threading.Lock`` costs
88 bytes (176 under gevent) and an ``Event`` 1.2 KB on plain threads, so per-actor bookkeeping (mailbox,
lifecycle, stop flag, tree cell) locks ``lock_for(self)`` from this pool. Safe because every critical
section guarded this way is a few field updates that never block, call out, take another lock or switch
greenlets: two objects sharing a stripe can only make each other wait for nanoseconds. (Nor may code run
by the garbage collector, finalisers and weakref callbacks, send to actors: a stripe is not reentrant.)
"""

from __future__ import annotations

import os
import threading

__all__ = ["lock_for"]

_SIZE = 64  # a power of two
_locks = tuple(threading.Lock() for _ in range(_SIZE))


def lock_for(obj: object) -> threading.Lock:
    """The pool's lock for ``obj`` (the same one for the object's whole life)."""
    return _locks[(id(obj) >> 4) & (_SIZE - 1)]


def _after_fork() -> None:
    global _locks  # a lock held by another thread at fork time would stay held forever in the child
    _locks = tuple(threading.Lock() for _ in range(_SIZE))


os.register_at_fork(after_in_child=_after_fork)
