"""The ShapeCache's creation bookkeeping (pure): one build per definition, bounded, doomed builds."""

from __future__ import annotations

from sync.shapes.cache_builds import Builds
from sync.shapes.definition import ShapeDefinition


def _definition(table: str) -> ShapeDefinition:
    return ShapeDefinition("public", table, 1, ("id",), ("id",), all_columns=True)


def test_one_build_per_definition_started_in_order_within_the_limit() -> None:
    a, b, c = _definition("a"), _definition("b"), _definition("c")
    builds: Builds[str] = Builds(limit=2)
    assert not builds.join(a, "w0")  # nothing under way yet
    builds.reserve("ha", a, "w1")
    assert builds.join(a, "w2")  # the second request waits for the same build
    builds.reserve("hb", b, "w3")
    builds.reserve("hc", c, "w4")
    assert len(builds) == 3
    assert builds.startable() == [("ha", a), ("hb", b)]
    assert builds.startable() == []  # both slots taken
    done = builds.finished(a, "ha")
    assert done.waiters == ["w1", "w2"] and done.doomed is None
    assert builds.startable() == [("hc", c)]  # the freed slot goes to the next in line
    assert len(builds) == 2 and not builds.join(a, "w5")


def test_a_shape_invalidated_while_built_is_doomed_and_stop_answers_every_waiter() -> None:
    a, b = _definition("a"), _definition("b")
    builds: Builds[str] = Builds(limit=4)
    builds.reserve("ha", a, "w1")
    builds.reserve("hb", b, "w2")
    builds.join(b, "w3")
    assert builds.doom("ha", "table dropped")
    assert not builds.doom("unknown", "no such build")
    builds.startable()
    assert builds.finished(a, "ha").doomed == "table dropped"
    assert builds.drain() == ["w2", "w3"]
    assert len(builds) == 0 and builds.drain() == []
