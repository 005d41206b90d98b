"""A process-wide cache of open file descriptors, so that shape logs do not hold descriptors forever.

Every shape used to keep its write handles (``log.items``/``.json``/``.durable``) and its reader's handles
open for its whole life: ~6,650 shapes with log data exhausted a 20,000 open-files limit (EMFILE).
Here each shape directory is an :class:`FdGroup` (one per writer, one per reader); its descriptors live in
one :class:`FdCache` shared by the process, which keeps at most ``cap`` of them open (setting
``storage.max_open_files``, by default derived from the open-files limit:
:func:`~sync.storage.fdlimit.auto_max_open_files`); the next use of a closed one reopens transparently.

Replacement policy.  Plain LRU thrashes when the descriptors in use exceed the cap: 10,000 shapes each
receiving one row per round, touched in the same order every round, gave 0% hits (every append opened and
closed its files, ~20% of the engine's CPU).  So a miss on a full cache does not evict a descriptor that is
still warm (used within the last ``_COLD_FACTOR * cap`` uses of the cache): the new descriptor is
*transient*, closed as soon as it is unpinned, and the resident set stays; hits are then about
cap / working set instead of 0.  The least recently used descriptor is replaced only once it has gone cold,
so a resident set of shapes that stopped receiving data gives way to the active ones.  (Where a dirty file
must be fsynced before it is closed (``sync_dirty_on_close``), a writer's new descriptor evicts the least
recently used one as before: a transient dirty one would cost an fsync per write.)

Correctness rules:

* A descriptor is *pinned* while in use (``pin``/``unpin`` around every read, write, fsync): a pinned entry
  is never closed, so a ``pread`` on one thread never races a ``close`` on another (no reopen-on-EBADF).
  If every entry is pinned the cap is exceeded for that moment rather than failing the operation.
* A descriptor with writes not yet fsynced (*dirty*) is fsynced before the cache closes it, and only when no
  clean entry can be closed instead.  If that fsync fails, the error sticks to the group: its owner's next
  ``sync`` raises it (the writer must not claim durability for bytes the kernel failed to write back).
  Where :mod:`sync.storage.group_sync` uses ``syncfs`` (which writes back closed files and reports their
  errors through a descriptor held for the process) that fsync is skipped (``sync_dirty_on_close``).
* Closing a group (shape closed or deleted) closes its idle descriptors now and pinned ones at their unpin;
  a group stays usable (a later use reopens), as plain descriptors did.

Finalisers never take the lock (:meth:`FdCache.drop_later`): the cyclic garbage collector can run one
while this thread holds it.  The lock is held only around dictionary work, ``os.open`` and ``os.close``
(and the rare forced fsync of an evicted dirty file); nothing in here yields to the gevent hub meanwhile.
"""

from __future__ import annotations

import errno
import os
import posix
from collections import OrderedDict, deque

from supervisors.stripes import native_lock

__all__ = ["CACHE", "DEFAULT_MAX_OPEN_FILES", "FdCache", "FdEntry", "FdGroup"]

DEFAULT_MAX_OPEN_FILES = 4096
_COLD_FACTOR = 8  # a resident descriptor unused for this many times the cap's worth of uses may be replaced


_SEP = os.sep
_SCAN_LIMIT = 64  # entries examined from the least recently used end per eviction

# The C ``close``: gevent's monkey patching replaces ``os.close`` with a wrapper that first checks and
# fstat's the descriptor (three system calls instead of one, ~1.4 us per close measured here) so it can
# cancel I/O watchers; regular files never have any (gevent skips that step for them anyway), and with
# thousands of shape logs over the cap this cache closes a descriptor on most appends.
_close_fd = posix.close


class FdEntry:
    """One open descriptor of one group.  ``fd`` is valid while the caller holds a pin on the entry."""

    __slots__ = ("closed", "fd", "group", "name", "pins", "synced", "used", "writes", "written_at")

    def __init__(self, group: FdGroup, name: str, fd: int) -> None:
        self.group = group
        self.name = name
        self.fd = fd
        self.pins = 0
        self.writes = 0  # bumped by every write ...
        self.synced = 0  # ... and copied here by an fsync that covered them
        self.closed = False  # closed at its last unpin (dropped, or transient: never cached)
        self.used = 0  # the cache's use count when last pinned
        self.written_at = 0.0  # monotonic time of the last small write through it (sync.storage.coldio)


