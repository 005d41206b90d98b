"""The ReplicationClient actor: owns the replication connection through its reader loop.

Why this module exists: hard spot 1 (architecture §6).  A pykka handler that blocked on the socket would
starve the inbox, so the actor spawns a :class:`~sync.replication.reader.ReplicationReader` loop (a greenlet
under gevent, a thread otherwise) that services the connection continuously, while the inbox receives
``AckLsn`` from the downstream.  The actor file only dispatches; the logic lives in ``reader.py``,
``stream.py``, ``pgoutput.py`` and ``acks.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from supervisors import SupervisedActor
from sync import runtime
from sync.postgres.backoff import Backoff
from sync.postgres.errors import classify
from sync.replication.pgoutput import RelationCache
from sync.replication.reader import ReaderConfig, ReplicationReader, Stopped
from sync.replication.sink import ReplicationSink
from sync.replication.status import ConnectionStatus

__all__ = ["AckLsn", "ReplicationClient"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AckLsn:
    """Every transaction delivered with a commit LSN <= ``lsn`` is durable (or affected no shape)."""

    lsn: int


class ReplicationClient(SupervisedActor):
    """Streams the slot into the sink and acknowledges what the downstream made durable.

    Owns:       the replication connection (via its reader loop), the decoder, the ack bookkeeping.
    Receives:   AckLsn (tell, from the ShapeLogCollector).
    Sends:      ReplicationEvent values to the sink (``deliver``; its futures are the backpressure).
    Crashes on: any failure of the reader loop (connection loss, server restart, misconfiguration,
                downstream failure); the error is classified, logged and put on ``ConnectionStatus``
                first, and the next incarnation waits ``Backoff.delay()`` before reconnecting.
    """

    def __init__(
        self,
        config: ReaderConfig,
        sink: ReplicationSink,
        *,
        lock_acquired: runtime.Event,
        cache: RelationCache | None = None,
        status: ConnectionStatus | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__()
        self._halt = runtime.Event()
        self.status = status or ConnectionStatus()
        self._backoff = backoff or Backoff()
        self.reader = ReplicationReader(
            config,
            sink,
            cache=cache or RelationCache(),
            status=self.status,
            backoff=self._backoff,
            lock_acquired=lock_acquired,
            stop=self._halt,
        )
        self.status.follow(self.reader)  # read-only view of the ack positions (metrics)
        self._loop: runtime.Handle | None = None

    def on_start(self) -> None:
        self._loop = runtime.spawn(self._run, name=f"replication-{self.reader.config.stream_id}")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, AckLsn):
            self.reader.ack(message.lsn)
            return None
        logger.warning("%s: unexpected message %r", self, message)
        return None

    def on_stop(self) -> None:
        self._shutdown()

    def on_failure(self, *_exc: object) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        self._halt.set()
        if self._loop is not None:
            self._loop.join(5.0)

    def _run(self) -> None:
        try:
            self.reader.run()
        except Stopped:
            return
        except BaseException as exc:  # every failure of the loop is a crash of the actor
            if self._halt.is_set():
                return
            error = classify(exc)
            if error is not exc:
                error.__cause__ = exc
            self.status.fail(error)
            self._backoff.failed(error)
            log = logger.error if error.misconfiguration else logger.warning
            log(
                "replication %s failed (%s): %s; retrying in %.1f s",
                self.reader.config.slot,
                error.kind,
                error.message,
                self._backoff.delay(),
            )
            self.crash(error)
