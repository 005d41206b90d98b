"""Spec §6: long-poll and SSE through real Falcon handling (long_poll_timeout 1 s, sse_timeout 1.5 s here)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from falcon.testing import Result, TestClient

from sync.offsets import LogOffset
from tests.api.conftest import TEST_SETTINGS, Backend, FakeBackend, build_app
from tests.api.fake_engine import FakeEngine
from tests.api.shape_support import Background, body, caught_up, controls, get, rows


def test_long_poll_timeout_returns_up_to_date_without_data(client: TestClient, backend: Backend) -> None:
    table, handle, offset = caught_up(client, backend)
    started = time.monotonic()
    r = get(client, f"table={table}&offset={offset}&handle={handle}&live&cursor=1")
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5
    assert r.status_code == 200
    assert controls(r) == ["up-to-date"] and len(body(r)) == 1
    h = r.headers
    assert h["electric-has-data"] == "false"
    assert h["electric-offset"] == offset
    assert h["electric-up-to-date"] == ""
    assert h["etag"].startswith(f'"{handle}:{offset}:{offset}:') and h["etag"].endswith('"')
    assert int(h["electric-cursor"]) > 1
    assert h["cache-control"] == "public, max-age=5, stale-while-revalidate=5"
    assert "electric-schema" not in h


def test_long_poll_woken_by_new_data(client: TestClient, backend: Backend) -> None:
    table, handle, offset = caught_up(client, backend)
    started = time.monotonic()
    bg = Background(lambda: get(client, f"table={table}&offset={offset}&handle={handle}&live"))
    assert backend.wait_for_waiter(5)
    backend.insert(table, {"id": "2", "title": "b"})
    r = bg.result()
    assert time.monotonic() - started < 0.9  # woken, not timed out
    assert r.status_code == 200
    assert rows(r) == [{"id": "2", "title": "b"}]
    assert controls(r) == ["up-to-date"]
    new_offset = r.headers["electric-offset"]
    assert new_offset != offset
    assert body(r)[-1]["headers"]["global_last_seen_lsn"] == new_offset.split("_")[0]
    assert r.headers["electric-has-data"] == "true"
    assert "electric-cursor" in r.headers
    assert "electric-schema" not in r.headers


def test_live_behind_returns_at_once(client: TestClient, backend: Backend) -> None:
    table, handle, offset = caught_up(client, backend)
    backend.insert(table, {"id": "2", "title": "b"})
    started = time.monotonic()
    r = get(client, f"table={table}&offset={offset}&handle={handle}&live")
    assert time.monotonic() - started < 0.9
    assert rows(r) == [{"id": "2", "title": "b"}]


def test_live_304_carries_cursor(client: TestClient, backend: Backend) -> None:
    table, handle, offset = caught_up(client, backend)
    backend.insert(table, {"id": "2", "title": "b"})
    q = f"table={table}&offset={offset}&handle={handle}&live"
    r = get(client, q)
    r2 = get(client, q, headers={"If-None-Match": r.headers["etag"]})
    assert r2.status_code == 304
    assert "electric-cursor" in r2.headers
    assert r2.headers["cache-control"] == "public, max-age=5, stale-while-revalidate=5"


def test_rotation_during_long_poll_is_409(client: TestClient, backend: Backend) -> None:
    table, handle, offset = caught_up(client, backend)
    bg = Background(lambda: get(client, f"table={table}&offset={offset}&handle={handle}&live"))
    assert backend.wait_for_waiter(5)
    backend.truncate(table)
    r = bg.result()
    assert r.status_code == 409
    assert orjson.loads(r.content) == [{"headers": {"control": "must-refetch"}}]
    assert r.headers["electric-handle"] != handle


def sse_messages(result: Result) -> list[Any]:
    text = result.content.decode()
    out: list[Any] = []
    for frame in text.split("\n\n"):
        if frame.startswith("data: "):
            out.append(orjson.loads(frame[len("data: ") :]))
        elif frame:
            out.append(frame)
    return out


def test_sse_stream_sends_batches_keepalives_and_closes(client: TestClient, backend: Backend) -> None:
    table, handle, offset = caught_up(client, backend)
    started = time.monotonic()
    bg = Background(
        lambda: get(client, f"table={table}&offset={offset}&handle={handle}&live=true&live_sse=true&log=full")
    )
    assert backend.wait_for_waiter(5)
    backend.insert(table, {"id": "2", "title": "b"})
    r = bg.result()
    elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 5  # closed by sse_timeout (1.5 s)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["cache-control"] == "public, max-age=1"
    assert "electric-cursor" in r.headers
    messages = sse_messages(r)
    data = [m for m in messages if isinstance(m, dict)]
    assert data[0]["value"] == {"id": "2", "title": "b"}
    assert data[1]["headers"]["control"] == "up-to-date"
    assert data[1]["headers"]["global_last_seen_lsn"] == data[0]["headers"]["lsn"]
    assert ": keep-alive" in messages  # 0.4 s keep-alive interval within the 1.5 s stream


def test_sse_backlog_is_finite(fake: FakeEngine) -> None:
    # engine-specific: relies on the fake's 4-item log chunks
    client = TestClient(build_app(fake, TEST_SETTINGS))
    table, handle, offset = caught_up(client, FakeBackend(fake))
    for i in range(2, 12):  # more than one log chunk
        fake.insert(table, {"id": str(i), "title": "b"})
    started = time.monotonic()
    r = get(client, f"table={table}&offset={offset}&handle={handle}&live&experimental_live_sse")
    assert time.monotonic() - started < 1.0
    data = [m for m in sse_messages(r) if isinstance(m, dict)]
    # one chunk of the backlog, then an up-to-date (every SSE batch ends with one: the official client
    # drops what it buffered if the stream closes without it), then the stream closes
    assert len(data) == 5 and all("key" in m for m in data[:4])
    assert data[4] == {
        "headers": {"control": "up-to-date", "global_last_seen_lsn": data[3]["headers"]["lsn"]}
    }
    assert r.headers["electric-offset"] == data[3]["headers"]["lsn"] + "_0"


def test_sse_closes_silently_on_rotation(client: TestClient, backend: Backend) -> None:
    table, handle, offset = caught_up(client, backend)
    started = time.monotonic()
    bg = Background(lambda: get(client, f"table={table}&offset={offset}&handle={handle}&live&live_sse"))
    assert backend.wait_for_waiter(5)
    backend.truncate(table)
    r = bg.result()
    assert time.monotonic() - started < 1.4
    assert r.status_code == 200
    assert [m for m in sse_messages(r) if isinstance(m, dict)] == []
    r = get(client, f"table={table}&offset={offset}&handle={handle}&live&live_sse")
    assert r.status_code == 409


def test_out_of_bounds_offset_waits_for_the_shape_to_catch_up(client: TestClient, backend: Backend) -> None:
    table, handle, offset = caught_up(client, backend)
    backend.insert(table, {"id": "2", "title": "b"})
    first = get(client, f"table={table}&offset={offset}&handle={handle}")
    tx = int(first.headers["electric-offset"].split("_")[0])
    ahead = f"{tx}_2"  # the next op that is not there yet
    bg = Background(lambda: get(client, f"table={table}&offset={ahead}&handle={handle}"))
    assert backend.wait_for_waiter(5)
    backend.insert(table, {"id": "3", "title": "c"})
    r = bg.result()
    assert r.status_code == 200
    assert LogOffset.parse(r.headers["electric-offset"]) > LogOffset.parse(ahead)


def test_fresh_shape_long_poll_at_0_0_times_out_at_0_inf(client: TestClient, backend: Backend) -> None:
    table = backend.create_table([])
    handle = get(client, f"table={table}&offset=-1").headers["electric-handle"]
    r = get(client, f"table={table}&offset=0_0&handle={handle}&live")
    assert r.status_code == 200
    assert r.headers["electric-offset"] == "0_inf"
    assert r.headers["electric-has-data"] == "false"


def test_sse_with_pending_data_sends_it_then_stays_live(client: TestClient, backend: Backend) -> None:
    table, handle, offset = caught_up(client, backend)
    backend.insert(table, {"id": "2", "title": "b"})
    bg = Background(lambda: get(client, f"table={table}&offset={offset}&handle={handle}&live&live_sse"))
    assert backend.wait_for_waiter(5)  # parked after sending the pending batch
    backend.insert(table, {"id": "3", "title": "c"})
    r = bg.result()
    data = [m for m in sse_messages(r) if isinstance(m, dict)]
    kinds = [m["value"]["id"] if "key" in m else m["headers"]["control"] for m in data]
    assert kinds == ["2", "up-to-date", "3", "up-to-date"]
    assert r.headers["electric-up-to-date"] == ""


def test_waiters_are_removed_after_timeouts_and_wakeups(fake: FakeEngine) -> None:
    # engine-specific: inspects the fake consumer's waiter list (architecture pitfall: stale waiters)
    client = TestClient(build_app(fake, TEST_SETTINGS))
    table, handle, offset = caught_up(client, FakeBackend(fake))
    get(client, f"table={table}&offset={offset}&handle={handle}&live")  # times out
    assert fake.shapes[handle].waiters == []
    fake.waiter_registered.clear()
    bg = Background(lambda: get(client, f"table={table}&offset={offset}&handle={handle}&live"))
    assert fake.waiter_registered.wait(5)
    assert len(fake.shapes[handle].waiters) == 1
    fake.insert(table, {"id": "2", "title": "b"})
    assert bg.result().status_code == 200
    assert fake.shapes[handle].waiters == []


def test_delete_during_long_poll_gives_409_with_a_fresh_handle(fake: FakeEngine) -> None:
    client = TestClient(build_app(fake, TEST_SETTINGS))
    table, handle, offset = caught_up(client, FakeBackend(fake))
    bg = Background(lambda: get(client, f"table={table}&offset={offset}&handle={handle}&live"))
    assert fake.waiter_registered.wait(5)
    assert client.simulate_delete("/v1/shape", query_string=f"handle={handle}").status_code == 202
    r = bg.result()
    assert r.status_code == 409
    assert r.headers["electric-handle"] not in ("", handle)
    assert r.headers["cache-control"] == "public, max-age=60, must-revalidate"


def test_rotation_when_the_definition_no_longer_resolves_gives_409_without_handle(fake: FakeEngine) -> None:
    client = TestClient(build_app(fake, TEST_SETTINGS))
    table, handle, offset = caught_up(client, FakeBackend(fake))
    bg = Background(lambda: get(client, f"table={table}&offset={offset}&handle={handle}&live"))
    assert fake.waiter_registered.wait(5)
    with fake.lock:
        del fake.tables[table]  # the table was dropped: the definition is now invalid
        fake.delete(handle)
    r = bg.result()
    assert r.status_code == 409
    assert "electric-handle" not in r.headers
    assert "etag" not in r.headers
    assert r.headers["cache-control"] == "public, max-age=1, must-revalidate"
