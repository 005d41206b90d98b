"""sync.heap: the collector settings the engine's process applies (in a subprocess: they are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
from sync import heap
before = gc.get_freeze_count()
heap.tune()
keep = [[i] for i in range(1000)]
heap.freeze_startup_heap()
print(json.dumps({"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count() - before}))
"""


def test_tune_and_freeze_apply_to_the_process() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert tuple(result["thresholds"]) == (20_000, 20, 20)
    assert (
        result["frozen"] >= 1000
    )  # the live lists (and everything else alive) left the collected generations
