"""Large snapshot chunks through the real service (gunicorn + gevent).

Chunks of at least ``FILE_RANGE_MIN`` bytes are the ones our worker may send from the shape's file
(``sendfile``, ``sync/storage/reader.py``) instead of reading them: whichever way they leave, they carry every
row once, each body is one JSON array of exactly its content-length, a HEAD has the GET's headers and no
body, and a second client reads the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sync.storage.reader import FILE_RANGE_MIN
from tests.api.e2e_support import SERVICE, Http, Shape, Tables, running_service
from tests.fixtures.pg import ClusterInfo
from tests.storage.helpers import evict

BIG_CHUNKS = {**SERVICE, "storage": {"chunk_bytes_threshold": FILE_RANGE_MIN + 40_000}}
ROWS = 2000
PAD = "x" * 400  # ~500 JSON bytes per row: ~1 MB in all, three chunks of ~300 KB and the rest


@pytest.fixture(scope="module")
def service(
    pg_cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Http, Tables, Path]]:
    workdir: Path = tmp_path_factory.mktemp("snapshot_chunks_e2e")
    with running_service(pg_cluster, workdir, "snapshot_chunks_e2e", BIG_CHUNKS) as (svc, dsn):
        yield Http(svc.port), Tables(dsn), workdir / "storage"


@pytest.fixture
def env(service: tuple[Http, Tables, Path]) -> tuple[Http, Tables]:
    return service[0], service[1]


def test_large_snapshot_chunks_hold_every_row_once_with_exact_lengths(env: tuple[Http, Tables]) -> None:
    http, db = env
    table = db.create()
    db.sql(f"INSERT INTO {table} SELECT i, '{PAD}' || i FROM generate_series(1, {ROWS}) i")
    shape = Shape(http, f"table={table}")
    responses = shape.sync()
    chunks = [r for r in responses if r.offset != "0_inf"]
    assert sum(len(r.body) >= FILE_RANGE_MIN for r in chunks) >= 3
    for r in responses:
        assert int(r.headers["content-length"]) == len(r.body)
        assert isinstance(orjson.loads(r.body), list)
    values = [m["value"] for r in responses for m in r.items() if "key" in m]
    assert sorted(values, key=lambda v: int(v["id"])) == [
        {"id": str(i), "title": f"{PAD}{i}"} for i in range(1, ROWS + 1)
    ]
    again = Shape(http, f"table={table}").sync()  # served from storage only
    assert [r.body for r in again if r.offset != "0_inf"] == [r.body for r in chunks]
    head = http.shape(shape.url("-1"), method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == chunks[0].headers["content-length"]
    assert head.headers["electric-offset"] == chunks[0].headers["electric-offset"]


def test_chunks_evicted_from_the_page_cache_are_read_in_off_the_loop_and_served_whole(
    service: tuple[Http, Tables, Path],
) -> None:
    """sendfile would wait for the disk on the hub's thread: the worker reads such a piece in on an OS
    thread first (``sync.storage.coldio``), and counts it."""
    http, db, storage = service
    table = db.create()
    db.sql(f"INSERT INTO {table} SELECT i, '{PAD}' || i FROM generate_series(1, {ROWS}) i")
    first = [r.body for r in Shape(http, f"table={table}").sync() if r.offset != "0_inf"]
    assert sum(len(body) >= FILE_RANGE_MIN for body in first) >= 3
    for _ in range(5):  # an evicted page is occasionally back before it is read (tests/storage/test_coldio)
        before = _uncached_reads(http)
        assert evict(storage) > 0
        again = [r.body for r in Shape(http, f"table={table}").sync() if r.offset != "0_inf"]
        assert again == first
        if _uncached_reads(http) > before:  # the first piece read in brings the next chunks' pages too
            break
    assert _uncached_reads(http) > before


def _uncached_reads(http: Http) -> float:
    text = http.request("GET", "/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "shapesync_storage_uncached_io_total" and sample.labels == {"op": "read"}:
                return sample.value
    raise AssertionError("no shapesync_storage_uncached_io_total{op=read} in /metrics")
