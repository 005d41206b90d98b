"""The shape engine (collector, storage, consumers, snapshot pool, cache) under ``gevent.monkey.patch_all()``.

Run as ``python -m tests.shapes.consumer_gevent_scenario <dsn> <dir>`` from ``test_consumer_gevent.py``;
prints one JSON object.  Not collected by pytest (no ``test_`` prefix).  A heartbeat greenlet measures how
long the hub is stalled while snapshots stream and transactions are consumed.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

from sync import runtime  # noqa: E402
from tests.shapes.cache_harness import CacheHarness, as_test_shape, snapshot_done  # noqa: E402
from tests.shapes.consumer_harness import read_log, replay, wait_for  # noqa: E402


def main(dsn: str, root: str) -> dict[str, object]:
    stalls: list[float] = []
    running = True

    def heartbeat() -> None:
        last = time.monotonic()
        while running:
            gevent.sleep(0.005)
            now = time.monotonic()
            stalls.append(now - last - 0.005)
            last = now

    h = CacheHarness(dsn, Path(root))
    h.conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, value int NOT NULL, label text);"
        "INSERT INTO items SELECT g, g % 100, repeat('x', 50) FROM generate_series(1, 20000) g;"
    )
    h.start_cache()
    beat = gevent.spawn(heartbeat)
    defs = [
        h.definition("items"),
        h.definition("items", where="value = 7"),
        h.definition("items", replica="full"),
    ]
    shapes = [h.live(d) for d in defs]
    h.conn.execute("UPDATE items SET value = 7 WHERE id % 1000 = 0")
    h.conn.execute("DELETE FROM items WHERE id % 997 = 0")
    wait_for(lambda: all(snapshot_done(s) for s in shapes), timeout=60)
    h.sync_all()
    running = False
    beat.join()
    equal = all(replay(read_log(s.reader)) == h.expected(as_test_shape(s, h)) for s in shapes)
    h.stop_cache()
    h.stop()
    return {
        "gevent": runtime.gevent_active(),
        "equal": equal,
        "max_stall_s": max(stalls),
        "beats": len(stalls),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
