"""One answer per wake-up: the response to every long-poll parked at the same offset of the same shape.

Why it exists: when a change lands, every live request parked at offset X of shape H wakes at once (issue 7:
1,000-5,000 of them) and each would read the same range from storage, build the same body and the same
headers.  The first one to wake builds the answer (read, body bytes, header list); the others reuse it and
only recompute what is theirs: the ``electric-cursor`` (spec §6: it depends on the request's ``cursor``).

Why reusing is safe: a parked request was parked before any data past X was readable (a request arriving
after that gets its data at once and never parks), so any non-empty read at X taken after the wake is a
correct answer for it, exactly what it would have got had it been scheduled a few milliseconds earlier.
The log is append-only; a later read could only cover more.  The etag (``handle:X:end``) is the same for
all of them.  Entries live ``ttl`` seconds: they only need to outlast one wake-up's fan-out.

The sharing goes down to the bytes: an answer also keeps its header block pre-rendered around the cursor
line, so that under our gunicorn worker a woken request only joins its cursor, request id and CORS origin
to it (:meth:`LiveAnswer.raw_response`, :mod:`api.raw_response`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from api.headers import Headers, next_cursor
from api.params import ApiSettings
from api.raw_response import RawResponse, header_block

__all__ = ["LiveAnswer", "LiveMemo"]

CURSOR_HEADER = "electric-cursor"


@dataclass(frozen=True, slots=True)
class LiveAnswer:
    """A live 200 with data: the whole body and the headers as built for the first request."""

    body: bytes
    headers: Headers
    cursor_index: int  # where ``electric-cursor`` sits in ``headers`` (-1: none)
    # The header block before and after the cursor line, and the content-length line; None: not renderable
    raw_head: tuple[bytes, bytes, bytes] | None = None

    def headers_for(
        self,
        settings: ApiSettings,
        client_cursor: str | None,
        *,
        now: float,
        rand: Callable[[int, int], int] = random.randint,
    ) -> Headers:
        """``headers`` with this request's own cursor (spec §6)."""
        if self.cursor_index < 0:
            return self.headers
        headers = list(self.headers)
        cursor = next_cursor(settings.long_poll_timeout, client_cursor, now=now, rand=rand)
        headers[self.cursor_index] = (CURSOR_HEADER, str(cursor))
        return headers

    def raw_response(
        self,
        settings: ApiSettings,
        client_cursor: str | None,
        common: bytes,
        *,
        now: float,
        rand: Callable[[int, int], int] = random.randint,
    ) -> RawResponse | None:
        """The answer for one request, pre-rendered: ``headers_for`` + ``common`` (the middleware's lines,
        see ``RawCommonLines``) + content-length, in the order the Falcon path sends them.  None when the
        header block could not be rendered."""
        if self.raw_head is None:
            return None
        before, after, length = self.raw_head
        if self.cursor_index >= 0:
            cursor = next_cursor(settings.long_poll_timeout, client_cursor, now=now, rand=rand)
            before = b"%selectric-cursor: %d\r\n" % (before, cursor)
        # Falcon's order: the resource's headers, the middleware's, then content-length
        return RawResponse("200 OK", b"".join((before, after, common, length)), self.body)

    @staticmethod
    def of(body: bytes, headers: Headers) -> LiveAnswer:
        index = next((i for i, (name, _) in enumerate(headers) if name == CURSOR_HEADER), -1)
        cut = index if index >= 0 else len(headers)
        try:
            raw_head: tuple[bytes, bytes, bytes] | None = (
                header_block(headers[:cut]),
                header_block(headers[cut + 1 :]),
                header_block([("content-length", str(len(body)))]),
            )
        except ValueError:
            raw_head = None
        return LiveAnswer(body, headers, index, raw_head)


class LiveMemo:
    """``(handle, request offset, method) -> LiveAnswer`` for ``ttl`` seconds, at most ``size`` entries."""

    __slots__ = ("_entries", "_lock", "_monotonic", "_size", "_ttl")

    def __init__(self, *, ttl: float, size: int = 1024, monotonic: Callable[[], float]) -> None:
        self._entries: dict[tuple[str, str, str], tuple[float, LiveAnswer]] = {}
        self._ttl = ttl
        self._size = size
        self._monotonic = monotonic
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, handle: str, offset: str, method: str) -> LiveAnswer | None:
        hit = self._entries.get((handle, offset, method))
        if hit is None or self._monotonic() >= hit[0]:
            return None
        return hit[1]

    def put(self, handle: str, offset: str, method: str, answer: LiveAnswer) -> None:
        now = self._monotonic()
        with self._lock:
            entries = self._entries
            # Insertion order is expiry order (one ttl): drop the expired head, then the oldest if full.
            while entries and (next(iter(entries.values()))[0] <= now or len(entries) >= self._size):
                del entries[next(iter(entries))]
            entries.pop((handle, offset, method), None)
            entries[(handle, offset, method)] = (now + self._ttl, answer)
