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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Final, Literal, NamedTuple, Protocol

import orjson

from sync.offsets import LogOffset
from sync.replication.changes import (
    UNCHANGED_TOAST,
    Change,
    Delete,
    Insert,
    Relation,
    Row,
    Truncate,
    Update,
    Value,
)
from sync.shapes.definition import ShapeDefinition

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

Operation = Literal["insert", "update", "delete"]
Predicate = Callable[[Mapping[str, str | None]], bool]
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


class IncompleteChange(Exception):
    """The change lacks the old row image or a TOASTed value needed to build the shape's items."""


class RelationMismatch(Exception):
    """The Relation message no longer has a column the shape selects (or keys by)."""


class ShapeTruncated(Exception):
    """The shape's table was truncated: the shape must be invalidated."""


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


def _escape_rel(name: str) -> str:
    return name.replace(".", "..").replace("/", "//")


def key_prefix(schema: str, table: str) -> str:
    """``"schema"."table"`` with ``.`` and ``/`` doubled inside the names."""
    return f'"{_escape_rel(schema)}"."{_escape_rel(table)}"'


def row_key(prefix: str, values: Iterable[str | None]) -> str:
    """``prefix/"v1"/"v2"``: ``/`` doubled inside values, NULL as ``_``."""
    parts = [prefix]
    for v in values:
        parts.append("_" if v is None else '"' + v.replace("/", "//") + '"')
    return "/".join(parts)


class _Layout:
    """Column positions of the shape in one Relation message, and row -> key / selected-values functions."""

    __slots__ = (
        "insert_template",
        "key",
        "key_of",
        "names",
        "pk_pos",
        "pk_sel",
        "plain_key",
        "project",
        "relation",
        "sel",
        "sel_names",
    )

    def __init__(self, relation: Relation, definition: ShapeDefinition, prefix: str) -> None:
        idx = relation.column_index
        self.relation = relation
        self.names = relation.column_names  # every column of the relation
        self.sel = tuple(idx[c] for c in definition.columns)  # selected, in definition order
        self.sel_names = definition.columns
        self.key = tuple(idx[c] for c in definition.key_columns)  # key columns, in key order
        pk = set(definition.primary_key)
        self.pk_sel = tuple(idx[c] for c in definition.columns if c in pk)
        self.pk_pos = frozenset(j for j, c in enumerate(definition.columns) if c in pk)  # in ``sel`` space
        self.project: Callable[[Row], Sequence[Value]]
        if self.sel == tuple(range(len(self.names))):
            self.project = _identity
        elif len(self.sel) == 1:
            only = self.sel[0]
            self.project = lambda row: (row[only],)
        else:
            self.project = itemgetter(*self.sel)
        self.key_of: Callable[[Row], str]
        if len(self.key) == 1 and definition.primary_key:
            k = self.key[0]
            head = prefix + '/"'

            def single(row: Row) -> str:
                v = row[k]
                if type(v) is not str:
                    raise IncompleteChange("a key column has no value")
                return head + v.replace("/", "//") + '"' if "/" in v else head + v + '"'

            self.key_of = single
        else:
            key = self.key
            self.key_of = lambda row: row_key(prefix, [_text(row[i]) for i in key])
        # The insert of plain values (see _plain): its item up to the headers as one %-template over
        # (key value, *selected values), for a single-column key that is selected.
        self.plain_key = self.key[0] if len(self.key) == 1 and definition.primary_key else -1
        self.insert_template: str | None = None
        if self.plain_key in self.sel:
            key_json = orjson.dumps(prefix).decode()[1:-1]  # char-wise escaping: parts escape alone
            value = ",".join(orjson.dumps(c).decode() + ':"\x00"' for c in definition.columns)
            self.insert_template = (
                ('{"key":"' + key_json + '/\\"\x00\\"","value":{' + value + "}")
                .replace("%", "%%")
                .replace("\x00", "%s")
            )


def _identity(row: Row) -> Row:
    return row


