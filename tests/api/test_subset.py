"""Subset snapshots (spec §9), ``log=changes_only`` (spec §2) and txids (spec §10) against the real service.

One service and database for the module (see ``subset_support``); each test has its own table.
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.api.subset_support import (
    INVALID_SUBSETS,
    create_items_table,
    ids,
    module_database,
    module_service,
    module_tmp,
    pg_rows,
    request,
    subset,
    wire,
)
from tests.fixtures.pg import ClusterInfo
from tests.fixtures.service import ServiceProcess

__all__ = ["module_tmp"]

ROWS = 120
_TABLES = itertools.count(1)


@pytest.fixture(scope="module")
def dsn(pg_cluster: ClusterInfo) -> Iterator[str]:
    yield from module_database(pg_cluster, "subset_protocol")


@pytest.fixture(scope="module")
def svc(dsn: str, module_tmp: Path) -> Iterator[ServiceProcess]:
    extra: dict[str, dict[str, Any]] = {
        "database": {"snapshot_pool_size": 2, "snapshot_queue_timeout_s": 0.5},
        "http": {"long_poll_timeout_ms": 2000},
    }
    yield from module_service(dsn, module_tmp, extra)


@pytest.fixture
def table(dsn: str) -> str:
    """A fresh ``items`` table with ROWS rows: id, grp (0..4), name, score (NULL for every 7th), tag."""
    name = f"items_{next(_TABLES)}"
    create_items_table(dsn, name, ROWS)
    return name


# -- responses --------------------------------------------------------------------------------------------


def test_get_subset_headers_body_and_rows(svc: ServiceProcess, dsn: str, table: str) -> None:
    status, headers, body = subset(
        svc, table, where="grp = $1 AND score IS NOT NULL", params='{"1":"2"}', order_by="score DESC, id",
        limit="10",
    )  # fmt: skip
    assert status == 200, body
    assert headers["electric-snapshot"] == "true"
    assert headers["cache-control"] == "no-cache"
    assert headers["electric-handle"]
    assert headers["content-type"].startswith("application/json")
    assert '"id":{"type":"int4","pk_index":0,"not_null":true}' in headers["electric-schema"]
    assert headers["electric-offset"]  # the shape's offset as of the snapshot
    assert "etag" not in headers
    expected = pg_rows(
        dsn, f'SELECT id FROM "{table}" WHERE grp = 2 AND score IS NOT NULL ORDER BY score DESC, id LIMIT 10'
    )
    assert ids(body) == [r[0] for r in expected]
    mark = body["metadata"]["snapshot_mark"]
    assert isinstance(mark, int)
    first = body["data"][0]
    assert first["key"] == f'"public"."{table}"/"{expected[0][0]}"'
    assert first["headers"] == {"operation": "insert", "relation": ["public", table], "snapshot_mark": mark}
    assert set(first["value"]) == {"id", "grp", "name", "score", "tag"}
    assert all(isinstance(v, str) for v in first["value"].values())


def test_a_get_answers_with_the_headers_falcon_sends(svc: ServiceProcess, table: str) -> None:
    """Under our worker a GET subset leaves pre-rendered (api/raw_response.py), a POST through Falcon: the
    same headers in the same order, with the request's own id and CORS origin."""
    query = urllib.parse.urlencode(
        {"table": table, "offset": "-1", "subset__where": "grp = $1", "subset__params": '{"1":"2"}',
         "subset__order_by": "id", "subset__limit": "3"}
    )  # fmt: skip
    own_id = "client-chosen-request-id-0002"
    varying = {"date", "x-request-id", "access-control-allow-origin"}
    for headers in ({}, {"Origin": "https://app.example", "X-Request-Id": own_id}):
        got = wire(svc, "GET", f"/v1/shape?{query}", headers)
        reference = wire(svc, "POST", f"/v1/shape?{query}", headers)
        assert got[0] == reference[0] == 200
        assert [name for name, _ in got[1]] == [name for name, _ in reference[1]]
        assert [h for h in got[1] if h[0] not in varying] == [h for h in reference[1] if h[0] not in varying]
        values = dict(got[1])
        assert values["access-control-allow-origin"] == headers.get("Origin", "*")
        assert values["x-request-id"] == own_id if headers else len(values["x-request-id"]) == 20
        rows = [[item["value"] for item in json.loads(body)["data"]] for body in (got[2], reference[2])]
        assert rows[0] == rows[1] and len(rows[0]) == 3


def test_no_matching_row_gives_empty_data_with_metadata(svc: ServiceProcess, table: str) -> None:
    status, _, body = subset(svc, table, where="id < 0", order_by="id", limit="5")
    assert status == 200, body
    assert body["data"] == []
    assert set(body["metadata"]) == {"xmin", "xmax", "xip_list", "database_lsn", "snapshot_mark"}


