"""Shape log storage: a durable, chunked, append-only log per shape, with lock-free readers.

Start with :mod:`sync.storage.format` (the on-disk format and layout), then:

* :mod:`~sync.storage.storage` -- ``FileStorage`` / ``MemoryStorage``: create, open (recover), delete, usage;
* :mod:`~sync.storage.writer` -- ``ShapeLogWriter``: append, close chunks, fsync, publish to readers;
* :mod:`~sync.storage.reader` -- ``ShapeLogReader.read_chunk(offset) -> ChunkRead`` for the HTTP layer;
* :mod:`~sync.storage.recovery` -- trimming a torn tail on open;
* :mod:`~sync.storage.fdcache` -- the process-wide cache of open descriptors (``storage.max_open_files``;
  LRU that keeps its resident set when thrashing);
* :mod:`~sync.storage.storage_actor` -- ``StorageActor``: one pykka actor per shape log, batching fsyncs.
"""

from __future__ import annotations

from sync.storage.errors import ShapeGone, ShapeMustBeRecreated, StorageCorrupt, StorageError
from sync.storage.items import AppendItem, ChunkRead, LogItem, OpKind, SnapshotRow, snapshot_end_json
from sync.storage.reader import ShapeLogReader
from sync.storage.storage import DEFAULT_CHUNK_BYTES, FileStorage, MemoryStorage, Storage
from sync.storage.writer import ShapeLogWriter

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "AppendItem",
    "ChunkRead",
    "FileStorage",
    "LogItem",
    "MemoryStorage",
    "OpKind",
    "ShapeGone",
    "ShapeLogReader",
    "ShapeLogWriter",
    "ShapeMustBeRecreated",
    "SnapshotRow",
    "Storage",
    "StorageCorrupt",
    "StorageError",
    "snapshot_end_json",
]
