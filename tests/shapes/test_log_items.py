from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from sync.offsets import LogOffset
from sync.replication.changes import (
    UNCHANGED_TOAST,
    Change,
    Delete,
    Insert,
    Relation,
    Row,
    TransactionFragment,
    Truncate,
    Update,
)
from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import (
    MUST_REFETCH,
    IncompleteChange,
    LogItem,
    Predicate,
    RelationMismatch,
    ShapeLogEncoder,
    ShapeTruncated,
    key_prefix,
    row_key,
    snapshot_end,
    up_to_date,
)
from tests.shapes.helpers import Col, Table, relation_of

ITEMS = Table(100, "public", "items", (Col("id"), Col("title"), Col("n"), Col("big"), Col("hidden")), ("id",))
REL = relation_of(ITEMS)
NOPK = Table(200, "h", "w", (Col("b"), Col("a")))
NOPK_REL = relation_of(NOPK)
OTHER_REL = Relation(300, "public", "other", "f", REL.columns)
LSN = 123456789
XID = 4242


def shape(
    table: Table = ITEMS,
    columns: Sequence[str] | None = None,
    replica: str = "default",
    where: str | None = None,
) -> ShapeDefinition:
    return ShapeDefinition.create(
        (table.schema, table.name), table, columns=columns, replica=replica, where=where
    )


def frag(*changes: Change, begin: bool = True, commit: bool = True) -> TransactionFragment:
    return TransactionFragment(XID, LSN, tuple(changes), begin, commit, LSN + 8 if commit else None)


def encode(defn: ShapeDefinition, *changes: Change, where: Predicate | None = None) -> list[dict[str, Any]]:
    items = ShapeLogEncoder(defn, where).encode_fragment(frag(*changes))
    return [decoded(i) for i in items]


def decoded(item: LogItem) -> dict[str, Any]:
    d: dict[str, Any] = orjson.loads(item.json)
    assert d["key"] == item.key
    assert d["headers"]["operation"] == item.operation
    assert d["headers"]["op_position"] == item.offset.op and item.offset.tx == LSN
    return d


def row(
    id_: str | None = "1", title: str | None = "t", n: str | None = "5", big: Any = "B", hidden: Any = "h"
) -> Row:
    return (id_, title, n, big, hidden)


def ins(r: Row, op: int = 0, rel: Relation = REL) -> Insert:
    return Insert(rel, r, op)


def upd(old: Row | None, new: Row, op: int = 0, kind: str | None = "O", rel: Relation = REL) -> Update:
    return Update(rel, new, old, kind, op)  # type: ignore[arg-type]


def dele(old: Row, op: int = 0, kind: str = "O", rel: Relation = REL) -> Delete:
    return Delete(rel, old, kind, op)  # type: ignore[arg-type]


def n_gt_3(r: Mapping[str, str | None]) -> bool:
    return r["n"] is not None and int(r["n"]) > 3


def headers(**extra: Any) -> dict[str, Any]:
    return {"relation": ["public", "items"], "lsn": str(LSN), "txids": [XID], **extra}


# -- keys -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "table", "values", "expected"),
    [
        ("public", "items", ["1"], '"public"."items"/"1"'),
        ("public", "items", ["a/b"], '"public"."items"/"a//b"'),
        ("public", "items", ['q"uote'], '"public"."items"/"q"uote"'),
        ("public", "items", [""], '"public"."items"/""'),
        ("a.b", "c/d", ["1", "2"], '"a..b"."c//d"/"1"/"2"'),
        ("h", "w", ["1", None, "2"], '"h"."w"/"1"/_/"2"'),
        ("my schema", 'T"x', ["."], '"my schema"."T"x"/"."'),
    ],
)
def test_keys(schema: str, table: str, values: list[str | None], expected: str) -> None:
    assert row_key(key_prefix(schema, table), values) == expected


def test_exact_insert_bytes() -> None:
    items = ShapeLogEncoder(shape(columns=["id", "title"])).encode_fragment(
        frag(ins(row("7/8", 'a"b'), op=4))
    )
    assert [i.json for i in items] == [
        b'{"key":"\\"public\\".\\"items\\"/\\"7//8\\"","value":{"id":"7/8","title":"a\\"b"},'
        b'"headers":{"operation":"insert","relation":["public","items"],"lsn":"123456789","op_position":4,'
        b'"txids":[4242],"last":true}}'
    ]
    assert items[0].offset == LogOffset(LSN, 4) and items[0].key == '"public"."items"/"7//8"'


