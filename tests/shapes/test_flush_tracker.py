"""FlushTracker: the acknowledged LSN never passes a transaction some affected shape has not made durable."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.offsets import LogOffset
from sync.shapes.flush_tracker import FlushTracker


def off(tx: int, op: int = 0) -> LogOffset:
    return LogOffset(tx, op)


def test_untouched_transactions_are_durable_at_once() -> None:
    t = FlushTracker()
    assert t.register(100, {}) == 100
    assert t.idle


def test_ack_waits_for_every_affected_shape() -> None:
    t = FlushTracker()
    assert t.register(110, {"a": off(100, 2), "b": off(100, 0)}) == 0
    assert t.durable("a", off(100, 2)) == 0
    assert not t.idle
    assert t.durable("b", off(100, 0)) == 110
    assert t.idle


def test_later_transaction_does_not_overtake_an_earlier_pending_one() -> None:
    t = FlushTracker()
    t.register(110, {"a": off(100)})
    t.register(210, {"b": off(200)})
    assert t.durable("b", off(200)) == 0  # txn 100 still pending on a
    assert t.durable("a", off(100)) == 210


def test_durable_report_before_register_counts() -> None:
    t = FlushTracker()
    t.durable("a", off(100, 4))
    assert t.register(110, {"a": off(100, 4)}) == 110


def test_removed_shape_stops_pinning() -> None:
    t = FlushTracker()
    t.register(110, {"a": off(100), "b": off(100)})
    t.durable("b", off(100))
    assert t.remove_shape("a") == 110


def test_partial_durability_inside_a_transaction_is_not_enough() -> None:
    t = FlushTracker()
    t.register(110, {"a": off(100, 8)})
    assert t.durable("a", off(100, 6)) == 0
    assert t.durable("a", off(100, 8)) == 110


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from("abcd"), unique=True, max_size=4),
        min_size=1,
        max_size=12,
    ),
    st.randoms(use_true_random=False),
    st.booleans(),
)
def test_ack_is_the_longest_fully_durable_prefix(txns: list[list[str]], rnd: object, by_commit: bool) -> None:
    import random  # noqa: PLC0415

    assert isinstance(rnd, random.Random)
    t = FlushTracker()
    lsns = [(i + 1) * 100 for i in range(len(txns))]
    for lsn, shapes in zip(lsns, txns, strict=True):
        if by_commit:  # the collector's way: end LSN = commit LSN, offsets <commit>_0
            t.register_commit(lsn + 10, shapes)
        else:
            t.register(lsn + 10, {s: off(lsn + 10) for s in shapes})
    durable: dict[str, int] = {}
    events = [(s, lsn) for lsn, shapes in zip(lsns, txns, strict=True) for s in shapes]
    # storages report in their own order, but each shape reports increasing offsets
    per_shape: dict[str, list[int]] = {}
    for s, lsn in events:
        per_shape.setdefault(s, []).append(lsn)
    cursors = dict.fromkeys(per_shape, 0)
    while any(cursors[s] < len(v) for s, v in per_shape.items()):
        s = rnd.choice([s for s, v in per_shape.items() if cursors[s] < len(v)])
        lsn = per_shape[s][cursors[s]]
        cursors[s] += 1
        durable[s] = lsn
        acked = t.durable(s, off(lsn + 10))
        expected = 0
        for l2, shapes in zip(lsns, txns, strict=True):
            if all(durable.get(x, -1) >= l2 for x in shapes):
                expected = l2 + 10
            else:
                break
        assert acked == expected
    assert t.ackable_lsn == lsns[-1] + 10


def test_register_commit_skips_shapes_already_durable_and_removal_unpins() -> None:
    t = FlushTracker()
    t.durable("a", off(100, 6))
    assert t.register_commit(100, ["a"]) == 100  # <100>_0 is below what a reported
    assert t.register_commit(200, ["a", "b"]) == 100
    assert t.register_commit(300, ["b"]) == 100
    assert t.durable("a", off(200, 0)) == 100
    assert t.remove_shape("b") == 300
    assert t.idle
