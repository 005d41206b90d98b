"""One active instance per replication stream: a session advisory lock keyed on the slot name.

Why this module exists: two engines streaming the same slot would fight over it (and each would think it
owns the shapes).  The :class:`AdvisoryLock` actor, first child of the Connection subtree, holds
``pg_advisory_lock(hashtext(<slot>))`` on a plain connection of its own.  A second instance polls
``pg_try_advisory_lock`` and reports ``waiting`` until the first one's session ends (process killed,
connection lost), then takes over within ``poll_interval``.  Losing the lock connection crashes the actor,
and the Connection subtree (rest_for_one) restarts the ReplicationClient after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg

from supervisors import SupervisedActor
from sync import runtime
from sync.postgres.backoff import Backoff
from sync.postgres.errors import DbConnectionError, classify

__all__ = ["AdvisoryLock", "LockState"]

logger = logging.getLogger(__name__)


class LockState:
    """Shared with the ReplicationClient (waits on ``acquired``) and the health status (``waiting``)."""

    def __init__(self) -> None:
        self.acquired = runtime.Event()
        self.waiting = False


class AdvisoryLock(SupervisedActor):
    """Holds the instance lock for one replication stream.

    Owns:       a normal connection and, once acquired, the session advisory lock on it; a loop that
                polls for the lock, then checks the connection every ``check_interval``.
    Receives:   nothing besides stop (it answers no messages).
    Sends:      nothing; sets ``LockState.acquired`` / ``LockState.waiting``.
    Crashes on: connection failure or loss (the lock is gone with the session), after reporting it to
                ``on_error``; each incarnation first waits ``backoff.delay()``.
    """

    def __init__(
        self,
        dsn: str,
        key: str,
        state: LockState,
        *,
        poll_interval: float = 0.5,
        check_interval: float = 2.0,
        connect_timeout: float = 30.0,
        backoff: Backoff | None = None,
        on_error: Callable[[DbConnectionError], None] | None = None,
    ) -> None:
        super().__init__()
        self._backoff = backoff or Backoff()
        self._on_error = on_error
        self._dsn = dsn
        self._key = key
        self._state = state
        self._poll = poll_interval
        self._check = check_interval
        self._connect_timeout = connect_timeout
        self._halt = runtime.Event()
        self._loop: runtime.Handle | None = None

    def on_start(self) -> None:
        self._state.acquired.clear()
        self._loop = runtime.spawn(self._run, name=f"lock-{self._key}")

    def on_stop(self) -> None:
        self._shutdown()

    def on_failure(self, *_exc: object) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        self._halt.set()
        if self._loop is not None:
            self._loop.join(self._poll + self._check + 1.0)

    def _run(self) -> None:
        try:
            if self._halt.wait(self._backoff.delay()):
                return
            self._hold()
        except Exception as exc:  # every failure of the loop is a crash of the actor
            if not self._halt.is_set():
                error = classify(exc)
                self._backoff.failed(error)
                if self._on_error is not None:
                    self._on_error(error)
                logger.warning(
                    "instance lock %s: %s; retrying in %.1f s",
                    self._key,
                    error.message,
                    self._backoff.delay(),
                )
                self.crash(error)
        finally:
            self._state.acquired.clear()
            self._state.waiting = False

    def _hold(self) -> None:
        with psycopg.connect(
            self._dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
        ) as conn:
            logged = False
            while True:
                if self._halt.is_set():  # stopped while connecting: never take the lock as a zombie
                    return
                row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self._key,)).fetchone()
                if row is not None and row[0]:
                    break
                if not logged:
                    logger.info("another instance holds the lock for %s: waiting", self._key)
                    logged = True
                self._state.waiting = True
                if self._halt.wait(self._poll):
                    return
            self._state.waiting = False
            if self._halt.is_set():
                return  # closing the session releases the lock
            logger.info("acquired the instance lock for %s", self._key)
            self._state.acquired.set()
            while not self._halt.wait(self._check):
                conn.execute("SELECT 1")
