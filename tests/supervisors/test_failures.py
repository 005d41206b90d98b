"""Failure paths: intensity and escalation, start failures, hanging children, crash/stop races."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pykka
import pytest

from supervisors import (
    ONE_FOR_ALL,
    ChildSpec,
    Killed,
    MaxRestartsExceeded,
    StartError,
    Supervisor,
    crash,
    lifecycle_of,
    snapshot,
    start_tree,
    stop_tree,
    which_children,
)
from tests.supervisors.actors import Journal, Worker, eventually, spec


def test_intensity_exceeded_escalates_to_parent(journal: Journal) -> None:
    inner = ChildSpec(
        "inner",
        lambda: Supervisor.start([spec("w", journal)], name="inner", max_restarts=2, max_seconds=30),
        kind="supervisor",
    )
    root = start_tree(lambda: Supervisor.start([inner], name="root"), timeout=5)
    first_inner = which_children(root)[0].ref
    assert first_inner is not None
    for n in range(1, 4):  # 2 restarts are allowed, the 3rd crash exceeds the intensity
        journal.ref("w").tell("boom")
        journal.wait_count("started", "w", n + 1)
    life = lifecycle_of(first_inner)
    assert life.wait_exited(5)
    assert isinstance(life.reason, MaxRestartsExceeded)
    # the parent restarted the whole inner subtree: a fresh inner supervisor and a fresh w
    eventually(lambda: which_children(root)[0].status == "running")
    views = which_children(root)
    assert views[0].restarts == 1
    assert views[0].last_failure is not None
    assert "MaxRestartsExceeded" in views[0].last_failure
    assert views[0].ref is not first_inner
    assert stop_tree(root, 5)


def test_root_intensity_exceeded_fails_the_root(journal: Journal) -> None:
    root = start_tree(
        lambda: Supervisor.start([spec("w", journal)], name="root", max_restarts=0),
        timeout=5,
    )
    journal.ref("w").tell("boom")
    life = lifecycle_of(root)
    assert life.wait_exited(5)
    assert isinstance(life.reason, MaxRestartsExceeded)
    assert journal.count("started", "w") == 1
    assert not snapshot(root).alive


def test_static_child_failing_start_fails_the_supervisor_start(journal: Journal) -> None:
    specs = [spec("a", journal), spec("b", journal, fail_on_start=True), spec("c", journal)]
    with pytest.raises(StartError, match="child 'b' failed to start: RuntimeError: b cannot start"):
        start_tree(lambda: Supervisor.start(specs, name="root"), timeout=5)
    assert journal.names("started") == ["a"]  # c was never started
    assert journal.names("stopped") == ["a"]  # a was stopped again


def test_start_function_raising_fails_the_supervisor_start(journal: Journal) -> None:
    def broken() -> pykka.ActorRef[Any]:
        raise OSError("no such device")

    specs = [spec("a", journal), ChildSpec("b", broken)]
    with pytest.raises(StartError, match="OSError: no such device"):
        start_tree(lambda: Supervisor.start(specs, name="root"), timeout=5)
    assert journal.names("stopped") == ["a"]


def test_child_not_supervised_is_a_start_error(journal: Journal) -> None:
    class Plain(pykka.ThreadingActor):
        pass

    refs: list[pykka.ActorRef[Plain]] = []

    def start() -> pykka.ActorRef[Plain]:
        refs.append(Plain.start())
        return refs[-1]

    with pytest.raises(StartError, match="not a SupervisedActor"):
        start_tree(lambda: Supervisor.start([ChildSpec("p", start)]), timeout=5)
    # the supervisor told it to stop without waiting (it has no lifecycle to wait on): wait here, or the
    # no-actor-left check races its thread (pykka unregisters it before setting actor_stopped)
    assert refs[0].actor_stopped.wait(5)


def test_start_failure_during_restart_counts_against_intensity(journal: Journal) -> None:
    plan = itertools.chain([False], itertools.repeat(True))  # starts once, then never again

    def start() -> pykka.ActorRef[Any]:
        return Worker.start("w", journal, fail_on_start=next(plan))

    root = start_tree(
        lambda: Supervisor.start([ChildSpec("w", start)], name="root", max_restarts=3, max_seconds=30),
        timeout=5,
    )
    journal.ref("w").tell("boom")
    life = lifecycle_of(root)
    assert life.wait_exited(5)
    assert isinstance(life.reason, MaxRestartsExceeded)
    # 1 crash + 3 failed restart attempts allowed, the 4th restart exceeded the intensity
    assert journal.count("start_failed", "w") == 3


def test_restart_succeeds_after_transient_start_failures(journal: Journal) -> None:
    plan = iter([False, True, False])  # start, crash, one failed restart, then ok

    def start() -> pykka.ActorRef[Any]:
        return Worker.start("w", journal, fail_on_start=next(plan))

    root = start_tree(lambda: Supervisor.start([ChildSpec("w", start)], max_restarts=3), timeout=5)
    journal.ref("w").tell("boom")
    journal.wait_count("started", "w", 2)
    assert journal.count("start_failed", "w") == 1
    assert stop_tree(root, 5)


def test_child_hanging_on_stop_is_abandoned_after_its_timeout(journal: Journal) -> None:
    release = threading.Event()
    specs = [
        spec("a", journal),
        spec("hang", journal, hang_on_stop=release, shutdown=0.2),
        spec("z", journal),
    ]
    root = start_tree(lambda: Supervisor.start(specs, name="root"), timeout=5)
    hang = journal.ref("hang")
    t0 = time.monotonic()
    assert stop_tree(root, 5)
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 2.0
    assert journal.names("stopping") == ["z", "hang", "a"]  # shutdown went on after the timeout
    assert "hang" not in journal.names("stopped")
    assert isinstance(lifecycle_of(hang).reason, Killed)
    assert not hang.is_alive()
    assert pykka.ActorRegistry.get_all() == []
    release.set()  # let the abandoned daemon thread finish its on_stop
    journal.wait_count("stopped", "hang", 1)


def test_child_hanging_during_one_for_all_restart(journal: Journal) -> None:
    release = threading.Event()
    specs = [spec("hang", journal, hang_on_stop=release, shutdown=0.2), spec("b", journal)]
    root = start_tree(lambda: Supervisor.start(specs, strategy=ONE_FOR_ALL, name="root"), timeout=5)
    journal.ref("b").tell("boom")
    journal.wait_count("started", "hang", 2)
    journal.wait_count("started", "b", 2)
    release.set()
    journal.wait_count("stopped", "hang", 1)
    assert stop_tree(root, 5)


@pytest.mark.parametrize("round_", range(15))
def test_crash_and_stop_racing(journal: Journal, round_: int) -> None:
    root = start_tree(
        lambda: Supervisor.start([spec(n, journal) for n in "abc"], strategy=ONE_FOR_ALL, max_restarts=100),
        timeout=5,
    )
    victims = [journal.ref(n) for n in "abc"]
    go = threading.Event()

    def crasher() -> None:
        go.wait(5)
        for ref in victims[round_ % 3 :]:
            crash(ref, RuntimeError("racing"))  # tolerates a victim already stopped

    t = threading.Thread(target=crasher)
    t.start()
    go.set()
    assert stop_tree(root, 10)
    t.join(5)
    assert pykka.ActorRegistry.get_all() == []  # nothing restarted behind the stop
    assert not any(n.alive for n in snapshot(root).walk())


def test_start_tree_timeout_stops_the_half_started_tree(journal: Journal) -> None:
    gate = threading.Event()
    specs = [spec("a", journal), spec("slow", journal, gate=gate, shutdown=0.2)]
    with pytest.raises(pykka.Timeout):
        start_tree(lambda: Supervisor.start(specs, name="root"), timeout=0.3)
    assert journal.names("stopped") == ["a"]
    assert pykka.ActorRegistry.get_all() == []
    gate.set()  # the abandoned child finishes its on_start and exits on its own
