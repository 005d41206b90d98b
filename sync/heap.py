"""Garbage-collector settings for a long-running engine process (issue 6: CPU per replicated row).

Why: the engine allocates a few objects per replicated row and keeps a large, long-lived heap (modules,
every shape's consumer and storage state, routing indexes).  With CPython's defaults (700, 10, 10) the young
generation is collected every 700 net allocations and a full collection walks the whole long-lived heap;
measured on bench.ingest that was 1.6-2.5 µs of a ~9 µs budget per row.  Two process-wide measures, applied
by the process that owns the engine (the gunicorn worker, the benchmarks), never by the library itself:

* :func:`tune` raises the thresholds, so young collections are ~30x rarer (cyclic garbage may wait for up
  to 20,000 allocations, a few MB at most);
* :func:`freeze_startup_heap` moves everything alive once the engine has started (imported modules, shapes
  reloaded from storage) into the permanent generation (``gc.freeze``), so full collections stop walking
  it.  Cost: reference cycles among those startup objects are never collected; they are meant to live as
  long as the process anyway.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap", "tune"]

THRESHOLDS = (20_000, 20, 20)


def tune() -> None:
    """Raise the collector's thresholds (call once, before starting the engine)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_heap() -> None:
    """Collect once, then exempt every surviving object from future collections (call once the engine
    has started)."""
    gc.collect()
    gc.freeze()
