"""Child process for the SIGKILL test: appends deterministic transactions forever, reporting progress.

``python -m tests.storage.crash_writer <dir> <chunk_bytes> [<seed>]`` opens (or creates) shape ``h`` and
appends transaction after transaction, printing ``A <tx>`` once an append returned and ``D <tx>`` once a
flush made it durable, until it is killed.  With a seed it SIGKILLs itself in the middle of a random file
write (after writing a random prefix of it), the worst point for a crash.
"""

from __future__ import annotations

import os
import random
import signal
import sys

import orjson

from sync.offsets import LogOffset
from sync.storage import FileStorage, LogItem
from sync.storage.files import DiskFiles


def txn_items(tx: int) -> list[LogItem]:
    n = (tx % 5) * 7 + 1
    size = (tx * 37) % 3000
    out = []
    for i in range(n):
        body = {
            "key": f"{tx}/{i}",
            "value": {"pad": "p" * size},
            "headers": {"lsn": str(tx), "op_position": 2 * i},
        }
        out.append(LogItem(LogOffset(tx, 2 * i), f"{tx}/{i}", "insert", orjson.dumps(body)))
    return out


def arm_self_kill(seed: int) -> None:
    rnd = random.Random(seed)
    countdown = rnd.randint(1, 400)
    original = DiskFiles.append

    def append(self: DiskFiles, name: str, data: bytes) -> None:
        nonlocal countdown
        countdown -= 1
        if countdown == 0:
            original(self, name, data[: rnd.randint(0, len(data))])
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, name, data)

    DiskFiles.append = append  # type: ignore[method-assign]


def main(directory: str, chunk_bytes: int) -> None:
    storage = FileStorage(directory, "s", chunk_bytes=chunk_bytes)
    if "h" in storage.handles():
        writer = storage.open("h")
    else:
        writer = storage.create("h", {})
        writer.complete_snapshot(1, 2, [])
    last = writer.last_offset
    tx = (last.tx if last else 0) + 1
    out = sys.stdout
    while True:
        items = txn_items(tx)
        cut = len(items) // 2
        writer.append(items[:cut], complete=False)
        writer.append(items[cut:], complete=True)
        out.write(f"A {tx}\n")
        if tx % 3 == 0:
            writer.flush()
            out.write(f"D {tx}\n")
        out.flush()
        tx += 1


if __name__ == "__main__":
    if len(sys.argv) > 3:
        arm_self_kill(int(sys.argv[3]))
    main(sys.argv[1], int(sys.argv[2]))
