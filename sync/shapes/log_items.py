"""Turning replicated changes and snapshot rows into a shape's log items, as exact JSON bytes (spec §5).

A log item is stored and served as the bytes built here, so this module is both the wire format and the hot
path of ingestion.  Per shape, a :class:`ShapeLogEncoder` precomputes everything that does not depend on the
row (key prefix, relation JSON, column positions per Relation message) and builds each item as a few byte
concatenations around ``orjson.dumps`` of the key and the value dicts.

Rules (spec §5), for the shape's selected columns; the WHERE predicate always sees the full row:

* insert: full row; delete: PK columns (the full old row with ``replica=full`` or without a PK);
* update inside the shape: ``replica=default`` -> PK + changed columns, ``replica=full`` -> full new row and
  ``old_value`` with the old values of the changed columns; no change in the selected columns -> dropped;
* a key change (always the case for a PK-less table whose row changed) -> delete at op n with
  ``key_change_to``, then insert at op n+1 with ``key_change_from``;
* an update moving a row into the shape -> insert (full row); out of it -> delete;
* ``last: true`` on the shape's last item of each transaction, which is why an encoder holds one item back
  until it knows whether the transaction has more for this shape.

Unchanged TOAST values (pgoutput ``u``) are taken from the old row image, which the engine always has because
it sets ``REPLICA IDENTITY FULL``.  Without that image (someone changed the replica identity), an unresolved
value is treated as unchanged for an in-place ``replica=default`` update of a shape without WHERE; whenever
the full row is needed (a WHERE to evaluate, ``replica=full``, an insert produced by a move or a key change)
:class:`IncompleteChange` is raised and the consumer must invalidate the shape rather than guess.

Layout: this module is the public face (items, controls, errors) and the per-fragment loop with the insert
fast path inlined; :mod:`sync.shapes.log_layout` precomputes per Relation (keys, positions, the insert
template parts); :mod:`sync.shapes.log_changes` holds the rules for updates and deletes (a base class of the
encoder).  ``IncompleteChange``, ``Predicate``, ``key_prefix`` and ``row_key`` stay importable from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol

import orjson

from sync.offsets import LogOffset
from sync.replication.changes import Change, Insert, Relation, Truncate
from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_changes import ChangeRules, Operation, Predicate
from sync.shapes.log_layout import IncompleteChange, Layout, is_plain, key_prefix, row_key, shared_layout

__all__ = [
    "MUST_REFETCH",
    "Fragment",
    "IncompleteChange",
    "LogItem",
    "Operation",
    "Predicate",
    "RelationMismatch",
    "ShapeLogEncoder",
    "ShapeTruncated",
    "key_prefix",
    "row_key",
    "snapshot_end",
    "up_to_date",
]

TextRow = Sequence[str | None]

MUST_REFETCH: Final = b'{"headers":{"control":"must-refetch"}}'


class Fragment(Protocol):
    """What :meth:`ShapeLogEncoder.encode_fragment` reads: a ``TransactionFragment``, or the collector's
    ``ShapeChanges`` as it is (no copy into a fragment per message on the many-shapes path)."""

    @property
    def xid(self) -> int: ...
    @property
    def commit_lsn(self) -> int: ...
    @property
    def changes(self) -> Sequence[Change]: ...
    @property
    def begin(self) -> bool: ...
    @property
    def commit(self) -> bool: ...


class _Whole(NamedTuple):
    """A whole transaction of the given changes as a :class:`Fragment` (for :meth:`ShapeLogEncoder.encode_one`
    when it falls back to the general path)."""

    xid: int
    commit_lsn: int
    changes: Sequence[Change]
    begin: bool = True
    commit: bool = True


class RelationMismatch(Exception):
    """The Relation message no longer has a column the shape selects (or keys by)."""


class ShapeTruncated(Exception):
    """The shape's table was truncated: the shape must be invalidated."""


class _Heads(NamedTuple):
    """A fragment's item headers per operation (up to the op position) and its ``,"txids":[…]``."""

    by_op: dict[str, bytes]
    txids: bytes


class LogItem(NamedTuple):
    """One log entry: its offset, row key, operation and exact JSON bytes (a NamedTuple: cheap to build)."""

    offset: LogOffset
    key: str
    operation: Operation
    json: bytes


