"""Format 4 records on recovery: an append is one record with one crc; a record torn or damaged by a crash
is dropped whole, and a record that recovery cuts short (a transaction left incomplete inside it) is
closed again on disk, so that a later recovery from an older durable marker still keeps what followed."""

from __future__ import annotations

from pathlib import Path

from sync.offsets import LogOffset
from sync.storage import FileStorage, ShapeLogWriter
from sync.storage.format import ITEM, REC_END, Durable
from sync.storage.items import WholeTransactions
from tests.storage.helpers import follow, log_index, txn


def _log(storage: FileStorage) -> ShapeLogWriter:
    w = storage.create("h", {})
    w.complete_snapshot(1, 2, [])
    return w


def _dir(storage: FileStorage) -> Path:
    return storage.shapes_dir / "h"


def _ends(w: ShapeLogWriter) -> list[int]:
    items = follow(w.reader(), LogOffset(0, 0)).items
    return [int(str(i["headers"]["lsn"])) for i in items if isinstance(i.get("headers"), dict)]  # type: ignore[index]


def test_a_torn_record_is_dropped_whole(file_storage: FileStorage) -> None:
    """Ten one-item transactions in one append: their JSON and nine of their entries reached the disk but
    not the tenth (the record's end): none of the ten is kept, though each ends a transaction."""
    w = _log(file_storage)
    w.append(txn(5, 2), complete=True)
    assert w.flush() == LogOffset(5, 2)
    w.append_batch([WholeTransactions([txn(tx, 1)[0] for tx in range(10, 20)])])  # not fsynced
    w.abort()
    items = _dir(file_storage) / "log.items"
    os_size = items.stat().st_size
    with items.open("r+b") as f:
        f.truncate(os_size - ITEM.size)
    again = file_storage.open("h")
    assert again.last_offset == LogOffset(5, 2)
    assert _ends(again) == [5, 5]
    assert len(log_index(_dir(file_storage))) == 2
    again.close()


def test_a_damaged_record_goes_from_its_start(file_storage: FileStorage) -> None:
    """A byte of the first item of an unsynced record is damaged: the record's crc fails at its last
    entry, and the items before the damage in that record go too (they were not fsynced either)."""
    w = _log(file_storage)
    w.append(txn(5, 1), complete=True)
    w.flush()
    w.append_batch([WholeTransactions([txn(tx, 1)[0] for tx in range(10, 20)])])
    w.abort()
    json = _dir(file_storage) / "log.json"
    data = bytearray(json.read_bytes())
    data[-3] ^= 0x01  # in the record's last item
    json.write_bytes(bytes(data))
    again = file_storage.open("h")
    assert again.last_offset == LogOffset(5, 0)
    again.close()


def test_a_record_cut_short_is_closed_so_an_older_marker_keeps_what_follows(
    file_storage: FileStorage,
) -> None:
    """One append holds transaction 10 (complete) and the first fragment of 11; a crash leaves 11
    incomplete, so recovery keeps 10 only: mid-record.  Transaction 12 is appended and fsynced after that,
    and the durable marker lags (group syncs write it every few hundred items): the next recovery checks
    the records after the marker again, and must find 10's part closed as a record of its own (without
    that, 12's record would be checked from 10's first byte and dropped: an acknowledged transaction
    lost)."""
    w = _log(file_storage)
    w.append(txn(5, 1), complete=True)
    w.flush()
    w.append_batch([(tuple(txn(10, 3)), True), (tuple(txn(11, 2)), False)])
    w.flush()  # durable, but transaction 11 never completes
    w.abort()
    again = file_storage.open("h")
    assert again.last_offset == LogOffset(10, 4)
    index = log_index(_dir(file_storage))  # checks every record's crc, the closed one's too
    assert len(index) == 4 and index[-1][4] == 1
    last = ITEM.unpack((_dir(file_storage) / "log.items").read_bytes()[-ITEM.size :])
    assert last[5] & REC_END
    again.append(txn(12, 2), complete=True)
    assert again.flush() == LogOffset(12, 2)
    again.abort()
    (_dir(file_storage) / "log.durable").write_bytes(Durable(1, 5, 0).encode())  # the marker lags
    third = file_storage.open("h")
    assert third.last_offset == LogOffset(12, 2)
    assert _ends(third) == [5, 10, 10, 10, 12, 12]
    third.close()


def test_a_marker_inside_a_record_trusts_its_start_and_checks_the_rest(file_storage: FileStorage) -> None:
    """A group sync's marker names the committed items, which may end inside a record (its last fragment
    was incomplete); the record is checked from its own start, and kept whole when it is intact."""
    w = _log(file_storage)
    w.append_batch([(tuple(txn(10, 2)), True), (tuple(txn(11, 2)), False)])
    w.append_batch([((), True)])  # 11 ends with an empty fragment (flags its last entry)
    w.append(txn(12, 1), complete=True)
    w.flush()
    w.abort()
    (_dir(file_storage) / "log.durable").write_bytes(Durable(2, 10, 2).encode())  # inside the first record
    again = file_storage.open("h")
    assert again.last_offset == LogOffset(12, 0)
    assert _ends(again) == [10, 10, 11, 11, 12]
    assert log_index(_dir(file_storage))[3][4] == 1  # the empty end's flag kept REC_END (the crc checks)
    again.close()
