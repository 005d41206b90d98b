"""Server-sent events for live shape requests (``live=true&live_sse=true``, spec §6).

Why a separate module: an SSE response is a generator that outlives the resource call (gunicorn+gevent
writes it chunk by chunk), with its own timing rules: every message is ``data: <json>\\n\\n``, each batch of
changes ends with an up-to-date whose ``global_last_seen_lsn`` is the batch's last transaction (the client
resumes from ``<lsn>_0``), ``: keep-alive\\n\\n`` after 21 s without a message, and the stream closes after
``sse_timeout`` or silently on shape rotation (the reconnect then gets its 409).  A backlog that does not
reach the end of the log is sent as a finite stream (ending with up-to-date too) and closed.  Items are
framed as stored, never decoded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from api.engine_port import LogChunk, ShapeEngine, ShapeEngineError, WaitOutcome
from api.params import ApiSettings
from sync.offsets import LogOffset

__all__ = ["KEEP_ALIVE", "sse_events", "sse_message", "up_to_date_item"]

log = logging.getLogger(__name__)

KEEP_ALIVE = b": keep-alive\n\n"


def up_to_date_item(lsn: int) -> bytes:
    """The up-to-date control message (spec §5), LSN as a decimal string."""
    return b'{"headers":{"control":"up-to-date","global_last_seen_lsn":"%d"}' % max(lsn, 0) + b"}"


def sse_message(item: bytes) -> bytes:
    return b"data: " + item + b"\n\n"


def _batch(pieces: Iterable[bytes], tail: bytes | None, limit: int) -> Iterator[bytes]:
    """Frame each item and coalesce the frames into writes of about ``limit`` bytes."""
    buf = bytearray()
    for item in pieces:
        if item:
            buf += b"data: "
            buf += item
            buf += b"\n\n"
            if len(buf) >= limit:
                yield bytes(buf)
                buf.clear()
    if tail is not None:
        buf += sse_message(tail)
    if buf:
        yield bytes(buf)


def _send_chunk(chunk: LogChunk, limit: int) -> tuple[Iterator[bytes], bool]:
    # Every batch ends with up-to-date (spec §6), a backlog chunk that does not reach the end of the log
    # included: the official client buffers SSE messages until an up-to-date and drops the buffer when the
    # stream closes without one, while it already moved to the response's electric-offset.  It then resumes
    # from ``<lsn>_0`` of the chunk's last transaction (re-delivered ops of that transaction are allowed).
    caught_up = chunk.end_offset >= chunk.latest_offset
    return _batch(chunk.pieces, up_to_date_item(chunk.end_offset.tx), limit), caught_up


def sse_events(
    engine: ShapeEngine,
    handle: str,
    first: LogChunk,
    settings: ApiSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[bytes]:
    """The SSE body, starting with ``first`` (the read at the request's offset, ``per_item=True``)."""
    deadline = clock() + settings.sse_timeout
    last_sent = clock()
    offset: LogOffset = first.end_offset
    # An empty first write makes the WSGI server send the status line and headers now (as Electric does):
    # a stream with nothing to say yet must still open at once, not only at its first keep-alive.
    yield b""
    if not first.is_empty:
        frames, caught_up = _send_chunk(first, settings.stream_buffer_bytes)
        yield from frames
        last_sent = clock()
        if not caught_up:
            return  # a finite backlog: the client reconnects from the electric-offset it was given
    try:
        while True:
            now = clock()
            if now >= deadline:
                return
            wait = min(deadline - now, max(0.0, last_sent + settings.sse_keepalive_interval - now))
            waiter = engine.wait_for_change(handle, offset)
            try:
                outcome = waiter.wait(wait)
            finally:
                waiter.cancel()
            if outcome is WaitOutcome.TIMEOUT:
                if clock() - last_sent >= settings.sse_keepalive_interval:
                    yield KEEP_ALIVE
                    last_sent = clock()
                continue
            if outcome is not WaitOutcome.NEW_DATA:
                return  # rotated or stopping: close silently, the reconnect learns why
            chunk = engine.read(handle, offset, per_item=True)
            if chunk.is_empty:
                offset = max(offset, chunk.end_offset)
                continue
            frames, _ = _send_chunk(chunk, settings.stream_buffer_bytes)
            yield from frames
            last_sent = clock()
            offset = chunk.end_offset
    except ShapeEngineError as ex:
        # Headers are gone already: the only thing left to do is to end the stream.
        log.info("SSE stream for shape %s ended by %r", handle, ex)
