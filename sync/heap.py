"""Garbage-collector settings for a long-running engine process (issue 6: CPU per replicated row).

Why: the engine allocates a few objects per replicated row and keeps a large, long-lived heap (modules,
every shape's consumer and storage state, routing indexes).  With CPython's defaults (700, 10, 10) the young
generation is collected every 700 net allocations and a full collection walks the whole long-lived heap;
measured on bench.ingest that was 1.6-2.5 µs of a ~9 µs budget per row.  Three process-wide measures,
enabled by the process that owns the engine (the gunicorn worker, the benchmarks), never by the library
itself:

* :func:`tune` raises the thresholds, so young collections are ~30x rarer (cyclic garbage may wait for up
  to 20,000 allocations, a few MB at most), and enables :func:`idle`;
* :func:`freeze_startup_heap` moves everything alive once the engine has started (imported modules, shapes
  reloaded from storage) into the permanent generation (``gc.freeze``), so full collections stop walking
  it.  Cost: reference cycles among those startup objects are never collected; they are meant to live as
  long as the process anyway;
* :func:`idle` (called by the ShapeLogCollector whenever everything it routed is durable) runs the middle
  generation's collection at that quiet moment, shortly after, when it is at least half due, instead of
  letting it fall in the middle of the next write burst.  A burst keeps its rows alive from decoding to the
  storage's write (~100,000 changes, then as many log items, at 10,000 shapes): a middle collection during
  it walked them all (150-220 ms, ~8% of the burst), and promoted them to the old generation, where they
  then counted towards the next full collection (~1 s at 10,000 shapes).  Run at an idle point the same
  collection walks what survived the bursts since the last one.  Trade-off: it runs at most twice as often
  as the thresholds would run it (only when at least half due), each time costing no more than the one it
  replaces; under sustained load there is no idle point and nothing changes;
* the shapes themselves (:func:`shapes_added` / :func:`shapes_released`, told by the ShapeCache) are frozen
  too, at an idle point once ``FREEZE_AFTER`` shapes were added since the last freeze (a wave of new shapes
  with no write burst in flight, i.e. between the collector's :func:`busy` and :func:`idle`, is an idle
  point of its own: without writes there is no acknowledgement to call :func:`idle`, and bench.ingest many
  measured the ~10,000 shapes created before its first burst costing it a 164 ms middle collection in the
  middle of the burst, after three of 177-320 ms during the creations): that idle point's
  middle collection runs and everything alive is then frozen, instead of waiting for a restart.  Without
  it the shapes created since the process started stayed in the old generation, where a full collection
  walked them all (~1.25 M objects, ~1 s at 10,000 shapes: a pause for every live request, and a 1 s
  outlier in the middle of a write burst whenever it fell due there).  The freeze itself moves lists (no
  walk).  Cost: cyclic garbage frozen with them is not collected (what the old generation held at that
  moment, which a full collection would have collected later; and the cycles of shapes deleted since, whose
  objects are frozen).  Bound: once the shapes released since the last full collection reach a quarter of
  the live ones (at least ``FREEZE_AFTER``; CPython's own rule for full collections is the same quarter),
  the next idle point thaws everything, collects it in full (the pause a full collection costs anyway, now
  at an idle point) and freezes the survivors again.
"""

from __future__ import annotations

import gc

from sync import runtime

__all__ = [
    "FREEZE_AFTER",
    "IDLE_DELAY_S",
    "busy",
    "freeze_startup_heap",
    "idle",
    "shapes_added",
    "shapes_released",
    "tune",
]

THRESHOLDS = (20_000, 20, 20)
IDLE_DELAY_S = 0.05  # after the idle point: what was waiting for it (the acknowledgement) goes first
FREEZE_AFTER = 1_000  # shapes added since the last freeze that make the next idle point freeze them

_enabled = False  # tune() was called: this process lets the engine time the middle collections
_scheduled = False  # a collection at an idle point is on its way
_added = 0  # shapes added since the last freeze (not frozen yet)
_released = 0  # shapes released since the last full collection (their cycles may be frozen)
_live = 0  # shapes added and not released
_busy = False  # the ShapeLogCollector holds routed changes not durable yet (a write burst is in flight)


def tune() -> None:
    """Raise the collector's thresholds and enable :func:`idle` (call once, before starting the engine)."""
    global _enabled  # process-wide, as the collector's settings are
    gc.set_threshold(*THRESHOLDS)
    _enabled = True


def freeze_startup_heap() -> None:
    """Collect once, then exempt every surviving object from future collections (call once the engine
    has started)."""
    _collect_and_freeze()


def _collect_and_freeze() -> None:
    """A full collection, then everything alive frozen: nothing added or released is pending after it."""
    global _added, _released  # process-wide, as the permanent generation is
    gc.collect()
    gc.freeze()
    _added = _released = 0


def shapes_added(n: int = 1) -> None:
    """``n`` shapes started (created or reloaded): their objects are long-lived (see the module docstring);
    frozen now (at the next turn, as at an idle point) once enough were added, unless a burst is in flight."""
    global _added, _live  # process-wide counters, as the permanent generation is
    _added += n
    _live += n
    if not _busy and _freeze_due():
        idle()


def shapes_released(n: int = 1) -> None:
    """``n`` shapes stopped for good (deleted, invalidated): their objects are garbage now; collected (as at
    an idle point) once enough were released, unless a burst is in flight."""
    global _released, _live  # see shapes_added
    _released += n
    _live = max(0, _live - n)
    if not _busy and _thaw_due():
        idle()


def busy() -> None:
    """The ShapeLogCollector started gathering routed changes: no idle point until its next :func:`idle`."""
    global _busy  # per process: with several stacks, one's idle point may fall in another's burst (as before)
    _busy = True


def _thaw_due() -> bool:
    """Enough shapes were released since the last full collection that their frozen cycles must go."""
    return _released >= max(FREEZE_AFTER, _live // 4)


def _freeze_due() -> bool:
    return _added >= FREEZE_AFTER


def _due() -> bool:
    """At least half of the young collections that trigger a middle one have happened since the last."""
    return gc.get_count()[1] >= max(1, gc.get_threshold()[1] // 2)


def idle() -> None:
    """Everything routed is durable: in ``IDLE_DELAY_S``, collect the middle generation if it is at least half
    due, and freeze or thaw the shapes if that is due (see the module docstring).  Cheap when nothing is:
    a flag and a few counter reads.  A no-op unless :func:`tune` was called."""
    global _scheduled, _busy  # one collection on its way per process
    _busy = False
    if not _enabled or _scheduled or not (_due() or _freeze_due() or _thaw_due()):
        return
    _scheduled = True
    runtime.spawn(_collect_after_delay, name="heap-idle-collect")


def _collect_after_delay() -> None:
    global _scheduled, _added  # see idle() and shapes_added()
    try:
        runtime.sleep(IDLE_DELAY_S)
        if _thaw_due():
            gc.unfreeze()
            _collect_and_freeze()
        elif _freeze_due():
            gc.collect(1)  # the young survivors join the old generation, which is frozen whole
            gc.freeze()
            _added = 0
        elif _due():
            gc.collect(1)
    finally:
        _scheduled = False
