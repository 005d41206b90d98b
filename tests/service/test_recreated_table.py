"""A table dropped and created again under its name (a migration, a table swap), against the real service:
once the catalog check has invalidated the old table's shape, a client of it gets its 409 and the new
table's shape at once.

The request path keeps a resolved definition for a while (with the old table's OID); the creation it asked
for failed ("re-created"), and the client got a 503 "Failed to create shape" to retry, although the fresh
definition was at hand.
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import orjson

from tests.fixtures.pg import run_sql
from tests.fixtures.service import ServiceProcess, actor_nodes


def test_a_client_of_a_re_created_table_gets_its_409_and_the_new_shape(db_dsn: str, tmp_path: Path) -> None:
    run_sql(db_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'old')")
    svc = ServiceProcess(db_dsn, tmp_path, {"shapes": {"schema_check_interval_s": 0.3}}).start()
    try:
        svc.wait_healthy()
        code, headers, _ = svc.get("/v1/shape?table=t&offset=-1")
        assert code == 200
        old, offset = headers["electric-handle"], headers["electric-offset"]
        run_sql(
            db_dsn,
            "DROP TABLE t",
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "INSERT INTO t VALUES (2, 'new')",
        )
        deadline = time.monotonic() + 30
        while any(old in str(node.get("name")) for node in actor_nodes(svc)):  # the catalog check's doing
            assert time.monotonic() < deadline, "the old table's shape was not invalidated"
            time.sleep(0.05)  # (no event crosses the process boundary)

        code, headers, body = svc.get(f"/v1/shape?table=t&offset={offset}&handle={urllib.parse.quote(old)}")
        assert code == 409, body
        new = headers["electric-handle"]
        assert new != old
        code, headers, body = svc.get(f"/v1/shape?table=t&offset=-1&handle={urllib.parse.quote(new)}")
        assert code == 200 and headers["electric-handle"] == new
        assert [item["value"] for item in orjson.loads(body) if "key" in item] == [{"id": "2", "v": "new"}]
    finally:
        svc.stop()
