"""A writer appending while readers follow the log; shared by the thread test and the gevent subprocess.

Run as ``python -m tests.storage.concurrent_check <dir>`` (after gevent patching, see test_concurrency) it
prints ``OK <reads> <longest event-loop stall in ms>`` or raises.
"""

from __future__ import annotations

import random
import sys
import time

import orjson

from sync import runtime
from sync.offsets import LogOffset
from sync.storage import FileStorage, LogItem, ShapeLogReader, ShapeLogWriter

CHUNK = 64 * 1024


def txn_items(tx: int, n: int, size: int) -> list[LogItem]:
    out = []
    for i in range(n):
        headers: dict[str, object] = {"operation": "insert", "lsn": str(tx), "op_position": 2 * i}
        if i == n - 1:
            headers["last"] = True
        body = {"key": f"k{tx}-{i}", "value": {"pad": "z" * size}, "headers": headers}
        out.append(LogItem(LogOffset(tx, 2 * i), f"k{tx}-{i}", "insert", orjson.dumps(body)))
    return out


def write(writer: ShapeLogWriter, txns: int, seed: int) -> None:
    rnd = random.Random(seed)
    for t in range(1, txns + 1):
        n = rnd.choice([1, 3, 20, 200])
        size = rnd.choice([10, 100, 3000, 20000])  # some transactions exceed BIG_IO: threadpool writes
        items = txn_items(t, n, size)
        half = len(items) // 2
        writer.append(items[:half], complete=False)  # fragments
        runtime.sleep(0)
        writer.append(items[half:], complete=True)
        if t % 7 == 0:
            writer.flush()


def follow_checked(reader: ShapeLogReader, stop: runtime.Event) -> int:
    """Follow the log until ``stop`` and the reader is up to date; every read must be whole and ordered."""
    offset = LogOffset(0, 0)
    reads = 0
    last_seen = LogOffset(0, 0)
    while True:
        done = stop.is_set()
        read = reader.read_chunk(offset)
        reads += 1
        items = orjson.loads(b"[" + read.body + b"]")
        assert len(items) == read.count
        for it in items:
            off = LogOffset(int(it["headers"]["lsn"]), it["headers"]["op_position"])
            assert off > last_seen, (off, last_seen)
            last_seen = off
        assert read.count == 0 or last_seen == read.end_offset
        if read.up_to_date and read.count:
            assert items[-1]["headers"].get("last") is True  # never half a transaction
        offset = read.end_offset
        if read.up_to_date:
            if done:
                return reads
            runtime.sleep(0.001)


def main(directory: str, txns: int = 150, readers: int = 4) -> int:
    storage = FileStorage(directory, "s", chunk_bytes=CHUNK)
    writer = storage.create("h", {})
    writer.complete_snapshot(1, 2, [])
    stop = runtime.Event()
    results: list[int] = []
    errors: list[BaseException] = []

    def reader_loop() -> None:
        try:
            results.append(follow_checked(writer.reader(), stop))
        except BaseException as exc:
            errors.append(exc)
            raise

    handles = [runtime.spawn(reader_loop, name=f"reader-{i}") for i in range(readers)]
    write(writer, txns, seed=7)
    stop.set()
    for h in handles:
        h.join(60)
    writer.close()
    if errors:
        raise errors[0]
    assert len(results) == readers
    assert writer.reader().latest_offset().tx == txns
    return sum(results)


def max_loop_stall(stop: runtime.Event, out: list[float]) -> None:
    """Under gevent: the longest time the hub did not get back to this greenlet."""
    worst = 0.0
    last = time.perf_counter()
    while not stop.is_set():
        runtime.sleep(0.001)
        now = time.perf_counter()
        worst = max(worst, now - last - 0.001)
        last = now
    out.append(worst)


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()
    assert runtime.gevent_active()
    stalls: list[float] = []
    done = runtime.Event()
    probe = runtime.spawn(max_loop_stall, done, stalls)
    reads = main(sys.argv[1])
    done.set()
    probe.join(10)
    print("OK", reads, round(stalls[0] * 1000, 1))
