"""Storage fixtures: each storage test runs on disk and in memory unless it needs one of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.storage import FileStorage, MemoryStorage, Storage

CHUNK = 1000  # small chunks: most tests cross boundaries


@pytest.fixture(params=["file", "memory"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return FileStorage(tmp_path, "stack", chunk_bytes=CHUNK)
    return MemoryStorage(chunk_bytes=CHUNK)


@pytest.fixture
def file_storage(tmp_path: Path) -> FileStorage:
    return FileStorage(tmp_path, "stack", chunk_bytes=CHUNK)
