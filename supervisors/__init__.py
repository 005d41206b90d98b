"""OTP-style supervision on pykka: the public API.

Naming is taken from Erlang/OTP (https://www.erlang.org/doc/design_principles/sup_princ and
https://learnyousomeerlang.com/supervisors): child specs, restart types, strategies, restart
intensity with escalation, dynamic supervisors, monitors and registered names. This package depends
only on pykka and the standard library; it works with plain threads and under gevent monkey patching
(patch before importing pykka or this package).

The rule every actor lives by (see `supervisors.actor`): an exception escaping any handler, ``tell``,
``ask`` or proxy call alike, crashes the actor and is reported to its supervisor; errors that are part of
an actor's contract are returned as values.

Actors that exist by the thousand (one per shape) subclass `HibernatingActor` (or are started as
``hibernating(SomeActor)``): same rules, but no thread/greenlet while their inbox is empty
(see `supervisors.hibernate`).

Quick tour::

    root = start_tree(lambda: Supervisor.start(
        [ChildSpec("db", DbActor.start), ChildSpec("web", lambda: WebActor.start(port=3000))],
        strategy=REST_FOR_ONE, name="engine"), timeout=10)
    snapshot(root).to_dict()   # health endpoint, from any thread, never asks
    stop_tree(root, timeout=30)
"""

from __future__ import annotations

from supervisors.actor import Crash, SupervisedActor, crash, kill
from supervisors.child_spec import ChildSpec, Kind, Restart
from supervisors.control import start_tree, stop_tree, wait_started
from supervisors.dynamic import (
    DynamicSupervisor,
    StartChild,
    TerminateChild,
    start_child,
    terminate_child,
)
from supervisors.errors import (
    AlreadyStarted,
    Crashed,
    ExitReason,
    Killed,
    MaxRestartsExceeded,
    NotSupervised,
    StartError,
    SupervisorError,
    describe_reason,
)
from supervisors.hibernate import HibernatingActor, hibernating
from supervisors.lifecycle import Down, Lifecycle, Monitor, demonitor, lifecycle_of, monitor
from supervisors.registry import Registry
from supervisors.snapshot import ChildView, NodeSnapshot, snapshot, which_children
from supervisors.strategies import (
    ONE_FOR_ALL,
    ONE_FOR_ONE,
    REST_FOR_ONE,
    OneForAll,
    OneForOne,
    RestartIntensity,
    RestForOne,
    Strategy,
)
from supervisors.supervisor import ChildDown, ChildStarted, Supervisor

__all__ = [
    "ONE_FOR_ALL",
    "ONE_FOR_ONE",
    "REST_FOR_ONE",
    "AlreadyStarted",
    "ChildDown",
    "ChildSpec",
    "ChildStarted",
    "ChildView",
    "Crash",
    "Crashed",
    "Down",
    "DynamicSupervisor",
    "ExitReason",
    "HibernatingActor",
    "Killed",
    "Kind",
    "Lifecycle",
    "MaxRestartsExceeded",
    "Monitor",
    "NodeSnapshot",
    "NotSupervised",
    "OneForAll",
    "OneForOne",
    "Registry",
    "RestForOne",
    "Restart",
    "RestartIntensity",
    "StartChild",
    "StartError",
    "Strategy",
    "SupervisedActor",
    "Supervisor",
    "SupervisorError",
    "TerminateChild",
    "crash",
    "demonitor",
    "describe_reason",
    "hibernating",
    "kill",
    "lifecycle_of",
    "monitor",
    "snapshot",
    "start_child",
    "start_tree",
    "stop_tree",
    "terminate_child",
    "wait_started",
    "which_children",
]
