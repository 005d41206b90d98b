"""The official ``@electric-sql/client`` (npm) against the real service under gunicorn+gevent.

Any application written against Electric's clients must work unchanged when pointed at shapesync, so these
tests run the real TypeScript client (``tests/node/driver.mjs``, installed by ``make test``) and compare what
it materialises with ``SELECT`` of the shape.  Pytest makes every write with psycopg; the Node driver reports
each HTTP exchange, each batch and each up-to-date state as a JSON line, and the tests wait for the state
they expect with a deadline.  Each round of writes ends with a *fence*: an update of row 0 (always in the
shape) to a fresh title, so a state holding the new fence has applied every earlier write and must equal
``SELECT`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.api.node_client import ITEMS_PARAMS, Event, NodeClient, Workload, by_id, query_params
from tests.fixtures.service import ServiceProcess

# Short live timeouts keep the file fast; small chunks make snapshots and logs span several chunks (the
# client prefetches non-live chunks ahead).
SERVICE_SETTINGS = {
    "http": {"long_poll_timeout_ms": 2000, "sse_timeout_s": 3},
    "storage": {"chunk_bytes_threshold": 1000},
}


@pytest.fixture
def svc(db_dsn: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    service = ServiceProcess(db_dsn, tmp_path, SERVICE_SETTINGS).start()
    try:
        service.wait_healthy()
        yield service
    finally:
        service.stop()


@pytest.fixture
def node(svc: ServiceProcess) -> Iterator[NodeClient]:
    client = NodeClient.start(svc.url)
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture
def items(db_dsn: str) -> Workload:
    workload = Workload(db_dsn)
    workload.setup()
    return workload


def test_shape_with_where_params_columns_follows_random_writes(node: NodeClient, items: Workload) -> None:
    node.send(cmd="open", id="s", params=ITEMS_PARAMS)
    full = {key: value for key, value in ITEMS_PARAMS.items() if key != "columns"} | {"replica": "full"}
    node.send(cmd="open", id="full", params=full)
    node.wait_state("s", items.expected())
    node.wait_state("full", items.expected(full=True))
    request = query_params(node.requests("s")[0]["url"])
    assert (request["where"], request["params[1]"], request["params[2]"]) == (
        "grp < $1 AND flag = $2",
        "3",
        "true",
    )
    assert request["columns"] == '"id","grp","title","n"'
    assert query_params(node.requests("full")[0]["url"])["replica"] == "full"
    for _ in range(3):
        items.round(25)
        state = node.wait_state("s", items.expected())
        node.wait_state("full", items.expected(full=True))
    assert state["mustRefetch"] == 0
    assert all(set(row) == {"id", "grp", "title", "n"} for row in state["rows"])
    # The snapshot and the log came in several chunks (chunk_bytes_threshold = 1000).
    assert (
        len(
            {
                e["headers"]["electric-offset"]
                for e in node.requests("s")
                if "live" not in query_params(e["url"])
            }
        )
        > 2
    )


def test_truncate_refetches_and_converges(node: NodeClient, items: Workload, db_dsn: str) -> None:
    node.send(cmd="open", id="s", params=ITEMS_PARAMS)
    node.wait_state("s", items.expected())
    handle = node.requests("s")[0]["headers"]["electric-handle"]
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE items")
        conn.execute("INSERT INTO items VALUES (0, 0, 'fence-0', 0, true), (1, 1, 'after', 5, true)")
    items.round(10)
    state = node.wait_state("s", items.expected())
    assert state["mustRefetch"] >= 1
    assert state["handle"] != handle
    conflicts = [e for e in node.requests("s") if e.get("status") == 409]
    assert conflicts, node.tail()
    # As in Electric, the live request that sees the rotation answers 409 with the handle it waited on; the
    # client then refetches from -1 marking that handle expired.
    refetch = node.requests("s")[node.requests("s").index(conflicts[0]) + 1]
    assert query_params(refetch["url"])["offset"] == "-1"
    assert query_params(refetch["url"])["expired_handle"] == handle


def test_resume_from_handle_and_offset_without_snapshot(node: NodeClient, items: Workload) -> None:
    node.send(cmd="open", id="a", params=ITEMS_PARAMS)
    node.wait_state("a", items.expected())
    node.send(cmd="close", id="a")
    closed = node.wait(lambda: node.find("closed", "a"), 10, "the close of stream a")
    items.round(15)
    node.send(
        cmd="open",
        id="b",
        params=ITEMS_PARAMS,
        offset=closed["offset"],
        handle=closed["handle"],
        logBodies=True,
        **{"from": "a"},
    )
    state = node.wait_state("b", items.expected(), shape=False)
    assert state["mustRefetch"] == 0
    assert state["handle"] == closed["handle"]
    requests = node.requests("b")
    first = requests[0]
    assert query_params(first["url"])["offset"] == closed["offset"]
    assert query_params(first["url"])["handle"] == closed["handle"]
    assert first["status"] == 200, first
    assert all(query_params(e["url"])["offset"] != "-1" for e in requests)
    # Only the changes made while away, straight from the log: no snapshot row (those carry no lsn), no
    # snapshot-end, and no insert of a row the client already held (the driver flags those as violations).
    assert all("lsn" in m["headers"] for m in first["body"] if "operation" in m["headers"]), first["body"]
    assert all(m["headers"].get("control") != "snapshot-end" for m in first["body"]), first["body"]
    received = [m for e in node.seen if e["ev"] == "batch" and e["id"] == "b" for m in e["messages"]]
    assert all("lsn" in m["headers"] for m in received if "operation" in m["headers"])


def test_live_sse_follows_random_writes(node: NodeClient, items: Workload) -> None:
    node.send(cmd="open", id="s", params=ITEMS_PARAMS, liveSse=True)
    node.wait_state("s", items.expected())

    def sse_requests() -> list[Event]:
        return [e for e in node.requests("s") if query_params(e["url"]).get("live_sse") == "true"]

    def more_sse_requests_than(count: int) -> Callable[[], bool | None]:
        return lambda: len(sse_requests()) > count or None

    # With nothing to send, the stream still opens at once (headers now, not at the first message or at
    # sse_timeout_s = 3 s).
    node.wait(more_sse_requests_than(0), 2.0, "the SSE stream to open")
    for _ in range(2):
        connections = len(sse_requests())
        items.round(20)
        node.wait_state("s", items.expected(), redelivery=True)
        # The server closes the stream after sse_timeout_s; the next round runs on the reconnected stream,
        # which resumes from `<global_last_seen_lsn>_0` of the last up-to-date.
        node.wait(more_sse_requests_than(connections), 10, "an SSE reconnect")
    sse = sse_requests()
    assert all(e.get("status") == 200 for e in sse), node.tail()
    assert all(e["headers"]["content-type"].startswith("text/event-stream") for e in sse), node.tail()
    live = [e for e in node.requests("s") if query_params(e["url"]).get("live") == "true"]
    assert all(query_params(e["url"]).get("live_sse") == "true" for e in live), "fell back to long-polling"
    items.round(5)
    node.wait_state("s", items.expected(), redelivery=True)


TYPES_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
    id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, num numeric, num_s numeric(10, 2),
    b bool, t text, vc varchar(20), ch char(4), u uuid, d date, tm time, ts timestamp, tstz timestamptz,
    iv interval, js json, jsb jsonb, by bytea, ia int4[], i8a int8[], ia2 int4[][], ta text[], ba bool[],
    fa float8[], jsa jsonb[], m mood, ma mood[],
    "has,comma" int4, "has""quote" text, "has space" bool, "value" text, "MixedCase" int4
);
"""
TYPED_VALUES = """(
    %s, -32768, 2147483647, 9007199254740993, 1.5, 0.1, 12345678901234567890.123456789, -3.10,
    true, E'multi\\nline "quoted" \\\\ é 😀', 'varchar', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '2024-02-29', '13:45:01.5', '2024-02-29 13:45:01.123456', '2024-02-29 13:45:01.123456+02',
    '1 day 02:03:04', '{"a": [1, 2.5, "x"], "b": null}', '{"z": {"y": [true, false]}, "a": 1}', '\\xdeadbeef',
    '{1,-2,NULL}', '{9007199254740993,-1}', '{{1,2},{3,4}}', '{"a b","c,d","e\\"f",NULL,"NULL",""}',
    '{t,f,NULL}', '{1.5,-0.25,NaN,Infinity}', ARRAY['{"k": 1}'::jsonb, '[1, 2]'::jsonb], 'happy', '{sad,ok}',
    7, 'q"uote', false, 'v', -1
)"""
TYPED_COLUMNS = [
    *[
        "id",
        "i2",
        "i4",
        "i8",
        "f4",
        "f8",
        "num",
        "num_s",
        "b",
        "t",
        "vc",
        "ch",
        "u",
        "d",
        "tm",
        "ts",
        "tstz",
        "iv",
        "js",
        "jsb",
        "by",
        "ia",
        "i8a",
        "ia2",
        "ta",
        "ba",
        "fa",
        "jsa",
        "m",
        "ma",
    ],
    *("has,comma", 'has"quote', "has space", "value", "MixedCase"),
]


