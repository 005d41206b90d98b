"""The real service: `shapesync serve` under gunicorn with one gevent worker, against a real Postgres."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fixtures.service import ServiceProcess, actor_nodes


def _tree(service: ServiceProcess) -> dict[str, dict[str, Any]]:
    return {node["name"]: node for node in actor_nodes(service)}


def test_health_root_404_and_actor_tree(service: ServiceProcess) -> None:
    assert service.wait_healthy() == {"status": "active"}
    code, headers, body = service.get("/v1/health")
    assert (code, body) == (200, b'{"status":"active"}')
    assert headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert service.get("/")[0] == 200
    code, _, body = service.get("/nope")
    assert (code, body) == (404, b"Not found")
    nodes = _tree(service)
    for name in ("engine", "connection", "shapes", "replication_client", "shape_log_collector"):
        assert name in nodes, f"{name} missing from {sorted(nodes)}"
        assert nodes[name]["alive"] is True
        assert nodes[name]["restarts"] == 0
    assert nodes["engine"]["kind"] == "supervisor"


def test_crashed_actor_is_restarted_and_service_keeps_answering(service: ServiceProcess, db_dsn: str) -> None:
    service.wait_healthy()
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE backend_type = 'walsender' AND datname = current_database()"
        ).fetchall()
    assert killed == [(True,)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = _tree(service)
        client = nodes["replication_client"]
        if client["restarts"] >= 1 and client["alive"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"replication client not restarted: {nodes}")
    assert client["last_failure"]
    assert client["last_failure_at"] is not None
    assert service.wait_healthy() == {"status": "active"}


def test_sigterm_stops_promptly(db_dsn: str, tmp_path: Path) -> None:
    svc = ServiceProcess(db_dsn, tmp_path).start()
    svc.wait_healthy()
    started = time.monotonic()
    assert svc.stop() == 0
    assert time.monotonic() - started < 15
    assert "engine for stack 'e2e' started" in svc.output() or "starting engine" in svc.output()


def test_head_health_answers_like_get(service: ServiceProcess) -> None:
    import urllib.request  # noqa: PLC0415

    service.wait_healthy()
    req = urllib.request.Request(service.url + "/v1/health", method="HEAD")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["cache-control"] == "no-cache, no-store, must-revalidate"
        assert resp.read() == b""


def test_sigterm_with_parked_long_poll_and_idle_keepalive_stops_cleanly(db_dsn: str, tmp_path: Path) -> None:
    """Idle keep-alive connections and parked long-polls must not hold shutdown until the master's
    SIGKILL: the engine is stopped in order (its log line proves worker_exit/SIGTERM ran) well before
    graceful_timeout, and the long-poll is answered."""
    import http.client  # noqa: PLC0415
    import threading  # noqa: PLC0415

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int primary key)")
    svc = ServiceProcess(
        db_dsn, tmp_path, {"http": {"graceful_timeout_s": 20, "long_poll_timeout_ms": 20000}}
    )
    svc.start()
    svc.wait_healthy()
    code, headers, _ = svc.get("/v1/shape?table=t&offset=-1")
    assert code == 200
    handle = headers["electric-handle"]
    idle = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
    idle.request("GET", "/v1/health")
    assert idle.getresponse().read() == b'{"status":"active"}'  # now idle on a keep-alive connection
    answered: list[int] = []

    def long_poll() -> None:
        c = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
        c.request("GET", f"/v1/shape?table=t&offset=0_inf&handle={handle}&live=true")
        answered.append(c.getresponse().status)

    poller = threading.Thread(target=long_poll)
    poller.start()
    deadline = time.monotonic() + 10
    while "shapesync_live_waiters 1.0" not in svc.get("/metrics")[2].decode() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    assert svc.stop() == 0
    elapsed = time.monotonic() - started
    poller.join(10)
    assert elapsed < 8, f"shutdown took {elapsed:.1f}s:\n{svc.output()[-3000:]}"
    idle.close()
    assert "stopping engine for stack 'e2e'" in svc.output()
    assert answered and answered[0] in (200, 503)


def test_global_last_seen_lsn_is_known_before_any_transaction(service: ServiceProcess, db_dsn: str) -> None:
    """Right after start nothing has been routed yet, but the slot's confirmed position was processed.

    The service may have seen (and be about to confirm) more than the slot shows, never less than the slot
    had confirmed before the request, and never more than the server has written."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int primary key)")
    service.wait_healthy()
    slot_sql = "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'shapesync_slot_e2e'"
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        before = conn.execute(slot_sql).fetchone()
    code, _, body = service.get("/v1/shape?table=t&offset=now")
    assert code == 200
    seen = int(json.loads(body)[0]["headers"]["global_last_seen_lsn"])
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        written = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert before is not None and before[0] is not None and written is not None
    assert 0 < int(before[0]) <= seen <= int(written[0])
