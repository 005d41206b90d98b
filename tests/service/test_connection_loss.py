"""Connections the server cut while they sat idle, against the real service: no request pays for them.

Postgres cuts a client connection when it restarts, when ``idle_session_timeout`` (often set on managed
databases) runs out, or when a proxy or a NAT between them drops an idle flow.  The engine keeps several
connections between uses (the catalog pool, the publication manager's, the subset pool's, the schema
checker's); each found cut at its next use failed that use: a 503 to the client whose request happened to
come first (``retry-after: 10`` for the catalog: the official client then waits ten seconds), while the
database was up all along.  Here every idle connection but the instance lock's is cut, and the next
requests must all succeed at once.
"""

from __future__ import annotations

import time

import orjson
import psycopg

from tests.fixtures.pg import run_sql
from tests.fixtures.service import ServiceProcess

_ENGINE_BACKENDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
    " AND pid <> pg_backend_pid() AND state = 'idle'"
    " AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"  # the instance lock's session
)


def _cut_idle_connections(dsn: str) -> int:
    """Terminate the engine's idle connections (all but the instance lock's) and wait until they are gone;
    how many there were."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [pid for (pid,) in conn.execute(_ENGINE_BACKENDS).fetchall()]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 30
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "terminated backends did not exit"
            conn.execute("SELECT pg_sleep(0.01)")  # (the server's exit has no event a client can wait on)
    return len(pids)


def test_connections_cut_while_idle_fail_no_request(service: ServiceProcess, db_dsn: str) -> None:
    run_sql(
        db_dsn,
        "CREATE TABLE items (id int PRIMARY KEY, v text)",
        "CREATE TABLE later (id int PRIMARY KEY, v text)",
        "INSERT INTO items VALUES (1, 'a'), (2, 'b')",
        "INSERT INTO later VALUES (1, 'x')",
    )
    service.wait_healthy()
    # Every kind of kept connection used once: the catalog's and the publication manager's (a new shape),
    # the subset pool's (a subset request).
    code, _, body = service.get("/v1/shape?table=items&offset=-1")
    assert code == 200, body
    subset = "/v1/shape?table=items&offset=-1&subset__where=id%20%3E%200"
    code, _, body = service.get(subset)
    assert code == 200, body

    assert _cut_idle_connections(db_dsn) >= 3

    # A new shape of a table the catalog has not read yet: the catalog pool, the publication manager.
    code, _, body = service.get("/v1/shape?table=later&offset=-1")
    assert code == 200, body
    assert [item["value"] for item in orjson.loads(body) if "key" in item] == [{"id": "1", "v": "x"}]
    # A subset of the existing shape: the subset pool.
    code, _, body = service.get(subset)
    assert code == 200, body
    assert sorted(item["value"]["id"] for item in orjson.loads(body)["data"]) == ["1", "2"]
