"""``SharedFsync``: one fsync shared by the callers that need it at the same time (group commit).

Why this module exists: an fsync costs milliseconds while many shapes are being created (the ext4 journal
is busy with their files), and several places need "everything I wrote before this call is durable" for
many callers at once: the shapes directory after each new log, the snapshot-marks journal after each
snapshot.  One fsync per caller, one after another, made those the pace of shape creation (measured: the
marks journal's fsync under its lock took 30 ms per snapshot on average, 86 ms at p90, while 1,000 shapes
were created).  Here a caller returns once an fsync that *started after its call* has completed, so callers
arriving while one runs share the next.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["SharedFsync"]


class SharedFsync:
    """Group commit over one fsync function.

    ``fsync`` makes durable everything written before it started; ``lock`` is held while it runs and must
    suit the callers: an OS-thread lock when they run on OS threads (waiting never switches greenlets), a
    gevent-aware one (``threading.Lock`` under monkey patching) when they are greenlets that may yield
    inside ``fsync`` (e.g. through :func:`sync.runtime.run_blocking`).  An error of ``fsync`` goes to the
    caller that ran it; the callers it would have covered run their own next.
    """

    __slots__ = ("_fsync", "_issued", "_lock", "_synced", "_tickets")

    def __init__(self, fsync: Callable[[], None], lock: Any) -> None:
        self._fsync = fsync
        self._lock = lock
        self._tickets = itertools.count(1)
        self._issued = 0  # the newest ticket handed out
        self._synced = 0  # every ticket up to this one is covered by a completed fsync

    def sync(self) -> None:
        """Return once everything the caller wrote before calling is durable."""
        ticket = self._issued = next(self._tickets)  # under the GIL: tickets are issued in order
        with self._lock:
            if self._synced >= ticket:  # an fsync that started after our call covered us
                return
            upto = self._issued  # every ticket issued so far: their writes precede this fsync
            self._fsync()
            self._synced = max(self._synced, upto)