def test_snapshot_item_has_no_lsn_and_same_key() -> None:
    enc = ShapeLogEncoder(shape(columns=["title", "id"]))
    key, js = enc.snapshot_item(("1", None))
    assert key == '"public"."items"/"1"'
    assert js == (
        b'{"key":"\\"public\\".\\"items\\"/\\"1\\"","value":{"id":"1","title":null},'
        b'"headers":{"operation":"insert","relation":["public","items"]}}'
    )
    nopk = ShapeLogEncoder(shape(NOPK))
    assert nopk.snapshot_item(("x", None))[0] == '"h"."w"/_/"x"'  # sorted by name: a, b


def test_control_items() -> None:
    assert orjson.loads(up_to_date(99)) == {
        "headers": {"control": "up-to-date", "global_last_seen_lsn": "99"}
    }
    assert orjson.loads(snapshot_end(10, 20, [12, 11])) == {
        "headers": {"control": "snapshot-end", "xmin": "10", "xmax": "20", "xip_list": ["12", "11"]}
    }
    assert orjson.loads(MUST_REFETCH) == [{"headers": {"control": "must-refetch"}}][0]


# -- insert / delete -------------------------------------------------------------------------------------------


def test_insert_full_selected_row_where_on_full_row() -> None:
    defn = shape(columns=["id", "title"])
    out = encode(defn, ins(row(n="9"), op=0), ins(row("2", n="1"), op=2), where=n_gt_3)
    assert out == [
        {
            "key": '"public"."items"/"1"',
            "value": {"id": "1", "title": "t"},
            "headers": headers(operation="insert", op_position=0, last=True),
        }
    ]


@pytest.mark.parametrize(
    ("table", "replica", "expected"),
    [
        (ITEMS, "default", {"id": "1"}),
        (ITEMS, "full", {"id": "1", "title": "t", "n": "5", "big": "B", "hidden": "h"}),
        (NOPK, "default", {"b": "1", "a": None}),
    ],
)
def test_delete_values(table: Table, replica: str, expected: dict[str, Any]) -> None:
    rel = relation_of(table)
    old = row() if table is ITEMS else ("1", None)
    out = encode(shape(table, replica=replica), dele(old, rel=rel))
    assert [d["value"] for d in out] == [expected]
    assert out[0]["headers"]["operation"] == "delete"


def test_delete_outside_where_dropped_and_needs_old_row() -> None:
    assert encode(shape(), dele(row(n="1")), where=n_gt_3) == []
    assert len(encode(shape(), dele(row(n="4")), where=n_gt_3)) == 1
    with pytest.raises(IncompleteChange):
        encode(shape(), dele(("1", None, None, None, None), kind="K"), where=n_gt_3)
    # default mode without WHERE only needs the key
    assert encode(shape(), dele(("1", None, None, None, None), kind="K"))[0]["value"] == {"id": "1"}


# -- update -----------------------------------------------------------------------------------------------------


def test_update_default_sends_pk_and_changed_columns() -> None:
    out = encode(shape(), upd(row(), row(title="u", n="6"), op=2))
    assert out == [
        {
            "key": '"public"."items"/"1"',
            "value": {"id": "1", "title": "u", "n": "6"},
            "headers": headers(operation="update", op_position=2, last=True),
        }
    ]


def test_update_full_sends_new_row_and_old_changed_values() -> None:
    out = encode(shape(replica="full"), upd(row(), row(title=None)))
    assert out[0]["value"] == {"id": "1", "title": None, "n": "5", "big": "B", "hidden": "h"}
    assert out[0]["old_value"] == {"title": "t"}


def test_noop_updates_dropped() -> None:
    assert encode(shape(), upd(row(), row())) == []
    # a change in a column the shape does not select is a no-op for it
    assert encode(shape(columns=["id", "title"]), upd(row(), row(hidden="other"))) == []
    assert encode(shape(columns=["id", "title"], replica="full"), upd(row(), row(hidden="x"))) == []
    assert encode(shape(NOPK), upd(("1", "2"), ("1", "2"), rel=NOPK_REL)) == []


