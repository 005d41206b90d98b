"""Gathering routed changes per shape: what the ShapeLogCollector will tell each consumer.

Why a module of its own: the collector actor decides *when* to tell (batching, backpressure, durability);
how a fragment's routed changes join what each shape already has waiting (a run of whole one-change
transactions, one message per transaction fragment, or the next fragment of a transaction still gathered)
is pure bookkeeping over the outbox, with no actor in it.

The outbox maps a shape's handle to its messages in commit order; a list is never modified once told.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from sync.replication.changes import Change
from sync.shapes.collector_messages import ShapeChanges, ShapeRun, shape_changes

__all__ = ["Outbox", "continue_transaction", "gather_fragment", "join_run"]

Outbox = dict[str, list[ShapeChanges | ShapeRun]]


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
    touched: set[str],
    xid: int,
    lsn: int,
    begin: bool,
    commit: bool,
) -> None:
    """Add one routed fragment of transaction ``xid`` (commit ``lsn``) to the outbox: ``per_shape`` holds
    the changes each shape receives (``route_changes``), ``inexact`` the shapes whose consumer must check
    some insert against its WHERE.  Shapes not in ``routes`` (unregistered meanwhile) get nothing.
    ``touched`` holds the shapes that received part of the transaction in earlier fragments; the shapes of
    this one are added to it."""
    later = not begin  # shapes may have had earlier fragments of this transaction
    for handle, changes in per_shape.items():
        if handle not in routes:
            continue
        exact = handle not in inexact
        if later and handle in touched:
            continue_transaction(outbox, handle, changes, exact, xid, lsn, commit)
            continue
        touched.add(handle)
        box = outbox.get(handle)
        if commit and len(changes) == 1:
            # a whole transaction of one change for this shape (most shapes, when thousands share a
            # burst): it joins the shape's run, no message or list per transaction
            if box is None:
                outbox[handle] = [ShapeRun([xid, lsn, changes[0], exact])]
            else:
                join_run(box, xid, lsn, changes[0], exact)
        elif box is None:
            outbox[handle] = [shape_changes(xid, lsn, changes, True, commit, exact)]
        else:
            box.append(shape_changes(xid, lsn, changes, True, commit, exact))
    if commit and later:
        # consumers that got part of this transaction, and nothing in this fragment, learn where it ends
        for handle in touched.difference(per_shape):
            if handle in routes:
                continue_transaction(outbox, handle, (), True, xid, lsn, commit)


def continue_transaction(  # noqa: PLR0917 - the routing loop's values, positionally, per shape
    outbox: Outbox, handle: str, changes: Sequence[Change], exact: bool, xid: int, lsn: int, commit: bool
) -> None:
    """A later fragment of a transaction for a shape that had an earlier one: its ``changes`` (maybe none,
    at the commit) join the message still gathered for that transaction, or follow it."""
    box = outbox.get(handle)
    if box is None:
        outbox[handle] = [shape_changes(xid, lsn, changes, False, commit, exact)]
        return
    last = box[-1]
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
