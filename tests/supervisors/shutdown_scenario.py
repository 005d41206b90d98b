"""Thousands of idle shape subtrees stopped at once under gevent (run by ``test_shutdown_scale.py``).

``python -m tests.supervisors.shutdown_scenario N SHUTDOWN`` starts a ShapeSupervisor with ``N`` per-shape
one_for_all subtrees (``shape_spec``) of two hibernating actors each, idle, then stops the tree and prints
one JSON line: how long the stop took, how many "abandoning" warnings were logged, and how many storage
stand-ins ran their on_stop (where the real StorageActor flushes and fsyncs its log).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import pykka  # noqa: E402

from supervisors import start_child, start_tree, stop_tree  # noqa: E402
from supervisors.hibernate import HibernatingActor  # noqa: E402
from sync.shapes.shape_supervisor import ShapeSupervisor, shape_spec  # noqa: E402


class _Abandoned(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "abandoning" in record.getMessage():
            self.count += 1


class _Stopped:
    storages = 0


class Storage(HibernatingActor):
    def __init__(self, on_durable: Any) -> None:
        super().__init__()

    def on_stop(self) -> None:
        _Stopped.storages += 1  # where the StorageActor closes (flushes, fsyncs) its log


class Consumer(HibernatingActor):
    def __init__(self, storage: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.storage = storage


def main() -> None:
    n, shutdown = int(sys.argv[1]), float(sys.argv[2])
    abandoned = _Abandoned()
    logging.getLogger().addHandler(abandoned)
    sup = start_tree(ShapeSupervisor.start, 10)
    t0 = time.monotonic()
    for i in range(n):
        spec = shape_spec(
            f"h{i}", start_storage=Storage.start, start_consumer=Consumer.start, shutdown=shutdown
        )
        start_child(sup, spec, timeout=30)
    start_s = time.monotonic() - t0
    t0 = time.monotonic()
    stopped = stop_tree(sup, 600)
    out = {
        "n": n,
        "start_s": round(start_s, 2),
        "stop_s": round(time.monotonic() - t0, 2),
        "stopped": stopped,
        "abandoned": abandoned.count,
        "storages_stopped": _Stopped.storages,
        "left": len(pykka.ActorRegistry.get_all()),
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter finalisation under gevent


if __name__ == "__main__":
    main()