def test_post_body_forms_and_non_string_params(svc: ServiceProcess, dsn: str, table: str) -> None:
    expected = [
        r[0] for r in pg_rows(dsn, f'SELECT id FROM "{table}" WHERE grp = 3 ORDER BY id LIMIT 5 OFFSET 2')
    ]
    flat = {"where": "grp = $1", "params": {"1": 3}, "order_by": "id", "limit": 5, "offset": 2}
    for body in (flat, {"subset": flat}, {**flat, "limit": "5", "offset": "2", "params": '{"1":"3"}'}):
        status, headers, got = request(svc, {"table": table, "offset": "-1"}, method="POST", body=body)
        assert status == 200, got
        assert headers["electric-snapshot"] == "true" and headers["cache-control"] == "no-cache"
        assert ids(got) == expected
    # the query-string form on a POST with an empty body is a subset too
    status, _, got = request(
        svc,
        {"table": table, "offset": "-1", "subset__where": "id < 4", "subset__order_by": "id"},
        method="POST",
    )
    assert status == 200 and ids(got) == [1, 2, 3]


def test_subset_where_is_anded_with_the_shape_where(svc: ServiceProcess, dsn: str, table: str) -> None:
    params = {"table": table, "offset": "-1", "where": "tag = 'even'", "subset__where": "grp IN (1, 2)"}
    status, _, body = request(svc, params)
    assert status == 200, body
    expected = pg_rows(dsn, f"SELECT id FROM \"{table}\" WHERE tag = 'even' AND grp IN (1, 2)")
    assert sorted(ids(body)) == sorted(r[0] for r in expected)
    # columns of the shape are the selected ones; the subset may filter on any queryable column
    params = {"table": table, "offset": "-1", "columns": "id,name", "subset__where": "score = 0"}
    status, _, body = request(svc, params)
    assert status == 200, body
    assert {tuple(sorted(i["value"])) for i in body["data"]} == {("id", "name")}
    assert sorted(ids(body)) == sorted(
        r[0] for r in pg_rows(dsn, f'SELECT id FROM "{table}" WHERE score = 0')
    )


@pytest.mark.parametrize(
    "order_by",
    [
        "score NULLS FIRST, id",
        "score DESC NULLS LAST, id DESC",
        "score ASC NULLS LAST, id",
        '"score" desc, "id" asc',
        "tag, grp DESC, id",
    ],
)
def test_ordering_and_pages_match_postgres(svc: ServiceProcess, dsn: str, table: str, order_by: str) -> None:
    for limit, offset in ((7, 0), (7, 7), (50, 100)):
        status, _, body = subset(svc, table, order_by=order_by, limit=str(limit), offset=str(offset))
        assert status == 200, body
        expected = pg_rows(dsn, f'SELECT id FROM "{table}" ORDER BY {order_by} LIMIT {limit} OFFSET {offset}')
        assert ids(body) == [r[0] for r in expected], (order_by, limit, offset)


def test_metadata_matches_pg_current_snapshot(svc: ServiceProcess, dsn: str, table: str) -> None:
    # a transaction left open while the subset runs: its row must not be in the data, its xid not visible
    assert subset(svc, table, where="id = 1")[0] == 200  # create the shape (publication) first
    with psycopg.connect(dsn) as open_tx, psycopg.connect(dsn, autocommit=True) as conn:
        open_tx.execute(f'INSERT INTO "{table}" VALUES (9001, 1, $$open$$, 1, $$x$$)')
        open_xid = int(open_tx.execute("SELECT pg_current_xact_id()::xid::text").fetchone()[0])  # type: ignore[index]
        with conn.transaction():
            conn.execute(f'INSERT INTO "{table}" VALUES (9002, 1, $$done$$, 1, $$x$$)')
            done_xid = int(conn.execute("SELECT pg_current_xact_id()::xid::text").fetchone()[0])  # type: ignore[index]
        before = conn.execute(
            "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn() - '0/0'"
        ).fetchone()
        status, _, body = subset(svc, table, where="id > 9000")
        after = conn.execute(
            "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn() - '0/0'"
        ).fetchone()
        open_tx.rollback()
    assert status == 200, body
    assert before is not None and after is not None
    meta = body["metadata"]
    xmin, xmax, xip = int(meta["xmin"]), int(meta["xmax"]), {int(x) for x in meta["xip_list"]}
    b_xmin, b_xmax, _ = before[0].split(":")
    a_xmin, a_xmax, _ = after[0].split(":")
    assert int(b_xmin) <= xmin <= int(a_xmin)
    assert int(b_xmax) <= xmax <= int(a_xmax)
    assert int(before[1]) <= int(meta["database_lsn"]) <= int(after[1])
    assert all(isinstance(x, str) for x in meta["xip_list"])

    def visible(x: int) -> bool:
        return x < xmin or (x < xmax and x not in xip)

    assert visible(done_xid)
    assert not visible(open_xid)
    assert ids(body) == [9002]


