"""The ShapeSupervisor and the per-shape subtree it starts (architecture §2).

::

    ShapeSupervisor (dynamic, one_for_one)        one per stack, children come and go with shapes
    └─ shape:<handle> (one_for_all, temporary, no restarts)
       ├─ storage   StorageActor: the one writer of the shape's log
       └─ consumer  Consumer: routed transactions -> log items; live waiters

Why one_for_all with no restarts: the consumer and its storage share one log; if either dies the other
cannot continue alone.  Restarting them in place is not safe either: while they were down the collector
routed transactions elsewhere (or nowhere), so a restarted consumer would serve a log with a hole.  The
subtree therefore stops for good, and the consumer's ``on_failure`` asks the ShapeCache to invalidate the
shape (new handle, clients refetch).  After a whole-engine restart the shapes are reopened from their durable
logs by the cache and Postgres resends everything after the acknowledged LSN, so nothing is lost there.

The storage's durability reports are wired to the consumer (``StorageDurable``), which forwards them to the
collector; the consumer is started second, so the wiring goes through a small cell filled in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka

from supervisors import ONE_FOR_ALL, ChildSpec, DynamicSupervisor, Restart, Supervisor
from sync.offsets import LogOffset
from sync.shapes.consumer import StorageDurable

__all__ = ["ShapeSupervisor", "shape_spec"]

StartStorage = Callable[[Callable[[LogOffset], None]], pykka.ActorRef[Any]]
StartConsumer = Callable[[pykka.ActorRef[Any]], pykka.ActorRef[Any]]


class ShapeSupervisor(DynamicSupervisor):
    """The dynamic supervisor of every shape subtree of a stack (see the module docstring).

    Owns:       one child per shape, by handle.
    Receives:   StartChild (ask) -> ActorRef | SupervisorError; TerminateChild (ask) -> bool (through
                ``supervisors.start_child`` / ``terminate_child``, from the ShapeCache).
    Sends:      stop to shape subtrees.
    Crashes on: restart intensity exceeded (never, in practice: shape subtrees are temporary).
    """

    def __init__(self, *, name: str = "shapes") -> None:
        super().__init__(name=name, max_restarts=1_000_000, max_seconds=1.0)


class _Cell:
    __slots__ = ("consumer",)

    def __init__(self) -> None:
        self.consumer: pykka.ActorRef[Any] | None = None

    def durable(self, offset: LogOffset) -> None:
        ref = self.consumer
        if ref is not None:
            try:
                ref.tell(StorageDurable(offset))
            except pykka.ActorDeadError:
                return


def shape_spec(
    handle: str,
    *,
    start_storage: StartStorage,
    start_consumer: StartConsumer,
    shutdown: float = 10.0,
) -> ChildSpec:
    """The child spec of one shape's subtree.

    ``start_storage(on_durable)`` starts the shape's StorageActor reporting to ``on_durable``;
    ``start_consumer(storage_ref)`` starts its Consumer.
    """

    def start() -> pykka.ActorRef[Any]:
        cell = _Cell()
        holder: dict[str, pykka.ActorRef[Any]] = {}

        def storage() -> pykka.ActorRef[Any]:
            ref = start_storage(cell.durable)
            holder["storage"] = ref
            return ref

        def consumer() -> pykka.ActorRef[Any]:
            ref = start_consumer(holder["storage"])
            cell.consumer = ref
            return ref

        children = [
            ChildSpec("storage", storage, shutdown=shutdown / 2),
            ChildSpec("consumer", consumer, shutdown=shutdown / 2),
        ]
        return Supervisor.start(children, strategy=ONE_FOR_ALL, max_restarts=0, name=f"shape:{handle}")

    return ChildSpec(handle, start, restart=Restart.TEMPORARY, shutdown=shutdown, kind="supervisor")
