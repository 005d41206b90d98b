"""The ShapeCache's messages and settings, and :func:`get_or_create_shape` (how requests ask it for a shape).

Why this module exists: request handlers, the stack and the collector's callbacks talk to the cache with
these messages; they need neither the actor nor what it imports (``sync.shapes.cache`` re-exports them).
``Built`` and ``Withdrawn`` are the cache's messages to itself (from its creation workers, and from
``invalidate`` on any thread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from sync.postgres.errors import DbConnectionError
from sync.shapes.consumer_rotation import LogRotation
from sync.shapes.definition import ShapeDefinition
from sync.shapes.directory import LiveShape

__all__ = [
    "Built",
    "CacheSettings",
    "CheckSchemas",
    "CreateShape",
    "DeleteShape",
    "GetShape",
    "InvalidateShape",
    "ListShapes",
    "Publish",
    "ShapeResult",
    "Unpublish",
    "Withdrawn",
    "get_or_create_shape",
]

Publish = Callable[[ShapeDefinition, str], DbConnectionError | None]  # the classified error or None
Unpublish = Callable[[ShapeDefinition, str], None]


@dataclass(frozen=True, slots=True)
class CreateShape:
    """ask -> ShapeResult | pykka.Future[ShapeResult]: the live shape for ``definition``, or a future of the
    result of building it (snapshot started) outside the cache's inbox; use :func:`get_or_create_shape`."""

    definition: ShapeDefinition


@dataclass(frozen=True, slots=True)
class Built:
    """tell (creation worker -> cache): the outcome of building ``handle``."""

    definition: ShapeDefinition
    handle: str
    outcome: tuple[LiveShape, pykka.ActorRef[Any]] | str


@dataclass(frozen=True, slots=True)
class ShapeResult:
    shape: LiveShape | None
    created: bool = False
    error: str | None = None  # why the shape could not be created (publication, storage, start failure)


@dataclass(frozen=True, slots=True)
class GetShape:
    """ask -> LiveShape | None."""

    handle: str


@dataclass(frozen=True, slots=True)
class DeleteShape:
    """ask -> bool: delete the shape (waiters complete with ``rotated``); False if unknown."""

    handle: str
    reason: str = "deleted"


@dataclass(frozen=True, slots=True)
class InvalidateShape:
    """tell/ask -> bool: the shape cannot continue (consumer, collector overload, schema change)."""

    handle: str
    reason: str


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """tell (any thread -> cache): ``shape`` was withdrawn from the directory for ``reason``: remove it."""

    shape: LiveShape
    reason: str


@dataclass(frozen=True, slots=True)
class ListShapes:
    """ask -> list[LiveShape]."""


@dataclass(frozen=True, slots=True)
class CheckSchemas:
    """tell: compare every live shape with the catalog now (off the inbox); mismatches are invalidated."""


@dataclass(frozen=True, slots=True)
class CacheSettings:
    max_shapes: int = 0  # 0: unlimited
    max_held: int = 10_000  # transactions a consumer may hold while its snapshot starts
    max_held_changes: int = 1_000_000  # and changes
    flush_bytes: int = 64 * 1024
    flush_interval: float = 0.05
    ask_timeout: float = 30.0
    max_parallel_builds: int = 16  # new shapes built at once (CreateShape)
    schema_check_interval: float = 10.0  # seconds between catalog checks (dropped/renamed tables); 0: never
    log_rotation: LogRotation | None = None  # when a shape's log is rotated for its size (None: never)


def get_or_create_shape(
    cache: pykka.ActorRef[Any], definition: ShapeDefinition, timeout: float
) -> ShapeResult:
    """The live shape for ``definition``, created if needed (concurrent creations run in parallel).

    Raises ``pykka.Timeout`` / ``pykka.ActorDeadError`` like an ask.
    """
    reply = cache.ask(CreateShape(definition), timeout=timeout)
    if isinstance(reply, pykka.Future):
        reply = reply.get(timeout=timeout)
    assert isinstance(reply, ShapeResult)
    return reply