# -- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub", "errors"), INVALID_SUBSETS, ids=[str(i) for i in range(len(INVALID_SUBSETS))]
)
def test_validation_errors_nested_under_subset(
    svc: ServiceProcess, table: str, sub: dict[str, str], errors: dict[str, list[str]]
) -> None:
    status, headers, body = subset(svc, table, **sub)
    assert status == 400, body
    assert body == {"message": "Invalid request", "errors": {"subset": errors}}
    assert "electric-snapshot" not in headers
    # the same through a POST body
    status, _, body = request(svc, {"table": table, "offset": "-1"}, method="POST", body=sub)
    assert status == 400
    assert body == {"message": "Invalid request", "errors": {"subset": errors}}


@pytest.mark.parametrize(
    "order_by",
    ["id + 1", "lower(name)", "id ASC DESC", "id NULLS", "id,", ",id", "id; DROP TABLE x", "nope", "1"],
)
def test_order_by_accepts_only_column_references(svc: ServiceProcess, table: str, order_by: str) -> None:
    status, _, body = subset(svc, table, order_by=order_by, limit="3")
    assert status == 400, body
    assert list(body["errors"]["subset"]) == ["order_by"]


def test_queryable_columns(svc: ServiceProcess, dsn: str, table: str) -> None:
    base = {"table": table, "offset": "-1", "queryable_columns": "id,grp,score"}
    # the default for columns
    status, _, body = request(svc, {**base, "subset__where": "grp = 1", "subset__order_by": "score, id"})
    assert status == 200, body
    assert {tuple(sorted(i["value"])) for i in body["data"]} == {("grp", "id", "score")}
    expected = pg_rows(dsn, f'SELECT id FROM "{table}" WHERE grp = 1 ORDER BY score, id')
    assert ids(body) == [r[0] for r in expected]
    # where / order_by outside the allow-list
    status, _, body = request(svc, {**base, "subset__where": "tag = 'odd'"})
    assert status == 400 and list(body["errors"]["subset"]) == ["where"]
    status, _, body = request(svc, {**base, "subset__order_by": "name"})
    assert status == 400 and list(body["errors"]["subset"]) == ["order_by"]
    # columns outside the allow-list
    status, _, body = request(svc, {**base, "columns": "id,name"})
    assert status == 400 and list(body["errors"]) == ["columns"]
    # the allow-list must hold the primary key
    for extra in ({"columns": "id,grp"}, {}):
        params = {
            "table": table,
            "offset": "-1",
            "queryable_columns": "grp",
            "subset__where": "grp = 1",
            **extra,
        }
        status, _, body = request(svc, params)
        assert status == 400, body
        assert any("id" in m for msgs in body["errors"].values() for m in msgs), body


def test_shape_params_are_still_validated(svc: ServiceProcess, table: str) -> None:
    status, _, body = request(svc, {"table": table, "subset__where": "id = 1"})
    assert status == 400 and body["errors"] == {"offset": ["can't be blank"]}
    status, _, body = request(svc, {"table": "missing_table", "offset": "-1", "subset__where": "id = 1"})
    assert status == 400 and list(body["errors"]) == ["table"]
    status, _, _ = request(svc, {"table": table, "offset": "-1", "where": "id > 2"})
    status, headers, body = request(
        svc, {"table": table, "offset": "0_0", "handle": "1-1", "where": "id > 2", "subset__where": "id = 1"}
    )
    assert status == 409 and headers["electric-handle"] != "1-1"


def test_subset_on_a_new_shape_comes_after_the_shapes_snapshot(svc: ServiceProcess, table: str) -> None:
    # TanStack's on-demand mode creates its changes_only shape with a subset at offset=now: the subset must be
    # taken after the shape's own snapshot, and its offset must be a real position in the shape's log
    params = {"table": table, "offset": "now", "log": "changes_only", "subset__where": "id = 7"}
    status, headers, body = request(svc, params)
    assert status == 200, body
    assert ids(body) == [7]
    assert headers["electric-offset"] != "-1"
    handle = headers["electric-handle"]
    status, headers, body = request(svc, {**params, "offset": headers["electric-offset"], "handle": handle})
    assert status == 200, body
    status, headers, log = request(
        svc, {"table": table, "log": "changes_only", "offset": headers["electric-offset"], "handle": handle}
    )
    assert status == 200, log
    assert [i["headers"].get("control") for i in log] == ["up-to-date"]


