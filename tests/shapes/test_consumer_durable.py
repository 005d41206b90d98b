"""DirectDurability: what a consumer without a report sink reports (the storage's durable offsets, and
transactions that added nothing to the log, settled once what precedes them is durable)."""

from __future__ import annotations

from sync.offsets import LogOffset
from sync.shapes.consumer_durable import DirectDurability


def test_an_empty_transaction_is_settled_at_once_when_nothing_is_in_flight() -> None:
    direct = DirectDurability()
    assert direct.settle_empty(100, None) == LogOffset(100, 0)  # nothing appended yet
    assert direct.stored(LogOffset(50, 3)) == LogOffset(50, 3)
    assert direct.settle_empty(120, LogOffset(50, 3)) == LogOffset(120, 0)  # all appended is durable


def test_an_empty_transaction_waits_for_what_was_appended_before_it() -> None:
    direct = DirectDurability()
    assert direct.settle_empty(200, LogOffset(150, 2)) is None
    assert direct.stored(LogOffset(150, 1)) == LogOffset(150, 1)  # not yet: the pending one waits
    assert direct.stored(LogOffset(150, 2)) == LogOffset(200, 0)  # now it is settled
    assert direct.stored(LogOffset(150, 2)) == LogOffset(150, 2)  # ... once
    assert direct.stored(LogOffset(100, 0)) == LogOffset(150, 2)  # durability never goes back
