"""Against the real service: a client creating a shape while a transaction is already replicated but not
yet visible (its commit held between its commit record and its visibility, as synchronous replication
holds it) gets that transaction's row once it commits, never a copy without it.

The engine-level tests (tests/shapes/test_snapshot_race.py) show why; this one shows what a client sees.
"""

from __future__ import annotations

import threading
import urllib.parse
from pathlib import Path
from typing import Any

import orjson

from tests.fixtures.held_commit import held_commit
from tests.fixtures.pg import run_sql
from tests.fixtures.service import ServiceProcess
from tests.shapes.consumer_harness import wait_for


def _rows(body: bytes) -> dict[str, Any]:
    return {i["key"]: i["value"] for i in orjson.loads(body) if "key" in i}


def test_a_shape_created_during_a_held_commit_gets_its_row(db_dsn: str, tmp_path: Path) -> None:
    run_sql(db_dsn, "CREATE TABLE items (id int PRIMARY KEY, v text)", "INSERT INTO items VALUES (1, 'a')")
    svc = ServiceProcess(db_dsn, tmp_path).start()
    try:
        svc.wait_healthy()
        code, headers, _ = svc.get("/v1/shape?table=items&offset=-1")
        assert code == 200
        handle, offset = headers["electric-handle"], headers["electric-offset"]

        def replicated() -> bool:  # the existing shape's log has the row
            query = urllib.parse.urlencode({"table": "items", "handle": handle, "offset": offset})
            code, _, body = svc.get(f"/v1/shape?{query}")
            return code == 200 and '"public"."items"/"2"' in _rows(body)

        answers: list[tuple[int, dict[str, str], bytes]] = []

        def create() -> None:  # a new shape: its first request waits for the snapshot
            answers.append(svc.get("/v1/shape?table=items&where=id%3E0&offset=-1", timeout=60))

        with held_commit(db_dsn, "INSERT INTO items VALUES (2, 'b')", replicated=replicated):
            creating = threading.Thread(target=create)
            creating.start()
            # the new shape's snapshot waits for the held transaction (the service logs it)
            wait_for(lambda: "replicated but not yet visible" in svc.output() or bool(answers), timeout=30)
        creating.join(60)
        code, headers, body = answers[0]
        assert code == 200, body
        assert set(_rows(body)) == {'"public"."items"/"1"', '"public"."items"/"2"'}
    finally:
        svc.stop()
