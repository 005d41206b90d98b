"""Hypothesis state machine: random append / flush / crash (with torn writes) / reopen / read sequences on
a real file log, compared with a plain in-memory model of transactions and chunks."""

from __future__ import annotations

import os
import shutil
import tempfile

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sync.offsets import LogOffset
from sync.storage import FileStorage, LogItem
from sync.storage.format import ITEM
from tests.storage.helpers import follow, parse

THRESHOLD = 300


def make_item(tx: int, op: int, size: int) -> LogItem:
    body = {"k": f"{tx}/{op}", "pad": "q" * size, "headers": {"lsn": str(tx), "op_position": op}}
    return LogItem(LogOffset(tx, op), f"{tx}/{op}", "update", orjson.dumps(body))


def chunk_ends(items: list[LogItem]) -> list[LogOffset]:
    """The model of spec §3 chunking: closed chunk ends, then the latest offset."""
    ends: list[LogOffset] = []
    size = 0
    for it in items:
        size += len(it.json)
        if size >= THRESHOLD:
            ends.append(it.offset)
            size = 0
    if not items:
        return [LogOffset.SNAPSHOT_END]
    if not ends or ends[-1] != items[-1].offset:
        ends.append(items[-1].offset)
    return ends


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="storage-sm-")
        self.storage = FileStorage(self.dir, "s", chunk_bytes=THRESHOLD)
        self.writer = self.storage.create("h", {})
        self.writer.complete_snapshot(1, 2, [])
        self.committed: list[LogItem] = []
        self.pending: list[LogItem] = []
        self.durable: list[LogItem] = []  # committed prefix known fsynced
        self.synced = 0  # written items known fsynced
        self.tx = 10
        self.op = 0
        self.flushed_since_append = True

    def teardown(self) -> None:
        self.writer.abort()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def path(self) -> str:
        return os.path.join(self.dir, "s", "shapes", "h")

    @rule(n=st.integers(0, 6), size=st.integers(0, 400), complete=st.booleans())
    def append(self, n: int, size: int, complete: bool) -> None:
        items = []
        for _ in range(n):
            items.append(make_item(self.tx, self.op, size))
            self.op += 2
        self.writer.append(items, complete=complete)
        self.pending += items
        if complete:
            self.committed += self.pending
            self.pending = []
            self.tx += 1 + size % 3
            self.op = 0
        self.flushed_since_append = False

    @rule()
    def flush(self) -> None:
        durable = self.writer.flush()
        assert durable == (self.committed[-1].offset if self.committed else None)
        self.durable = list(self.committed)
        self.synced = len(self.committed) + len(self.pending)
        self.flushed_since_append = True

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """Abandon the writer; unless everything was fsynced, maybe tear one file inside the unsynced tail."""
        self.writer.abort()
        written = self.committed + self.pending
        valid = len(written)
        if not self.flushed_since_append and written:
            name = data.draw(st.sampled_from(["log.json", "log.items", "log.chunks"]))
            path = os.path.join(self.path, name)
            cut = data.draw(st.integers(self._synced_size(name), os.path.getsize(path)))
            os.truncate(path, cut)
            valid = self._valid_items(name, cut, written)
        # the log keeps whole committed transactions whose items all survived
        keep = min(valid, len(self.committed))
        while (
            0 < keep < len(self.committed)
            and self.committed[keep].offset.tx == self.committed[keep - 1].offset.tx
        ):
            keep -= 1
        self.committed = self.committed[:keep]
        self.pending = []
        self.writer = self.storage.open("h")
        assert self.committed[: len(self.durable)] == self.durable
        self._after_reopen()

    def _after_reopen(self) -> None:
        self.synced = len(self.committed)
        self.durable = list(self.committed)
        self.tx = (self.committed[-1].offset.tx if self.committed else 10) + 1
        self.op = 0
        self.flushed_since_append = True

    def _synced_size(self, name: str) -> int:
        synced = (self.committed + self.pending)[: self.synced]
        if name == "log.items":
            return len(synced) * ITEM.size
        if name == "log.chunks":
            return os.path.getsize(os.path.join(self.path, name)) if synced else 0
        assert name == "log.json"
        return sum(len(it.json) + 1 for it in synced)

    @staticmethod
    def _valid_items(name: str, cut: int, written: list[LogItem]) -> int:
        if name == "log.items":
            return min(len(written), cut // ITEM.size)
        if name == "log.chunks":
            return len(written)
        total = 0
        for i, it in enumerate(written):
            total += len(it.json) + 1
            if total > cut:
                return i
        return len(written)

    @rule()
    def reopen(self) -> None:
        self.writer.close()
        self.pending = []
        self.writer = self.storage.open("h")
        self._after_reopen()

    @precondition(lambda self: bool(self.committed))
    @rule(data=st.data())
    def read_at(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.committed) - 1))
        offset = self.committed[i].offset
        ends = chunk_ends(self.committed)
        end = next(e for e in ends if e > offset) if offset < ends[-1] else ends[-1]
        read = self.writer.reader().read_chunk(offset)
        assert read.end_offset == end
        expected = [orjson.loads(it.json) for it in self.committed[i + 1 :] if it.offset <= end]
        assert parse(read) == expected
        assert read.up_to_date == (end == self.committed[-1].offset)

    @invariant()
    def whole_log_matches_model(self) -> None:
        reader = self.writer.reader()
        chain = follow(reader, LogOffset(0, 0))
        assert chain.items == [orjson.loads(it.json) for it in self.committed]
        assert chain.ends == chunk_ends(self.committed)
        assert reader.latest_offset() == (
            self.committed[-1].offset if self.committed else LogOffset.SNAPSHOT_END
        )


LogMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_log_state_machine = LogMachine.TestCase
