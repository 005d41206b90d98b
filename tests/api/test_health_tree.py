"""``GET /v1/health/actors`` over a real supervision tree with more children than ``MAX_CHILDREN``: summarised
by default (counts by status, the notable children listed), whole with ``?full=true``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import falcon
import falcon.testing
import orjson
import pykka

from api.health import MAX_CHILDREN, ActorTreeResource
from supervisors import DynamicSupervisor, snapshot, start_child, start_tree, stop_tree, which_children
from tests.supervisors.actors import Journal, eventually, spec


class _Engine:
    """What the endpoint needs of the engine, over a real tree."""

    def __init__(self, root: pykka.ActorRef[Any]) -> None:
        self.root = root

    def status(self) -> str:
        return "active"

    def health_details(self, max_children: int | None = None) -> dict[str, Any]:
        return {"tree": snapshot(self.root, max_children=max_children).to_dict()}


def test_the_actor_tree_is_summarised_above_max_children_unless_full_is_asked() -> None:
    journal = Journal()
    n = MAX_CHILDREN + 20
    sup = start_tree(lambda: DynamicSupervisor.start(name="shapes", max_restarts=50), timeout=5)
    try:
        for i in range(n):
            start_child(sup, spec(f"shape{i}", journal))
        journal.ref("shape3").tell("boom")
        journal.wait_count("started", "shape3", 2)
        eventually(lambda: all(v.status == "running" for v in which_children(sup)), 10)
        app = falcon.App()
        app.add_route("/v1/health/actors", ActorTreeResource(SimpleNamespace(engine=_Engine(sup))))
        client = falcon.testing.TestClient(app)

        summary = client.simulate_get("/v1/health/actors")
        assert summary.status_code == 200
        tree = orjson.loads(summary.content)["tree"]
        assert tree["child_status"] == {"running": n}
        assert tree["omitted"] == n - 1
        assert [(c["name"], c["restarts"]) for c in tree["children"]] == [("shape3", 1)]

        full = orjson.loads(client.simulate_get("/v1/health/actors", params={"full": "true"}).content)["tree"]
        assert len(full["children"]) == n
        assert "child_status" not in full
        assert client.simulate_get("/v1/health/actors", params={"full": "maybe"}).status_code == 400
    finally:
        assert stop_tree(sup, 30)
