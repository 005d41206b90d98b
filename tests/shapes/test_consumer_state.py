"""ConsumerState (pure): holding, snapshot filtering, replay skip and settling of empty transactions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.offsets import LogOffset
from sync.replication.changes import Column, Insert, Relation, Update
from sync.shapes.collector import ShapeChanges, ShapeRun
from sync.shapes.consumer_state import (
    Action,
    Append,
    CommitEmpty,
    ConsumerState,
    ShapeFailed,
    WholeTransactions,
)
from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import LogItem, ShapeLogEncoder
from sync.shapes.xid import PgSnapshot, SnapshotFilter

REL = Relation(7, "public", "t", "f", (Column("id", 23, -1, True), Column("v", 25, -1, True)))
DEF = ShapeDefinition("public", "t", 7, ("id", "v"), ("id",), all_columns=True)
SNAP = PgSnapshot(100, 105, frozenset({102}))  # 100, 101, 103, 104 visible; 102 running; >= 105 later


def state(**kw: object) -> ConsumerState:
    return ConsumerState(ShapeLogEncoder(DEF), **kw)  # type: ignore[arg-type]


def txn(xid: int, lsn: int, *ids: int, begin: bool = True, commit: bool = True) -> ShapeChanges:
    changes = tuple(Insert(REL, (str(i), "x"), op=2 * n) for n, i in enumerate(ids))
    return ShapeChanges(xid, lsn, changes, begin, commit)


def one_by_one(actions: list[Action]) -> list[Action]:
    """``actions`` with each ``WholeTransactions`` written as what it stands for: one ``Append(…, True)`` per
    item."""
    out: list[Action] = []
    for a in actions:
        if isinstance(a, WholeTransactions):
            out.extend(Append([item], True) for item in a.items)  # type: ignore[list-item]
        else:
            out.append(a)
    return out


def summary(actions: list[Action]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for a in actions:
        if isinstance(a, CommitEmpty):
            out.append(("empty", a.commit_lsn))
        else:
            out.append(("append", ([str(i.offset) for i in a.items], a.complete)))
    return out


def test_held_until_the_snapshot_then_filtered_by_visibility_and_wal_position() -> None:
    s = state()
    msgs = [txn(101, 1000, 1), txn(102, 1010, 2), txn(106, 1020, 3), txn(103, 1030, 4), txn(104, 2000, 5)]
    for m in msgs:
        assert s.changes(m) == []
    assert s.held_transactions == 5 and s.waiting_for_snapshot
    actions = s.snapshot_known(SNAP, wal_lsn=1500)
    assert summary(actions) == [
        ("empty", 1000),  # visible: in the snapshot already
        ("append", (["1010_0"], True)),  # in progress at the snapshot
        ("append", (["1020_0"], True)),  # began after it
        ("empty", 1030),  # visible, committed after an invisible one (WAL order != xid order)
        ("append", (["2000_0"], True)),  # at/after the WAL position: filtering ends for good
    ]
    assert not s.filtering
    assert summary(s.changes(txn(100, 2100, 6))) == [("append", (["2100_0"], True))]


def test_replayed_transactions_are_skipped_and_settled() -> None:
    s = state(last_tx=1010, snapshot_filter=SnapshotFilter(SNAP, 0))
    assert summary(s.changes(txn(200, 1000, 1))) == [("empty", 1000)]
    assert summary(s.changes(txn(201, 1010, 2))) == [("empty", 1010)]
    assert summary(s.changes(txn(202, 1020, 3))) == [("append", (["1020_0"], True))]


def test_fragments_of_one_transaction_and_the_last_flag() -> None:
    s = state(snapshot_filter=SnapshotFilter(SNAP, 0))
    first = s.changes(txn(300, 5000, 1, 2, begin=True, commit=False))
    middle = s.changes(ShapeChanges(300, 5000, (), False, False))
    last = s.changes(ShapeChanges(300, 5000, (Insert(REL, ("3", "y"), op=4),), False, True))
    assert summary(first) == [("append", (["5000_0"], False))]  # one item held back for `last`
    assert middle == []
    assert summary(last) == [("append", (["5000_2", "5000_4"], True))]
    assert isinstance(last[0], Append)
    items = [orjson.loads(i.json) for i in last[0].items]
    assert [i["headers"].get("last") for i in items] == [None, True]


def test_a_transaction_without_items_for_the_shape_is_settled() -> None:
    s = state(snapshot_filter=SnapshotFilter(SNAP, 0))
    noop = Update(REL, ("1", "x"), ("1", "x"), "O", op=0)
    assert summary(s.changes(ShapeChanges(400, 6000, (noop,), True, True))) == [("empty", 6000)]


@pytest.mark.parametrize(
    ("limit", "changes", "expect"), [("txns", 1, "transactions"), ("changes", 3, "changes")]
)
def test_holding_is_bounded(limit: str, changes: int, expect: str) -> None:
    s = state(max_held=2) if limit == "txns" else state(max_held_changes=6)
    ids = list(range(changes))
    s.changes(txn(101, 1000, *ids))
    s.changes(txn(102, 1010, *ids))
    with pytest.raises(ShapeFailed, match=f"more than \\d+ {expect}"):
        s.changes(txn(103, 1020, *ids))


def test_offsets_are_the_commit_lsn_and_op() -> None:
    s = state(snapshot_filter=SnapshotFilter(SNAP, 0))
    actions = s.changes(txn(500, 7000, 1, 2))
    assert isinstance(actions[0], Append)
    assert [i.offset for i in actions[0].items] == [LogOffset(7000, 0), LogOffset(7000, 2)]


def test_a_transaction_resent_from_its_beginning_after_a_reconnect_is_not_appended_twice() -> None:
    s = state(snapshot_filter=SnapshotFilter(SNAP, 0))
    frag1 = ShapeChanges(
        300, 5000, tuple(Insert(REL, (str(i), "x"), op=2 * i) for i in range(3)), True, False
    )
    frag2 = ShapeChanges(300, 5000, (Insert(REL, ("3", "y"), op=6),), False, True)
    before = s.changes(frag1)  # the connection drops here; Postgres resends the transaction whole
    assert summary(before) == [("append", (["5000_0", "5000_2"], False))]
    assert s.changes(frag1) == []  # every item of the first fragment is already in the log
    after = s.changes(frag2)
    assert summary(after) == [("append", (["5000_4", "5000_6"], True))]
    assert isinstance(after[0], Append)
    assert [orjson.loads(i.json)["headers"].get("last") for i in after[0].items] == [None, True]


def test_routed_messages_queued_back_to_back_flatten_in_order() -> None:
    from sync.shapes.collector_messages import ShapeBatch, ShapeChanges, flatten_routed  # noqa: PLC0415

    def msg(lsn: int) -> ShapeChanges:
        return ShapeChanges(xid=lsn, commit_lsn=lsn, changes=(), begin=True, commit=True)

    first = (msg(1), msg(2))
    queued: list[object] = [msg(3), ShapeBatch((msg(4), msg(5))), msg(6)]
    assert [cast(ShapeChanges, m).commit_lsn for m in flatten_routed(first, queued)] == [1, 2, 3, 4, 5, 6]


def test_a_batch_gives_the_actions_of_its_messages_one_by_one() -> None:
    """``changes_batch`` (whole transactions take a shorter path) == ``changes`` message by message: holding
    before the snapshot, replays, transactions the snapshot holds, fragments and empty transactions."""
    noop = Update(REL, ("1", "x"), ("1", "x"), "O", op=0)
    msgs = [
        txn(101, 1000, 1),  # held, then in the snapshot
        txn(102, 1010, 2),  # held, then kept
        txn(106, 1020, 3, 4, begin=True, commit=False),
        ShapeChanges(106, 1020, (Insert(REL, ("5", "y"), op=4),), False, True),
        txn(103, 1030, 6),  # visible: in the snapshot already
        ShapeChanges(107, 1040, (noop,), True, True),  # nothing for the shape
        txn(104, 2000, 7),  # ends the filtering
        txn(108, 2010, 8, 9),
        txn(109, 2010, 8, 9),  # a replay of the transaction just written
        ShapeChanges(110, 2020, (), True, False),
        ShapeChanges(110, 2020, (Insert(REL, ("10", "z"), op=0),), False, True),
    ]
    for split in (4, 6, 8):  # the snapshot becomes known after `split` messages
        one, batched = state(), state()
        expected = [a for m in msgs[:split] for a in one.changes(m)]
        got = batched.changes_batch(msgs[:split])
        expected += one.snapshot_known(SNAP, wal_lsn=1500)
        got += batched.snapshot_known(SNAP, wal_lsn=1500)
        expected += [a for m in msgs[split:] for a in one.changes(m)]
        got += batched.changes_batch(msgs[split:])
        assert one_by_one(got) == expected
        assert any(isinstance(a, Append) for a in got) and any(isinstance(a, CommitEmpty) for a in got)


def as_runs(msgs: list[ShapeChanges]) -> list[ShapeChanges | ShapeRun]:
    """``msgs`` as the collector tells them: consecutive whole one-change transactions as one ShapeRun."""
    out: list[ShapeChanges | ShapeRun] = []
    for m in msgs:
        if not (m.begin and m.commit and len(m.changes) == 1):
            out.append(m)
            continue
        one = (m.xid, m.commit_lsn, m.changes[0], m.exact)
        if out and isinstance(out[-1], ShapeRun):
            out[-1].items.extend(one)
        else:
            out.append(ShapeRun(list(one)))
    return out


def test_a_run_gives_the_actions_of_its_transactions_one_by_one() -> None:
    noop = Update(REL, ("1", "x"), ("1", "x"), "O", op=0)
    msgs = [
        txn(101, 1000, 1),  # held, then in the snapshot
        txn(102, 1010, 2),  # held, then kept
        txn(103, 1030, 6),  # visible: in the snapshot already
        ShapeChanges(107, 1040, (noop,), True, True),  # nothing for the shape
        txn(104, 2000, 7),  # ends the filtering
        txn(108, 2010, 8, 9),  # two changes: not in a run
        txn(109, 2020, 10),
        txn(110, 2020, 10),  # a replay of the transaction just written
        txn(111, 2030, 11),
        txn(112, 2040, 12),
    ]
    for split in (0, 3, 5):  # the snapshot becomes known after `split` messages
        one, runs = state(), state()
        expected = [a for m in msgs[:split] for a in one.changes(m)]
        got = runs.changes_batch(as_runs(msgs[:split]))
        expected += one.snapshot_known(SNAP, wal_lsn=1500)
        got += runs.snapshot_known(SNAP, wal_lsn=1500)
        expected += [a for m in msgs[split:] for a in one.changes(m)]
        got += runs.changes_batch(as_runs(msgs[split:]))
        assert one_by_one(got) == expected
        assert any(isinstance(a, WholeTransactions) and len(a.items) > 1 for a in got)


def test_consecutive_one_item_transactions_come_as_one_part() -> None:
    s = state(snapshot_filter=SnapshotFilter(SNAP, 0))
    noop = Update(REL, ("1", "x"), ("1", "x"), "O", op=0)
    msgs = [
        *(txn(200 + i, 3000 + 10 * i, i) for i in range(3)),
        ShapeChanges(299, 3100, (noop,), True, True),  # nothing for the shape: ends the run
        txn(300, 3200, 9),
        txn(301, 3210, 10, 11),  # two items: a part of its own
        txn(302, 3220, 12),
    ]
    got = s.changes_batch(msgs)
    assert summary(got) == [
        ("append", (["3000_0", "3010_0", "3020_0"], True)),
        ("empty", 3100),
        ("append", (["3200_0"], True)),
        ("append", (["3210_0", "3210_2"], True)),
        ("append", (["3220_0"], True)),
    ]
    assert [type(a) for a in got] == [
        WholeTransactions,
        CommitEmpty,
        WholeTransactions,
        Append,
        WholeTransactions,
    ]


def test_exact_inserts_skip_the_where_updates_do_not() -> None:
    rejects_all = ConsumerState(
        ShapeLogEncoder(DEF, lambda row: False), snapshot_filter=SnapshotFilter(SNAP, 0)
    )
    exact = ShapeChanges(500, 7000, (Insert(REL, ("1", "x"), op=0),), True, True, exact=True)
    assert summary(rejects_all.changes_batch([exact])) == [("append", (["7000_0"], True))]
    checked = ShapeChanges(501, 7010, (Insert(REL, ("2", "x"), op=0),), True, True)
    assert summary(rejects_all.changes_batch([checked])) == [("empty", 7010)]
    update = Update(REL, ("1", "y"), ("1", "x"), "O", op=0)
    moved = ShapeChanges(502, 7020, (update,), True, True, exact=True)  # exact says nothing of updates
    assert summary(rejects_all.changes(moved)) == [("empty", 7020)]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["x", "y/z", "x", 'q"', "x", "\x01"]), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 12),
)
def test_runs_encoded_at_once_give_the_actions_one_by_one(
    steps: list[tuple[int, str, bool]], wal_at: int
) -> None:
    """Runs of whole one-insert transactions, the filtering ending anywhere (``wal_at``), commit LSNs
    increasing or replayed (a step of 0), values plain or not: ``changes_batch`` of the runs (encoded at once
    when it can) == ``changes`` message by message."""
    msgs: list[ShapeChanges] = []
    lsn = 3000
    for n, (step, v, exact) in enumerate(steps):
        lsn += 10 * step
        msgs.append(ShapeChanges(400 + n, lsn, (Insert(REL, (str(n), v), op=0),), True, True, exact))
    wal = 3000 + 10 * wal_at
    one = state(snapshot_filter=SnapshotFilter(SNAP, wal), last_tx=2990)
    runs = state(snapshot_filter=SnapshotFilter(SNAP, wal), last_tx=2990)
    for s in (one, runs):  # shapes that already encoded one by one before the runs
        s.changes(txn(399, 3000, 99))
    expected = [a for m in msgs for a in one.changes(m)]
    got = runs.changes_batch(as_runs(msgs))
    assert one_by_one(got) == expected
    assert [i.json for a in got if not isinstance(a, CommitEmpty) for i in a.items] == [
        i.json for a in expected if not isinstance(a, CommitEmpty) for i in a.items
    ]


def _encode_run_calls(s: ConsumerState) -> list[bool]:
    """Spy on ``s``'s encoder: one entry per ``encode_run`` call, True when it encoded the run at once."""
    calls: list[bool] = []
    encode_run = s._encoder.encode_run

    def spy(items: Sequence[Any]) -> list[LogItem] | None:
        result = encode_run(items)
        calls.append(result is not None)
        return result

    s._encoder.encode_run = spy  # type: ignore[method-assign]
    return calls


def test_the_first_run_of_a_new_shape_is_encoded_at_once() -> None:
    """No warm-up: the encoder sets its template up at the first run (it used to go one by one)."""
    s = state(snapshot_filter=SnapshotFilter(SNAP, 0))
    calls = _encode_run_calls(s)
    got = s.changes_batch(as_runs([txn(201 + i, 3000 + 10 * i, i) for i in range(3)]))
    assert calls == [True]
    assert summary(got) == [("append", (["3000_0", "3010_0", "3020_0"], True))]


def test_a_run_of_plain_inserts_is_encoded_at_once() -> None:
    s = state(snapshot_filter=SnapshotFilter(SNAP, 0))
    s.changes(txn(200, 2990, 0))  # a shape that already encoded one by one before the run
    calls = _encode_run_calls(s)
    got = s.changes_batch(as_runs([txn(201 + i, 3000 + 10 * i, i) for i in range(4)]))
    assert calls == [True]
    assert summary(got) == [("append", (["3000_0", "3010_0", "3020_0", "3030_0"], True))]
