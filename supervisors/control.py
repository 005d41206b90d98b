"""Starting and stopping whole trees from outside the actor system.

Why this module exists: the service (gunicorn hooks, tests, benchmarks) starts the root supervisor
and, at exit, must stop everything in order and know whether it did. These helpers wait on lifecycle
events in the *caller's* thread/greenlet, with a timeout, and never ask an actor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pykka

from supervisors.errors import StartError
from supervisors.lifecycle import lifecycle_of

__all__ = ["start_tree", "stop_tree", "wait_started"]

logger = logging.getLogger(__name__)


def wait_started(ref: pykka.ActorRef[Any], timeout: float) -> None:
    """Wait until the actor (for a supervisor: its whole subtree) has started.

    Raises `StartError` if it died while starting and ``pykka.Timeout`` after ``timeout`` seconds.
    """
    life = lifecycle_of(ref)
    if not life.wait_settled(timeout):
        msg = f"{ref} did not finish starting within {timeout} s"
        raise pykka.Timeout(msg)
    if not life.started:
        raise StartError(str(ref), life.reason)


def start_tree(start: Callable[[], pykka.ActorRef[Any]], timeout: float) -> pykka.ActorRef[Any]:
    """Start a root actor/supervisor and wait for its subtree (OTP ``start_link`` semantics).

    On timeout the half-started tree is stopped before ``pykka.Timeout`` is raised.
    """
    deadline = time.monotonic() + timeout
    ref = start()
    try:
        wait_started(ref, timeout)
    except pykka.Timeout:
        stop_tree(ref, max(1.0, deadline - time.monotonic()))
        raise
    return ref


def stop_tree(ref: pykka.ActorRef[Any], timeout: float) -> bool:
    """Stop an actor and, for a supervisor, its subtree in reverse start order.

    Returns True once everything exited, False if it was still running after ``timeout`` seconds
    (children that hang are abandoned by their supervisor after their own shutdown timeout).
    """
    life = lifecycle_of(ref)
    ref.stop(block=False)
    if life.wait_exited(timeout):
        return True
    logger.warning("stop_tree(%s): still running after %g s", ref, timeout)
    return False
