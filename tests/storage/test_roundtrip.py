"""Append/read round trips: chunk boundaries, empty and huge chunks, offsets at the edges (spec §3)."""

from __future__ import annotations

from typing import cast

import orjson
import pytest

from sync.offsets import LogOffset
from sync.storage import LogItem, ShapeLogWriter, Storage
from sync.storage.reader import LogView
from tests.storage.conftest import CHUNK
from tests.storage.helpers import follow, item, log_items, parse, row, txn


def ready(storage: Storage, rows: int = 0, handle: str = "h") -> ShapeLogWriter:
    w = storage.create(handle, {"table": "items"})
    w.append_snapshot([row(i) for i in range(rows)])
    w.complete_snapshot(10, 20, [12, 15])
    return w


def test_empty_table_sequence(storage: Storage) -> None:
    w = ready(storage)
    r = w.reader()
    first = r.read_chunk(LogOffset.BEFORE_ALL)
    assert first.snapshot and first.end_offset == LogOffset(0, 0) and not first.up_to_date
    assert parse(first) == [
        {"headers": {"control": "snapshot-end", "xmin": "10", "xmax": "20", "xip_list": ["12", "15"]}}
    ]
    second = r.read_chunk(first.end_offset)
    assert second.count == 0 and second.body == b""
    assert second.end_offset == LogOffset.SNAPSHOT_END and second.up_to_date
    assert r.latest_offset() == LogOffset.SNAPSHOT_END
    assert r.read_chunk(LogOffset.SNAPSHOT_END) == second


def test_snapshot_chunks_then_log_chunks(storage: Storage) -> None:
    w = ready(storage, rows=40)
    for t in range(1, 30):
        w.append(txn(1000 + t, 3), complete=True)
    r = w.reader()
    chain = follow(r)
    snap_chunks = r.snapshot_chunks
    assert chain.ends[:snap_chunks] == [LogOffset(0, k) for k in range(snap_chunks)]
    assert snap_chunks > 2
    got = chain.items
    assert [i["value"]["id"] for i in got[:40]] == [str(i) for i in range(40)]  # type: ignore[index]
    assert got[40]["headers"]["control"] == "snapshot-end"  # type: ignore[index]
    assert [i["value"]["id"] for i in log_items(chain)] == [  # type: ignore[index]
        f"{1000 + t}-{2 * k}" for t in range(1, 30) for k in range(3)
    ]
    # every closed chunk reached the threshold with its last item, and not before
    sizes = [len(orjson.dumps(i)) for i in got]
    pos = 0
    for chunk in chain.chunks[:-1]:
        lens = sizes[pos : pos + len(chunk)]
        pos += len(chunk)
        if chunk and cast(dict[str, object], chunk[-1].get("headers", {})).get("control") != "snapshot-end":
            assert sum(lens) >= CHUNK > sum(lens[:-1])
    assert chain.ends[-1] == r.latest_offset() == LogOffset(1029, 4)


def test_offsets_inside_and_at_the_edges(storage: Storage) -> None:
    w = ready(storage)
    items = [it for t in range(1, 20) for it in txn(100 * t, 4, size=30)]
    for t in range(1, 20):
        w.append([i for i in items if i.offset.tx == 100 * t], complete=True)
    r = w.reader()
    ends = follow(r, LogOffset(0, 0)).ends
    latest = r.latest_offset()
    for idx, it in enumerate(items):
        read = r.read_chunk(it.offset)
        chunk_end = next(e for e in ends if e > it.offset) if it.offset < latest else latest
        assert read.end_offset == chunk_end
        expected = [i.offset for i in items[idx + 1 :] if i.offset <= chunk_end]
        got = [LogOffset(int(x["headers"]["lsn"]), x["headers"]["op_position"]) for x in parse(read)]  # type: ignore[index]
        assert got == expected
        assert read.up_to_date == (chunk_end == latest)
        head = r.read_chunk(it.offset, body=False)
        assert head.body == b"" and (head.count, head.end_offset, head.up_to_date) == (
            read.count,
            read.end_offset,
            read.up_to_date,
        )
    # an offset between items (odd op) reads from the next item
    between = r.read_chunk(LogOffset(100, 1))
    assert parse(between)[0]["headers"]["op_position"] == 2  # type: ignore[index]
    # one past the end: out of bounds, nothing read
    past = r.read_chunk(LogOffset(latest.tx, latest.op + 1))
    assert past.out_of_bounds and past.count == 0 and past.end_offset == latest
    beyond = r.read_chunk(LogOffset(latest.tx + 1, 0))
    assert beyond.out_of_bounds
    at_latest = r.read_chunk(latest)
    assert not at_latest.out_of_bounds and at_latest.count == 0 and at_latest.up_to_date


def test_huge_single_items_get_their_own_chunks(storage: Storage) -> None:
    w = ready(storage)
    w.append([item(5, 0, size=10)], complete=True)
    w.append([item(6, 0, size=5 * CHUNK), item(6, 2, size=3 * CHUNK)], complete=True)
    w.append([item(7, 0, size=10)], complete=True)
    chain = follow(w.reader(), LogOffset(0, 0))
    assert [len(c) for c in chain.chunks] == [2, 1, 1]
    assert chain.ends == [LogOffset(6, 0), LogOffset(6, 2), LogOffset(7, 0)]
    assert len(chain.chunks[0][1]["value"]["pad"]) == 5 * CHUNK  # type: ignore[index]


