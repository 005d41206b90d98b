"""Run many shape logs in one process under a 1,024 open-files limit (a subprocess of test_fdcache.py).

``python -m tests.storage.many_shapes DIR SHAPES CAP [uncached]``: creates SHAPES logs, appends to all of
them (leaving all dirty at once), flushes, reads every log back, closes and reopens every log and reads it
again.  Prints one JSON line of figures; exits 1 with the error on stderr if anything fails (EMFILE ...).
``uncached`` turns eviction off, i.e. every descriptor stays open for the life of its log, as before the cache.
"""

from __future__ import annotations

import json
import os
import resource
import sys

from sync.offsets import LogOffset
from sync.storage import FileStorage, ShapeLogWriter, fdcache
from tests.storage.helpers import follow, log_items, txn


def main() -> None:
    directory, shapes, cap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4:] == ["uncached"]:
        fdcache.FdCache._shrink = lambda self, target: False  # type: ignore[method-assign]
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    storage = FileStorage(directory, "stack", chunk_bytes=2000, max_open_files=cap)
    handles = [f"s{i}" for i in range(shapes)]
    writers: dict[str, ShapeLogWriter] = {}
    peak = 0
    for h in handles:
        w = writers[h] = storage.create(h, {})
        w.complete_snapshot(1, 2, [])
        w.append(txn(10, 3, 50), complete=True)
        w.flush()
        storage.reader(h).read_chunk(LogOffset.BEFORE_ALL)
        peak = max(peak, fdcache.CACHE.open_count)
    for h in handles:  # every log dirty at once: eviction must fsync before closing
        writers[h].append(txn(20, 40, 50), complete=True)
    for h in handles:
        assert writers[h].flush() == LogOffset(20, 78), h
    for h in handles:
        got = [i["value"]["id"] for i in log_items(follow(storage.reader(h)))]  # type: ignore[index]
        assert got == [f"10-{2 * i}" for i in range(3)] + [f"20-{2 * i}" for i in range(40)], (h, got)
        peak = max(peak, fdcache.CACHE.open_count)
    for h in handles:
        writers[h].close()
        writers[h] = storage.open(h)
        assert follow(storage.reader(h)).ends[-1] == LogOffset(20, 78), h
    fds = len(os.listdir("/proc/self/fd"))
    print(
        json.dumps(
            {
                "shapes": shapes,
                "cap": cap,
                "peak_cached": peak,
                "process_fds": fds,
                "evictions": fdcache.CACHE.evictions,
                "forced_syncs": fdcache.CACHE.forced_syncs,
            }
        )
    )


if __name__ == "__main__":
    main()
