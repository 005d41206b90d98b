"""Child specifications: what a supervisor needs to know to start, restart and stop a child.

Vocabulary from Erlang/OTP (`supervisor` child specs): a child is *permanent* (always restarted),
*transient* (restarted only after an abnormal exit) or *temporary* (never restarted). ``shutdown`` is
how long the supervisor waits for the child to stop before abandoning it (OTP's ``brutal_kill`` after a
timeout; see `supervisors.actor.kill`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pykka

__all__ = ["ChildSpec", "Kind", "Restart", "should_restart"]

Kind = Literal["worker", "supervisor"]


class Restart(enum.Enum):
    """When a child that exited is restarted."""

    PERMANENT = "permanent"
    """Always, whatever the exit reason."""
    TRANSIENT = "transient"
    """Only after an abnormal exit (a crash); a normal stop is final."""
    TEMPORARY = "temporary"
    """Never; the child is forgotten when it exits."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start one child.

    ``start`` is a zero-argument callable returning an already started ``pykka.ActorRef`` of a
    `SupervisedActor` (typically ``lambda: MyActor.start(args...)``). It is called again on each
    restart, so it must build fresh state every time. ``shutdown`` (seconds) bounds the orderly stop;
    for ``kind="supervisor"`` it must cover the whole subtree's shutdown.
    """

    id: str
    start: Callable[[], pykka.ActorRef[Any]]
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0
    kind: Kind = "worker"

    def __post_init__(self) -> None:
        if not self.id:
            msg = "ChildSpec.id must be a non-empty string"
            raise ValueError(msg)
        if not callable(self.start):
            msg = f"ChildSpec {self.id!r}: start must be a zero-argument callable"
            raise TypeError(msg)
        if not isinstance(self.restart, Restart):
            msg = f"ChildSpec {self.id!r}: restart must be a Restart, got {self.restart!r}"
            raise TypeError(msg)
        if self.shutdown <= 0:
            msg = f"ChildSpec {self.id!r}: shutdown must be > 0 seconds, got {self.shutdown!r}"
            raise ValueError(msg)
        if self.kind not in ("worker", "supervisor"):
            msg = f"ChildSpec {self.id!r}: kind must be 'worker' or 'supervisor'"
            raise ValueError(msg)


def should_restart(restart: Restart, reason: BaseException | None) -> bool:
    """OTP's rule: permanent always, transient only on a failure, temporary never."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return reason is not None
    return False
