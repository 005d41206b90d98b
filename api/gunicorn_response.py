"""The gunicorn worker's response writer: gunicorn's ``wsgi.Response`` with fewer sends and formats.

Why a module of its own: it is what the worker (:mod:`api.gunicorn_worker`) writes every answer with, and
it depends on gunicorn's response class alone (no gevent, no engine), so it is read and tested apart from
the worker's connection handling.  The worker gives each request's response this class
(``resp.__class__ = WorkerResponse``: same state as gunicorn's, these methods).
"""

from __future__ import annotations

import os
import time
from email.utils import formatdate
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi

from api.raw_response import RawResponse

__all__ = ["COALESCE_MAX", "WorkerResponse", "http_date"]

_date_cache: list[Any] = [0, ""]
COALESCE_MAX = 64 * 1024  # bytes: a first body write up to this size goes out with the header block


def http_date() -> str:
    """gunicorn's Date value (``util.http_date``), formatted once per second instead of once per response."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[:] = [now, formatdate(now, localtime=False, usegmt=True)]
    return str(_date_cache[1])


class WorkerResponse(wsgi.Response):  # type: ignore[misc]
    """gunicorn's response with four savings (issue 7: thousands of responses per change, and megabytes of
    snapshot per initial sync): the Date is formatted once per second, a first body write of up to
    ``COALESCE_MAX`` bytes leaves in the same send as the header block (one send per small response instead
    of two), a pre-rendered :class:`~api.raw_response.RawResponse` is written whole (``send_raw``), and a
    body item that is a :class:`~sync.storage.reader.FileRange` goes out with ``sendfile``.  Everything else
    (header validation of ordinary responses, framing, HEAD/204/304 rules) is gunicorn's own."""

    # gunicorn's attributes that these methods set (annotations only, for the type checker)
    headers_sent: bool
    response_length: int | None
    sent: int

    def default_headers(self) -> list[str]:
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        major, minor = self.req.version
        headers = [
            f"HTTP/{major}.{minor} {self.status}\r\n",
            f"Server: {self.version}\r\n",
            f"Date: {http_date()}\r\n",
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def _head(self) -> bytes:
        lines = self.default_headers()
        lines.extend([f"{k}: {v}\r\n" for k, v in self.headers])
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        util.write(self.sock, self._head())
        self.headers_sent = True

    def write(self, arg: Any) -> None:
        if type(arg) is not bytes and self._sent_from_file(arg):
            return
        if (
            not self.headers_sent
            and type(arg) is bytes
            and 0 < len(arg) <= COALESCE_MAX
            and not self.chunked
            and not self._omits_body
            and (self.response_length is None or len(arg) <= self.response_length)
        ):
            head = self._head()
            self.headers_sent = True
            self.sent = len(arg)
            util.write(self.sock, head + arg)
            return
        super().write(arg)

    def _sent_from_file(self, arg: Any) -> bool:
        """Send a :class:`~sync.storage.reader.FileRange` body item with ``sendfile`` (False: not one).

        The kernel moves the bytes from the page cache to the socket: no read into this process, no copy
        out of it.  A piece whose first page is no longer cached is read in on an OS thread first
        (:mod:`sync.storage.coldio`): sendfile would wait for the disk on the hub's thread.  The socket is
        non-blocking under gevent; EAGAIN waits cooperatively until writable."""
        # imported by the app in the worker, after gevent's patch (never load storage into the master)
        from sync import runtime  # noqa: PLC0415
        from sync.storage import coldio  # noqa: PLC0415
        from sync.storage.reader import FileRange  # noqa: PLC0415

        if type(arg) is not FileRange:
            return False
        self.send_headers()
        if self._omits_body:
            return True
        size = arg.size
        if self.response_length is not None:
            size = min(size, self.response_length - self.sent)
        if size <= 0:
            return True
        if self.chunked:
            util.write(self.sock, f"{size:X}\r\n".encode("latin-1"))
        fd = os.open(arg.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            out = self.sock.fileno()
            offset, left = arg.offset, size
            while left:
                piece = min(left, coldio.PIECE)  # an uncached piece is read in on an OS thread first
                if coldio.read_may_wait(fd, offset, piece):
                    runtime.run_blocking(coldio.page_in, fd, offset, piece)
                try:
                    sent = os.sendfile(out, fd, offset, piece)
                except BlockingIOError:
                    if not runtime.wait_writable(out, self.sock.gettimeout()):
                        raise TimeoutError("timed out sending a file range") from None
                    continue
                if not sent:
                    raise OSError(f"{arg.path} ended before {arg.offset + size}")
                offset += sent
                left -= sent
        finally:
            os.close(fd)
        self.sent += size
        if self.chunked:
            util.write(self.sock, b"\r\n")
        return True

    def send_raw(self, raw: RawResponse) -> None:
        """Write a pre-rendered response: our status line, Server, Date and Connection, then its block."""
        self.status = raw.status
        self.status_code = int(raw.status[:3])
        self.response_length = self.sent = len(raw.body)
        connection = "close" if self.should_close() else "keep-alive"
        major, minor = self.req.version
        head = (
            f"HTTP/{major}.{minor} {raw.status}\r\nServer: {self.version}\r\nDate: {http_date()}\r\n"
            f"Connection: {connection}\r\n"
        ).encode("latin-1")
        self.headers_sent = True
        data = b"".join((head, raw.head, b"\r\n", raw.body))
        # one send is the whole answer unless the socket's buffer is full: gevent's sendall would first ask
        # the socket its buffer size (a getsockopt system call) and slice a memoryview, per response
        sent = self.sock.send(data)
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])
