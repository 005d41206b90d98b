"""A table that others inherit from (``INHERITS``), against the real service: its shape is the table's own
rows (``SELECT ... FROM ONLY``), and publishing it must not publish its children.

Added to the publication without ``ONLY``, the children came along: an UPDATE or DELETE of a child without
a replica identity (no primary key: children do not inherit it) then failed in the application, and the
snapshot held the children's rows while their changes, published under the children's names, never reached
the shape.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson
import psycopg

from tests.fixtures.pg import run_sql
from tests.fixtures.service import ServiceProcess


def _values(items: list[dict[str, Any]]) -> dict[str, str]:
    return {item["key"]: item["value"]["v"] for item in items if "key" in item}


def test_a_parent_s_shape_is_its_own_rows_and_breaks_no_write_to_its_children(
    service: ServiceProcess, db_dsn: str
) -> None:
    run_sql(
        db_dsn,
        "CREATE TABLE parent (id int PRIMARY KEY, v text)",
        "CREATE TABLE child (extra text) INHERITS (parent)",
        "INSERT INTO parent VALUES (1, 'p1')",
        "INSERT INTO child VALUES (2, 'c2', 'x')",
    )
    service.wait_healthy()
    code, headers, body = service.get("/v1/shape?table=parent&offset=-1")
    assert code == 200, body
    assert _values(orjson.loads(body)) == {'"public"."parent"/"1"': "p1"}
    handle, offset = headers["electric-handle"], headers["electric-offset"]
    code, _, body = service.get("/v1/shape?table=parent&offset=-1&subset__where=id%20%3E%200")  # read alike
    assert code == 200, body
    assert _values(orjson.loads(body)["data"]) == {'"public"."parent"/"1"': "p1"}

    # The application's writes to the child work (it has no replica identity), and none reaches the shape.
    run_sql(
        db_dsn, "UPDATE child SET v = 'c2b'", "DELETE FROM child", "UPDATE parent SET v = 'p1b' WHERE id = 1"
    )
    with psycopg.connect(db_dsn) as conn:
        published = conn.execute("SELECT tablename FROM pg_publication_tables ORDER BY 1").fetchall()
    assert published == [("parent",)]

    seen: dict[str, str] = {}
    while not seen:  # a live request returns once the shape has new data
        q = f"/v1/shape?table=parent&offset={offset}&handle={urllib.parse.quote(handle)}&live=true"
        code, headers, body = service.get(q)
        assert code == 200, body
        seen.update(_values(orjson.loads(body)))
        offset = headers["electric-offset"]
    assert seen == {'"public"."parent"/"1"': "p1b"}
