"""Storage outcomes the rest of the engine must act on, as exceptions.

The shape cache turns :class:`ShapeMustBeRecreated` (and its :class:`StorageCorrupt` subclass) into a new
handle and a 409 must-refetch for clients; the API turns :class:`ShapeGone` into a 409 as well.  Storage never
serves data it cannot vouch for: every doubt about the files ends in one of these.
"""

from __future__ import annotations

__all__ = ["ShapeGone", "ShapeMustBeRecreated", "StorageCorrupt", "StorageError"]


class StorageError(Exception):
    """Root of the storage errors."""


class ShapeMustBeRecreated(StorageError):
    """The stored shape cannot be resumed (e.g. its snapshot never completed): drop it, make a new handle."""


class StorageCorrupt(ShapeMustBeRecreated):
    """Metadata or log files are damaged or of another format version; nothing of the shape is served."""


class ShapeGone(StorageError):
    """The shape log was deleted while a reader still held it."""