def test_transaction_visible_only_when_complete(storage: Storage) -> None:
    w = ready(storage)
    w.append(txn(9, 2), complete=True)
    r = w.reader()
    w.append([item(10, 0, size=2 * CHUNK)], complete=False)  # closes a chunk inside the open transaction
    w.append([item(10, 2)], complete=False)
    assert r.latest_offset() == LogOffset(9, 2)
    assert r.read_chunk(LogOffset(9, 2)).count == 0
    assert follow(r, LogOffset(0, 0)).ends == [LogOffset(9, 2)]
    w.append([], complete=True)  # an empty last fragment still ends the transaction
    assert r.latest_offset() == LogOffset(10, 2)
    assert follow(r, LogOffset(0, 0)).ends == [LogOffset(10, 0), LogOffset(10, 2)]
    w.close()
    reopened = storage.open("h")
    assert reopened.last_offset == LogOffset(10, 2)


def test_snapshot_not_ready_until_chunks_close(storage: Storage) -> None:
    w = storage.create("h", {})
    r = w.reader()
    assert not r.read_chunk(LogOffset.BEFORE_ALL).ready
    w.append_snapshot([row(i) for i in range(3)])
    assert not r.read_chunk(LogOffset.BEFORE_ALL).ready  # chunk 0 still open
    w.append_snapshot([row(3, size=CHUNK), row(4)])
    assert r.read_chunk(LogOffset.BEFORE_ALL).ready
    assert not r.read_chunk(LogOffset(0, 0)).ready
    assert not r.read_chunk(LogOffset.SNAPSHOT_END).ready
    w.append(txn(50, 1), complete=True)  # log items may arrive during the snapshot
    assert not r.read_chunk(LogOffset(0, 1)).ready
    w.complete_snapshot(1, 2, [])
    assert r.snapshot_complete
    chain = follow(r)
    assert [len(c) for c in chain.chunks] == [4, 2, 1]  # row 4 + snapshot-end close the last snapshot chunk
    assert chain.ends == [LogOffset(0, 0), LogOffset(0, 1), LogOffset(50, 0)]


def test_offsets_must_increase(storage: Storage) -> None:
    w = ready(storage)
    w.append(txn(5, 2), complete=True)
    with pytest.raises(ValueError, match="does not follow"):
        w.append([item(5, 2)], complete=True)
    with pytest.raises(ValueError, match="does not follow"):
        w.append([item(6, 2), item(6, 0)], complete=True)
    assert w.reader().latest_offset() == LogOffset(5, 2)


def test_reopen_resumes_chunking_and_offsets(storage: Storage) -> None:
    w = ready(storage, rows=5)
    for t in range(1, 8):
        w.append(txn(t, 3, size=40), complete=True)
    before = follow(w.reader())
    assert w.flush() == LogOffset(7, 4)
    w.close()
    w2 = storage.open("h")
    assert w2.last_offset == w2.durable_offset == LogOffset(7, 4)
    assert follow(w2.reader()) == before
    for t in range(8, 12):
        w2.append(txn(t, 3, size=40), complete=True)
    w2.close()
    # chunk boundaries equal those of a log written in one go
    ref = ready(storage, rows=5, handle="ref")
    for t in range(1, 12):
        ref.append(txn(t, 3, size=40), complete=True)
    assert follow(storage.open("h").reader()) == follow(ref.reader())
    assert storage.disk_usage("h") > 0


def test_metadata_survives(storage: Storage) -> None:
    w = ready(storage)
    assert w.handle == "h"
    w.close()
    meta = storage.open("h").metadata
    assert meta["definition"] == {"table": "items"}
    assert (meta["xmin"], meta["xmax"], meta["xip_list"], meta["snapshot_complete"]) == (
        10,
        20,
        [12, 15],
        True,
    )


def test_closed_writer_refuses_appends(storage: Storage) -> None:
    w = ready(storage)
    with pytest.raises(ValueError, match="already complete"):
        w.complete_snapshot(1, 2, [])
    w.append([item(3, 0)], complete=True)
    w.close()
    assert w.flush() == LogOffset(3, 0)
    with pytest.raises(ValueError, match="closed"):
        w.append([item(4, 0)], complete=True)


def test_control_items_in_the_log(storage: Storage) -> None:
    w = ready(storage)
    event = LogItem(LogOffset(7, 0), "", "control", b'{"headers":{"event":"move-out","patterns":[]}}')
    w.append([event, item(7, 2)], complete=True)
    w.close()
    chain = follow(storage.open("h").reader(), LogOffset(0, 0))
    assert chain.items[0] == {"headers": {"event": "move-out", "patterns": []}}


def test_the_writer_publishes_every_field_of_the_log_view(storage: Storage) -> None:
    """``ShapeLogWriter._publish`` builds LogView by position (not by ``_replace``, too slow per append): a
    field added to LogView must be added there too, in order."""
    assert list(LogView._fields) == [
        "log_items",
        "log_json",
        "log_chunks",
        "log_last",
        "snap_chunks",
        "snap_complete",
        "deleted",
    ]
    w = storage.create("h", {})
    w.complete_snapshot(1, 2, [])
    w.mark_deleted()
    w.append(txn(3, 2), complete=True)
    assert w.state.view.deleted and w.state.view.log_last == LogOffset(3, 2)
