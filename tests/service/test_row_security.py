"""The service run by an ordinary role (REPLICATION, owner of its tables, not superuser), as the README
asks, and row-level security: a snapshot is never silently filtered by a policy that the replication stream
does not apply."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from tests.fixtures.service import ServiceProcess

ROLE = "shapesync_rls_app"


@pytest.fixture
def app_dsn(db_dsn: str) -> Iterator[str]:
    """``db_dsn`` as an ordinary role that owns the tables ``secret`` (row-level security forced, a policy
    hiding row 1) and ``open`` (no policy)."""
    with psycopg.connect(db_dsn, autocommit=True) as admin:
        dbname = admin.info.dbname
        admin.execute(f"DROP ROLE IF EXISTS {ROLE}")
        admin.execute(f"CREATE ROLE {ROLE} LOGIN REPLICATION")
        admin.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO {ROLE}')
        for table in ("secret", "open"):
            admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
            admin.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
            admin.execute(f"ALTER TABLE {table} OWNER TO {ROLE}")
        admin.execute("ALTER TABLE secret ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
        admin.execute("CREATE POLICY above_one ON secret USING (id > 1)")
    try:
        yield db_dsn.replace("user=postgres", f"user={ROLE}")
    finally:
        with psycopg.connect(db_dsn, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {ROLE} CASCADE")
            admin.execute(f"DROP ROLE {ROLE}")


def test_an_ordinary_role_serves_shapes_and_a_policy_never_filters_a_snapshot(
    app_dsn: str, tmp_path: Path
) -> None:
    assert "user=postgres" not in app_dsn
    svc = ServiceProcess(app_dsn, tmp_path).start()
    try:
        svc.wait_healthy()
        code, _, body = svc.get("/v1/shape?table=open&offset=-1")
        assert code == 200, body
        assert sorted(i["value"]["id"] for i in orjson.loads(body) if "key" in i) == ["1", "2"]
        # The stream sends row 1's changes whatever the policy says: a snapshot without it would be wrong
        # for ever after.  The snapshot fails instead, saying why.
        code, headers, body = svc.get("/v1/shape?table=secret&offset=-1")
        assert code == 503 and "retry-after" in headers, (code, body)
        assert b"row-level security" in body, body
    finally:
        svc.stop()