class FdCache:
    """At most ``cap`` descriptors open at once over all groups (a soft cap: pinned entries may exceed it)."""

    def __init__(self, cap: int = DEFAULT_MAX_OPEN_FILES) -> None:
        self._cap = max(1, cap)
        self._lru: OrderedDict[FdEntry, None] = OrderedDict()
        self._lock = native_lock()  # an OS-thread lock under gevent too: never held across a switch
        self._orphans: deque[FdGroup] = deque()  # groups dropped by a finaliser, closed at the next open
        self._uses = 0  # pins so far: the clock that tells warm descriptors from cold ones
        self.evictions = 0
        self.forced_syncs = 0
        self.hits = 0
        self.misses = 0
        self.transient = 0  # misses served by a descriptor closed at its unpin (the cache was full and warm)
        # Off when every log is made durable by ``syncfs`` (sync.storage.group_sync): it writes back closed
        # files' pages too and reports their errors, and an fsync is per file, not per descriptor.
        self.sync_dirty_on_close = True

    @property
    def cap(self) -> int:
        return self._cap

    def set_cap(self, cap: int) -> None:
        """Change the cap (closes idle descriptors beyond it now)."""
        if cap < 1:
            raise ValueError(f"max_open_files must be >= 1, got {cap}")
        with self._lock:
            self._cap = cap
            self._shrink(cap)

    @property
    def open_count(self) -> int:
        return len(self._lru)

    def pin(self, group: FdGroup, name: str) -> FdEntry:
        """The entry of ``name`` in ``group``, opened if needed and pinned: pair with :meth:`unpin`."""
        with self._lock:
            self._uses += 1
            entry = group.entries.get(name)
            if entry is not None:
                self.hits += 1
                entry.pins += 1
                entry.used = self._uses
                self._lru.move_to_end(entry)
                return entry
            self.misses += 1
            self._drain()
            resident = self._make_room(group)
            path = group.directory + _SEP + name  # os.path.join costs ~0.5 us more, per open
            try:
                fd = os.open(path, group.flags, 0o644)
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._shrink(len(self._lru) // 2):
                    raise
                fd = os.open(path, group.flags, 0o644)
            entry = FdEntry(group, name, fd)
            entry.pins = 1
            entry.used = self._uses
            if resident:
                group.entries[name] = entry
                self._lru[entry] = None
            else:
                entry.closed = True  # transient: closed at its unpin
                self.transient += 1
            return entry

    def unpin(self, entry: FdEntry) -> None:
        with self._lock:
            entry.pins -= 1
            if entry.closed and entry.pins == 0:
                self._close(entry)

    def drop(self, group: FdGroup, names: list[str] | None = None) -> None:
        """Close the group's descriptors (all of them if ``names`` is None); pinned ones at their unpin."""
        with self._lock:
            self._drain()
            self._drop(group, list(group.entries) if names is None else names)

    def drop_later(self, group: FdGroup) -> None:
        """:meth:`drop` for finalisers (``__del__``): takes no lock, since the garbage collector may run a
        finaliser on a thread that already holds it; the descriptors are closed at the next open or drop."""
        self._orphans.append(group)

    # -- internals (lock held) -----------------------------------------------------------------------------

    def _drain(self) -> None:
        orphans = self._orphans
        while orphans:
            group = orphans.popleft()
            self._drop(group, list(group.entries))

    def _drop(self, group: FdGroup, names: list[str]) -> None:
        for name in names:
            entry = group.entries.pop(name, None)
            if entry is None:
                continue
            self._lru.pop(entry, None)
            entry.closed = True
            if entry.pins == 0:
                self._close(entry)

    def _close(self, entry: FdEntry) -> None:
        fd, entry.fd = entry.fd, -1
        if fd >= 0:
            _close_fd(fd)

    def _make_room(self, group: FdGroup) -> bool:
        """Room for one more resident descriptor of ``group``; False: serve this use with a transient one."""
        lru = self._lru
        if len(lru) < self._cap:
            return True
        if not (self.sync_dirty_on_close and group.writable):
            oldest = next(iter(lru))
            if self._uses - oldest.used <= _COLD_FACTOR * self._cap:
                return False  # the resident set is warm: keep it (no LRU thrash)
        self._shrink(self._cap - 1)
        return True

    def _shrink(self, target: int) -> bool:
        """Close idle entries, least recently used first, until at most ``target`` remain; False if none."""
        closed = False
        while len(self._lru) > target:
            victim = None
            dirty_victim = None
            for seen, entry in enumerate(self._lru):
                if entry.pins:
                    continue
                if entry.writes == entry.synced:
                    victim = entry
                    break
                if dirty_victim is None:
                    dirty_victim = entry
                if seen >= _SCAN_LIMIT:
                    # Looking further for a clean entry is O(open files) per open when nearly all of
                    # them are dirty (thousands of shapes ingesting at once): take the oldest dirty one.
                    break
            if victim is None and dirty_victim is not None:
                victim = dirty_victim
                if self.sync_dirty_on_close:
                    self.forced_syncs += 1
                    try:
                        os.fdatasync(victim.fd)
                    except OSError as exc:
                        victim.group.error = exc  # the owner's next sync raises it
            if victim is None:
                return closed
            del self._lru[victim]
            del victim.group.entries[victim.name]
            self._close(victim)
            self.evictions += 1
            closed = True
        return closed


class FdGroup:
    """The descriptors of one shape directory for one user (writer: read-write, reader: read-only)."""

    __slots__ = ("cache", "directory", "entries", "error", "flags", "writable")

    def __init__(self, directory: str, *, writable: bool, cache: FdCache | None = None) -> None:
        self.cache = cache if cache is not None else CACHE
        self.directory = directory
        self.writable = writable
        self.flags = (os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY) | os.O_CLOEXEC
        self.entries: dict[str, FdEntry] = {}
        self.error: OSError | None = None

    def pin(self, name: str) -> FdEntry:
        return self.cache.pin(self, name)

    def unpin(self, entry: FdEntry) -> None:
        self.cache.unpin(entry)

    def drop(self, names: list[str] | None = None) -> None:
        self.cache.drop(self, names)

    def check(self) -> None:
        """Raise the error of a failed forced fsync of an evicted dirty file, if any (sticky)."""
        if self.error is not None:
            raise self.error


CACHE = FdCache()