def test_handle_and_offset_echo(svc: ServiceProcess, table: str) -> None:
    status, headers, _ = request(svc, {"table": table, "offset": "-1"})
    assert status == 200
    handle = headers["electric-handle"]
    status, headers, body = request(
        svc, {"table": table, "offset": "0_inf", "handle": handle, "subset__where": "id = 5"}
    )
    assert status == 200, body
    assert headers["electric-handle"] == handle
    assert headers["electric-offset"] == "0_inf"  # the client's own position: it never skips log entries
    assert ids(body) == [5]


def test_saturated_subsets_get_503_with_retry_after(svc: ServiceProcess, dsn: str, table: str) -> None:
    status, _, _ = subset(svc, table, where="id = 1")  # the shape exists before the table is locked
    assert status == 200
    results: list[int] = []
    with psycopg.connect(dsn) as locker:
        locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        blocked = [
            threading.Thread(target=lambda: results.append(subset(svc, table, where="id = 2")[0]))
            for _ in range(2)
        ]
        for t in blocked:
            t.start()
        # both pool connections are now waiting on the lock (pool size 2): the next request must be refused
        with psycopg.connect(dsn, autocommit=True) as probe:
            deadline_rows: list[Any] = []
            for _ in range(200):
                deadline_rows = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchall()
                if deadline_rows[0][0] >= 2:
                    break
                probe.execute("SELECT pg_sleep(0.02)")
            assert deadline_rows[0][0] >= 2
        status, headers, body = subset(svc, table, where="id = 3")
        assert status == 503, body
        assert headers["retry-after"] == "1"
        assert "message" in body
        locker.rollback()
    for t in blocked:
        t.join(30)
    assert results == [200, 200]


# -- changes_only and txids ------------------------------------------------------------------------------


def test_changes_only_log_has_snapshot_end_only_then_changes_with_txids(
    svc: ServiceProcess, dsn: str, table: str
) -> None:
    params = {"table": table, "offset": "-1", "log": "changes_only"}
    status, headers, body = request(svc, params)
    assert status == 200, body
    assert [item["headers"].get("control") for item in body] == ["snapshot-end"]
    handle, offset = headers["electric-handle"], headers["electric-offset"]
    full_status, full_headers, full_body = request(svc, {"table": table, "offset": "-1"})
    assert full_status == 200 and full_headers["electric-handle"] != handle
    assert len(full_body) == ROWS + 1  # the full shape is a different shape with its rows
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(f'INSERT INTO "{table}" VALUES (5000, 1, $$new$$, 1, $$x$$)')
        conn.execute(f'UPDATE "{table}" SET name = $$changed$$ WHERE id = 3')
        xid = int(conn.execute("SELECT pg_current_xact_id()::xid::text").fetchone()[0])  # type: ignore[index]
    items: list[dict[str, Any]] = []
    for _ in range(10):
        status, headers, body = request(svc, {**params, "offset": offset, "handle": handle, "live": "true"})
        assert status == 200, body
        offset = headers["electric-offset"]
        items += [i for i in body if "key" in i]
        if len(items) >= 2:
            break
    assert [(i["headers"]["operation"], i["value"]["id"]) for i in items] == [
        ("insert", "5000"),
        ("update", "3"),
    ]
    assert all(i["headers"]["txids"] == [xid] for i in items)


def test_identifiers_with_quotes_and_percent_signs(svc: ServiceProcess, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('CREATE TABLE "we%ird" (id int PRIMARY KEY, "a%b" int NOT NULL, "q""x" text)')
        conn.execute('INSERT INTO "we%ird" SELECT i, i % 3, $$v$$ || (i % 2) FROM generate_series(1, 20) i')
    base = {"table": '"we%ird"', "offset": "-1"}
    status, _, body = request(
        svc,
        {**base, "subset__where": '"q""x" = $1', "subset__params": '{"1":"v1"}', "subset__order_by": '"a%b" DESC, id',
         "subset__limit": "4"},
    )  # fmt: skip
    assert status == 200, body
    expected = pg_rows(
        dsn, 'SELECT id FROM "we%%ird" WHERE "q""x" = %s ORDER BY "a%%b" DESC, id LIMIT 4', "v1"
    )
    assert ids(body) == [r[0] for r in expected]
    assert set(body["data"][0]["value"]) == {"id", "a%b", 'q"x'}
    # no bound value at all in the query
    status, _, body = request(svc, {**base, "subset__order_by": '"a%b", id'})
    assert status == 200, body
    assert ids(body) == [r[0] for r in pg_rows(dsn, 'SELECT id FROM "we%%ird" ORDER BY "a%%b", id')]
