"""Shape log storage benchmark: ``python -m bench.storage``.

Append throughput (items/s, MB/s) of 1-, 20- and 1,000-item transactions, each followed by a flush
(fdatasync), and the latency of one 1,000-item transaction including its fsync (target < 5 ms); read
throughput of a full 10 MiB chunk through ``ShapeLogReader.read_chunk`` against plain buffered reads of the
same file (``open(path, "rb").read()``, target ratio >= 0.5).  The append baseline is the same bytes written
with one ``os.write`` + ``os.fdatasync`` per transaction to a single file.

Prints one JSON line; the headline figure (``ours``/``baseline``/``ratio``) is the chunk read throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import orjson

from bench._common import emit
from sync.offsets import LogOffset
from sync.storage import FileStorage, LogItem

MiB = 1024 * 1024


def make_items(tx: int, n: int, pad: int) -> list[LogItem]:
    out = []
    for i in range(n):
        key = f'"public"."items"/"{tx}-{i}"'
        body = {
            "key": key,
            "value": {"id": f"{tx}-{i}", "title": "t" * pad, "done": "f"},
            "headers": {
                "operation": "insert",
                "relation": ["public", "items"],
                "lsn": str(tx),
                "op_position": 2 * i,
            },
        }
        out.append(LogItem(LogOffset(tx, 2 * i), key, "insert", orjson.dumps(body)))
    return out


def bench_append(root: str, txn_items: int, txns: int, pad: int) -> dict[str, float]:
    storage = FileStorage(root, f"append{txn_items}")
    writer = storage.create("h", {})
    writer.complete_snapshot(1, 2, [])
    batches = [make_items(tx, txn_items, pad) for tx in range(1, txns + 1)]
    total_bytes = sum(len(i.json) for b in batches for i in b)
    lat = []
    start = time.perf_counter()
    for b in batches:
        t0 = time.perf_counter()
        writer.append(b, complete=True)
        writer.flush()
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    writer.close()
    # baseline: the same JSON bytes, one write + fdatasync per transaction, one file
    path = os.path.join(root, f"baseline{txn_items}.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    base_lat = []
    try:
        b_start = time.perf_counter()
        for b in batches:
            t0 = time.perf_counter()
            os.write(fd, b",".join(i.json for i in b) + b",")
            os.fdatasync(fd)
            base_lat.append(time.perf_counter() - t0)
        b_elapsed = time.perf_counter() - b_start
    finally:
        os.close(fd)
    n = txn_items * txns
    return {
        "items_per_s": round(n / elapsed),
        "mb_per_s": round(total_bytes / elapsed / MiB, 1),
        "txn_ms_median": round(statistics.median(lat) * 1000, 3),
        "txn_ms_p95": round(sorted(lat)[int(0.95 * (len(lat) - 1))] * 1000, 3),
        "baseline_items_per_s": round(n / b_elapsed),
        "baseline_txn_ms_median": round(statistics.median(base_lat) * 1000, 3),
    }


def bench_read(root: str, repeats: int, pad: int) -> dict[str, float]:
    storage = FileStorage(root, "read")  # default 10 MiB chunks
    writer = storage.create("h", {})
    writer.complete_snapshot(1, 2, [])
    tx = 1
    while writer.state.view.log_chunks == 0:
        writer.append(make_items(tx, 1000, pad), complete=True)
        tx += 1
    writer.close()
    reader = storage.open("h").reader()
    path = os.path.join(storage.shapes_dir, "h", "log.json")
    chunk = reader.read_chunk(LogOffset(0, 0))
    assert chunk.count > 0 and len(chunk.body) >= 10 * MiB - 1
    size = len(chunk.body)
    ours, base = [], []
    for _ in range(repeats):  # interleaved, both from a warm page cache
        t0 = time.perf_counter()
        reader.read_chunk(LogOffset(0, 0))
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            data = f.read(size)
        base.append(time.perf_counter() - t0)
        assert len(data) == size
    # a request from an offset inside the chunk (binary search over item entries)
    mid = LogOffset(tx // 2, 500)
    t0 = time.perf_counter()
    for _ in range(200):
        reader.read_chunk(mid)
    mid_ms = (time.perf_counter() - t0) / 200 * 1000
    latest = reader.latest_offset()
    t0 = time.perf_counter()
    for _ in range(10_000):
        reader.read_chunk(latest)
    live_us = (time.perf_counter() - t0) / 10_000 * 1e6
    return {
        "chunk_bytes": size,
        "chunk_items": chunk.count,
        "ours_mb_per_s": round(size / statistics.median(ours) / MiB),
        "baseline_mb_per_s": round(size / statistics.median(base) / MiB),
        "mid_chunk_read_ms": round(mid_ms, 3),
        "read_at_latest_us": round(live_us, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pad", type=int, default=150, help="padding per item (item JSON ~ pad + 180 bytes)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-storage-") as root:
        append = {n: bench_append(root, n, txns, args.pad) for n, txns in ((1, 1000), (20, 500), (1000, 60))}
        read = bench_read(root, args.repeats, args.pad)
    ratio = read["ours_mb_per_s"] / read["baseline_mb_per_s"]
    result: dict[str, object] = {
        "name": "storage",
        "unit": "MB/s (10 MiB chunk read)",
        "ours": read["ours_mb_per_s"],
        "baseline": read["baseline_mb_per_s"],
        "baseline_name": "plain buffered read of the same file (open().read())",
        "ratio": round(ratio, 3),
        "pad": args.pad,
        "repeats": args.repeats,
        "read": read,
        "append": {f"txn_{n}": v for n, v in append.items()},
        "append_1000_txn_ms": append[1000]["txn_ms_median"],
        "targets": {
            "append_1000_under_5ms": append[1000]["txn_ms_median"] < 5.0,
            "read_ratio_at_least_0_5": ratio >= 0.5,
        },
    }
    emit(result)


if __name__ == "__main__":
    main()
