"""Hypothesis state machine: random crash/start/stop sequences against a tree, checked by a model.

After every step the published snapshot must converge to what the model predicts (ids, restart counts,
up/down) — a dead child that went unnoticed would leave its restart count behind — and the live actors
it shows must be exactly pykka's live actors.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pykka
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from supervisors import (
    ONE_FOR_ALL,
    ONE_FOR_ONE,
    REST_FOR_ONE,
    ChildSpec,
    DynamicSupervisor,
    Restart,
    Strategy,
    Supervisor,
    crash,
    snapshot,
    start_child,
    start_tree,
    stop_tree,
    terminate_child,
    which_children,
)
from tests.supervisors.actors import Journal, eventually, spec

STATIC = {"p": Restart.PERMANENT, "t": Restart.TRANSIENT, "x": Restart.TEMPORARY}
HOW = st.sampled_from(["tell", "ask", "proxy", "crash", "stop"])


@dataclass
class Node:
    restart: Restart
    restarts: int = 0
    up: bool = True


def _kill_one(ref: pykka.ActorRef[Any], how: str) -> None:
    if how == "tell":
        ref.tell("boom")
    elif how == "ask":
        with pytest.raises(RuntimeError):
            ref.ask("boom", timeout=2)
    elif how == "proxy":
        with pytest.raises(ValueError, match="exploded"):
            ref.proxy().explode().get(timeout=2)
    elif how == "crash":
        crash(ref, ConnectionError("lost"))
    else:
        ref.tell("stop-self")


class TreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.journal = Journal()
        self.root: pykka.ActorRef[Any] | None = None
        self.static: dict[str, Node] = {}
        self.dynamic: dict[str, Node] = {}
        self.ids = itertools.count()
        self.strategy: Strategy = ONE_FOR_ONE

    @initialize(strategy=st.sampled_from([ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE]))
    def start(self, strategy: Strategy) -> None:
        self.strategy = strategy
        specs = [spec(n, self.journal, restart=r) for n, r in STATIC.items()]
        specs.append(
            ChildSpec("dyn", lambda: DynamicSupervisor.start(max_restarts=10_000), kind="supervisor")
        )
        self.root = start_tree(
            lambda: Supervisor.start(specs, strategy=strategy, max_restarts=10_000, name="root"),
            timeout=5,
        )
        self.static = {n: Node(r) for n, r in STATIC.items()}
        self.static["dyn"] = Node(Restart.PERMANENT)

    def teardown(self) -> None:
        if self.root is not None:
            assert stop_tree(self.root, 10)

    # -- helpers -------------------------------------------------------------------------------

    def _ref(self, sup: pykka.ActorRef[Any], child_id: str) -> pykka.ActorRef[Any]:
        ref = next(v.ref for v in which_children(sup) if v.id == child_id)
        assert ref is not None
        return ref

    def _dyn(self) -> pykka.ActorRef[Any]:
        assert self.root is not None
        return self._ref(self.root, "dyn")

    def _static_exit(self, name: str, crashed: bool) -> None:
        node = self.static[name]
        if node.restart is Restart.TEMPORARY:
            del self.static[name]
            return
        if node.restart is Restart.TRANSIENT and not crashed:
            node.up = False
            return
        order = list(self.static)
        for other in self.strategy.affected(order, name):
            if other != name and self.static[other].restart is Restart.TEMPORARY:
                del self.static[other]
                continue
            self.static[other].restarts += 1
            self.static[other].up = True
            if other == "dyn":
                self.dynamic.clear()

    # -- rules ---------------------------------------------------------------------------------

    @rule(name=st.sampled_from(["p", "t", "x", "dyn"]), how=HOW)
    def hit_static(self, name: str, how: str) -> None:
        node = self.static.get(name)
        if node is None or not node.up or (name == "dyn" and how != "crash"):
            return  # a supervisor has no "boom" handler: only crash() fails it
        assert self.root is not None
        _kill_one(self._ref(self.root, name), how)
        self._static_exit(name, crashed=how != "stop")

    @rule(restart=st.sampled_from(list(Restart)))
    def start_dynamic(self, restart: Restart) -> None:
        child_id = f"d{next(self.ids)}"
        start_child(self._dyn(), spec(child_id, self.journal, restart=restart))
        self.dynamic[child_id] = Node(restart)

    @precondition(lambda self: bool(self.dynamic))
    @rule(data=st.data(), how=HOW)
    def hit_dynamic(self, data: st.DataObject, how: str) -> None:
        child_id = data.draw(st.sampled_from(sorted(self.dynamic)))
        node = self.dynamic[child_id]
        _kill_one(self._ref(self._dyn(), child_id), how)
        restarted = node.restart is Restart.PERMANENT or (node.restart is Restart.TRANSIENT and how != "stop")
        if restarted:
            node.restarts += 1
        else:
            del self.dynamic[child_id]

    @precondition(lambda self: bool(self.dynamic))
    @rule(data=st.data())
    def terminate_dynamic(self, data: st.DataObject) -> None:
        child_id = data.draw(st.sampled_from(sorted(self.dynamic)))
        assert terminate_child(self._dyn(), child_id)
        del self.dynamic[child_id]

    # -- the check -----------------------------------------------------------------------------

    def _expected(self) -> list[tuple[str, int, bool, tuple[Any, ...]]]:
        dyn = tuple((i, n.restarts, True, ()) for i, n in self.dynamic.items())
        return [(i, n.restarts, n.up, dyn if i == "dyn" else ()) for i, n in self.static.items()]

    def _observed(self) -> list[tuple[str, int, bool, tuple[Any, ...]]]:
        assert self.root is not None
        snap = snapshot(self.root)

        def row(node: Any) -> tuple[str, int, bool, tuple[Any, ...]]:
            up = node.alive and node.status == "running"
            return (node.name, node.restarts, up, tuple(row(c) for c in node.children))

        return [row(c) for c in snap.children]

    @invariant()
    def snapshot_matches_reality(self) -> None:
        if self.root is None:
            return
        try:
            eventually(lambda: self._observed() == self._expected(), 5)
        except AssertionError:
            raise AssertionError(f"{self._observed()} != {self._expected()}") from None
        snap = snapshot(self.root)
        live_refs = {v.ref for v in which_children(self.root) if v.alive}
        live_refs |= {v.ref for v in which_children(self._dyn()) if v.alive}
        live_refs.add(self.root)
        assert set(pykka.ActorRegistry.get_all()) == live_refs
        assert all(n.alive for n in snap.walk() if n.status == "running")


TreeMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_tree_machine = TreeMachine.TestCase
