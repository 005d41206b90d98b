"""Gathering routed changes per shape: what the ShapeLogCollector will tell each consumer.

Why a module of its own: the collector actor decides *when* to tell (batching, backpressure, durability);
how a fragment's routed changes join what each shape already has waiting (a run of whole one-change
transactions, one message per transaction fragment, or the next fragment of a transaction still gathered)
is pure bookkeeping over the outbox, with no actor in it.

The outbox maps a shape's handle to its messages in commit order; a list is never modified once told.

A transaction cut into fragments (``replication.max_batch``) mostly reaches each of its shapes with one
change, in one of its fragments.  Such a change joins the shape's run at once, *provisionally*, as if its
transaction were whole (:attr:`OpenTransaction.provisional`): when the commit brings nothing more for the
shape it is already where it belongs, and only a shape that gets more of the transaction turns it into a
message.  Told before the commit (:func:`open_provisional`), it goes out as the open message it is.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field

from sync.replication.changes import Change
from sync.shapes.collector_messages import ShapeChanges, ShapeRun, shape_changes

__all__ = [
    "OpenTransaction",
    "Outbox",
    "continue_transaction",
    "gather_fragment",
    "join_run",
    "open_provisional",
]

Outbox = dict[str, list[ShapeChanges | ShapeRun]]


@dataclass(slots=True)
class OpenTransaction:
    """The transaction being routed (its commit seen last).

    ``touched``: the shapes that received part of it.  ``provisional``: those among them whose only change of
    it so far sits at the end of their run in the outbox (``xid, commit_lsn, change, exact``), as a whole
    transaction (see the module docstring)."""

    xid: int
    commit_lsn: int
    touched: set[str] = field(default_factory=set)
    provisional: set[str] = field(default_factory=set)


def join_run(box: list[ShapeChanges | ShapeRun], xid: int, lsn: int, change: Change, exact: bool) -> None:
    """Gather a whole transaction of one change in a shape's ``box``: it joins the run that ends the box, or
    starts one."""
    last = box[-1] if box else None
    if last.__class__ is ShapeRun:
        last.items.extend((xid, lsn, change, exact))
    else:
        box.append(ShapeRun([xid, lsn, change, exact]))


def gather_fragment(  # noqa: PLR0917 - the fragment's routing and its header, positionally
    outbox: Outbox,
    per_shape: dict[str, list[Change]],
    inexact: Container[str],
    routes: Container[str],
    txn: OpenTransaction,
    begin: bool,
    commit: bool,
) -> None:
    """Add one routed fragment of the open transaction ``txn`` to the outbox: ``per_shape`` holds the
    changes each shape receives (``route_changes``), ``inexact`` the shapes whose consumer must check some
    insert against its WHERE.  Shapes not in ``routes`` (unregistered meanwhile) get nothing."""
    xid, lsn = txn.xid, txn.commit_lsn
    touched = txn.touched
    provisional = txn.provisional
    later = not begin  # shapes may have had earlier fragments of this transaction
    for handle, changes in per_shape.items():
        if handle not in routes:
            continue
        exact = handle not in inexact
        if later and handle in touched:
            continue_transaction(outbox, handle, changes, exact, txn, commit)
            continue
        touched.add(handle)
        box = outbox.get(handle)
        if len(changes) == 1:
            # a whole transaction of one change for this shape (most shapes, when thousands share a
            # burst), or provisionally so until the commit: it joins the shape's run, no message or list
            # per transaction
            if box is None:
                outbox[handle] = [ShapeRun([xid, lsn, changes[0], exact])]
            else:
                join_run(box, xid, lsn, changes[0], exact)
            if not commit:
                provisional.add(handle)
        elif box is None:
            outbox[handle] = [shape_changes(xid, lsn, changes, True, commit, exact)]
        else:
            box.append(shape_changes(xid, lsn, changes, True, commit, exact))
    if commit and later:
        # consumers that got a message for part of this transaction, and nothing in this fragment, learn where
        # it ends (a provisional change is a whole transaction already)
        rest = touched.difference(per_shape)
        if provisional:
            rest -= provisional
        for handle in rest:
            if handle in routes:
                continue_transaction(outbox, handle, (), True, txn, commit)


def continue_transaction(  # noqa: PLR0917 - the routing loop's values, positionally, per shape
    outbox: Outbox,
    handle: str,
    changes: Sequence[Change],
    exact: bool,
    txn: OpenTransaction,
    commit: bool,
) -> None:
    """A later fragment of ``txn`` for a shape that had an earlier one: its ``changes`` (maybe none, at the
    commit) join the message still gathered for that transaction, or follow it."""
    xid, lsn = txn.xid, txn.commit_lsn
    box = outbox.get(handle)
    if box is None:
        outbox[handle] = [shape_changes(xid, lsn, changes, False, commit, exact)]
        return
    last = box[-1]
    if handle in txn.provisional:
        # more of a transaction whose one change joined the run provisionally: one message for both
        txn.provisional.discard(handle)
        first, first_exact = _take_provisional(box, last)
        box.append(shape_changes(xid, lsn, [first, *changes], True, commit, exact and first_exact))
        return
    if last.__class__ is ShapeChanges and last.commit_lsn == lsn and not last.commit:
        # the next fragment of a transaction still gathered here: one message for both (a shape that only
        # learns where the transaction ends keeps its list: it was never sent, nothing else holds it)
        if commit and not changes and last.begin and len(last.changes) == 1:
            # its one change came in an earlier fragment: a whole transaction of one change after all
            box.pop()
            join_run(box, xid, lsn, last.changes[0], last.exact)
            return
        merged = [*last.changes, *changes] if changes else last.changes
        box[-1] = shape_changes(xid, lsn, merged, last.begin, commit, exact and last.exact)
    else:
        box.append(shape_changes(xid, lsn, changes, False, commit, exact))


def open_provisional(outbox: Outbox, txn: OpenTransaction) -> None:
    """The outbox is about to be told before ``txn``'s commit: each provisional change goes out as what it
    is, the first (open) message of its transaction for its shape."""
    xid, lsn = txn.xid, txn.commit_lsn
    for handle in txn.provisional:
        box = outbox.get(handle)
        if box is not None:
            change, exact = _take_provisional(box, box[-1])
            box.append(shape_changes(xid, lsn, (change,), True, False, exact))
    txn.provisional.clear()


def _take_provisional(
    box: list[ShapeChanges | ShapeRun], run: ShapeChanges | ShapeRun
) -> tuple[Change, bool]:
    """Remove the provisional change that ends ``box`` (in ``run``, its last message): ``(change, exact)``."""
    assert isinstance(run, ShapeRun)
    items = run.items
    change: Change = items[-2]
    exact: bool = items[-1]
    del items[-4:]
    if not items:
        box.pop()
    return change, exact
