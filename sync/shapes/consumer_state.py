"""The pure core of a shape consumer: which transactions reach the shape's log, and as which items.

Three rules decide what happens to each transaction routed to a shape (architecture hard spots 3 and 4):

* **Replay is skipped.** A transaction whose commit LSN is at or below the last transaction already in the
  shape's log was written before a restart; Postgres resends it because the slot was acknowledged only up
  to a durable point.  It is dropped whole, so the log is re-derived with the same offsets and bytes.
* **Register before snapshot.** The shape is routed changes before its snapshot knows its visibility.
  Until then, messages are held (at most ``max_held`` transactions: past that the shape fails with a clear
  reason, it never grows without bound).  Once ``pg_current_snapshot()`` is known, the held transactions
  and every later one go through :class:`~sync.shapes.xid.SnapshotFilter`: those the snapshot already
  saw are dropped, and the filtering stops for good at the first transaction committed at or past the WAL
  insert position read with the snapshot.
* **Nothing pins the acknowledgement.** A dropped transaction, or one that yields no item for the shape,
  still produces a :class:`CommitEmpty`, so the storage can report the shape durable past it.

The output is a list of actions for the storage, in order; the actor shell only carries them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import lt
from typing import Literal, NamedTuple

from sync.offsets import LogOffset
from sync.shapes.collector import ShapeChanges, ShapeRun
from sync.shapes.collector_messages import shape_changes
from sync.shapes.log_items import LogItem, ShapeLogEncoder
from sync.shapes.xid import PgSnapshot, SnapshotFilter
from sync.storage.items import WholeTransactions

__all__ = ["Action", "Append", "CommitEmpty", "ConsumerState", "ShapeFailed", "WholeTransactions"]


class ShapeFailed(Exception):
    """The shape cannot continue (held too much while waiting for its snapshot, ...): invalidate it."""


class Append(NamedTuple):
    """Append these items of one transaction; ``complete`` ends the transaction (readers then see it).
    ``items`` is never modified once in an action (the hot path hands over the encoder's list, no copy).

    A NamedTuple, not a dataclass: it is the ``(items, complete)`` pair the storage's ``AppendBatch.parts``
    holds, so the consumer hands it over as it is (one object per transaction, not two)."""

    items: Sequence[LogItem]
    complete: bool


@dataclass(frozen=True, slots=True)
class CommitEmpty:
    """The transaction at ``commit_lsn`` added nothing to the log: it is settled for this shape."""

    commit_lsn: int


Action = Append | WholeTransactions | CommitEmpty

_new_tuple = tuple.__new__


def _append(items: Sequence[LogItem]) -> Append:
    """``Append(items, complete=True)`` without the NamedTuple's Python-level ``__new__``."""
    return _new_tuple(Append, (items, True))


@dataclass(slots=True)
class _Txn:
    commit_lsn: int
    mode: Literal["write", "drop"]
    wrote: bool = False
    written: LogOffset | None = None  # offset of the last item appended for this transaction
    skip_upto: LogOffset | None = None  # a replayed transaction: items up to here are already appended


class ConsumerState:
    """Per-shape transaction handling; see the module docstring.  Feed messages in arrival order."""

    __slots__ = (
        "_encoder",
        "_filter",
        "_held",
        "_held_changes",
        "_held_txns",
        "_last_tx",
        "_max_held",
        "_max_held_changes",
        "_txn",
    )

    def __init__(
        self,
        encoder: ShapeLogEncoder,
        *,
        last_tx: int = 0,
        snapshot_filter: SnapshotFilter | None = None,
        max_held: int = 10_000,
        max_held_changes: int = 1_000_000,
    ) -> None:
        self._encoder = encoder
        self._last_tx = last_tx
        self._filter = snapshot_filter
        self._held: list[ShapeChanges] = []
        self._held_txns = 0
        self._held_changes = 0
        self._max_held = max_held
        self._max_held_changes = max_held_changes
        self._txn: _Txn | None = None

    @property
    def waiting_for_snapshot(self) -> bool:
        return self._filter is None

    @property
    def held_transactions(self) -> int:
        return self._held_txns

    @property
    def filtering(self) -> bool:
        """True while transactions may still be ones the snapshot already holds."""
        return self._filter is None or self._filter.active

    def changes(self, msg: ShapeChanges) -> list[Action]:
        """Handle one routed message; returns the storage actions it causes (maybe none)."""
        if self._filter is None:
            if msg.begin:
                self._held_txns += 1
                if self._held_txns > self._max_held:
                    raise ShapeFailed(
                        f"more than {self._max_held} transactions arrived while the shape's snapshot was "
                        "starting; the shape is invalidated rather than holding them without bound"
                    )
            self._held_changes += len(msg.changes)
            if self._held_changes > self._max_held_changes:
                raise ShapeFailed(
                    f"more than {self._max_held_changes} changes arrived while the shape's snapshot was "
                    "starting; the shape is invalidated rather than holding them without bound"
                )
            self._held.append(msg)
            return []
        return self._process(msg)

    def changes_batch(self, msgs: Sequence[ShapeChanges | ShapeRun]) -> list[Action]:
        """:meth:`changes` for each message in order, the actions concatenated, except that consecutive
        transactions of one item each come as one :class:`WholeTransactions` (the same as an ``Append(…,
        True)`` per item).  A message that is a whole transaction (the common case: one fragment, nothing
        open) takes a shorter path with the same outcome."""
        encode = self._encoder.encode_fragment
        whole = self._encoder.encode_whole
        out: list[Action] = []
        run: list[LogItem] | None = None  # the items of the open WholeTransactions (last in ``out``)
        for msg in msgs:
            if msg.__class__ is ShapeRun:
                run = self._shape_run(msg, out, run)
                continue
            assert isinstance(msg, ShapeChanges)
            filt = self._filter
            if filt is None or self._txn is not None or not (msg.begin and msg.commit):
                run = None
                out.extend(self.changes(msg))
                continue
            lsn = msg.commit_lsn
            if lsn > self._last_tx and filt.keep(msg.xid, lsn):  # else: a replay, or in the snapshot already
                items = whole(msg, msg.exact) if len(msg.changes) == 1 else encode(msg, msg.exact)
                run = self._kept_whole(lsn, items, out, run)
            else:
                run = None
                out.append(CommitEmpty(lsn))
        return out

    def _shape_run(self, msg: ShapeRun, out: list[Action], run: list[LogItem] | None) -> list[LogItem] | None:
        """The transactions of ``msg`` as :meth:`changes_batch` handles whole one-change transactions (the
        actions appended to ``out``); ``run`` and the result: the open WholeTransactions' items.

        The common case (the filtering over, nothing open, no replay: commit LSNs above the log's last and
        increasing) is encoded as a whole (:meth:`ShapeLogEncoder.encode_run`) when every transaction is a
        plain insert; the outcome is the same as one by one."""
        items = msg.items
        filt = self._filter
        if filt is not None and self._txn is None:
            if filt.active:  # the first transaction ends the filtering if it is at or past its WAL position
                filt.keep(items[0], items[1])
            lsns = items[1::4]
            if not filt.active and lsns[0] > self._last_tx and all(map(lt, lsns, lsns[1:])):
                encoded = self._encoder.encode_run(items)
                if encoded is not None:
                    self._last_tx = lsns[-1]
                    if run is None:
                        out.append(WholeTransactions(encoded))
                        return encoded
                    run += encoded
                    return run
        one = self._encoder.encode_one
        for xid, lsn, change, exact in zip(items[0::4], items[1::4], items[2::4], items[3::4], strict=True):
            filt = self._filter
            if filt is None or self._txn is not None:
                run = None
                out.extend(self.changes(shape_changes(xid, lsn, (change,), True, True, exact)))
                continue
            if lsn > self._last_tx and filt.keep(xid, lsn):  # else: a replay, or in the snapshot already
                run = self._kept_whole(lsn, one(xid, lsn, change, exact), out, run)
            else:
                run = None
                out.append(CommitEmpty(lsn))
        return run

    def _kept_whole(
        self, lsn: int, items: list[LogItem], out: list[Action], run: list[LogItem] | None
    ) -> list[LogItem] | None:
        """The actions of a whole transaction kept for the log, appended to ``out``: one item joins the open
        :class:`WholeTransactions` ``run`` (or opens one); more are an ``Append``, none a ``CommitEmpty``.
        Returns the run still open."""
        self._last_tx = lsn
        if len(items) == 1:
            if run is None:
                run = [items[0]]
                out.append(WholeTransactions(run))
            else:
                run.append(items[0])
            return run
        out.append(_append(items) if items else CommitEmpty(lsn))
        return None

    def snapshot_known(self, snapshot: PgSnapshot, wal_lsn: int) -> list[Action]:
        """The snapshot's visibility (and WAL insert position) is known: filter and release what is held."""
        if self._filter is not None:
            raise ValueError("snapshot visibility already known")
        self._filter = SnapshotFilter(snapshot, wal_lsn)
        held, self._held, self._held_txns, self._held_changes = self._held, [], 0, 0
        out: list[Action] = []
        for msg in held:
            out.extend(self._process(msg))
        return out

    def _process(self, msg: ShapeChanges) -> list[Action]:
        txn = self._txn
        if msg.begin and txn is not None and txn.commit_lsn == msg.commit_lsn:
            # A reconnect cut this transaction after some of its fragments: Postgres resends it from its
            # beginning. Encoding is deterministic, so the items already appended come out identical
            # (same offsets, same bytes): skip them and continue where the log stops.
            txn = self._txn = _Txn(txn.commit_lsn, txn.mode, txn.wrote, txn.written, txn.written)
        elif msg.begin or txn is None:
            txn = self._txn = _Txn(msg.commit_lsn, self._decide(msg))
        elif txn.commit_lsn != msg.commit_lsn:
            raise RuntimeError(
                f"fragment of transaction {msg.commit_lsn} inside transaction {txn.commit_lsn}"
            )
        out: list[Action] = []
        if txn.mode == "write":
            items = self._encoder.encode_fragment(msg, msg.exact)
            if txn.skip_upto is not None:
                skip = txn.skip_upto
                items = [it for it in items if it.offset > skip]
            if items:
                txn.written = items[-1].offset
            if items or (txn.wrote and msg.commit):
                txn.wrote = True
                out.append(Append(items, complete=msg.commit))
            if msg.commit:
                self._last_tx = msg.commit_lsn
        if msg.commit:
            self._txn = None
            if not txn.wrote:
                out.append(CommitEmpty(msg.commit_lsn))
        return out

    def _decide(self, msg: ShapeChanges) -> Literal["write", "drop"]:
        if msg.commit_lsn <= self._last_tx:
            return "drop"  # already in the log before a restart: replay
        assert self._filter is not None
        return "write" if self._filter.keep(msg.xid, msg.commit_lsn) else "drop"
