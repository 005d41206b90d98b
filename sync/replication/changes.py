"""The decoded replication stream as immutable values: the contract between the replication client, the
ShapeLogCollector and the shape consumers.

Values are Postgres text output (``str``), ``None`` for SQL NULL, or :data:`UNCHANGED_TOAST` for a TOASTed
column that an UPDATE did not touch (pgoutput tuple kind ``u``): the consumer carries the previous value
forward.  Row tuples are aligned with ``Relation.columns``.

A transaction reaches the engine as one or more :class:`TransactionFragment` values (at most
``max_batch`` changes each), so a huge transaction is never held whole in memory.  All fragments of a
transaction share ``xid`` and ``commit_lsn`` (pgoutput v1 decodes at commit, so Begin already carries the
commit LSN); the first has ``begin=True``, the last ``commit=True`` plus ``end_lsn`` (the LSN to acknowledge
once every affected shape has made the transaction durable).  ``Change.op`` is the change's position in its
transaction, starting at 0 and stepping by 2 (spec §3), so ``LogOffset(commit_lsn, op)`` is its offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Literal

__all__ = [
    "UNCHANGED_TOAST",
    "Change",
    "Column",
    "Delete",
    "Insert",
    "Relation",
    "RelationChanged",
    "ReplicationEvent",
    "Row",
    "SlotRecreated",
    "TransactionFragment",
    "Truncate",
    "UnchangedToast",
    "Update",
    "Value",
]


class UnchangedToast(Enum):
    """Marker for a TOASTed value the UPDATE did not change (pgoutput ``u``)."""

    TOKEN = "unchanged-toast"

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = UnchangedToast.TOKEN
Value = str | None | UnchangedToast
Row = tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool  # part of the replica identity (flag 1 in the Relation message)


@dataclass(frozen=True, slots=True)
class Relation:
    """A table as the Relation message describes it; cached by ``oid``."""

    oid: int
    schema: str
    name: str
    replica_identity: Literal["d", "n", "f", "i"]
    columns: tuple[Column, ...]
    column_index: dict[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not self.column_index:
            self.column_index.update({c.name: i for i, c in enumerate(self.columns)})

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def as_dict(self, row: Row) -> dict[str, Value]:
        return dict(zip(self.column_names, row, strict=True))


@dataclass(frozen=True, slots=True)
class Insert:
    relation: Relation
    new: Row
    op: int


@dataclass(frozen=True, slots=True)
class Update:
    relation: Relation
    new: Row
    old: Row | None  # None when the replica identity did not change and is not FULL
    old_kind: Literal["K", "O"] | None  # K: key columns only; O: the whole old row (REPLICA IDENTITY FULL)
    op: int


@dataclass(frozen=True, slots=True)
class Delete:
    relation: Relation
    old: Row
    old_kind: Literal["K", "O"]
    op: int


@dataclass(frozen=True, slots=True)
class Truncate:
    relations: tuple[Relation, ...]
    cascade: bool
    restart_identity: bool
    op: int


Change = Insert | Update | Delete | Truncate


@dataclass(frozen=True, slots=True)
class TransactionFragment:
    """Consecutive changes of one committed transaction, in commit order."""

    xid: int
    commit_lsn: int
    changes: tuple[Change, ...]
    begin: bool  # the first fragment of the transaction
    commit: bool  # the last fragment of the transaction
    end_lsn: int | None = None  # Commit.end_lsn, set on the last fragment
    commit_time_us: int | None = None  # Commit timestamp, µs since 2000-01-01, on the last fragment
    # the replication reader was behind the server when it decoded this fragment: it had read a few
    # thousand messages in a row without ever finding the connection empty (more WAL was already there)
    behind: bool = False


@dataclass(frozen=True, slots=True)
class RelationChanged:
    """A Relation message whose columns, types or replica identity differ from the cached one.

    ``previous`` is None the first time a relation is seen in this process (after a restart the engine
    compares with its persisted copy).
    """

    relation: Relation
    previous: Relation | None


@dataclass(frozen=True, slots=True)
class SlotRecreated:
    """The replication slot had to be created anew (first start, dropped or invalidated from outside, or the
    publication was re-created): changes since the previous slot are lost, so every shape must be
    invalidated.  Delivered before any fragment of the new slot."""

    slot: str
    reason: str


ReplicationEvent = TransactionFragment | RelationChanged | SlotRecreated
