"""Snapshot chunks given as file ranges (``sync.storage.reader.FileRange``): a server that sends files itself
(``SERVER_FILES_KEY``, our gunicorn worker) receives the range as one body item, between ``[`` and the
tail; any other server receives the same bytes, read.  Either way the length is exact."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from api.engine_port import LogChunk
from api.raw_response import SERVER_FILES_KEY
from sync.offsets import LogOffset
from sync.storage.reader import FileRange
from tests.api.conftest import TEST_SETTINGS, build_app
from tests.api.fake_engine import FakeEngine

ROWS = [{"id": str(i), "title": "t" * (i % 7)} for i in range(40)]


class _FileEngine(FakeEngine):
    """The fake engine, but its chunks' pieces are file ranges (in files it writes) while ``files`` is on."""

    def __init__(self, directory: Path) -> None:
        super().__init__(snapshot_chunk_rows=15)
        self.files = True
        self._dir = directory
        self._names = itertools.count()

    def read(self, handle: str, offset: LogOffset, *, per_item: bool = False) -> LogChunk:
        chunk = super().read(handle, offset, per_item=per_item)
        if not self.files or per_item or chunk.is_empty:
            return chunk
        data = b"".join(chunk.pieces)
        path = self._dir / f"chunk-{next(self._names)}"
        path.write_bytes(b"padding" + data + b"more")
        where = FileRange(str(path), len(b"padding"), len(data))
        return LogChunk(chunk.end_offset, chunk.latest_offset, False, where)


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    fake = _FileEngine(tmp_path)
    yield fake
    fake.stop()


def _call(app: Any, query: str, extras: dict[str, Any]) -> tuple[str, dict[str, str], list[Any]]:
    environ = falcon.testing.create_environ(path="/v1/shape", query_string=query)
    environ.update(extras)
    started: list[Any] = []
    body = app(environ, lambda status, headers, *_: started.extend((status, headers)))
    try:
        items = list(body)
    finally:
        getattr(body, "close", lambda: None)()
    return started[0], {k.lower(): v for k, v in started[1]}, items


def _bytes(items: list[Any]) -> bytes:
    return b"".join(item.read() if isinstance(item, FileRange) else item for item in items)


def test_file_ranges_leave_as_items_for_a_file_server_and_as_bytes_otherwise(engine: Any) -> None:
    table = "items"
    engine.tables[table] = ROWS
    app = build_app(engine, TEST_SETTINGS)
    query, offset, handle, ranges = f"table={table}", "-1", "", 0
    while True:
        q = f"{query}&offset={offset}" + (f"&handle={handle}" if handle else "")
        engine.files = False
        status, headers, plain = _call(app, q, {})
        engine.files = True
        status_read, headers_read, read = _call(app, q, {})
        status_sent, headers_sent, sent = _call(app, q, {SERVER_FILES_KEY: True})
        assert status == status_read == status_sent == "200 OK"
        body = b"".join(plain)
        assert _bytes(read) == _bytes(sent) == body
        assert all(type(item) is bytes for item in read)  # another server never sees a FileRange
        assert headers_read["content-length"] == headers_sent["content-length"] == str(len(body))
        if any(isinstance(item, FileRange) for item in sent):
            ranges += 1
            assert len(sent) == 3 and sent[0] == b"[" and sent[2].endswith(b"]")
        if "electric-up-to-date" in headers:
            break
        offset, handle = headers["electric-offset"], headers["electric-handle"]
    assert ranges >= 3  # each snapshot chunk, and the log chunk too
