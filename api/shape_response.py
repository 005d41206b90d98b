"""Rendering the answers of ``/v1/shape``: shape headers, 304s, JSON-array bodies and memoised live answers.

Why this module exists: :mod:`api.log_responder` sequences a log request (wait, read); this module
turns what it decided into the response: the shape headers of ``api/headers.py`` with the resource's pinned
clock and randomness, a 304 on a matching If-None-Match, the body as ``[`` + stored item bytes + control
item + ``]`` (in memory up to ``stream_buffer_bytes``, else streamed, never decoded; a large snapshot chunk
given as a :class:`~sync.storage.reader.FileRange` goes out with ``sendfile`` under our gunicorn worker),
and a memoised long-poll answer (``api/live_memo.py``), pre-rendered under our gunicorn worker
(``api/raw_response.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import cast

import falcon

from api.headers import Headers, ShapeResponseMeta, if_none_match_matches, shape_response_headers
from api.live_memo import LiveAnswer
from api.middleware import RawCommonLines
from api.params import ApiSettings, ShapeRequest
from api.raw_response import RAW_ENV_KEY, SERVER_FILES_KEY, RawAnswerReady
from sync.storage.reader import FileRange

__all__ = ["ShapeResponder", "json_array_body"]


def json_array_body(pieces: Iterable[bytes], tail: bytes | None, limit: int) -> Iterator[bytes]:
    """``[`` + pieces (comma-separated items) + ``,`` tail + ``]``, coalesced into ~``limit`` writes."""
    buf = bytearray(b"[")
    empty = True
    for piece in pieces:
        if not piece:
            continue
        empty = False
        if len(piece) >= limit:
            if buf:
                yield bytes(buf)
                buf.clear()
            yield piece
            continue
        buf += piece
        if len(buf) >= limit:
            yield bytes(buf)
            buf.clear()
    if tail is not None:
        if not empty:
            buf += b","
        buf += tail
    buf += b"]"
    yield bytes(buf)


def file_body(where: FileRange, tail: bytes | None) -> Iterator[bytes | FileRange]:
    """``[`` + the range + ``,`` tail + ``]`` for a server that sends a FileRange itself
    (``SERVER_FILES_KEY``): the range is yielded as it is, not read."""
    yield b"["
    yield where
    yield b"," + tail + b"]" if tail is not None else b"]"


def _body_length(pieces: Iterable[bytes], tail: bytes | None) -> int | None:
    """The exact body length when the pieces are already in memory or a FileRange, else None (chunked
    encoding)."""
    if isinstance(pieces, FileRange):
        sizes = [len(pieces)]
    elif not isinstance(pieces, (list, tuple)):
        return None
    else:
        sizes = [len(p) for p in pieces if p]
    n = sum(sizes) + 2
    if tail is not None:
        n += len(tail) + (1 if sizes else 0)
    return n


class ShapeResponder:
    """Sets the responses of ``/v1/shape`` (one per resource); time and randomness are injected."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        clock: Callable[[], float],
        monotonic_ns: Callable[[], int],
        rand: Callable[[int, int], int],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._monotonic_ns = monotonic_ns
        self._rand = rand
        self._raw_common = RawCommonLines(settings)

    def not_modified(
        self, req: falcon.Request, resp: falcon.Response, request: ShapeRequest, meta: ShapeResponseMeta
    ) -> bool:
        if_none_match = req.get_header("if-none-match")
        if if_none_match is None or not if_none_match_matches([if_none_match], meta.unquoted_etag):
            return False
        self.apply_headers(req, resp, request, meta, status=304)
        resp.status = 304
        return True

    def apply_headers(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        request: ShapeRequest,
        meta: ShapeResponseMeta,
        *,
        status: int,
    ) -> Headers:
        headers = shape_response_headers(
            meta,
            self._settings,
            method=req.method,
            status=status,
            client_cursor=request.cursor,
            now=self._clock(),
            monotonic_ns=self._monotonic_ns(),
            rand=self._rand,
        )
        resp.set_headers(headers)
        return headers

    def respond(  # noqa: PLR0917 - one call shape used throughout log_responder
        self,
        req: falcon.Request,
        resp: falcon.Response,
        request: ShapeRequest,
        meta: ShapeResponseMeta,
        pieces: Iterable[bytes],
        tail: bytes | None,
    ) -> Headers:
        """A 200 with ``[pieces, tail]``: in memory (``resp.data``) up to ``stream_buffer_bytes``, else
        streamed (a FileRange left to a server that sends files itself).  Returns the shape headers it set."""
        headers = self.apply_headers(req, resp, request, meta, status=200)
        resp.status = 200
        length = _body_length(pieces, tail)
        if isinstance(pieces, FileRange) and req.env.get(SERVER_FILES_KEY):
            # only our worker, which set the key, sees the FileRange item (the middleware's wrappers of a
            # streamed body only count len() of what passes through)
            resp.stream = cast("Iterable[bytes]", file_body(pieces, tail))
            resp.content_length = length
            return headers
        if length is not None and length <= self._settings.stream_buffer_bytes:
            resp.data = b"".join(json_array_body(pieces, tail, self._settings.stream_buffer_bytes))
            return headers
        resp.stream = json_array_body(pieces, tail, self._settings.stream_buffer_bytes)
        if length is not None:
            resp.content_length = length
        return headers

    def respond_memoized(
        self, req: falcon.Request, resp: falcon.Response, request: ShapeRequest, answer: LiveAnswer
    ) -> None:
        if req.env.get(RAW_ENV_KEY) and req.method == "GET":
            common = self._raw_common.render(req)
            raw = None
            if common is not None:
                raw = answer.raw_response(
                    self._settings, request.cursor, common, now=self._clock(), rand=self._rand
                )
            if raw is not None:
                raise RawAnswerReady(req, raw)
        resp.set_headers(
            answer.headers_for(self._settings, request.cursor, now=self._clock(), rand=self._rand)
        )
        resp.status = 200
        resp.data = answer.body