def test_types_parse_identically_from_snapshot_and_live(node: NodeClient, db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(TYPES_DDL)
        conn.execute("INSERT INTO typed VALUES " + TYPED_VALUES, (1,))
        conn.execute("INSERT INTO typed (id) VALUES (3)")
    node.send(cmd="open", id="s", params={"table": "typed", "columns": TYPED_COLUMNS})
    snap = node.wait(node.state_when("s", lambda st: True), 20, "the snapshot")
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO typed VALUES " + TYPED_VALUES, (2,))
        conn.execute("INSERT INTO typed (id) VALUES (4)")
    live = node.wait(node.state_when("s", lambda st: len(st["rows"]) == 4), 20, "the live rows")
    rows = {r["id"]: r for r in by_id(live["rows"])}
    assert [r["id"] for r in by_id(snap["rows"])] == [1, 3]
    snapshot_row, live_row = dict(rows[1], id=None), dict(rows[2], id=None)
    assert snapshot_row == live_row
    assert dict(rows[3], id=None) == dict(rows[4], id=None)
    assert rows[1] == {
        "id": 1,
        "i2": -32768,
        "i4": 2147483647,
        "i8": {"$bigint": "9007199254740993"},
        "f4": 1.5,
        "f8": 0.1,
        "num": "12345678901234567890.123456789",
        "num_s": "-3.10",
        "b": True,
        "t": 'multi\nline "quoted" \\ é 😀',
        "vc": "varchar",
        "ch": "ab  ",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "d": "2024-02-29",
        "tm": "13:45:01.5",
        "ts": "2024-02-29 13:45:01.123456",
        "tstz": "2024-02-29 11:45:01.123456+00",
        "iv": "P1DT2H3M4S",
        "js": {"a": [1, 2.5, "x"], "b": None},
        "jsb": {"a": 1, "z": {"y": [True, False]}},
        "by": "\\xdeadbeef",
        "ia": [1, -2, None],
        "i8a": [{"$bigint": "9007199254740993"}, {"$bigint": "-1"}],
        "ia2": [[1, 2], [3, 4]],
        "ta": ["a b", "c,d", 'e"f', None, "NULL", ""],
        "ba": [True, False, None],
        "fa": [1.5, -0.25, {"$number": "NaN"}, {"$number": "Infinity"}],
        "jsa": [{"k": 1}, [1, 2]],
        "m": "happy",
        "ma": ["sad", "ok"],
        "has,comma": 7,
        'has"quote': 'q"uote',
        "has space": False,
        "value": "v",
        "MixedCase": -1,
    }
    assert all(v is None for k, v in rows[3].items() if k != "id")
    assert sorted(rows[3]) == sorted(TYPED_COLUMNS)
    sent = query_params(node.requests("s")[0]["url"])["columns"]
    assert sent.startswith('"id","i2",') and sent.endswith(
        ',"has,comma","has""quote","has space","value","MixedCase"'
    )


def test_service_restart_mid_stream_costs_latency_not_data(
    node: NodeClient, items: Workload, svc: ServiceProcess
) -> None:
    node.send(cmd="open", id="poll", params=ITEMS_PARAMS)
    node.send(cmd="open", id="sse", params=ITEMS_PARAMS, liveSse=True)
    node.wait_state("poll", items.expected())
    node.wait_state("sse", items.expected())
    items.round(10)
    before = {sid: node.wait_state(sid, items.expected(), redelivery=sid == "sse") for sid in ("poll", "sse")}
    node.send(cmd="mark", label="SIGTERM")
    assert svc.stop() == 0  # SIGTERM: the master drains and stops; the slot and storage stay
    items.round(10)  # written while the service is down: the replication slot holds them
    svc.start()  # same port, configuration, storage folder and database
    items.round(10)
    expected = items.expected()
    for sid in ("poll", "sse"):
        state = node.wait_state(sid, expected, timeout=40, redelivery=sid == "sse")
        assert state["mustRefetch"] == 0, f"{sid} refetched the shape after the restart"
        assert state["handle"] == before[sid]["handle"]
        failures = [e for e in node.requests(sid) if "error" in e or e.get("status", 200) >= 500]
        assert failures, f"{sid} never saw the service go away"