def up_to_date(global_last_seen_lsn: int) -> bytes:
    return b'{"headers":{"control":"up-to-date","global_last_seen_lsn":"%d"}}' % global_last_seen_lsn


def snapshot_end(xmin: int, xmax: int, xip: Iterable[int]) -> bytes:
    return orjson.dumps(
        {
            "headers": {
                "control": "snapshot-end",
                "xmin": str(xmin),
                "xmax": str(xmax),
                "xip_list": [str(x) for x in xip],
            }
        }
    )


_CLOSE = b"}}"
_CLOSE_LAST = b',"last":true}}'
# LogOffset built on the hot path without its frozen dataclass __init__ (one object.__setattr__ per field);
# the object is identical (same class and fields, still immutable through normal assignment).
_new_offset = object.__new__
_new_item = tuple.__new__  # LogItem without its Python-level __new__
_set_tx = vars(LogOffset)["tx"].__set__
_set_op = vars(LogOffset)["op"].__set__


class ShapeLogEncoder(ChangeRules):
    """Builds one shape's log items; holds one item back per transaction to place ``last``.

    Feed the fragments of each transaction in order with :meth:`encode_fragment` (changes of other
    relations are ignored).  Raises :class:`ShapeTruncated`, :class:`RelationMismatch` or
    :class:`IncompleteChange` (the consumer invalidates the shape), or whatever ``where`` raises.
    """

    def __init__(self, definition: ShapeDefinition, where: Predicate | None = None) -> None:
        super().__init__(definition, where)
        self._key_head = self._prefix + '/"'
        # A copy: orjson's result keeps its 4 KiB output buffer, which every live shape would hold.
        self._rel_json = bytes(memoryview(orjson.dumps([definition.schema, definition.table])))
        self._snapshot_headers = b',"headers":{"operation":"insert","relation":' + self._rel_json + b"}}"
        self._sel_pos = {c: i for i, c in enumerate(definition.columns)}
        self._snapshot_key = tuple(self._sel_pos[c] for c in definition.key_columns)
        self._oid = definition.relation_oid
        self._layout: Layout | None = None
        self._pending: LogItem | None = None  # held back: is it the last of its transaction?
        # built at the first plain insert (see _insert_pieces): the template, and the same ending in "last"
        self._insert_tmpl: tuple[Layout, list[str], list[str]] | None = None

    # -- snapshot -------------------------------------------------------------------------------------------

    def snapshot_item(self, row: TextRow) -> tuple[str, bytes]:
        """``(key, json)`` for a snapshot row aligned with ``definition.columns``."""
        key = row_key(self._prefix, [row[i] for i in self._snapshot_key])
        value = dict(zip(self.definition.columns, row, strict=True))
        return key, b"".join(
            (b'{"key":', orjson.dumps(key), b',"value":', orjson.dumps(value), self._snapshot_headers)
        )

    # -- replication ----------------------------------------------------------------------------------------

    def encode_fragment(self, fragment: Fragment, exact: bool = False) -> list[LogItem]:
        """The items of one fragment (the transaction's last one marked ``last`` once its commit is seen).

        ``exact``: the shape's WHERE is known to hold for every Insert of the fragment (the routing index
        matched each exactly), so it is not evaluated for them; updates and deletes are always evaluated.
        """
        # Items are built whole (closing ``}}`` included); only the transaction's last one is rebuilt with
        # ``"last":true``, once per transaction instead of one concatenation per item.  Nothing that depends
        # on the fragment only (headers, txids) is built before a change needs it: with many shapes most
        # fragments carry one plain insert, which the template builds alone.
        out: list[LogItem] = []
        append = out.append
        if fragment.begin:
            self._pending = None
        pending = self._pending
        oid = self._oid
        lsn = fragment.commit_lsn
        xid = fragment.xid
        where = None if exact else self._where
        lay = self._layout
        heads: _Heads | None = None  # built at the first item off the template path
        lsn_text = xid_text = ""  # built at the first item on it
        for change in fragment.changes:
            if type(change) is Insert:
                # the hot path, inlined: one insert -> at most one item
                relation = change.relation
                if relation.oid != oid:
                    continue
                if lay is None or lay.relation is not relation:
                    lay = self._layout_for(relation)
                row = change.new
                if where is not None and not where(dict(zip(lay.names, row, strict=True))):  # type: ignore[arg-type]
                    continue
                op = change.op
                values = lay.project(row)
                if lay.insert_parts is not None and is_plain(values):
                    # plain values: the item is one join of literal parts and the values, no per-value
                    # escaping, no dict
                    cached = self._insert_tmpl
                    if cached is None or cached[0] is not lay:
                        cached = self._insert_tmpl = self._insert_pieces(lay)
                    pieces = cached[1]
                    key_value: str = row[lay.plain_key]  # type: ignore[assignment]  # plain: a str
                    if "/" in key_value:
                        key_value = key_value.replace("/", "//")
                    key = self._key_head + key_value + '"'
                    if not lsn_text:
                        lsn_text, xid_text = str(lsn), str(xid)
                    pieces[1::2] = (key_value, *values, lsn_text, str(op), xid_text)  # type: ignore[arg-type]  # plain: strs
                    body = "".join(pieces).encode()
                else:
                    if heads is None:
                        heads = self._heads(lsn, xid)
                    key = lay.key_of(row)
                    body = b"".join(
                        (
                            b'{"key":',
                            orjson.dumps(key),
                            b',"value":',
                            orjson.dumps(dict(zip(lay.sel_names, values, strict=True))),
                            heads.by_op["insert"],
                            b"%d" % op,
                            heads.txids,
                            _CLOSE,
                        )
                    )
                if pending is not None:
                    append(pending)
                offset = _new_offset(LogOffset)
                _set_tx(offset, lsn)
                _set_op(offset, op)
                pending = _new_item(LogItem, (offset, key, "insert", body))
                continue
            if isinstance(change, Truncate):
                if any(r.oid == oid for r in change.relations):
                    raise ShapeTruncated(f"{self._prefix} was truncated")
                continue
            if change.relation.oid != oid:
                continue
            if lay is None or lay.relation is not change.relation:
                lay = self._layout_for(change.relation)
            if heads is None:
                heads = self._heads(lsn, xid)
            for offset, key, operation, value, extra in self._encode(lay, change, lsn):
                body = b"".join(
                    (
                        b'{"key":',
                        orjson.dumps(key),
                        value,
                        heads.by_op[operation],
                        b"%d" % offset.op,
                        heads.txids,
                        extra,
                        _CLOSE,
                    )
                )
                if pending is not None:
                    append(pending)
                pending = LogItem(offset, key, operation, body)
        if fragment.commit and pending is not None:
            offset, key, operation, body = pending  # rebuilt without namedtuple._replace (slow, per item)
            append(_new_item(LogItem, (offset, key, operation, body[: -len(_CLOSE)] + _CLOSE_LAST)))
            pending = None
        self._pending = pending
        return out

    def encode_whole(self, fragment: Fragment, exact: bool = False) -> list[LogItem]:
        """:meth:`encode_fragment` of a whole transaction (``begin`` and ``commit``) of exactly one change:
        the same items.  With many shapes most shapes get one row per transaction, and a plain insert of the
        relation already laid out is built here at once with its ``"last":true`` (no item built twice, no
        per-fragment set-up); anything else goes through :meth:`encode_fragment`."""
        return self.encode_one(fragment.xid, fragment.commit_lsn, fragment.changes[0], exact, fragment)

    def encode_one(
        self, xid: int, lsn: int, change: Change, exact: bool = False, fragment: Fragment | None = None
    ) -> list[LogItem]:
        """:meth:`encode_whole` of the whole transaction ``xid``/``lsn`` of the one ``change`` (``fragment``:
        that transaction as a fragment, if the caller has one; else one is made when needed): the template
        path of :meth:`encode_run` when it takes the change, else :meth:`encode_fragment`."""
        out = self.encode_run((xid, lsn, change, exact))
        if out is None:
            return self.encode_fragment(
                fragment if fragment is not None else _Whole(xid, lsn, (change,)), exact
            )
        return out

    def encode_run(self, items: Sequence[Any]) -> list[LogItem] | None:
        """The items of consecutive whole transactions of one change each (``items``: ``xid, commit_lsn,
        change, exact`` per transaction, a ``ShapeRun``'s) when every one is a plain insert of the shape's
        relation (one Relation message) that needs no WHERE evaluation: one item per transaction, in order,
        the same as :meth:`encode_fragment` of each (the template path set up once per run, not per
        transaction, and at the first run if need be).  None as soon as one is not: nothing is kept, the
        caller encodes them one by one."""
        cached = self._run_template(items[2])
        if cached is None:
            return None
        lay = cached[0]
        relation = lay.relation
        checked = self._where is not None
        project = lay.project
        key_pos = lay.plain_key
        key_head = self._key_head
        pieces = cached[2]
        out: list[LogItem] = []
        append = out.append
        for xid, lsn, change, exact in zip(items[0::4], items[1::4], items[2::4], items[3::4], strict=True):
            if type(change) is not Insert or change.relation is not relation or (checked and not exact):
                return None
            row = change.new
            values = project(row)
            if not is_plain(values):
                return None
            key_value: str = row[key_pos]  # type: ignore[assignment]  # plain: a str
            if "/" in key_value:
                key_value = key_value.replace("/", "//")
            op = change.op
            pieces[1::2] = (key_value, *values, str(lsn), str(op), str(xid))  # type: ignore[arg-type]  # plain: strs
            offset = _new_offset(LogOffset)
            _set_tx(offset, lsn)
            _set_op(offset, op)
            body = "".join(pieces).encode()
            append(_new_item(LogItem, (offset, key_head + key_value + '"', "insert", body)))
        self._pending = None
        return out

    def _run_template(self, change: Change) -> tuple[Layout, list[str], list[str]] | None:
        """The insert template for a run starting with ``change``, set up now if it is a plain-insert
        candidate of this shape's relation and the template is missing or of another Relation message (a new
        shape's or a reloaded shape's first run, the first after a reconnect): without it the whole first run
        went one transaction at a time through the general path.  None if ``change`` cannot take the template
        path (what is set up is what :meth:`encode_fragment` would set up for it)."""
        if type(change) is not Insert or change.relation.oid != self._oid:
            return None
        try:
            lay = self._layout_for(change.relation)
        except RelationMismatch:
            return None  # the general path raises it
        if lay.insert_parts is None:
            return None
        cached = self._insert_tmpl
        if cached is None or cached[0] is not lay:
            cached = self._insert_tmpl = self._insert_pieces(lay)
        return cached

    def _heads(self, lsn: int, xid: int) -> _Heads:
        """The header parts of a fragment's items off the insert template path."""
        hdr = b'","relation":' + self._rel_json + b',"lsn":"%d","op_position":' % lsn
        return _Heads(
            {
                "insert": b',"headers":{"operation":"insert' + hdr,
                "update": b',"headers":{"operation":"update' + hdr,
                "delete": b',"headers":{"operation":"delete' + hdr,
            },
            b',"txids":[%d]' % xid,
        )

    def _insert_pieces(self, lay: Layout) -> tuple[Layout, list[str], list[str]]:
        """The whole insert item as literal parts (even indexes) around the slots (odd indexes, filled per
        item): the layout's key value and values, then the commit LSN, the op position and the xid (the same
        bytes as the general path builds); then the same for the transaction's last item (``"last":true``
        before the closing braces).  Two lists per encoder, refilled for each item."""
        assert lay.insert_parts is not None
        headers = b',"headers":{"operation":"insert","relation":' + self._rel_json + b',"lsn":"'
        parts = [*lay.insert_parts[:-1], lay.insert_parts[-1] + headers.decode(), '","op_position":']
        parts += [',"txids":[', "]}}"]
        pieces: list[str] = [""] * (2 * len(parts) - 1)
        pieces[0::2] = parts
        last = [*pieces[:-1], '],"last":true}}']  # as encode_fragment rebuilds the last item: _CLOSE_LAST
        return lay, pieces, last

    def _layout_for(self, relation: Relation) -> Layout:
        lay = self._layout
        if lay is not None and lay.relation is relation:
            return lay
        d = self.definition
        missing = [c for c in (*d.columns, *d.key_columns) if c not in relation.column_index]
        if missing:
            raise RelationMismatch(f"{self._prefix} has no column(s) {', '.join(sorted(set(missing)))}")
        lay = self._layout = shared_layout(relation, d, self._prefix)
        return lay
