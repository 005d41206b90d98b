"""A raw answer's close hook (api/raw_response.py): the server calls ``close()`` once the response is
written, and the subset answer uses it to settle its connection off the request's critical path."""

from __future__ import annotations

from api.raw_response import RawResponse


def test_close_runs_the_after_hook() -> None:
    ran: list[int] = []
    raw = RawResponse("200 OK", b"a: b\r\n", b"{}", lambda: ran.append(1))
    assert list(raw) == [b"{}"] and ran == []  # not while the body is written
    raw.close()
    assert ran == [1]


def test_close_without_a_hook_does_nothing() -> None:
    raw = RawResponse("200 OK", b"", b"x")
    raw.close()
    assert raw.after is None and list(raw) == [b"x"]
