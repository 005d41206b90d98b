"""collector_outbox: a fragmented transaction's lone change joins its shape's run provisionally.

The property holds the outbox to the general rule it replaced (kept here as ``_Reference``): every fragment
of a transaction goes out as a message per shape, merged with the shape's earlier message of the same
transaction, and a transaction that turns out to be one change for a shape joins its run at the commit.
Whatever the fragments, the shapes they reach and the moments the outbox is told (before a commit too),
each shape's consumer is told the same transactions, in the same pieces, with the same flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.shapes.collector_messages import ShapeChanges, ShapeRun, shape_changes
from sync.shapes.collector_outbox import (
    OpenTransaction,
    Outbox,
    gather_fragment,
    join_run,
    open_provisional,
)

SHAPES = ("a", "b", "c", "d")


class _Reference:
    """The outbox rule before provisional changes (a message per fragment; a lone change joins the run at the
    commit)."""

    def __init__(self) -> None:
        self.outbox: Outbox = {}
        self.touched: set[str] = set()

    def gather(
        self,
        per_shape: dict[str, list[Any]],
        inexact: set[str],
        routes: set[str],
        xid: int,
        lsn: int,
        *,
        begin: bool,
        commit: bool,
    ) -> None:
        outbox, touched = self.outbox, self.touched
        later = not begin
        for handle, changes in per_shape.items():
            if handle not in routes:
                continue
            exact = handle not in inexact
            if later and handle in touched:
                self._continue(handle, changes, exact, xid, lsn, commit)
                continue
            touched.add(handle)
            box = outbox.get(handle)
            if commit and len(changes) == 1:
                if box is None:
                    outbox[handle] = [ShapeRun([xid, lsn, changes[0], exact])]
                else:
                    join_run(box, xid, lsn, changes[0], exact)
            elif box is None:
                outbox[handle] = [shape_changes(xid, lsn, changes, True, commit, exact)]
            else:
                box.append(shape_changes(xid, lsn, changes, True, commit, exact))
        if commit and later:
            for handle in touched.difference(per_shape):
                if handle in routes:
                    self._continue(handle, (), True, xid, lsn, commit)

    def _continue(
        self, handle: str, changes: Sequence[Any], exact: bool, xid: int, lsn: int, commit: bool
    ) -> None:
        box = self.outbox.get(handle)
        if box is None:
            self.outbox[handle] = [shape_changes(xid, lsn, changes, False, commit, exact)]
            return
        last = box[-1]
        if last.__class__ is ShapeChanges and last.commit_lsn == lsn and not last.commit:
            if commit and not changes and last.begin and len(last.changes) == 1:
                box.pop()
                join_run(box, xid, lsn, last.changes[0], last.exact)
                return
            merged = [*last.changes, *changes] if changes else last.changes
            box[-1] = shape_changes(xid, lsn, merged, last.begin, commit, exact and last.exact)
        else:
            box.append(shape_changes(xid, lsn, changes, False, commit, exact))


def _told(outbox: Outbox, told: dict[str, list[tuple[Any, ...]]]) -> None:
    """What each shape's consumer sees of ``outbox``: its messages, runs as their transactions."""
    for handle, messages in outbox.items():
        for msg in messages:
            for m in msg.as_changes() if isinstance(msg, ShapeRun) else [msg]:
                told.setdefault(handle, []).append(
                    (m.xid, m.commit_lsn, tuple(m.changes), m.begin, m.commit, m.exact)
                )


_fragment = st.fixed_dictionaries(
    {
        "reach": st.dictionaries(st.sampled_from(SHAPES), st.integers(1, 3), max_size=4),
        "inexact": st.sets(st.sampled_from(SHAPES)),
        "tell": st.booleans(),
    }
)
_transaction = st.lists(_fragment, min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    transactions=st.lists(_transaction, min_size=1, max_size=5),
    routes=st.sets(st.sampled_from(SHAPES), min_size=1),
)
def test_the_outbox_tells_what_the_general_rule_tells(
    transactions: list[list[dict[str, Any]]], routes: set[str]
) -> None:
    ref = _Reference()
    outbox: Outbox = {}
    told_ref: dict[str, list[tuple[Any, ...]]] = {}
    told_new: dict[str, list[tuple[Any, ...]]] = {}
    change = 0
    for t, fragments in enumerate(transactions):
        xid, lsn = 100 + t, 1000 * (t + 1)
        txn = OpenTransaction(xid, lsn)
        ref.touched = set()
        for f, frag in enumerate(fragments):
            begin, commit = f == 0, f == len(fragments) - 1
            per_shape: dict[str, list[Any]] = {}
            for handle, n in frag["reach"].items():
                per_shape[handle] = list(range(change, change + n))
                change += n
            ref.gather(
                {h: list(c) for h, c in per_shape.items()},
                frag["inexact"],
                routes,
                xid,
                lsn,
                begin=begin,
                commit=commit,
            )
            gather_fragment(outbox, per_shape, frag["inexact"], routes, txn, begin, commit)
            if frag["tell"]:
                _told(ref.outbox, told_ref)
                ref.outbox = {}
                if not commit:
                    open_provisional(outbox, txn)
                _told(outbox, told_new)
                outbox = {}
        assert txn.touched == ref.touched
    _told(ref.outbox, told_ref)
    _told(outbox, told_new)
    assert told_new == told_ref


def test_a_lone_change_of_a_fragmented_transaction_joins_the_run_without_a_message() -> None:
    outbox: Outbox = {"a": [ShapeRun([1, 10, "x", True])]}
    txn = OpenTransaction(2, 20)
    gather_fragment(outbox, {"a": [cast(Any, "y")]}, set(), {"a"}, txn, True, False)  # "y": a stand-in change
    assert txn.provisional == {"a"}
    gather_fragment(outbox, {}, set(), {"a"}, txn, False, True)  # the commit brings nothing more for "a"
    assert [type(m) for m in outbox["a"]] == [ShapeRun]
    run = outbox["a"][0]
    assert isinstance(run, ShapeRun)
    assert run.items == [1, 10, "x", True, 2, 20, "y", True]
