"""The Connection subtree: Lock, then ReplicationClient, under a rest_for_one supervisor.

Why this module exists: the lead wires the engine tree; this module gives it the Connection subtree ready
made.  rest_for_one because the client depends on the lock: a lost lock connection restarts both (the lock
is gone, so streaming must stop), a lost replication connection restarts only the client (the lock is
still ours).  State that must outlive restarts (status for health, restart backoff, relation cache, the
current client's ref for acknowledgements) lives in :class:`ConnectionHandles`::

    Connection (rest_for_one)
    ├─ Lock               AdvisoryLock: pg_try_advisory_lock(hashtext(<slot>)) on its own connection
    └─ ReplicationClient  reader loop: setup, START_REPLICATION, decode, deliver, acknowledge
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import pykka

from supervisors import REST_FOR_ONE, ChildSpec, Supervisor
from sync.postgres.backoff import Backoff
from sync.postgres.lock import AdvisoryLock, LockState
from sync.replication.client import AckLsn, ReplicationClient
from sync.replication.pgoutput import DEFAULT_MAX_BATCH, RelationCache
from sync.replication.reader import ReaderConfig
from sync.replication.sink import ReplicationSink
from sync.replication.status import ConnectionStatus, State

__all__ = ["ConnectionConfig", "ConnectionHandles", "connection_children", "start_connection_supervisor"]


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """Plain parameters (mapped from ``Settings`` by the engine)."""

    dsn: str
    stream_id: str = "default"
    max_batch: int = DEFAULT_MAX_BATCH
    max_in_flight: int = 4
    status_interval: float = 5.0
    receive_timeout: float = 60.0
    backoff_base: float = 1.0
    backoff_max: float = 10.0
    misconfiguration_retry: float = 30.0
    lock_poll_interval: float = 0.5
    lock_check_interval: float = 2.0
    connect_timeout: float = 30.0
    extra_options: str = ""

    @property
    def slot(self) -> str:
        return f"shapesync_slot_{self.stream_id}"

    @property
    def publication(self) -> str:
        return f"shapesync_pub_{self.stream_id}"

    def reader_config(self) -> ReaderConfig:
        return ReaderConfig(
            dsn=self.dsn,
            stream_id=self.stream_id,
            max_batch=self.max_batch,
            max_in_flight=self.max_in_flight,
            status_interval=self.status_interval,
            receive_timeout=self.receive_timeout,
            connect_timeout=self.connect_timeout,
            extra_options=self.extra_options,
        )


class ConnectionHandles:
    """What outlives the subtree's actors; also the engine's view of it (health, acknowledgements)."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.status = ConnectionStatus()
        self.lock = LockState()
        self.backoff = Backoff(
            base=config.backoff_base, cap=config.backoff_max, slow=config.misconfiguration_retry
        )
        self.cache = RelationCache()
        self.client: pykka.ActorRef[Any] | None = None

    def state(self) -> State:
        """``waiting`` (another instance holds the lock), ``starting`` or ``active``."""
        if self.lock.waiting:
            return "waiting"
        if not self.lock.acquired.is_set():
            return "starting"
        return self.status.state

    def health(self) -> dict[str, object]:
        return {**self.status.as_dict(), "status": self.state()}

    def ack(self, lsn: int) -> None:
        """Tell the current ReplicationClient incarnation that ``lsn`` is durable (dropped if none)."""
        client = self.client
        if client is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                client.tell(AckLsn(lsn))


def connection_children(
    config: ConnectionConfig, sink: ReplicationSink, handles: ConnectionHandles
) -> list[ChildSpec]:
    """Child specs in start order: Lock, then ReplicationClient."""

    def start_lock() -> pykka.ActorRef[Any]:
        return AdvisoryLock.start(
            config.dsn,
            config.slot,
            handles.lock,
            poll_interval=config.lock_poll_interval,
            check_interval=config.lock_check_interval,
            connect_timeout=config.connect_timeout,
            backoff=handles.backoff,
            on_error=handles.status.fail,
        )

    def start_client() -> pykka.ActorRef[Any]:
        handles.status.set_state("starting")
        ref = ReplicationClient.start(
            config.reader_config(),
            sink,
            lock_acquired=handles.lock.acquired,
            cache=handles.cache,
            status=handles.status,
            backoff=handles.backoff,
        )
        handles.client = ref
        return ref

    return [ChildSpec("lock", start_lock), ChildSpec("replication_client", start_client, shutdown=10.0)]


def start_connection_supervisor(
    config: ConnectionConfig,
    sink: ReplicationSink,
    handles: ConnectionHandles,
    *,
    max_restarts: int | None = None,
    max_seconds: float = 10.0,
) -> pykka.ActorRef[Any]:
    """Start the Connection supervisor (for a ``ChildSpec(..., kind="supervisor")`` or a test).

    Every incarnation first sleeps the shared backoff (at least ``backoff_base`` after a failure), which
    is what rate-limits restarts; the default restart intensity is sized so that a database that stays
    down while we back off never exhausts it (escalating would not bring the database back sooner).
    """
    if max_restarts is None:
        max_restarts = math.ceil(max_seconds / min(config.backoff_base, config.backoff_max)) + 2
    return Supervisor.start(
        connection_children(config, sink, handles),
        strategy=REST_FOR_ONE,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        name="connection",
    )
