"""One answer per wake-up (api/live_memo.py): parked long-polls share the read and the body, not the cursor."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from falcon.testing import Result, TestClient

from api.live_memo import LiveAnswer, LiveMemo
from sync.offsets import LogOffset
from tests.api.conftest import TEST_SETTINGS, Backend
from tests.api.fake_engine import FakeEngine
from tests.api.shape_support import Background, body, caught_up, get, rows


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(body: bytes = b"[]") -> LiveAnswer:
    return LiveAnswer.of(body, [("cache-control", "x"), ("electric-cursor", "0"), ("etag", '"e"')])


def test_entries_expire_after_ttl() -> None:
    clock = Clock()
    memo = LiveMemo(ttl=2.0, monotonic=clock)
    memo.put("h", "1_0", "GET", answer())
    assert memo.get("h", "1_0", "GET") is not None
    assert memo.get("h", "1_0", "HEAD") is None
    assert memo.get("h", "2_0", "GET") is None
    clock.now += 2.0
    assert memo.get("h", "1_0", "GET") is None


def test_size_and_expired_entries_are_bounded() -> None:
    clock = Clock()
    memo = LiveMemo(ttl=2.0, size=3, monotonic=clock)
    for i in range(5):
        memo.put("h", f"{i}_0", "GET", answer())
    assert len(memo) == 3
    assert memo.get("h", "4_0", "GET") is not None and memo.get("h", "0_0", "GET") is None
    clock.now += 3.0
    memo.put("h", "9_0", "GET", answer())
    assert len(memo) == 1


def test_each_request_gets_its_own_cursor() -> None:
    memo_answer = answer()
    now = TEST_SETTINGS.long_poll_timeout * 1000 + 1_728_432_000.0  # past the cursor epoch
    plain = memo_answer.headers_for(TEST_SETTINGS, None, now=now, rand=lambda a, b: 7)
    ahead = memo_answer.headers_for(TEST_SETTINGS, "99999999999", now=now, rand=lambda a, b: 7)
    assert dict(plain)["electric-cursor"] != "0"
    assert dict(ahead)["electric-cursor"] == str(99999999999 + 7)  # spec §6: bumped past the client's
    assert dict(plain)["etag"] == dict(ahead)["etag"] == '"e"'
    assert dict(memo_answer.headers)["electric-cursor"] == "0"  # the shared list is never mutated
    no_cursor = LiveAnswer.of(b"[]", [("etag", '"e"')])
    assert no_cursor.headers_for(TEST_SETTINGS, "5", now=now) == [("etag", '"e"')]


def _parked(fake: FakeEngine, handle: str, n: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with fake.lock:
            if len(fake.shapes[handle].waiters) >= n:
                return True
        time.sleep(0.005)
    return False


def test_parked_requests_share_one_read(client: TestClient, backend: Backend, fake: FakeEngine) -> None:
    table, handle, offset = caught_up(client, backend)
    reads: list[LogOffset] = []
    real_read = fake.read

    def counting_read(h: str, o: LogOffset, **kwargs: Any) -> Any:
        reads.append(o)
        return real_read(h, o, **kwargs)

    fake.read = counting_read  # type: ignore[method-assign, assignment]  # a spy (its parameters: h, o)
    cursors = ["1", "99999999999", "1"]
    parked = [
        Background(
            cast(
                Callable[[], Result],
                lambda c=c: get(client, f"table={table}&offset={offset}&handle={handle}&live&cursor={c}"),
            )
        )
        for c in cursors
    ]
    assert _parked(fake, handle, 3)
    before = len(reads)
    backend.insert(table, {"id": "2", "title": "b"})
    results = [bg.result() for bg in parked]
    assert len(reads) - before == 1  # one read after the wake-up, shared by the three
    assert all(r.status_code == 200 for r in results)
    assert all(rows(r) == [{"id": "2", "title": "b"}] for r in results)
    assert (
        len({r.content for r in results}) == 1 and body(results[0])[-1]["headers"]["control"] == "up-to-date"
    )
    for name in ("etag", "electric-offset", "electric-handle", "electric-up-to-date", "cache-control"):
        assert len({r.headers.get(name) for r in results}) == 1, name
    assert int(results[1].headers["electric-cursor"]) > 99999999999
    assert results[0].headers["electric-cursor"] == results[2].headers["electric-cursor"]
    assert results[0].headers["electric-cursor"] != results[1].headers["electric-cursor"]


def test_raw_response_is_the_header_list_rendered_with_its_own_cursor() -> None:
    headers = [("cache-control", "x"), ("electric-cursor", "0"), ("etag", '"e"'), ("electric-offset", "1_0")]
    memo_answer = LiveAnswer.of(b"[1]", headers)
    now = TEST_SETTINGS.long_poll_timeout * 1000 + 1_728_432_000.0
    raw = memo_answer.raw_response(
        TEST_SETTINGS, "99999999999", b"x-common: 1\r\n", now=now, rand=lambda a, b: 7
    )
    assert raw is not None and raw.status == "200 OK" and raw.body == b"[1]" and list(raw) == [b"[1]"]
    expected = memo_answer.headers_for(TEST_SETTINGS, "99999999999", now=now, rand=lambda a, b: 7)
    rendered = "".join(f"{k}: {v}\r\n" for k, v in [*expected, ("x-common", "1"), ("content-length", "3")])
    assert raw.head == rendered.encode()


def test_an_answer_gunicorn_would_refuse_is_never_pre_rendered() -> None:
    bad = LiveAnswer.of(b"[]", [("etag", '"e"\r\nx-injected: 1')])
    assert bad.raw_response(TEST_SETTINGS, None, b"", now=0.0) is None
    latin = LiveAnswer.of(b"[]", [("etag", '"\xe9\t"')])  # obs-text and tab are allowed, as in gunicorn
    raw = latin.raw_response(TEST_SETTINGS, None, b"", now=0.0)
    assert raw is not None and raw.head == b'etag: "\xe9\t"\r\ncontent-length: 2\r\n'
