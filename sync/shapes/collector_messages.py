"""The ShapeLogCollector's messages: what a consumer registers with and what it is routed.

Why a module of their own: consumers, storages, the snapshot worker and the tests import them without
the collector actor, and the collector stays about routing and batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from sync.offsets import LogOffset
from sync.replication.changes import Change
from sync.shapes.collector_routing import TableKey
from sync.shapes.durable_reports import DurableReports
from sync.shapes.xid import PgSnapshot

__all__ = [
    "ForgetVisible",
    "RegisterShape",
    "Registered",
    "ShapeBatch",
    "ShapeChanges",
    "ShapeDurable",
    "ShapeRun",
    "UnregisterShape",
    "flatten_routed",
    "shape_changes",
]


@dataclass(frozen=True, slots=True)
class RegisterShape:
    """ask (the consumer) -> Registered: from now on route changes of ``table`` matching ``clause`` to
    ``consumer``; ``snapshot``: a snapshot follows, which must see what was routed before (a reloaded shape
    takes none, and is answered no such transactions)."""

    handle: str
    table: TableKey
    clause: Any  # a compiled WHERE clause, or None for "every row"
    consumer: pykka.ActorRef[Any]
    snapshot: bool = True


@dataclass(frozen=True, slots=True)
class Registered:
    """The answer to ``RegisterShape``: where the shape's storage reports durability, and the xids of the
    transactions routed before (the one being routed included) that a new snapshot must see
    (:mod:`sync.shapes.routed_history`)."""

    reports: DurableReports | None
    routed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ForgetVisible:
    """tell (a consumer, once its snapshot is taken): every later snapshot sees what ``snapshot`` sees; the
    collector forgets those routed transactions."""

    snapshot: PgSnapshot


@dataclass(frozen=True, slots=True)
class UnregisterShape:
    """tell/ask: stop routing to ``handle`` and stop waiting for its durability."""

    handle: str


@dataclass(frozen=True, slots=True)
class ShapeDurable:
    """tell (a shape's storage): everything of ``handle`` up to ``offset`` is on disk."""

    handle: str
    offset: LogOffset


@dataclass(frozen=True, slots=True)
class ShapeChanges:
    """tell (to a consumer): the changes of one fragment that may concern the shape, in commit order.

    ``exact``: the routing index matched every Insert among ``changes`` exactly (a key hit on the shape's
    whole-clause equality, or a shape without WHERE): the shape's WHERE holds for them without evaluation.
    """

    xid: int
    commit_lsn: int
    changes: Sequence[Change]  # never modified once sent (the hot path hands over its list, no copy)
    begin: bool
    commit: bool
    exact: bool = False


@dataclass(frozen=True, slots=True)
class ShapeRun:
    """tell (to a consumer): consecutive whole transactions of one change each for the shape, flattened:
    ``items`` holds ``xid, commit_lsn, change, exact`` per transaction, in commit order.  The same as one
    ``ShapeChanges(xid, commit_lsn, [change], begin=True, commit=True, exact=exact)`` per transaction
    (:meth:`as_changes`).

    Why: when thousands of shapes share a burst most get one row per transaction; a message object and a
    list per (shape, transaction) were most of what the burst kept alive while it was routed (walked by the
    garbage collector's middle generation, 120-260 ms a burst at 10,000 shapes).  The collector appends to
    ``items`` only while it gathers the run; never modified once sent."""

    items: list[Any]

    def as_changes(self) -> list[ShapeChanges]:
        items = self.items
        return [
            shape_changes(items[i], items[i + 1], (items[i + 2],), True, True, items[i + 3])
            for i in range(0, len(items), 4)
        ]


@dataclass(frozen=True, slots=True)
class ShapeBatch:
    """tell (to a consumer): several ``ShapeChanges`` / ``ShapeRun`` in commit order (what was routed to it
    in one go)."""

    messages: tuple[ShapeChanges | ShapeRun, ...]


# ShapeChanges built on the hot path (one per affected shape per fragment) without the frozen dataclass
# __init__ (one object.__setattr__ per field); the object is identical and still immutable.
_new = object.__new__
_CHANGES_SETTERS = tuple(
    vars(ShapeChanges)[name].__set__ for name in ("xid", "commit_lsn", "changes", "begin", "commit", "exact")
)


def shape_changes(  # noqa: PLR0917 - the message's fields, in order
    xid: int, commit_lsn: int, changes: Sequence[Change], begin: bool, commit: bool, exact: bool
) -> ShapeChanges:
    """``ShapeChanges(...)`` for the hot path."""
    msg: ShapeChanges = _new(ShapeChanges)
    s_xid, s_lsn, s_changes, s_begin, s_commit, s_exact = _CHANGES_SETTERS
    s_xid(msg, xid)
    s_lsn(msg, commit_lsn)
    s_changes(msg, changes)
    s_begin(msg, begin)
    s_commit(msg, commit)
    s_exact(msg, exact)
    return msg


def flatten_routed(
    first: tuple[ShapeChanges | ShapeRun, ...], queued: Sequence[Any]
) -> tuple[ShapeChanges | ShapeRun, ...]:
    """``first`` and the routed messages queued behind it (a consumer takes them as one batch), flattened in
    order."""
    out = list(first)
    for msg in queued:
        if msg.__class__ is ShapeBatch:
            out.extend(msg.messages)
        else:
            out.append(msg)
    return tuple(out)