def _plain(values: Sequence[Value]) -> bool:
    """Every value is a string that JSON writes as it is: no quote, backslash or control character
    (``isprintable`` is stricter than needed: what it rejects takes the general path)."""
    try:
        text = "".join(values)  # type: ignore[arg-type]  # a None or UNCHANGED_TOAST raises TypeError
    except TypeError:
        return False
    return '"' not in text and "\\" not in text and text.isprintable()


_NONE_UNRESOLVED: set[int] = set()  # shared, never mutated
_CLOSE = b"}}"
_CLOSE_LAST = b',"last":true}}'
_Encoded = tuple[LogOffset, str, Operation, bytes, bytes]  # offset, key, operation, value part, extra
# LogOffset built on the hot path without its frozen dataclass __init__ (one object.__setattr__ per field);
# the object is identical (same class and fields, still immutable through normal assignment).
_new_offset = object.__new__
_new_item = tuple.__new__  # LogItem without its Python-level __new__
_set_tx = vars(LogOffset)["tx"].__set__
_set_op = vars(LogOffset)["op"].__set__


class ShapeLogEncoder:
    """Builds one shape's log items; holds one item back per transaction to place ``last``.

    Feed the fragments of each transaction in order with :meth:`encode_fragment` (changes of other
    relations are ignored).  Raises :class:`ShapeTruncated`, :class:`RelationMismatch` or
    :class:`IncompleteChange` (the consumer invalidates the shape), or whatever ``where`` raises.
    """

    def __init__(self, definition: ShapeDefinition, where: Predicate | None = None) -> None:
        self.definition = definition
        self._where = where
        self._full = definition.replica == "full"
        self._has_pk = bool(definition.primary_key)
        self._prefix = key_prefix(definition.schema, definition.table)
        self._key_head = self._prefix + '/"'
        # A copy: orjson's result keeps its 4 KiB output buffer, which every live shape would hold.
        self._rel_json = bytes(memoryview(orjson.dumps([definition.schema, definition.table])))
        self._snapshot_headers = b',"headers":{"operation":"insert","relation":' + self._rel_json + b"}}"
        self._sel_pos = {c: i for i, c in enumerate(definition.columns)}
        self._snapshot_key = tuple(self._sel_pos[c] for c in definition.key_columns)
        self._layout: _Layout | None = None
        self._pending: LogItem | None = None  # held back: is it the last of its transaction?

    # -- snapshot -------------------------------------------------------------------------------------------

    def snapshot_item(self, row: TextRow) -> tuple[str, bytes]:
        """``(key, json)`` for a snapshot row aligned with ``definition.columns``."""
        key = row_key(self._prefix, [row[i] for i in self._snapshot_key])
        value = dict(zip(self.definition.columns, row, strict=True))
        return key, b"".join(
            (b'{"key":', orjson.dumps(key), b',"value":', orjson.dumps(value), self._snapshot_headers)
        )

    # -- replication ----------------------------------------------------------------------------------------

    def encode_fragment(self, fragment: Fragment) -> list[LogItem]:
        # Items are built whole (closing ``}}`` included); only the transaction's last one is rebuilt with
        # ``"last":true``, once per transaction instead of one concatenation per item.
        out: list[LogItem] = []
        append = out.append
        dumps = orjson.dumps
        join = b"".join
        if fragment.begin:
            self._pending = None
        pending = self._pending
        oid = self.definition.relation_oid
        lsn = fragment.commit_lsn
        hdr = b'","relation":' + self._rel_json + b',"lsn":"%d","op_position":' % lsn
        insert_headers = b',"headers":{"operation":"insert' + hdr
        headers: dict[str, bytes] | None = None  # built at the first update/delete (most fragments have none)
        txids = b',"txids":[%d]' % fragment.xid
        txids_close = txids + _CLOSE
        where = self._where
        lay = self._layout
        template = ""  # lay.insert_template + this fragment's headers, built at the first use
        template_lay: _Layout | None = None
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
                if lay.insert_template is not None and _plain(values):
                    # plain values: the item is one %-format, no per-value escaping, no dict
                    if template_lay is not lay:
                        template_lay = lay
                        template = "".join(
                            (
                                lay.insert_template,
                                insert_headers.decode().replace("%", "%%"),
                                "%d",
                                txids_close.decode(),
                            )
                        )
                    key_value: str = row[lay.plain_key]  # type: ignore[assignment]  # plain: a str
                    if "/" in key_value:
                        key_value = key_value.replace("/", "//")
                    key = self._key_head + key_value + '"'
                    body = (template % (key_value, *values, op)).encode()
                else:
                    key = lay.key_of(row)
                    body = join(
                        (
                            b'{"key":',
                            dumps(key),
                            b',"value":',
                            dumps(dict(zip(lay.sel_names, values, strict=True))),
                            insert_headers,
                            b"%d" % op,
                            txids_close,
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
            if headers is None:
                headers = {
                    "insert": insert_headers,
                    "update": b',"headers":{"operation":"update' + hdr,
                    "delete": b',"headers":{"operation":"delete' + hdr,
                }
            for offset, key, operation, value, extra in self._encode(lay, change, lsn):
                body = join(
                    (
                        b'{"key":',
                        dumps(key),
                        value,
                        headers[operation],
                        b"%d" % offset.op,
                        txids,
                        extra,
                        _CLOSE,
                    )
                )
                if pending is not None:
                    append(pending)
                pending = LogItem(offset, key, operation, body)
        if fragment.commit and pending is not None:
            append(pending._replace(json=pending.json[: -len(_CLOSE)] + _CLOSE_LAST))
            pending = None
        self._pending = pending
        return out

    def _layout_for(self, relation: Relation) -> _Layout:
        lay = self._layout
        if lay is not None and (lay.relation is relation or lay.relation == relation):
            return lay
        d = self.definition
        missing = [c for c in (*d.columns, *d.key_columns) if c not in relation.column_index]
        if missing:
            raise RelationMismatch(f"{self._prefix} has no column(s) {', '.join(sorted(set(missing)))}")
        lay = _Layout(relation, d, self._prefix)
        self._layout = lay
        return lay

    def _encode(self, lay: _Layout, change: Insert | Update | Delete, lsn: int) -> list[_Encoded]:
        where = self._where
        if isinstance(change, Insert):
            row = change.new
            if where is not None and not where(_mapping(lay, row)):
                return []
            return [(LogOffset(lsn, change.op), self._key(lay, row), "insert", self._value(lay, row), b"")]
        if isinstance(change, Delete):
            old = change.old
            full_old = change.old_kind == "O"
            if where is not None:
                if not full_old:
                    raise IncompleteChange(
                        f"{self._prefix}: DELETE without the old row, cannot evaluate WHERE"
                    )
                if not where(_mapping(lay, old)):
                    return []
            return [
                (
                    LogOffset(lsn, change.op),
                    self._key(lay, old),
                    "delete",
                    self._delete_value(lay, old, full_old),
                    b"",
                )
            ]
        return self._update(lay, change, lsn)

    def _update(self, lay: _Layout, change: Update, lsn: int) -> list[_Encoded]:
        old_full = change.old if change.old_kind == "O" else None
        new = change.new
        unresolved: set[int] = _NONE_UNRESOLVED
        if UNCHANGED_TOAST in new:
            new, unresolved = _fill_toast(new, old_full)
        where = self._where
        if where is not None:
            if old_full is None:
                raise IncompleteChange(f"{self._prefix}: UPDATE without the old row, cannot evaluate WHERE")
            if unresolved:
                raise IncompleteChange(f"{self._prefix}: UPDATE with an unresolved TOAST value")
            old_in = where(_mapping(lay, old_full))
            new_in = where(_mapping(lay, new))
            if not old_in and not new_in:
                return []
        else:
            old_in = new_in = True
        op = change.op
        key_source = change.old if change.old is not None else new
        if unresolved and any(i in unresolved for i in lay.key):
            raise IncompleteChange(f"{self._prefix}: UPDATE with an unresolved TOAST key value")
        new_key = lay.key_of(new)
        if not new_in:
            old = old_full if old_full is not None else key_source
            value = self._delete_value(lay, old, old_full is not None)
            return [(LogOffset(lsn, op), lay.key_of(old), "delete", value, b"")]
        if not old_in:
            self._require_full(unresolved)
            return [(LogOffset(lsn, op), new_key, "insert", self._value(lay, new), b"")]
        old_key = lay.key_of(key_source)
        if old_key != new_key:
            self._require_full(unresolved)
            old = old_full if old_full is not None else key_source
            del_value = self._delete_value(lay, old, old_full is not None)
            return [
                (
                    LogOffset(lsn, op),
                    old_key,
                    "delete",
                    del_value,
                    b',"key_change_to":' + orjson.dumps(new_key),
                ),
                (
                    LogOffset(lsn, op + 1),
                    new_key,
                    "insert",
                    self._value(lay, new),
                    b',"key_change_from":' + orjson.dumps(old_key),
                ),
            ]
        if old_full is not None and not unresolved:
            # the common case: compare the selected values as tuples, in C
            new_p = lay.project(new)
            old_p = lay.project(old_full)
            if new_p == old_p:
                return []
            names = lay.sel_names
            if self._full:
                old_value = {names[j]: old_p[j] for j in range(len(names)) if new_p[j] != old_p[j]}
                value = b"".join(
                    (
                        b',"value":',
                        orjson.dumps(dict(zip(names, new_p, strict=True))),
                        b',"old_value":',
                        orjson.dumps(old_value),
                    )
                )
            else:
                keep = lay.pk_pos
                value = b',"value":' + orjson.dumps(
                    {names[j]: new_p[j] for j in range(len(names)) if j in keep or new_p[j] != old_p[j]}
                )
            return [(LogOffset(lsn, op), new_key, "update", value, b"")]
        # no usable old row: what changed is unknown, send every known column
        if self._full:
            self._require_full(unresolved)
            return [(LogOffset(lsn, op), new_key, "update", self._value(lay, new), b"")]
        known = {lay.names[i]: new[i] for i in lay.sel if i not in unresolved}
        return [(LogOffset(lsn, op), new_key, "update", b',"value":' + orjson.dumps(known), b"")]

    def _require_full(self, unresolved: set[int]) -> None:
        if unresolved:
            raise IncompleteChange(
                f"{self._prefix}: UPDATE with an unresolved TOAST value needs the full row"
            )

    def _key(self, lay: _Layout, row: Row) -> str:
        return lay.key_of(row)

    def _value(self, lay: _Layout, row: Row) -> bytes:
        return b',"value":' + orjson.dumps(dict(zip(lay.sel_names, lay.project(row), strict=True)))

    def _delete_value(self, lay: _Layout, old: Row, full_old: bool) -> bytes:
        if self._full or not self._has_pk:
            if not full_old:
                raise IncompleteChange(f"{self._prefix}: DELETE without the old row, cannot send it in full")
            return self._value(lay, old)
        return b',"value":' + orjson.dumps({lay.names[i]: old[i] for i in lay.pk_sel})


def _text(v: object) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise IncompleteChange("a key column has no value")


def _mapping(lay: _Layout, row: Row) -> Mapping[str, str | None]:
    return dict(zip(lay.names, row, strict=True))  # type: ignore[arg-type]  # no UNCHANGED_TOAST left here


def _fill_toast(new: Row, old: Row | None) -> tuple[Row, set[int]]:
    filled = list(new)
    unresolved: set[int] = set()
    for i, v in enumerate(new):
        if v is UNCHANGED_TOAST:
            prev = old[i] if old is not None else UNCHANGED_TOAST
            if prev is UNCHANGED_TOAST:
                unresolved.add(i)
            else:
                filled[i] = prev
    return tuple(filled), unresolved
