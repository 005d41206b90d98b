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

# A middle-generation collection at an idle point: only once tune() enabled it, only when at least half due,
# and after heap.IDLE_DELAY_S (polled with a deadline: the collection runs on a thread of its own).
IDLE = """
import gc, json, sys, time
from sync import heap
if sys.argv[1] == "tune":
    heap.tune()
gc.set_threshold(100, 20, 20)  # young collections every 100 allocations: quick to make them happen

def middle() -> int:
    return gc.get_stats()[1]["collections"]

def young_until(n: int) -> None:
    keep = []
    while gc.get_count()[1] < n:
        keep.append([])

out = {}
gc.collect(1)  # the imports' young collections: start from none
young_until(5)  # a quarter due: nothing
before = middle()
heap.idle()
time.sleep(3 * heap.IDLE_DELAY_S)
out["quarter_due"] = middle() - before
young_until(12)  # more than half due
before = middle()
heap.idle()
out["right_away"] = middle() - before  # not in the caller: the acknowledgement goes first
# tuned: polled until it happens (10 s at most); not tuned: proving that nothing happens takes a wait, and
# 20 idle delays are 20 times what a tuned process needs
deadline = time.monotonic() + (10 if sys.argv[1] == "tune" else 20 * heap.IDLE_DELAY_S)
while middle() == before and time.monotonic() < deadline:
    time.sleep(0.01)
out["later"] = middle() - before
out["count_after"] = gc.get_count()[1]
print(json.dumps(out))
"""


def _run(script: str, *args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_tune_and_freeze_apply_to_the_process() -> None:
    result = _run(SCRIPT)
    assert tuple(result["thresholds"]) == (20_000, 20, 20)  # type: ignore[arg-type]
    assert result["frozen"] >= 1000  # type: ignore[operator]  # the live lists left the collected generations


def test_an_idle_point_collects_the_middle_generation_once_half_due() -> None:
    result = _run(IDLE, "tune")
    assert result["quarter_due"] == 0
    assert result["right_away"] == 0
    assert result["later"] == 1
    assert result["count_after"] == 0


def test_an_idle_point_does_nothing_unless_the_process_tuned_the_collector() -> None:
    result = _run(IDLE, "plain")
    assert result["quarter_due"] == 0
    assert result["later"] == 0


# The start of both scripts below: a tuned process, and a poll with a deadline (the freezes run on a thread).
TUNED = """
import gc, json, sys, time, weakref
from sync import heap
heap.tune()
gc.collect()

def wait_for(cond):
    deadline = time.monotonic() + 10
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()
"""

# The shapes' objects are frozen at an idle point once heap.FREEZE_AFTER shapes were added, and thawed and
# collected in full once enough of them were released (their cycles are garbage, frozen).
FREEZE = (
    TUNED
    + """
class Node:
    pass

def cycles(n):
    out = []
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a
        out.append(a)
    return out

out = {}
shapes = cycles(2000)  # the shapes' long-lived objects, in reference cycles
heap.shapes_added(heap.FREEZE_AFTER - 1)
before = gc.get_freeze_count()
heap.idle()
time.sleep(4 * heap.IDLE_DELAY_S)
out["frozen_early"] = gc.get_freeze_count() - before
heap.shapes_added(1)
heap.idle()
out["frozen"] = wait_for(lambda: gc.get_freeze_count() - before >= 4000)
gone = weakref.ref(shapes[0])
del shapes[:1000]  # half of them deleted: garbage cycles, frozen
heap.shapes_released(heap.FREEZE_AFTER - 1)
heap.idle()
time.sleep(4 * heap.IDLE_DELAY_S)
out["collected_early"] = gone() is None
heap.shapes_released(1)
heap.idle()
out["collected"] = wait_for(lambda: gone() is None)
out["still_frozen"] = gc.get_freeze_count() - before >= 2000  # the survivors are frozen again
out["alive"] = all(s.other.other is s for s in shapes)
print(json.dumps(out))
"""
)


def test_shapes_are_frozen_at_an_idle_point_and_thawed_once_enough_are_released() -> None:
    result = _run(FREEZE)
    assert result == {
        "frozen_early": 0,
        "frozen": True,
        "collected_early": False,
        "collected": True,
        "still_frozen": True,
        "alive": True,
    }


# Shapes added with no write burst in flight are frozen without waiting for the collector's next idle point
# (creating thousands of shapes acknowledges nothing); during a burst they wait for it.
WAVE = (
    TUNED
    + """
out = {}
shapes = [[i] for i in range(5000)]
before = gc.get_freeze_count()
heap.busy()  # the collector started a batch
heap.shapes_added(heap.FREEZE_AFTER)
time.sleep(4 * heap.IDLE_DELAY_S)
out["frozen_in_burst"] = gc.get_freeze_count() - before >= 5000
heap.idle()  # the burst is durable
out["frozen_at_idle"] = wait_for(lambda: gc.get_freeze_count() - before >= 5000)
more = [[i] for i in range(5000)]
before = gc.get_freeze_count()
heap.shapes_added(heap.FREEZE_AFTER - 1)
time.sleep(4 * heap.IDLE_DELAY_S)
out["frozen_early"] = gc.get_freeze_count() - before >= 5000
heap.shapes_added(1)  # no idle() call
out["frozen_without_burst"] = wait_for(lambda: gc.get_freeze_count() - before >= 5000)
print(json.dumps(out))
"""
)


def test_a_wave_of_new_shapes_is_frozen_at_once_unless_a_burst_is_in_flight() -> None:
    result = _run(WAVE)
    assert result == {
        "frozen_in_burst": False,
        "frozen_at_idle": True,
        "frozen_early": False,
        "frozen_without_burst": True,
    }
