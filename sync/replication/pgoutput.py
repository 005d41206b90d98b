"""Pure decoder for the ``pgoutput`` logical replication protocol (version 1) and transaction assembly.

Why this module exists: the replication stream carries one pgoutput message per XLogData frame.  This
module turns those bytes into the immutable values of :mod:`sync.replication.changes` without any I/O, so
it can be tested on captured messages and benchmarked on its own.  It must keep pace with what one
walsender can send (a few µs per message), hence ``struct.unpack_from`` on ``bytes``, integer tag
comparisons and no per-column objects.

:class:`PgOutputDecoder` is fed one message at a time and calls ``emit`` with, in stream order:

* :class:`RelationChanged` when a Relation message differs from the cached relation of the same oid (or the
  oid was never seen by this cache); buffered changes of the current transaction are flushed first, so
  every change emitted afterwards refers to the new relation;
* :class:`TransactionFragment` values of at most ``max_batch`` changes.  pgoutput v1 sends a transaction
  only once it committed and Begin carries its commit LSN, so fragments carry their final offsets and a huge
  transaction is never held whole.

Transactions whose commit LSN is ``<= skip_through`` (already processed downstream) are dropped without
decoding their tuples; Relation messages inside them still update the cache.

TupleData decoding (the general decoder and the short-text fast path) lives in
:mod:`sync.replication.tupledata`; ``ProtocolError`` and ``decode_tuple`` stay importable from here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Literal

from sync.replication.changes import (
    Change,
    Column,
    Delete,
    Insert,
    Relation,
    RelationChanged,
    Row,
    TransactionFragment,
    Truncate,
    Update,
)
from sync.replication.tupledata import ProtocolError, decode_tuple, short_text_row

__all__ = [
    "DEFAULT_MAX_BATCH",
    "XLOGDATA_HEADER",
    "PgOutputDecoder",
    "ProtocolError",
    "RelationCache",
    "decode_tuple",
]

DEFAULT_MAX_BATCH = 500
XLOGDATA_HEADER = 25  # 'w', start LSN, wal_end, send time: the pgoutput message follows
_FRAME_PAD = b"w" + bytes(XLOGDATA_HEADER - 1)

_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I16 = struct.Struct("!h")
_BEGIN = struct.Struct("!QqI")  # final_lsn, commit_ts, xid
_COMMIT = struct.Struct("!BQQq")  # flags, commit_lsn, end_lsn, commit_ts
_COL = struct.Struct("!Ii")  # type oid, typmod
_MSG = struct.Struct("!BQ")  # flags, lsn

_K, _O, _NEW = ord("K"), ord("O"), ord("N")
_IDENTITIES = frozenset("dnfi")


# Hot-path construction of the frozen slots dataclasses of changes.py: their generated __init__ pays one
# ``object.__setattr__`` call per field (frozen), about twice the cost of setting the slots directly.  The
# objects are identical (same class, same fields, still immutable through normal attribute assignment).
_new = object.__new__
_INS_REL = vars(Insert)["relation"].__set__
_INS_NEW = vars(Insert)["new"].__set__
_INS_OP = vars(Insert)["op"].__set__
_FRAGMENT_SETTERS = tuple(
    vars(TransactionFragment)[name].__set__
    for name in ("xid", "commit_lsn", "changes", "begin", "commit", "end_lsn", "commit_time_us", "behind")
)


def _fragment(  # noqa: PLR0917 - mirrors the dataclass fields, positionally, on the hot path
    xid: int,
    commit_lsn: int,
    changes: tuple[Change, ...],
    begin: bool,
    commit: bool,
    end_lsn: int | None,
    commit_time_us: int | None,
    behind: bool,
) -> TransactionFragment:
    frag: TransactionFragment = _new(TransactionFragment)
    s_xid, s_lsn, s_changes, s_begin, s_commit, s_end, s_time, s_behind = _FRAGMENT_SETTERS
    s_xid(frag, xid)
    s_lsn(frag, commit_lsn)
    s_changes(frag, changes)
    s_begin(frag, begin)
    s_commit(frag, commit)
    s_end(frag, end_lsn)
    s_time(frag, commit_time_us)
    s_behind(frag, behind)
    return frag


class RelationCache:
    """Relations by oid.  Shared across reconnects so a restarted client only reports real changes."""

    __slots__ = ("relations", "types")

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self.types: dict[int, tuple[str, str]] = {}  # Type messages: oid -> (schema, name)

    def get(self, oid: int) -> Relation:
        try:
            return self.relations[oid]
        except KeyError:
            raise ProtocolError(f"change for relation oid {oid} before its Relation message") from None


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(0, pos)
    return data[pos:end].decode(), end + 1


def _decode_relation(data: bytes) -> Relation:
    oid = _U32.unpack_from(data, 1)[0]
    schema, pos = _cstring(data, 5)
    name, pos = _cstring(data, pos)
    ident = chr(data[pos])
    if ident not in _IDENTITIES:
        raise ProtocolError(f"unknown replica identity {ident!r} for {schema}.{name}")
    ncols = _I16.unpack_from(data, pos + 1)[0]
    pos += 3
    cols = []
    for _ in range(ncols):
        flags = data[pos]
        cname, pos = _cstring(data, pos + 1)
        type_oid, typmod = _COL.unpack_from(data, pos)
        pos += 8
        cols.append(Column(cname, type_oid, typmod, bool(flags & 1)))
    identity: Literal["d", "n", "f", "i"] = ident  # type: ignore[assignment]
    return Relation(oid, schema or "pg_catalog", name, identity, tuple(cols))


class PgOutputDecoder:
    """Stateful decoder + assembler; see the module docstring for what it emits."""

    __slots__ = (
        "_begin_pending",
        "_buf",
        "_commit_lsn",
        "_commit_ts",
        "_emit",
        "_max_batch",
        "_op",
        "_skipping",
        "_xid",
        "behind",
        "cache",
        "in_transaction",
        "last_commit_lsn",
        "skip_through",
    )

    def __init__(
        self,
        emit: Callable[[TransactionFragment | RelationChanged], object],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        cache: RelationCache | None = None,
        skip_through: int = 0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._emit = emit
        self._max_batch = max_batch
        self.cache = cache if cache is not None else RelationCache()
        self.skip_through = skip_through
        self.in_transaction = False
        self.last_commit_lsn = 0  # commit LSN of the last transaction that ended (delivered or skipped)
        self.behind = False  # copied into each fragment (``TransactionFragment.behind``); set by the reader
        self._buf: list[Change] = []
        self._begin_pending = False
        self._skipping = False
        self._xid = 0
        self._commit_lsn = 0
        self._commit_ts = 0
        self._op = 0

    # -- entry point -----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Decode one pgoutput message given alone (e.g. from ``pg_logical_slot_get_binary_changes``)."""
        self.feed_frame(_FRAME_PAD + data)

    def feed_frame(self, data: bytes) -> None:
        """Decode the message inside a whole XLogData frame (``w`` + 24-byte header), in place: the
        replication reader's hot path (no copy of the message out of the frame)."""
        b = XLOGDATA_HEADER
        tag = data[b]
        if tag == 73:  # 'I': the hot path, inlined
            if self._skipping:
                return
            try:
                rel = self.cache.relations[_U32.unpack_from(data, b + 1)[0]]
            except KeyError:
                raise ProtocolError("Insert for a relation before its Relation message") from None
            if data[b + 5] != _NEW:
                raise ProtocolError("Insert without a new tuple")
            buf = self._buf
            if len(buf) >= self._max_batch:
                self._flush()
                buf = self._buf
            change = _new(Insert)
            _INS_REL(change, rel)
            _INS_NEW(change, short_text_row(data, b + 6) or decode_tuple(data, b + 6)[0])
            _INS_OP(change, self._op)
            buf.append(change)
            self._op += 2
        elif tag == 66:  # 'B'
            self._begin(data, b)
        elif tag == 67:  # 'C'
            self._commit(data, b)
        elif tag == 85:  # 'U'
            if not self._skipping:
                self._update(data, b)
        elif tag == 68:  # 'D'
            if not self._skipping:
                self._delete(data, b)
        else:
            self._other(data[b:], tag)

    def _other(self, data: bytes, tag: int) -> None:
        """The rarer messages, from their own payload."""
        if tag == 82:  # 'R'
            self._relation(_decode_relation(data))
        elif tag == 84:  # 'T'
            if not self._skipping:
                self._truncate(data)
        elif tag == 89:  # 'Y'
            oid = _U32.unpack_from(data, 1)[0]
            schema, pos = _cstring(data, 5)
            self.cache.types[oid] = (schema or "pg_catalog", _cstring(data, pos)[0])
        elif tag in (79, 77):  # 'O' Origin, 'M' Message: no effect on shapes
            return
        else:
            raise ProtocolError(f"unexpected pgoutput message {chr(tag)!r} (protocol version 1)")

    # -- transactions ----------------------------------------------------------------------------------
    def _begin(self, data: bytes, b: int) -> None:
        if self.in_transaction:
            raise ProtocolError("Begin inside a transaction")
        self._commit_lsn, self._commit_ts, self._xid = _BEGIN.unpack_from(data, b + 1)
        self.in_transaction = True
        self._skipping = self._commit_lsn <= self.skip_through
        self._begin_pending = True
        self._op = 0
        if self._buf:  # Commit hands a fresh list over; only a broken stream leaves one behind
            self._buf = []

    def _commit(self, data: bytes, b: int) -> None:
        if not self.in_transaction:
            raise ProtocolError("Commit outside a transaction")
        _flags, commit_lsn, end_lsn, commit_ts = _COMMIT.unpack_from(data, b + 1)
        if commit_lsn != self._commit_lsn:
            raise ProtocolError(f"Commit LSN {commit_lsn} differs from Begin's {self._commit_lsn}")
        self.in_transaction = False
        self.last_commit_lsn = commit_lsn
        if self._skipping:
            self._skipping = False
            return
        if self._buf or not self._begin_pending:
            self._emit(
                _fragment(
                    self._xid,
                    commit_lsn,
                    tuple(self._buf),
                    self._begin_pending,
                    True,
                    end_lsn,
                    commit_ts,
                    self.behind,
                )
            )
        self._buf = []

    def _add(self, change: Change) -> None:
        buf = self._buf
        if len(buf) >= self._max_batch:
            self._flush()
            buf = self._buf
        buf.append(change)
        self._op += 2

    def _flush(self) -> None:
        """Hand over the buffered changes as a non-final fragment."""
        if self._buf:
            self._emit(
                _fragment(
                    self._xid,
                    self._commit_lsn,
                    tuple(self._buf),
                    self._begin_pending,
                    False,
                    None,
                    self._commit_ts,
                    self.behind,
                )
            )
            self._begin_pending = False
            self._buf = []

    # -- changes ---------------------------------------------------------------------------------------
    def _update(self, data: bytes, b: int) -> None:
        rel = self.cache.get(_U32.unpack_from(data, b + 1)[0])
        kind = data[b + 5]
        old: Row | None = None
        old_kind: Literal["K", "O"] | None = None
        pos = b + 6
        if kind in (_K, _O):
            old, pos = decode_tuple(data, pos)
            old_kind = "K" if kind == _K else "O"
            kind = data[pos]
            pos += 1
        if kind != _NEW:
            raise ProtocolError("Update without a new tuple")
        new = decode_tuple(data, pos)[0]
        self._add(Update(rel, new, old, old_kind, self._op))

    def _delete(self, data: bytes, b: int) -> None:
        rel = self.cache.get(_U32.unpack_from(data, b + 1)[0])
        kind = data[b + 5]
        if kind not in (_K, _O):
            raise ProtocolError("Delete without an old tuple")
        old = decode_tuple(data, b + 6)[0]
        self._add(Delete(rel, old, "K" if kind == _K else "O", self._op))

    def _truncate(self, data: bytes) -> None:
        nrels = _I32.unpack_from(data, 1)[0]
        options = data[5]
        oids = struct.unpack_from(f"!{nrels}I", data, 6)
        rels = tuple(self.cache.get(oid) for oid in oids)
        self._add(Truncate(rels, bool(options & 1), bool(options & 2), self._op))

    def _relation(self, rel: Relation) -> None:
        previous = self.cache.relations.get(rel.oid)
        if previous == rel:
            return
        self.cache.relations[rel.oid] = rel
        self._flush()
        self._emit(RelationChanged(rel, previous))
