"""Pre-rendered responses that our gunicorn worker writes in one send, past Falcon and gunicorn's header code.

Why it exists (issue 7): one change wakes thousands of long-polls parked at the same offset; their answers
differ only in ``electric-cursor``, ``x-request-id``, the CORS origin and the server's ``Date``.  Through
Falcon and gunicorn each of them would run every middleware's ``process_response``, render and validate
about fifteen headers (two regexes each), format a Date and send the header block and the body in two
writes.  Here the header block of the shared answer is rendered (and checked) once; per request only the
varying lines are joined, and the worker (``api/gunicorn_worker.py``) adds its status line, ``Server``,
``Date`` and ``Connection`` and writes the whole response at once.

The protocol, across four places:

* the worker puts ``SERVER_RAW_KEY`` in the WSGI environ: "I write :class:`RawResponse` bodies myself";
* :class:`api.app.ShapesyncApp` then sets ``RAW_ENV_KEY`` (it is the one that catches :class:`RawAnswerReady`
  and finishes the request's middleware bookkeeping: admission slot, metrics);
* the shape resource, seeing ``RAW_ENV_KEY``, raises :class:`RawAnswerReady` instead of filling the Falcon
  response.  Under any other server (Falcon's test client, another worker) nothing changes;
* with ``RAW_ENV_KEY`` set, subset GETs go through the lean lane first (``api/lean_lane.py``), which
  returns the same :class:`RawResponse` without Falcon, or hands the request to Falcon (with its error
  under ``LANE_ERROR_KEY`` when it failed once started).

The header set is exactly the one the Falcon path sends (tests compare both).

Likewise the worker puts ``SERVER_FILES_KEY`` in the environ: "a body item that is a
:class:`~sync.storage.reader.FileRange` I send from its file (``sendfile``)"; the shape responder then
leaves a large closed snapshot chunk as such an item instead of reading it (``api/shape_response.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = [
    "LANE_ERROR_KEY",
    "RAW_ENV_KEY",
    "SERVER_FILES_KEY",
    "SERVER_RAW_KEY",
    "RawAnswerReady",
    "RawResponse",
    "header_block",
    "safe_header_value",
]

SERVER_RAW_KEY = "shapesync.server_writes_raw"  # set by the worker
SERVER_FILES_KEY = "shapesync.server_sends_files"  # set by the worker
RAW_ENV_KEY = "shapesync.raw_ok"  # set by ShapesyncApp for the resource
LANE_ERROR_KEY = "shapesync.lane_error"  # a lean lane's error, for the Falcon path (api/lean_lane.py)


def safe_header_value(value: str) -> bool:
    """gunicorn's rule for a response header value (``[ \\t\\x21-\\x7e\\x80-\\xff]*``), without a regex."""
    if value.isascii() and value.isprintable():
        return True
    return all(c == "\t" or " " <= c <= "~" or "\x80" <= c <= "\xff" for c in value)


def header_block(headers: list[tuple[str, str]]) -> bytes:
    """``name: value\\r\\n`` lines, as gunicorn writes them; raises ValueError on a value it would refuse."""
    for name, value in headers:
        if not safe_header_value(value) or not name.isascii() or not name.replace("-", "").isalnum():
            raise ValueError(f"header {name!r} cannot be sent")
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("latin-1")


class RawResponse:
    """A whole response but for the server's own lines: status, the header block (``name: value\\r\\n``
    lines, content-length included) and the body.  Iterating it yields the body (it is a WSGI body too),
    but only a server that set ``SERVER_RAW_KEY`` ever receives one.  ``after`` is run by :meth:`close`,
    which the server calls once the response is written (WSGI): work kept off the request's critical path;
    it must not raise."""

    __slots__ = ("after", "body", "head", "status")

    def __init__(
        self, status: str, head: bytes, body: bytes, after: Callable[[], None] | None = None
    ) -> None:
        self.status = status
        self.head = head
        self.body = body
        self.after = after

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    def close(self) -> None:
        if self.after is not None:
            self.after()


class RawAnswerReady(BaseException):  # a signal like GeneratorExit, not an error
    """Raised by a responder to leave Falcon with a finished :class:`RawResponse`.

    A BaseException so that no ``except Exception`` (Falcon's error handlers among them) turns it into an
    error response; :class:`api.app.ShapesyncApp` catches it.  ``request`` is the Falcon request (its
    context holds what the middleware must finish)."""

    def __init__(self, request: object, response: RawResponse) -> None:
        super().__init__()
        self.request = request
        self.response = response
