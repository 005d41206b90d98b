"""Checking a group commit (``SharedFsync``): callers released together share fewer fsyncs than there are
callers, and each returns only once an fsync that began after its call is done."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

SLOW_S = 0.005  # a busy disk: callers pile up behind a running fsync


def slowed(real: Callable[..., Any], starts: list[float]) -> Callable[..., Any]:
    """``real`` (an fsync) taking ``SLOW_S`` longer, its start times recorded in ``starts``."""

    def slow(*args: Any) -> Any:
        starts.append(time.monotonic())
        time.sleep(SLOW_S)
        return real(*args)

    return slow


def assert_shared_and_covered(
    callers: int,
    call: Callable[[int], object],
    starts: list[float],
    *,
    before: Callable[[int], object] | None = None,
) -> None:
    """Run ``call(i)`` on ``callers`` threads released at once (each after its own ``before(i)``, the write
    the fsync must cover); then check ``starts`` (the fsyncs' start times) against their spans."""
    barrier = threading.Barrier(callers)
    spans: dict[int, tuple[float, float]] = {}

    def run(i: int) -> None:
        barrier.wait()
        if before is not None:
            before(i)
        began = time.monotonic()
        call(i)
        spans[i] = (began, time.monotonic())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans) == callers
    assert 1 <= len(starts) < callers  # shared
    for began, returned in spans.values():  # covered: an fsync began after the caller's write
        assert any(began <= s <= returned for s in starts), (began, returned, starts)