@pytest.mark.parametrize("replica", ["default", "full"])
def test_pk_change_splits_into_delete_and_insert(replica: str) -> None:
    out = encode(shape(replica=replica), upd(row("1"), row("2", title="x"), op=6))
    old_key, new_key = '"public"."items"/"1"', '"public"."items"/"2"'
    deleted = {"id": "1"} if replica == "default" else dict(zip(REL.column_names, row("1"), strict=True))
    assert out == [
        {
            "key": old_key,
            "value": deleted,
            "headers": headers(operation="delete", op_position=6, key_change_to=new_key),
        },
        {
            "key": new_key,
            "value": dict(zip(REL.column_names, row("2", title="x"), strict=True)),
            "headers": headers(operation="insert", op_position=7, key_change_from=old_key, last=True),
        },
    ]


def test_pk_change_with_key_only_old_tuple() -> None:
    # REPLICA IDENTITY DEFAULT: the old tuple has only the key columns ('K')
    out = encode(shape(), upd(("1", None, None, None, None), row("2"), kind="K"))
    assert [(d["headers"]["operation"], d["key"]) for d in out] == [
        ("delete", '"public"."items"/"1"'),
        ("insert", '"public"."items"/"2"'),
    ]


def test_pkless_update_always_splits() -> None:
    out = encode(shape(NOPK), upd(("1", None), ("1", "x"), op=0, rel=NOPK_REL))
    assert [(d["headers"]["operation"], d["key"], d["value"]) for d in out] == [
        ("delete", '"h"."w"/_/"1"', {"b": "1", "a": None}),
        ("insert", '"h"."w"/"x"/"1"', {"b": "1", "a": "x"}),
    ]
    assert out[0]["headers"]["key_change_to"] == out[1]["key"]
    assert out[1]["headers"]["key_change_from"] == out[0]["key"] and out[1]["headers"]["last"] is True


def test_update_moving_in_and_out_of_the_shape() -> None:
    defn = shape(columns=["id", "n"])
    moved_in = encode(defn, upd(row(n="1"), row(n="7")), where=n_gt_3)
    assert [(d["headers"]["operation"], d["value"]) for d in moved_in] == [("insert", {"id": "1", "n": "7"})]
    moved_out = encode(defn, upd(row(n="7"), row(n="1")), where=n_gt_3)
    assert [(d["headers"]["operation"], d["value"]) for d in moved_out] == [("delete", {"id": "1"})]
    outside = encode(defn, upd(row(n="1"), row(n="2")), where=n_gt_3)
    assert outside == []
    inside = encode(defn, upd(row(n="5"), row(n="6")), where=n_gt_3)
    assert [(d["headers"]["operation"], d["value"]) for d in inside] == [("update", {"id": "1", "n": "6"})]
    # moving out while changing the PK: delete of the old key only
    out_pk = encode(defn, upd(row("1", n="7"), row("2", n="1")), where=n_gt_3)
    assert [(d["headers"]["operation"], d["key"]) for d in out_pk] == [("delete", '"public"."items"/"1"')]
    assert "key_change_to" not in out_pk[0]["headers"]
    in_full = encode(shape(columns=["id", "n"], replica="full"), upd(row(n="7"), row(n="1")), where=n_gt_3)
    assert in_full[0]["value"] == {"id": "1", "n": "7"}  # full old row on delete


def test_where_sees_unselected_columns() -> None:
    def hidden_is_h(r: Mapping[str, str | None]) -> bool:
        return r["hidden"] == "h"

    defn = shape(columns=["id"])
    assert encode(defn, ins(row()), where=hidden_is_h)[0]["value"] == {"id": "1"}
    assert encode(defn, ins(row(hidden="x")), where=hidden_is_h) == []
    assert encode(defn, upd(row(hidden="x"), row()), where=hidden_is_h)[0]["headers"]["operation"] == "insert"


# -- TOAST ------------------------------------------------------------------------------------------------------


