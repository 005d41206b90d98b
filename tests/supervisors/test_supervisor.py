"""Static supervisors: strategies, crash visibility (tell / ask / proxy), restart types, ordering."""

from __future__ import annotations

from typing import Any

import pykka
import pytest

from supervisors import (
    ONE_FOR_ALL,
    ONE_FOR_ONE,
    REST_FOR_ONE,
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    crash,
    lifecycle_of,
    snapshot,
    start_tree,
    stop_tree,
    which_children,
)
from tests.supervisors.actors import Journal, Worker, eventually, spec


def _tree(journal: Journal, strategy: Strategy, names: str = "abc", **kw: object) -> pykka.ActorRef[Any]:
    specs = [spec(n, journal) for n in names]
    return start_tree(lambda: Supervisor.start(specs, strategy=strategy, name="root", **kw), timeout=5)


def _settled(root: pykka.ActorRef[Any]) -> None:
    """Wait until every child has a started, current incarnation."""
    eventually(lambda: all(v.status == "running" and v.alive for v in which_children(root)))


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [(ONE_FOR_ONE, "b"), (ONE_FOR_ALL, "abc"), (REST_FOR_ONE, "bc")],
)
def test_strategy_restarts_the_right_children(journal: Journal, strategy: Strategy, restarted: str) -> None:
    root = _tree(journal, strategy)
    assert journal.names("started") == ["a", "b", "c"]  # ordered start
    journal.ref("b").tell("boom")
    for name in restarted:
        journal.wait_count("started", name, 2)
    _settled(root)
    for name in "abc":
        expected = 2 if name in restarted else 1
        assert journal.count("started", name) == expected, (name, journal.events)
    # siblings are stopped in reverse order before the restart, restarted in start order
    stopped = journal.names("stopping")
    assert stopped == sorted((set(restarted) - {"b"}), reverse=True)
    restart_order = journal.names("started")[3:]
    assert restart_order == sorted(restart_order)
    snap = snapshot(root)
    assert [c.restarts for c in snap.children] == [int(n in restarted) for n in "abc"]
    assert snap.children[1].last_failure == "RuntimeError: b boom"
    assert stop_tree(root, 5)
    assert journal.names("stopping")[-3:] == ["c", "b", "a"]  # reverse-ordered shutdown


def test_ask_crash_is_visible_and_restarts(journal: Journal) -> None:
    root = _tree(journal, ONE_FOR_ONE, "a")
    old = journal.ref("a")
    with pytest.raises(ValueError, match="a exploded"):
        old.proxy().explode().get(timeout=2)
    assert not old.is_alive()  # crashed before the caller saw the exception: state was damaged
    journal.wait_count("started", "a", 2)
    assert journal.count("failed", "a") == 1  # on_failure ran for an ask crash too
    assert journal.ref("a") is not old
    assert journal.ref("a").proxy().incr().get(timeout=2) == 1  # fresh state
    assert stop_tree(root, 5)


def test_plain_ask_crash_restarts(journal: Journal) -> None:
    root = _tree(journal, ONE_FOR_ONE, "a")
    with pytest.raises(RuntimeError, match="a boom"):
        journal.ref("a").ask("boom", timeout=2)
    journal.wait_count("started", "a", 2)
    assert stop_tree(root, 5)


def test_crash_on_purpose_from_another_thread(journal: Journal) -> None:
    root = _tree(journal, ONE_FOR_ONE, "a")
    crash(journal.ref("a"), ConnectionError("socket closed"))
    journal.wait_count("started", "a", 2)
    _settled(root)
    assert snapshot(root).children[0].last_failure == "ConnectionError: socket closed"
    assert stop_tree(root, 5)


@pytest.mark.parametrize(
    ("restart", "how", "restarted"),
    [
        (Restart.PERMANENT, "stop", True),
        (Restart.PERMANENT, "crash", True),
        (Restart.TRANSIENT, "stop", False),
        (Restart.TRANSIENT, "crash", True),
        (Restart.TEMPORARY, "crash", False),
    ],
)
def test_restart_types(journal: Journal, restart: Restart, how: str, restarted: bool) -> None:
    root = start_tree(
        lambda: Supervisor.start([spec("a", journal, restart=restart), spec("z", journal)]),
        timeout=5,
    )
    a = journal.ref("a")
    if how == "stop":
        a.tell("stop-self")
    else:
        a.tell("boom")
    lifecycle_of(a).wait_exited(5)
    if restarted:
        journal.wait_count("started", "a", 2)
        _settled(root)
    else:
        # z is the canary: crash it and wait for its restart, so a's exit was processed before it
        journal.ref("z").tell("boom")
        journal.wait_count("started", "z", 2)
        assert journal.count("started", "a") == 1
        ids = [v.id for v in which_children(root)]
        assert ("a" in ids) == (restart is Restart.TRANSIENT)  # temporary children are forgotten
    assert stop_tree(root, 5)


def test_duplicate_ids_rejected(journal: Journal) -> None:
    with pytest.raises(ValueError, match="duplicate child id"):
        Supervisor.start([spec("a", journal), spec("a", journal)])


def test_nested_supervisors_start_in_order_and_stop_in_reverse(journal: Journal) -> None:
    inner = ChildSpec(
        "inner",
        lambda: Supervisor.start([spec("i1", journal), spec("i2", journal)], name="inner"),
        kind="supervisor",
        shutdown=5,
    )
    root = start_tree(
        lambda: Supervisor.start([spec("a", journal), inner, spec("z", journal)], name="root"),
        timeout=5,
    )
    assert journal.names("started") == ["a", "i1", "i2", "z"]
    snap = snapshot(root)
    assert [n.name for n in snap.walk()] == ["root", "a", "inner", "i1", "i2", "z"]
    assert all(n.alive for n in snap.walk())
    assert snap.to_dict()["children"][1]["children"][0]["name"] == "i1"
    assert stop_tree(root, 10)
    assert journal.names("stopping") == ["z", "i2", "i1", "a"]
    assert not any(n.alive for n in snapshot(root).walk())


def test_worker_ref_is_a_supervised_actor(journal: Journal) -> None:
    ref = Worker.start("solo", journal)
    assert lifecycle_of(ref).wait_settled(5)
    assert stop_tree(ref, 5)
    assert lifecycle_of(ref).exited
    assert lifecycle_of(ref).reason is None
