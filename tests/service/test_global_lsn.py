"""``global_last_seen_lsn`` against the real service: a response never claims an LSN its shape's log does not
hold everything up to.

The official client retires a subset snapshot (``requestSnapshot``, TanStack DB's on-demand mode) once an
up-to-date's ``global_last_seen_lsn`` reaches the snapshot's ``database_lsn`` (spec §10); a change the
snapshot already holds that arrives afterwards is then applied a second time (a duplicate insert).  The LSN
used to be the last commit *routed* to the shapes, which a shape's storage may still be writing: a busy
shape answered up-to-date at a transaction's LSN without that transaction.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson

from tests.fixtures.pg import run_sql
from tests.fixtures.service import ServiceProcess

SHAPES = 12
ROWS = 30_000


def _read(svc: ServiceProcess, query: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    code, headers, body = svc.get(f"/v1/shape?{query}")
    assert code == 200, body
    return headers, orjson.loads(body)


def test_no_response_claims_an_lsn_its_shape_has_not_written(service: ServiceProcess, db_dsn: str) -> None:
    run_sql(db_dsn, "CREATE TABLE t (id int PRIMARY KEY, k int, v text)")
    service.wait_healthy()
    shapes = []
    for n in range(SHAPES):  # shapes that all take every row: their consumers work one after another
        where = urllib.parse.quote(f"k >= {-n}")
        headers, _ = _read(service, f"table=t&where={where}&offset=-1")
        shapes.append((f"table=t&where={where}", headers["electric-handle"], headers["electric-offset"]))
    run_sql(db_dsn, f"INSERT INTO t SELECT g, 1, repeat('x', 20) FROM generate_series(1, {ROWS}) g")

    without: list[int] = []  # the up-to-date LSN of every answer that did not hold the transaction yet
    lsn = None
    waiting = list(shapes)
    while waiting:
        query, handle, offset = waiting.pop(0)
        _, items = _read(service, f"{query}&offset={offset}&handle={urllib.parse.quote(handle)}")
        changes = [item for item in items if "key" in item]
        if changes:
            assert len(changes) == ROWS
            lsn = int(changes[0]["headers"]["lsn"])
            continue
        (control,) = items
        without.append(int(control["headers"]["global_last_seen_lsn"]))
        waiting.append((query, handle, offset))
    assert lsn is not None
    assert without, "every shape had the transaction at its first read: nothing was tested"
    assert [seen for seen in without if seen >= lsn] == []
