"""Errors and exit reasons of the supervision library.

Why this module exists: every other module of `supervisors/` raises or reports these, and callers
(`sync/`, `api/`) catch them without importing the machinery. The hierarchy::

    SupervisorError                  root of everything raised by this library
    ├─ StartError                    a child's start function raised, or the child died in on_start
    ├─ MaxRestartsExceeded           restart intensity exceeded: the supervisor gives up (escalates)
    ├─ AlreadyStarted                a dynamic child id or a registry name is already taken
    └─ NotSupervised                 the ref is not a `SupervisedActor` (no lifecycle to watch)

    Killed                           exit reason of an actor abandoned after its shutdown timeout
    Crashed                          wraps a non-Exception BaseException that ended an actor

An *exit reason* is ``None`` for a normal exit (``stop()``) and an exception otherwise, as in Erlang/OTP
where ``normal`` is the only non-failure reason.
"""

from __future__ import annotations

__all__ = [
    "AlreadyStarted",
    "Crashed",
    "ExitReason",
    "Killed",
    "MaxRestartsExceeded",
    "NotSupervised",
    "StartError",
    "SupervisorError",
    "describe_reason",
]

ExitReason = BaseException | None
"""``None`` means a normal exit; anything else is a failure (OTP's ``normal`` versus a crash)."""


class SupervisorError(Exception):
    """Root of the errors raised by `supervisors`."""


class StartError(SupervisorError):
    """A child could not be started: its start function raised or it crashed in ``on_start``."""

    def __init__(self, child_id: str, reason: ExitReason) -> None:
        super().__init__(f"child {child_id!r} failed to start: {describe_reason(reason)}")
        self.child_id = child_id
        self.reason = reason


class MaxRestartsExceeded(SupervisorError):
    """More than ``max_restarts`` restarts within ``max_seconds``: the supervisor fails."""

    def __init__(self, supervisor: str, max_restarts: int, max_seconds: float) -> None:
        super().__init__(
            f"supervisor {supervisor!r}: more than {max_restarts} restarts "
            f"within {max_seconds:g} s, giving up"
        )
        self.supervisor = supervisor


class AlreadyStarted(SupervisorError):
    """The id (dynamic child) or name (registry) is already in use by a live actor."""


class NotSupervised(SupervisorError, TypeError):
    """The actor is not a `SupervisedActor`, so it has no lifecycle to watch."""


class Killed(Exception):
    """Exit reason of an actor that did not stop within its shutdown timeout and was abandoned."""


class Crashed(Exception):
    """Exit reason wrapping a ``BaseException`` (e.g. ``GreenletExit``) that ended an actor."""


def describe_reason(reason: ExitReason) -> str:
    """Render an exit reason for logs and the health snapshot (``"normal"`` for ``None``)."""
    if reason is None:
        return "normal"
    text = str(reason)
    name = type(reason).__name__
    return f"{name}: {text}" if text else name
