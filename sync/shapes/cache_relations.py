"""Which shapes a Relation message breaks, judged a slice at a time so that the event loop keeps turning.

Why this module exists: at a Relation message the ShapeCache judges every live shape of the stack against
it (:func:`~sync.shapes.invalidation.relation_change_reasons`).  Even with one verdict per distinct
definition aspect, looking at 10,000 shapes took ~21 ms in one go on the worker's event loop at the first
Relation message of a session, a stall that made the ShapeLogCollector see the burst's flow stop (a gap of
more than its ``_FLOWING_S``) and tell its first transaction apart: 1,000 shape visits more.  So the shapes
are judged ``_RELATION_SLICE`` at a time, with a turn of the event loop between slices and one verdict memo
for the whole message: the outcome is that of judging them all at once.  The cache removes what this
yields (``ShapeCache._relation_changed``); the judging and the pacing are here.
"""

from __future__ import annotations

from collections.abc import Iterator

from sync import runtime
from sync.replication.changes import RelationChanged
from sync.shapes.directory import ShapeDirectory
from sync.shapes.invalidation import relation_change_reasons

__all__ = ["broken_shapes"]

_RELATION_SLICE = 500  # shapes judged per turn of the event loop at a Relation message
_RELATION_PAUSE_S = 0.0001  # under gevent a timer, not sleep(0): the next turn of the loop, I/O included


def broken_shapes(directory: ShapeDirectory, event: RelationChanged) -> Iterator[tuple[str, str]]:
    """``(handle, reason)`` of each shape in ``directory`` that ``event`` invalidates, in the directory's
    order.  The shapes are those published when the iteration starts; a slice is judged when the caller has
    taken the previous slice's answers (so a shape it removed meanwhile is no longer judged)."""
    handles = directory.handles()
    verdicts: dict[tuple[object, ...], str | None] = {}
    for start in range(0, len(handles), _RELATION_SLICE):
        if start:
            runtime.sleep(_RELATION_PAUSE_S)
        shapes = (directory.get(h) for h in handles[start : start + _RELATION_SLICE])
        live = [(s.handle, s.definition) for s in shapes if s is not None]
        yield from relation_change_reasons(live, event.relation, event.previous, verdicts)
