"""Dynamic supervisors: start/terminate at run time, start failures, restarts, 1,000 children."""

from __future__ import annotations

import threading
import time

import pytest

from supervisors import (
    AlreadyStarted,
    ChildSpec,
    DynamicSupervisor,
    MaxRestartsExceeded,
    Restart,
    StartError,
    lifecycle_of,
    snapshot,
    start_child,
    start_tree,
    stop_tree,
    terminate_child,
    which_children,
)
from tests.supervisors.actors import Journal, Worker, eventually, spec


def test_start_terminate_and_which_children(journal: Journal) -> None:
    sup = start_tree(lambda: DynamicSupervisor.start(name="dyn"), timeout=5)
    a = start_child(sup, spec("a", journal))
    b = start_child(sup, spec("b", journal))
    assert a.ask("ping", timeout=2) == "pong"
    assert [v.id for v in which_children(sup)] == ["a", "b"]
    with pytest.raises(AlreadyStarted):
        start_child(sup, spec("a", journal))
    assert terminate_child(sup, "a")
    assert not terminate_child(sup, "a")
    assert not a.is_alive()
    assert [v.id for v in which_children(sup)] == ["b"]
    assert b.is_alive()
    assert stop_tree(sup, 5)
    assert journal.names("stopped") == ["a", "b"]


def test_dynamic_start_failures_are_returned_not_crashing(journal: Journal) -> None:
    sup = start_tree(lambda: DynamicSupervisor.start(max_restarts=0), timeout=5)
    with pytest.raises(StartError, match="b cannot start"):
        start_child(sup, spec("b", journal, fail_on_start=True))

    def broken() -> Worker:
        raise OSError("nope")

    with pytest.raises(StartError, match="OSError: nope"):
        start_child(sup, ChildSpec("c", broken))  # type: ignore[arg-type]
    # neither counted against the intensity (max_restarts=0) nor left behind
    assert sup.is_alive()
    eventually(lambda: which_children(sup) == [])
    assert stop_tree(sup, 5)


def test_dynamic_child_restarts_and_escalates(journal: Journal) -> None:
    sup = start_tree(lambda: DynamicSupervisor.start(max_restarts=1, max_seconds=30), timeout=5)
    start_child(sup, spec("a", journal))
    start_child(sup, spec("t", journal, restart=Restart.TEMPORARY))
    journal.ref("t").tell("boom")  # temporary: forgotten, no restart counted
    assert lifecycle_of(journal.ref("t")).wait_exited(5)
    journal.ref("a").tell("boom")
    journal.wait_count("started", "a", 2)
    eventually(lambda: [(v.id, v.status) for v in which_children(sup)] == [("a", "running")])
    journal.ref("a").tell("boom")
    life = lifecycle_of(sup)
    assert life.wait_exited(5)
    assert isinstance(life.reason, MaxRestartsExceeded)


def test_thousand_children(journal: Journal) -> None:
    n = 1000
    sup = start_tree(lambda: DynamicSupervisor.start(name="many", max_restarts=50), timeout=5)
    t0 = time.monotonic()
    refs = [start_child(sup, spec(f"w{i}", journal), wait=False) for i in range(n)]
    for ref in refs:
        assert lifecycle_of(ref).wait_settled(10)
    started = time.monotonic() - t0
    assert len(which_children(sup)) == n
    # crash a few, terminate a few, and check the tree
    for i in range(0, n, 100):
        refs[i].tell("boom")
    for i in range(0, n, 100):
        journal.wait_count("started", f"w{i}", 2)
    for i in range(50, n, 100):
        assert terminate_child(sup, f"w{i}")
    eventually(lambda: all(v.status == "running" for v in which_children(sup)), 10)
    views = which_children(sup)
    assert len(views) == n - 10
    assert all(v.alive and v.status == "running" for v in views)
    assert sum(v.restarts for v in views) == 10
    assert len(snapshot(sup).children) == n - 10
    t1 = time.monotonic()
    assert stop_tree(sup, 30)
    stopped = time.monotonic() - t1
    assert started < 20
    assert stopped < 20


def test_hanging_dynamic_children_are_abandoned_concurrently(journal: Journal) -> None:
    release = threading.Event()
    sup = start_tree(DynamicSupervisor.start, timeout=5)
    for i in range(5):
        start_child(sup, spec(f"h{i}", journal, hang_on_stop=release, shutdown=0.3))
    t0 = time.monotonic()
    assert stop_tree(sup, 5)
    assert time.monotonic() - t0 < 1.2  # concurrent: not 5 x 0.3 s
    release.set()
    for i in range(5):
        journal.wait_count("stopped", f"h{i}", 1)


def test_slow_starting_child_does_not_block_the_supervisor(journal: Journal) -> None:
    gate = threading.Event()
    sup = start_tree(DynamicSupervisor.start, timeout=5)
    slow = start_child(sup, spec("slow", journal, gate=gate), wait=False)
    fast = start_child(sup, spec("fast", journal), timeout=2)  # answered while slow is starting
    assert fast.ask("ping", timeout=2) == "pong"
    assert not lifecycle_of(slow).started
    assert {v.id: v.status for v in which_children(sup)}["slow"] == "starting"
    gate.set()
    assert lifecycle_of(slow).wait_settled(5)
    assert stop_tree(sup, 5)


def test_a_snapshot_summarises_a_supervisor_with_many_children(journal: Journal) -> None:
    """With thousands of shapes the whole tree was tens of thousands of nodes for every health request; above
    ``max_children`` a supervisor's node counts its children by status and lists only the notable ones."""
    n = 150
    sup = start_tree(lambda: DynamicSupervisor.start(name="many", max_restarts=50), timeout=5)
    for i in range(n):
        start_child(sup, spec(f"w{i}", journal))
    for i in (7, 99):
        journal.ref(f"w{i}").tell("boom")
        journal.wait_count("started", f"w{i}", 2)
    eventually(lambda: all(v.status == "running" for v in which_children(sup)), 10)
    whole = snapshot(sup)
    assert len(whole.children) == n
    assert (whole.omitted, whole.child_status) == (0, None)
    assert "child_status" not in whole.to_dict()
    summary = snapshot(sup, max_children=100)
    assert [c.name for c in summary.children] == ["w7", "w99"]  # restarted: worth a look
    assert all(c.restarts == 1 and c.last_failure for c in summary.children)
    assert (summary.omitted, summary.child_status) == (n - 2, {"running": n})
    assert summary.to_dict()["child_status"] == {"running": n}
    capped = snapshot(sup, max_children=1)
    assert [c.name for c in capped.children] == ["w7"]
    assert capped.omitted == n - 1
    assert len(snapshot(sup, max_children=n).children) == n  # not above the limit: listed whole
    assert stop_tree(sup, 30)
