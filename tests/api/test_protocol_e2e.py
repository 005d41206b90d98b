"""Spec §3-§5, §7 (snapshot and log chunks, bodies, headers, 304, 409, DELETE, HEAD) against the real service.

One service (gunicorn + one gevent worker, settings ``e2e_support.SERVICE``: 10,000-byte chunks, DELETE
enabled, short live timings) per module, on its own database, over real HTTP; each test uses fresh tables.
Offsets, long-polls and SSE are in ``test_protocol_e2e_live``; the request rules (auth, CORS, paths, bad
parameters, admission) in ``test_protocol_e2e_rules``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.api.e2e_support import (
    BEFORE_ALL_CC,
    BIG,
    CATCH_UP_CC,
    LONG_POLL_S,
    MUST_REFETCH,
    SCHEMA,
    SERVICE,
    Http,
    Shape,
    Tables,
    assert_409,
    caught_up,
    q,
    running_service,
)
from tests.fixtures.pg import ClusterInfo


@pytest.fixture(scope="module")
def env(pg_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Http, Tables]]:
    workdir: Path = tmp_path_factory.mktemp("protocol_e2e")
    with running_service(pg_cluster, workdir, "protocol_e2e", SERVICE) as (svc, dsn):
        yield Http(svc.port), Tables(dsn)


@pytest.fixture
def http(env: tuple[Http, Tables]) -> Http:
    return env[0]


@pytest.fixture
def db(env: tuple[Http, Tables]) -> Tables:
    return env[1]


# ------------------------------------------------------------------------------------------ snapshot (§3-§5)


def test_initial_snapshot_chunk_headers_and_body(http: Http, db: Tables) -> None:
    table = db.create(columns="id int PRIMARY KEY, title text, done bool")
    db.sql(f"INSERT INTO {table} VALUES (1, 'a', true), (2, 'b/c', false)")
    r = http.shape(f"table={table}&offset=-1")
    assert r.status == 200
    h = r.headers
    handle = h["electric-handle"]
    assert re.fullmatch(r"[0-9]+-[0-9]{16}", handle)
    assert h["electric-offset"] == "0_0"
    assert h["etag"] == f'"{handle}:-1:0_0"'
    assert h["cache-control"] == BEFORE_ALL_CC
    assert h["content-type"] == "application/json; charset=utf-8"
    assert h["electric-has-data"] == "true"
    assert orjson.loads(h["electric-schema"]) == {**SCHEMA, "done": {"type": "bool"}}
    assert "electric-up-to-date" not in h  # a -1 response never has up-to-date
    assert "electric-cursor" not in h
    items = r.items()
    assert items[:2] == [
        {
            "key": f'"public"."{table}"/"1"',
            "value": {"id": "1", "title": "a", "done": "t"},  # architecture §4: PG text output, as in changes
            "headers": {"operation": "insert", "relation": ["public", table]},
        },
        {
            "key": f'"public"."{table}"/"2"',
            "value": {"id": "2", "title": "b/c", "done": "f"},
            "headers": {"operation": "insert", "relation": ["public", table]},
        },
    ]
    end = items[2]["headers"]
    assert len(items) == 3 and end["control"] == "snapshot-end"
    assert end["xmin"].isdigit() and end["xmax"].isdigit() and int(end["xmin"]) <= int(end["xmax"])
    assert all(isinstance(x, str) and x.isdigit() for x in end["xip_list"])


def test_empty_table_snapshot_end_then_up_to_date_then_live_timeout_at_0_inf(http: Http, db: Tables) -> None:
    table = db.create()
    r = http.shape(f"table={table}&offset=-1")
    assert r.controls() == ["snapshot-end"] and len(r.items()) == 1
    assert "electric-up-to-date" not in r.headers
    handle = r.handle
    r = http.shape(f"table={table}&offset=0_0&handle={q(handle)}")
    assert r.status == 200
    assert r.controls() == ["up-to-date"] and len(r.items()) == 1
    assert r.items()[0]["headers"]["global_last_seen_lsn"].isdigit()
    assert r.offset == "0_inf"
    assert r.headers["electric-up-to-date"] == ""
    assert r.headers["etag"] == f'"{handle}:0_0:0_inf"'
    assert r.headers["cache-control"] == CATCH_UP_CC
    assert orjson.loads(r.headers["electric-schema"]) == SCHEMA
    # Spec §6: a client long-polling at 0_0 on a fresh shape times out at 0_inf.
    r = http.shape(f"table={table}&offset=0_0&handle={q(handle)}&live=true")
    assert r.status == 200 and r.offset == "0_inf"
    assert r.headers["electric-has-data"] == "false"


def test_snapshot_chunks_of_about_10kb(http: Http, db: Tables) -> None:
    table = db.create()
    db.sql(f"INSERT INTO {table} SELECT i, '{BIG}' FROM generate_series(1, 60) i")
    shape = Shape(http, f"table={table}")
    responses = shape.sync()
    snapshot, after = responses[:-1], responses[-1]
    assert len(snapshot) >= 3
    for k, r in enumerate(snapshot):
        assert r.offset == f"0_{k}"  # snapshot chunk k ends at 0_k
        assert "up-to-date" not in r.controls() and "electric-up-to-date" not in r.headers
        if k < len(snapshot) - 1:
            assert 10000 <= len(r.body) <= 12000, len(r.body)  # spec §12: ≈10 kB ± 2 kB
            assert r.controls() == []
    assert snapshot[-1].controls() == ["snapshot-end"]
    assert snapshot[0].headers["cache-control"] == BEFORE_ALL_CC
    assert snapshot[1].headers["cache-control"] == CATCH_UP_CC
    assert sorted(int(row["id"]) for r in snapshot for row in r.rows()) == list(range(1, 61))
    assert after.offset == "0_inf" and after.items() == after.items()[-1:]


def test_concurrent_first_requests_for_a_new_shape_share_one_handle(http: Http, db: Tables) -> None:
    table = db.create(rows=3)
    requests = [http.background(f"table={table}&offset=-1") for _ in range(6)]
    responses = [r.result() for r in requests]
    assert [r.status for r in responses] == [200] * 6
    assert len({r.handle for r in responses}) == 1
    assert {r.body for r in responses} == {responses[0].body}


def test_nine_single_row_transactions_then_0_0_gives_10_messages(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db, rows=0)
    db.insert(table, *range(1, 10))
    shape.follow(9)
    r = http.shape(f"table={table}&offset=0_0&handle={q(shape.handle)}")
    assert r.status == 200
    assert len(r.items()) == 10
    assert [row["id"] for row in r.rows()] == [str(i) for i in range(1, 10)]
    assert r.controls() == ["up-to-date"]
    assert r.offset == shape.offset


def test_log_chunks_split_a_transaction(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db, rows=0)
    start = shape.offset
    db.sql(f"INSERT INTO {table} SELECT i, '{BIG}' FROM generate_series(1, 50) i")
    shape.follow(50)
    # Live but behind: the first chunk at once, without up-to-date since it does not reach the end (§6).
    r = http.shape(f"table={table}&offset={start}&handle={q(shape.handle)}&live=true")
    assert r.status == 200 and r.elapsed < LONG_POLL_S - 0.1
    assert r.controls() == [] and "electric-up-to-date" not in r.headers
    assert len(r.rows()) < 50 and int(r.headers["electric-cursor"]) > 0
    offset, items, pieces = start, [], 0
    while True:
        r = http.shape(f"table={table}&offset={offset}&handle={q(shape.handle)}")
        assert r.status == 200 and r.headers["cache-control"] == CATCH_UP_CC
        pieces += 1
        items += [m for m in r.items() if "key" in m]
        last = r.items()[-1]
        if "up-to-date" in r.controls():
            assert r.headers["electric-up-to-date"] == ""
            # max(global LSN, chunk end) (spec §5): the stream may have moved past this shape's last
            # transaction meanwhile (WAL of other databases, acknowledged while idle)
            assert int(last["headers"]["global_last_seen_lsn"]) >= int(r.offset.split("_")[0])
            break
        assert "electric-up-to-date" not in r.headers
        assert 10000 <= len(r.body) <= 12000
        assert r.offset == f"{last['headers']['lsn']}_{last['headers']['op_position']}"
        offset = r.offset
    assert pieces >= 3
    assert [m["headers"]["op_position"] for m in items] == list(range(0, 100, 2))
    assert len({m["headers"]["lsn"] for m in items}) == 1
    assert [m["headers"].get("last") for m in items] == [None] * 49 + [True]
    assert r.offset == f"{items[-1]['headers']['lsn']}_98" == shape.offset


def test_replicated_changes_default_and_full_replica(http: Http, db: Tables) -> None:
    table = db.create(columns="id int PRIMARY KEY, title text, done bool")
    db.sql(f"INSERT INTO {table} VALUES (1, 'a', true)")
    default = Shape(http, f"table={table}")
    full = Shape(http, f"table={table}&replica=full")
    default.sync()
    full.sync()
    assert default.handle != full.handle
    db.sql(
        f"INSERT INTO {table} VALUES (2, 'b', false)",
        f"UPDATE {table} SET title = 'a2' WHERE id = 1",
        f"UPDATE {table} SET title = 'a2' WHERE id = 1",  # no-op update: dropped
        f"DELETE FROM {table} WHERE id = 2",
    )
    d, f = default.follow(3), full.follow(3)
    for items in (d, f):
        lsns = [int(m["headers"]["lsn"]) for m in items]
        assert lsns == sorted(lsns) and len(set(lsns)) == 3
        for m in items:
            assert m["headers"]["relation"] == ["public", table]
            assert m["headers"]["op_position"] == 0 and m["headers"]["last"] is True
            [xid] = m["headers"]["txids"]
            assert isinstance(xid, int) and 0 < xid < 2**32
        assert [m["headers"]["operation"] for m in items] == ["insert", "update", "delete"]
        assert items[0]["value"] == {"id": "2", "title": "b", "done": "f"}
        assert [m["key"] for m in items] == [f'"public"."{table}"/"{i}"' for i in (2, 1, 2)]
    assert d[1]["value"] == {"id": "1", "title": "a2"} and "old_value" not in d[1]
    assert d[2]["value"] == {"id": "2"}
    assert f[1]["value"] == {"id": "1", "title": "a2", "done": "t"}
    assert f[1]["old_value"] == {"title": "a"}
    assert f[2]["value"] == {"id": "2", "title": "b", "done": "f"}


def test_keys_escape_slashes_and_keyless_tables_use_every_column(http: Http, db: Tables) -> None:
    table = db.create(columns="k text PRIMARY KEY, v text")
    db.sql(f"INSERT INTO {table} VALUES ('a/b', 'x'), ('', NULL)")
    r = http.shape(f"table={table}&offset=-1")
    assert sorted(m["key"] for m in r.items() if "key" in m) == [
        f'"public"."{table}"/""',
        f'"public"."{table}"/"a//b"',
    ]
    keyless = db.create(columns="w int, h text")
    db.sql(f"INSERT INTO {keyless} VALUES (1, NULL)")
    r = http.shape(f"table={keyless}&offset=-1")
    [row] = [m for m in r.items() if "key" in m]
    assert row["key"] == f'"public"."{keyless}"/_/"1"'  # columns sorted by name (h, w), NULL as _
    assert row["value"] == {"w": "1", "h": None}
    assert "pk_index" not in r.headers["electric-schema"]


def test_schema_header_modifiers(http: Http, db: Tables) -> None:
    table = db.create(
        columns="id int8 PRIMARY KEY, v varchar(20), c char(3), n numeric(10,2), ts timestamp(3), "
        "iv interval minute to second(2), a int8[][] NOT NULL, t text"
    )
    r = http.shape(f"table={table}&offset=-1")
    assert orjson.loads(r.headers["electric-schema"]) == {
        "id": {"type": "int8", "pk_index": 0, "not_null": True},
        "v": {"type": "varchar", "max_length": 20},
        "c": {"type": "bpchar", "length": 3},
        "n": {"type": "numeric", "precision": 10, "scale": 2},
        "ts": {"type": "timestamp", "precision": 3},
        "iv": {"type": "interval", "precision": 2, "fields": "MINUTE TO SECOND"},
        "a": {"type": "int8", "dims": 2, "not_null": True},
        "t": {"type": "text"},
    }
    r = http.shape(f"table={table}&offset=-1&columns=id,t")
    assert orjson.loads(r.headers["electric-schema"]) == {
        "id": {"type": "int8", "pk_index": 0, "not_null": True},
        "t": {"type": "text"},
    }


# ----------------------------------------------------------------------------------------- 304 and 409 (§4, §7)


def test_304_on_a_replayed_etag(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    for offset in ("-1", "0_0"):
        r = shape.get(offset)
        etag = r.headers["etag"]
        again = shape.get(offset, headers={"If-None-Match": f'"other", {etag}'})
        assert again.status == 304 and again.body == b""
        for name in ("etag", "electric-handle", "electric-offset", "cache-control", "electric-has-data"):
            assert again.headers[name] == r.headers[name], name
        assert again.headers.get("electric-up-to-date") == r.headers.get("electric-up-to-date")
        assert "electric-schema" not in again.headers
        assert shape.get(offset, headers={"If-None-Match": '"nope"'}).status == 200
    del table


def test_409_for_an_unknown_handle(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    r = http.shape(f"table={table}&offset=0_0&handle=123-1700000000000000")
    assert_409(r, shape.handle)
    # An unknown handle for a definition without a shape creates it (spec §7).
    r = http.shape(f"table={table}&offset=0_0&handle=123-1700000000000000&where=id%3E1&live=true")
    assert r.status == 409
    new = r.handle
    assert new != shape.handle
    assert http.shape(f"table={table}&offset=-1&where=id%3E1").handle == new


def test_409_for_a_mismatched_handle(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    other = Shape(http, f"table={table}&columns=id")
    other.sync()
    r = http.shape(f"table={table}&offset={shape.offset}&handle={q(other.handle)}")
    assert_409(r, shape.handle)


def test_truncate_during_a_long_poll_is_409_with_a_new_handle(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    waiting = http.background(shape.url(extra="&live=true"))
    db.sql(f"TRUNCATE {table}")
    r = waiting.result()
    assert r.elapsed < LONG_POLL_S  # answered by the rotation, not by the timeout
    assert r.status == 409 and r.json() == MUST_REFETCH
    new = r.handle
    assert new != shape.handle
    assert_409(shape.get(), new)  # non-live with the old handle too
    assert_409(shape.get(extra="&live=true"), new)
    fresh = http.shape(f"table={table}&offset=-1")
    assert fresh.handle == new and fresh.rows() == []


def test_dropped_table_gives_409_without_a_handle(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    waiting = http.background(shape.url(extra="&live=true"))
    db.sql(f"DROP TABLE {table}")
    r = waiting.result()
    if r.status == 200:  # the long-poll timed out before the catalog check noticed: ask again
        r = shape.get(extra="&live=true")
    assert r.status == 409 and r.json() == MUST_REFETCH
    assert "electric-handle" not in r.headers and "etag" not in r.headers
    assert r.headers["cache-control"] == "public, max-age=1, must-revalidate"
    r = shape.get()
    assert r.status == 400
    assert r.json() == {
        "message": "Invalid request",
        "errors": {
            "table": [
                f'Table "public"."{table}" does not exist. If the table name contains capitals or special '
                "characters you must quote it."
            ]
        },
    }


# ------------------------------------------------------------------------------------------- DELETE and HEAD


def test_delete_by_definition_and_by_handle(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    r = http.request("DELETE", f"/v1/shape?table={table}")
    assert r.status == 202 and r.body == b""
    assert r.headers["cache-control"] == "no-cache"
    r = shape.get()
    assert r.status == 409
    new = r.handle
    assert new != shape.handle
    assert http.request("DELETE", f"/v1/shape?handle={q(new)}").status == 202
    r = http.request("DELETE", f"/v1/shape?handle={q(new)}")
    assert r.status == 404 and r.json() == {"message": "No existing shape found"}
    assert http.request("DELETE", f"/v1/shape?table={db.create()}").status == 404


def test_delete_errors(http: Http, db: Tables) -> None:
    table, _ = caught_up(http, db)
    _, other = caught_up(http, db)
    r = http.request("DELETE", f"/v1/shape?table={table}&handle={q(other.handle)}")
    assert r.status == 400
    assert r.json() == {
        "message": "The specified shape definition and handle do not match. Please ensure the shape definition "
        "is correct or omit the shape handle from the request to obtain a new one."
    }
    r = http.request("DELETE", "/v1/shape")
    assert r.status == 400
    assert r.json() == {
        "message": "Invalid request",
        "errors": {"handle": ["can't be blank when shape definition is missing"]},
    }
    assert r.headers["cache-control"] == "no-cache"  # spec §4: POST/DELETE responses


def test_head_has_the_get_headers_and_no_body(http: Http, db: Tables) -> None:
    table, shape = caught_up(http, db)
    del table
    for offset in ("-1", "0_0"):
        g = shape.get(offset)
        h = http.request("HEAD", f"/v1/shape?{shape.url(offset)}")
        assert h.status == 200 and h.body == b""
        names = {
            n for n in g.headers if n not in ("x-request-id", "date", "content-length", "transfer-encoding")
        }
        assert {n: h.headers.get(n) for n in names} == {n: g.headers[n] for n in names}
