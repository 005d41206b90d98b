"""FlushTracker: the acknowledged LSN never passes a transaction some affected shape has not made durable."""

from __future__ import annotations

from typing import Any

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


def test_a_shape_removed_and_registered_again_pins_only_what_came_after() -> None:
    t = FlushTracker()
    t.register_commit(100, ["a", "b"])
    assert t.remove_shape("a") == 0  # b still pins 100
    t.register_commit(200, ["a"])  # the handle is back: 200 waits for it
    assert t.durable("b", off(100)) == 100
    assert t.durable("a", off(150)) == 100
    assert t.durable("a", off(200)) == 200
    assert t.idle


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.lists(st.sampled_from("abcd"), unique=True, max_size=4)),
        st.tuples(st.just("durable"), st.sampled_from("abcd")),
        st.tuples(st.just("remove"), st.sampled_from("abcd")),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_ack_follows_durability_and_removals(ops: list[tuple[str, Any]]) -> None:
    """Against a model that keeps every (transaction, shape) pair: a pair settles when the shape reports its
    offset, or when the shape is removed after the transaction was registered."""
    t = FlushTracker()
    registered: list[tuple[int, set[str]]] = []  # (commit LSN, shapes still owing it)
    reported: dict[str, int] = {}  # the next offset each shape reports
    lsn = 0
    for op, arg in ops:
        if op == "register":
            lsn += 100
            acked = t.register_commit(lsn, arg)
            registered.append((lsn, set(arg)))
        elif op == "durable":
            # a storage reports what it was told, in order: up to the newest transaction that reached it
            upto = max((at for at, shapes in registered if arg in shapes), default=reported.get(arg, 0))
            reported[arg] = upto
            acked = t.durable(arg, off(upto))
            for at, shapes in registered:
                if at <= upto:
                    shapes.discard(arg)
        else:
            acked = t.remove_shape(arg)
            for _, shapes in registered:
                shapes.discard(arg)
        expected = 0
        for at, shapes in registered:
            if shapes:
                break
            expected = at
        assert acked == expected
        assert t.idle == all(not shapes for _, shapes in registered)
