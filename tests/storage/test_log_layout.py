"""The two layouts of a live-log append (one plain loop for short runs, parallel lists for long ones) write
the same bytes, and refuse the same offsets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.offsets import LogOffset
from sync.storage import LogItem
from sync.storage.log_layout import SMALL, _batch, _small, layout_items
from sync.storage.positions import SeqPosition

_OPS = ["insert", "update", "delete", "control"]


@st.composite
def _runs(draw: st.DrawFn) -> tuple[list[LogItem], SeqPosition, int, bool, list[int]]:
    n = draw(st.integers(1, 40))
    tx = draw(st.integers(1, 5))
    op = draw(st.integers(0, 3))
    last = LogOffset(tx, op) if draw(st.booleans()) else None
    items = []
    for _ in range(n):
        if draw(st.booleans()):
            tx += draw(st.integers(1, 3))
            op = draw(st.integers(0, 2))
        else:
            op += draw(st.integers(1, 2))
        json = b'{"v":"' + b"x" * draw(st.integers(0, 60)) + b'"}'
        items.append(LogItem(LogOffset(tx, op), "k", draw(st.sampled_from(_OPS)), json))
    if last is None and draw(st.booleans()):
        first = items[0]
        last = LogOffset(first.offset.tx, first.offset.op + draw(st.integers(-1, 0)))  # equal: refused
    pos = SeqPosition(
        items=draw(st.integers(0, 50)),
        json_len=draw(st.integers(0, 5000)),
        chunks=draw(st.integers(0, 3)),
        open_chunk_bytes=draw(st.integers(0, 200)),
        last=last,
    )
    ends = list(range(n)) if draw(st.booleans()) else sorted(draw(st.sets(st.integers(0, n - 1))))
    return items, pos, draw(st.sampled_from([1, 50, 200, 10**9])), draw(st.booleans()), ends


@settings(max_examples=300, deadline=None)
@given(_runs())
def test_the_loop_and_the_lists_write_the_same_bytes(
    run: tuple[list[LogItem], SeqPosition, int, bool, list[int]],
) -> None:
    items, pos, threshold, txn_end, ends = run
    try:
        expected = _batch(items, pos, threshold, txn_end, ends)
    except ValueError:
        with pytest.raises(ValueError, match="does not follow"):
            _small(items, pos, threshold, txn_end, ends)
        return
    assert _small(items, pos, threshold, txn_end, ends) == expected


@pytest.mark.parametrize("bad", [LogOffset(0, 5), LogOffset(7, 1), LogOffset(6, 9)])
def test_both_refuse_offsets_that_do_not_follow(bad: LogOffset) -> None:
    pos = SeqPosition(last=LogOffset(7, 1))
    for n in (1, SMALL + 1):
        items = [LogItem(LogOffset(8 + i, 0), "k", "insert", b"{}") for i in range(n)]
        items[n // 2] = LogItem(bad, "k", "insert", b"{}")
        with pytest.raises(ValueError, match="does not follow"):
            layout_items(items, pos, 100, txn_end=True, ends=())
