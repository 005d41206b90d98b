"""Read-only snapshot of a supervision tree, for the health endpoint.

Why this module exists: an HTTP handler must be able to show the tree while actors crash and restart,
from any thread or greenlet, without asking a supervisor (which may be busy restarting, or be the very
actor that is stuck). Each supervisor therefore publishes one immutable `ChildView` per child into its
`TreeCell` on every change (O(1) per event, under a short lock that is never held across a yield);
readers copy the views and compute liveness from the refs themselves, so what they see is never
staler than the supervisor's own bookkeeping and "alive" is the actors' real state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pykka

from supervisors.child_spec import Kind
from supervisors.errors import NotSupervised
from supervisors.lifecycle import lifecycle_of
from supervisors.stripes import StripeLock, lock_for

__all__ = ["ChildView", "NodeSnapshot", "TreeCell", "snapshot", "which_children"]


@dataclass(frozen=True, slots=True)
class ChildView:
    """What a supervisor publishes about one child. ``status``: starting | running | down."""

    id: str
    kind: Kind
    ref: pykka.ActorRef[Any] | None
    status: str
    restarts: int = 0
    last_failure: str | None = None
    last_failure_at: float | None = None  # wall-clock seconds since the epoch

    @property
    def alive(self) -> bool:
        return self.ref is not None and self.ref.is_alive()


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node of the tree as seen by a reader."""

    name: str
    kind: Kind
    alive: bool
    status: str
    restarts: int
    last_failure: str | None
    last_failure_at: float | None
    children: tuple[NodeSnapshot, ...] = field(default=())
    strategy: str | None = None
    # Set when the children were summarised (see :func:`snapshot`): how many are not in ``children``, and
    # how many of all of them are in each status.
    omitted: int = 0
    child_status: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (times as ISO 8601 UTC)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "alive": self.alive,
            "status": self.status,
            "restarts": self.restarts,
            "last_failure": self.last_failure,
            "last_failure_at": (
                None
                if self.last_failure_at is None
                else datetime.fromtimestamp(self.last_failure_at, UTC).isoformat()
            ),
        }
        if self.kind == "supervisor":
            out["strategy"] = self.strategy
            out["children"] = [child.to_dict() for child in self.children]
            if self.child_status is not None:
                out["child_status"] = self.child_status
                out["omitted"] = self.omitted
        return out

    def walk(self) -> list[NodeSnapshot]:
        """This node and all descendants, depth first."""
        nodes = [self]
        for child in self.children:
            nodes.extend(child.walk())
        return nodes


class TreeCell:
    """A supervisor's published state: its name, strategy and one `ChildView` per child."""

    __slots__ = ("_views", "name", "strategy")

    def __init__(self, name: str, strategy: str) -> None:
        self._views: dict[str, ChildView] = {}
        self.name = name
        self.strategy = strategy

    @property
    def _lock(self) -> StripeLock:  # striped: one cell per supervisor, i.e. per shape
        return lock_for(self)

    def publish(self, view: ChildView) -> None:
        with self._lock:
            self._views[view.id] = view

    def remove(self, child_id: str) -> None:
        with self._lock:
            self._views.pop(child_id, None)

    def views(self) -> list[ChildView]:
        with self._lock:
            return list(self._views.values())


def _cell(ref: pykka.ActorRef[Any]) -> TreeCell | None:
    try:
        tree = lifecycle_of(ref).tree
    except NotSupervised:
        return None
    return tree if isinstance(tree, TreeCell) else None


def which_children(sup: pykka.ActorRef[Any]) -> list[ChildView]:
    """The children of a supervisor in start order, read without asking it (OTP which_children)."""
    cell = _cell(sup)
    if cell is None:
        msg = f"{sup} is not a supervisor"
        raise NotSupervised(msg)
    return cell.views()


def _status(view: ChildView, alive: bool) -> str:
    return view.status if alive or view.ref is None else "down"


def _node(view: ChildView, depth: int, limit: int | None) -> NodeSnapshot:
    cell = _cell(view.ref) if view.ref is not None and view.kind == "supervisor" else None
    children: tuple[NodeSnapshot, ...] = ()
    omitted = 0
    counts: dict[str, int] | None = None
    if cell is not None and depth < 64:
        views = cell.views()
        if limit is not None and len(views) > limit:
            # Summarised: every child counted, only the ones worth a look (not running, or restarted, or
            # failed once) shown, at most ``limit`` of them, without descending into the others.
            counts = {}
            notable: list[ChildView] = []
            for v in views:
                status = _status(v, v.alive)
                counts[status] = counts.get(status, 0) + 1
                if (status != "running" or v.restarts or v.last_failure) and len(notable) < limit:
                    notable.append(v)
            omitted = len(views) - len(notable)
            views = notable
        children = tuple(_node(v, depth + 1, limit) for v in views)
    alive = view.alive
    return NodeSnapshot(
        name=view.id,
        kind=view.kind,
        alive=alive,
        status=_status(view, alive),
        restarts=view.restarts,
        last_failure=view.last_failure,
        last_failure_at=view.last_failure_at,
        children=children,
        strategy=None if cell is None else cell.strategy,
        omitted=omitted,
        child_status=counts,
    )


def snapshot(root: pykka.ActorRef[Any], *, max_children: int | None = None) -> NodeSnapshot:
    """Snapshot of the tree under ``root`` (a supervisor ref); safe from any thread or greenlet.

    With ``max_children``, a supervisor with more children than that is summarised: its node counts them
    by status (``child_status``) and lists only those not running, restarted or with a failure, at most
    ``max_children`` of them (``omitted``: the others).  The whole tree of 10,000 shapes is ~30,000 nodes:
    ~230 ms of a reader's CPU (an event loop's, under gevent) and a 10 MB answer; summarised, a few ms."""
    life = lifecycle_of(root)
    cell = life.tree if isinstance(life.tree, TreeCell) else None
    reason = life.reason
    view = ChildView(
        id=cell.name if cell is not None else str(root),
        kind="supervisor" if cell is not None else "worker",
        ref=root,
        status="running" if life.started and root.is_alive() else "starting",
        last_failure=None if reason is None else f"{type(reason).__name__}: {reason}",
    )
    return _node(view, 0, max_children)