def test_unchanged_toast_taken_from_old_row() -> None:
    old = row(big="LARGE" * 1000)
    new = row(title="u", big=UNCHANGED_TOAST)
    assert encode(shape(), upd(old, new)) == [
        {
            "key": '"public"."items"/"1"',
            "value": {"id": "1", "title": "u"},
            "headers": headers(operation="update", op_position=0, last=True),
        }
    ]
    full = encode(shape(replica="full"), upd(old, new))
    assert full[0]["value"]["big"] == "LARGE" * 1000 and full[0]["old_value"] == {"title": "t"}

    def big_large(r: Mapping[str, str | None]) -> bool:
        return (r["big"] or "").startswith("LARGE")

    moved = encode(shape(), upd(row(n="0", big="LARGE"), row(n="0", big=UNCHANGED_TOAST)), where=big_large)
    assert moved == []  # both in, nothing changed
    pk_change = encode(shape(), upd(old, row("9", big=UNCHANGED_TOAST)))
    assert pk_change[1]["value"]["big"] == "LARGE" * 1000


def test_unchanged_toast_without_old_image() -> None:
    new = row(title="u", big=UNCHANGED_TOAST)
    # default mode, no WHERE: without an old row every known column is sent (what changed is unknown) and the
    # unresolved TOAST value is treated as unchanged, the only safe reading of pgoutput's 'u'
    assert encode(shape(), upd(None, new, kind=None))[0]["value"] == {
        "id": "1",
        "title": "u",
        "n": "5",
        "hidden": "h",
    }
    # anything that needs the full row refuses to guess
    with pytest.raises(IncompleteChange):
        encode(shape(replica="full"), upd(None, new, kind=None))
    with pytest.raises(IncompleteChange):
        encode(shape(), upd(None, new, kind=None), where=n_gt_3)
    with pytest.raises(IncompleteChange):
        encode(shape(), upd(("1", None, None, None, None), row("2", big=UNCHANGED_TOAST), kind="K"))


# -- transactions and last --------------------------------------------------------------------------------------


def test_last_on_the_shapes_last_item_across_fragments() -> None:
    enc = ShapeLogEncoder(shape(), n_gt_3)
    f1 = frag(ins(row("1")), ins(row("2"), op=2), ins(row("x"), op=4, rel=OTHER_REL), commit=False)
    f2 = frag(ins(row("3", n="0"), op=6), ins(row("y"), op=8, rel=OTHER_REL), begin=False)
    first = enc.encode_fragment(f1)
    assert [i.key for i in first] == ['"public"."items"/"1"']  # "2" is held back: it may be the last
    second = enc.encode_fragment(f2)
    assert [(i.key, i.offset) for i in second] == [('"public"."items"/"2"', LogOffset(LSN, 2))]
    assert [orjson.loads(i.json)["headers"].get("last") for i in first + second] == [None, True]
    # a transaction with nothing for the shape yields nothing
    assert enc.encode_fragment(frag(ins(row("z"), rel=OTHER_REL))) == []


def test_pending_item_of_a_split_change() -> None:
    enc = ShapeLogEncoder(shape())
    items = enc.encode_fragment(frag(upd(row("1"), row("2")), ins(row("3"), op=2)))
    assert [(i.operation, i.offset.op, b'"last":true' in i.json) for i in items] == [
        ("delete", 0, False),
        ("insert", 1, False),
        ("insert", 2, True),
    ]


def test_truncate_and_relation_mismatch() -> None:
    enc = ShapeLogEncoder(shape())
    assert enc.encode_fragment(frag(Truncate((OTHER_REL,), False, False, 0))) == []
    with pytest.raises(ShapeTruncated):
        enc.encode_fragment(frag(Truncate((OTHER_REL, REL), False, False, 0)))
    altered = Relation(100, "public", "items", "f", REL.columns[:2])
    with pytest.raises(RelationMismatch, match="big"):
        enc.encode_fragment(frag(ins(("1", "t"), rel=altered)))
    # column order changes in a new Relation message are followed
    reordered = Relation(100, "public", "items", "f", tuple(reversed(REL.columns)))
    out = [decoded(i) for i in enc.encode_fragment(frag(ins(tuple(reversed(row())), rel=reordered)))]
    assert out[0]["value"] == dict(zip(REL.column_names, row(), strict=True))
