"""``ShapeDirectory``: the live shapes as a read-only view for request handlers, without an actor round trip.

Every shape request looks its shape up (by handle or by definition); asking the ShapeCache actor each time
would serialise all requests through one inbox.  The ShapeCache publishes shapes; it withdraws them too,
also from other threads (an invalidation withdraws the handle at once, before the shape's waiters learn
of it), so writers take a lock.  Readers on any thread/greenlet see a consistent entry per lookup without
it (single dict operations are atomic under the GIL, and entries are immutable).  ``touch`` records use
for the cache's least-recently-used eviction.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pykka

from sync.shapes.definition import ShapeDefinition
from sync.storage.reader import ShapeLogReader

__all__ = ["LiveShape", "ShapeDirectory"]


@dataclass(frozen=True, slots=True)
class LiveShape:
    """A live shape: where to read its log and whom to ask for live waits (``AwaitData``)."""

    handle: str
    definition: ShapeDefinition
    reader: ShapeLogReader
    consumer: pykka.ActorRef[Any]


class ShapeDirectory:
    """Live shapes by handle and by definition, plus the definitions of handles rotated away."""

    __slots__ = ("_by_definition", "_by_handle", "_by_table", "_last_used", "_lock", "_rotated")

    def __init__(self) -> None:
        self._by_handle: dict[str, LiveShape] = {}
        self._by_definition: dict[ShapeDefinition, str] = {}
        self._by_table: dict[tuple[str, str], int] = {}  # (schema, table) -> live shapes reading it
        self._last_used: dict[str, float] = {}
        self._rotated: dict[str, tuple[ShapeDefinition, str]] = {}  # old handle -> (definition, reason)
        self._lock = threading.Lock()  # writers only

    def __len__(self) -> int:
        return len(self._by_handle)

    # -- readers (any thread) -----------------------------------------------------------------------------

    def get(self, handle: str) -> LiveShape | None:
        return self._by_handle.get(handle)

    def find(self, definition: ShapeDefinition) -> LiveShape | None:
        handle = self._by_definition.get(definition)
        return self._by_handle.get(handle) if handle is not None else None

    def rotated_to(self, handle: str) -> str | None:
        """The live handle for the definition ``handle`` had, if that handle was rotated away (else None)."""
        entry = self._rotated.get(handle)
        if entry is None:
            return None
        return self._by_definition.get(entry[0])

    def has_table(self, schema: str, table: str) -> bool:
        """Does a live shape read the table named ``schema.table`` (by the name it was created with)?"""
        return (schema, table) in self._by_table

    def was_rotated(self, handle: str) -> bool:
        return handle in self._rotated

    def rotation_reason(self, handle: str) -> str | None:
        """Why ``handle`` was removed (e.g. ``"snapshot failed: ..."``, ``"deleted"``), if it was."""
        entry = self._rotated.get(handle)
        return entry[1] if entry is not None else None

    def touch(self, handle: str) -> None:
        if handle in self._by_handle:
            self._last_used[handle] = time.monotonic()

    def handles(self) -> list[str]:
        return list(self._by_handle)

    # -- the ShapeCache (writers) --------------------------------------------------------------------------

    def publish(self, shape: LiveShape) -> None:
        with self._lock:
            if shape.handle not in self._by_handle:
                key = (shape.definition.schema, shape.definition.table)
                self._by_table[key] = self._by_table.get(key, 0) + 1
            self._by_handle[shape.handle] = shape
            self._by_definition[shape.definition] = shape.handle
            self._last_used[shape.handle] = time.monotonic()

    def withdraw(self, handle: str, reason: str = "removed") -> LiveShape | None:
        """Remove ``handle`` (remembering why, for :meth:`rotation_reason`); the shape, or None if it was
        not live.  Of concurrent withdrawals of one handle, exactly one gets the shape."""
        with self._lock:
            return self._withdraw(handle, reason)

    def _withdraw(self, handle: str, reason: str) -> LiveShape | None:
        shape = self._by_handle.pop(handle, None)
        self._last_used.pop(handle, None)
        if shape is not None:
            key = (shape.definition.schema, shape.definition.table)
            left = self._by_table.get(key, 1) - 1
            if left > 0:
                self._by_table[key] = left
            else:
                self._by_table.pop(key, None)
            if self._by_definition.get(shape.definition) == handle:
                del self._by_definition[shape.definition]
            self._rotated[handle] = (shape.definition, reason)
            if len(self._rotated) > 100_000:  # bounded memory: forget the oldest rotations
                for old in list(self._rotated)[:10_000]:
                    del self._rotated[old]
        return shape

    def least_recently_used(self) -> str | None:
        """The live handle used longest ago (entries a racing ``touch`` left behind are purged)."""
        used = list(self._last_used.items())  # copy: request threads may touch concurrently
        for handle, _ in used:
            if handle not in self._by_handle:
                self._last_used.pop(handle, None)
        live = [(t, h) for h, t in used if h in self._by_handle]
        return min(live)[1] if live else None
