"""Stopping thousands of idle shape subtrees under gevent: fast, and no child abandoned.

The failure it guards against: stopping the engine with 10,000 idle shapes took minutes and logged ~6,500
"did not stop within 5 s, abandoning it" warnings (every stop scanned pykka's registry list; every child's
timeout started with all the others')."""

from __future__ import annotations

from typing import Any

import pykka

from supervisors.refs_table import RefTable
from tests.fixtures.scenario import run_scenario
from tests.supervisors.actors import Journal, Worker


def _run(n: int, shutdown: float) -> dict[str, Any]:
    out: dict[str, Any] = run_scenario(
        "tests.supervisors.shutdown_scenario", str(n), str(shutdown), timeout=300
    )
    print(out)  # the figures, with -s
    return out


def test_thousands_of_idle_shapes_stop_quickly_without_abandoning_any() -> None:
    # shutdown=2 s per shape: 1 s each for its consumer and storage, far above what one idle actor needs
    out = _run(4_000, 2.0)
    assert out["stopped"] is True
    assert out["abandoned"] == 0  # the real event: a child stopping normally was given up on
    assert out["storages_stopped"] == 4_000  # every storage ran its on_stop (its log's final flush)
    assert out["left"] == 0
    assert out["stop_s"] < 20, out


def test_pykka_registry_keeps_its_order_and_behaviour_over_the_table() -> None:
    refs = [Worker.start(f"w{i}", Journal()) for i in range(4)]
    assert isinstance(pykka.ActorRegistry._actor_refs, RefTable)  # installed by importing supervisors
    assert pykka.ActorRegistry.get_all() == refs  # registration order, as pykka's list
    refs[1].stop(timeout=5)
    assert pykka.ActorRegistry.get_all() == [refs[0], refs[2], refs[3]]
    assert pykka.ActorRegistry.get_by_class(Worker) == [refs[0], refs[2], refs[3]]
    pykka.ActorRegistry.unregister(refs[1])  # not there any more: a no-op, as in pykka
    pykka.ActorRegistry.stop_all(block=True, timeout=5)
    assert pykka.ActorRegistry.get_all() == []
