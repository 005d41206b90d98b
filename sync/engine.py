"""The engine: one stack's actor tree, started and stopped as a unit.

``Engine.start(settings)`` builds the tree drawn in :mod:`sync.stack` and waits until it has started;
``stop()`` stops it in reverse order (bounded by a timeout) and wakes every waiting request.  The HTTP layer
asks the engine for its status (``starting`` / ``waiting`` / ``active``) and for the live tree snapshot;
neither call ever asks an actor, so health stays answerable while actors crash and restart.
"""

from __future__ import annotations

import logging
from typing import Any

import pykka

from supervisors import snapshot, start_tree, stop_tree
from sync.replication.connection import ConnectionHandles
from sync.settings import Settings
from sync.stack import StackServices, build_services, build_stack, connection_config

__all__ = ["Engine"]

logger = logging.getLogger(__name__)
_RELOAD_S_PER_SHAPE = 0.02  # start budget per stored shape (5x the measured reload cost)


class Engine:
    """Owns the root supervisor of one stack."""

    def __init__(
        self,
        settings: Settings,
        root: pykka.ActorRef[Any],
        connection: ConnectionHandles,
        services: StackServices,
    ) -> None:
        self.settings = settings
        self.stack_id = settings.replication.stream_id
        self.root = root
        self.connection = connection
        self.services = services

    @classmethod
    def start(cls, settings: Settings, *, timeout: float = 60.0) -> Engine:
        handles = ConnectionHandles(connection_config(settings))
        services = build_services(settings)
        # The ShapeCache reloads every stored shape before replication may start (~4 ms each measured with
        # 10,000): let the start budget grow with them rather than fail a large but healthy restart.
        timeout = max(timeout, 30.0 + _RELOAD_S_PER_SHAPE * len(services.storage.handles()))
        root = start_tree(lambda: build_stack(settings, services, handles), timeout=timeout)
        logger.info("engine for stack %r started", settings.replication.stream_id)
        return cls(settings, root, handles, services)

    def status(self) -> str:
        """``starting``, ``waiting`` (another instance holds the replication lock) or ``active``."""
        return self.connection.state()

    def health_details(self, max_children: int | None = None) -> dict[str, Any]:
        """The connection's state and last error (with the fix), and the live supervision tree (a supervisor
        with more than ``max_children`` children summarised: :func:`supervisors.snapshot`)."""
        return {
            "stack_id": self.stack_id,
            "connection": self.connection.health(),
            "tree": snapshot(self.root, max_children=max_children).to_dict(),
        }

    def stop(self, timeout: float = 30.0) -> bool:
        logger.info("stopping engine for stack %r", self.stack_id)
        stopped = stop_tree(self.root, timeout)
        self.services.resolver.close()
        return stopped
