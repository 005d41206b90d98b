"""Insert items of the replication path (a %-template for plain values, orjson otherwise) against an
independent oracle (orjson over the whole item as a dict), for awkward names and values: ``%``, quotes,
backslashes, ``/`` and ``.`` in names and keys, control and non-ASCII characters, NULLs, projections."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.replication.changes import Insert, Relation, TransactionFragment
from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import RelationMismatch, ShapeLogEncoder, key_prefix, row_key
from tests.shapes.helpers import Col, Table, relation_of

LSN = 98_765_432_100
XID = 31_337


def oracle(
    defn: ShapeDefinition, rel: Relation, rows: list[tuple[str | None, ...]], ops: list[int]
) -> list[bytes]:
    idx = rel.column_index
    out = []
    for i, (r, op) in enumerate(zip(rows, ops, strict=True)):
        key = row_key(key_prefix(defn.schema, defn.table), [r[idx[c]] for c in defn.key_columns])
        headers: dict[str, Any] = {
            "operation": "insert",
            "relation": [defn.schema, defn.table],
            "lsn": str(LSN),
            "op_position": op,
            "txids": [XID],
        }
        if i == len(rows) - 1:
            headers["last"] = True
        value = {c: r[idx[c]] for c in defn.columns}
        out.append(orjson.dumps({"key": key, "value": value, "headers": headers}))
    return out


def encode(
    table: Table, rows: list[tuple[str | None, ...]], columns: list[str] | None = None
) -> tuple[list[bytes], list[bytes]]:
    defn = ShapeDefinition.create((table.schema, table.name), table, columns=columns)
    rel = relation_of(table)
    ops = [2 * i for i in range(len(rows))]
    changes = tuple(Insert(rel, r, op) for r, op in zip(rows, ops, strict=True))
    items = ShapeLogEncoder(defn).encode_fragment(TransactionFragment(XID, LSN, changes, True, True, LSN + 8))
    for item, r in zip(items, rows, strict=True):
        key_values = [r[rel.column_index[c]] for c in defn.key_columns]
        assert item.key == row_key(key_prefix(defn.schema, defn.table), key_values)
        assert item.operation == "insert" and item.offset.tx == LSN
    return [i.json for i in items], oracle(defn, rel, rows, ops)


T = Table(7, "pub%s", 'it"ems/x.y', (Col("id"), Col("ti%dtle"), Col('q"\\'), Col("é")), ("id",))


@pytest.mark.parametrize(
    "rows",
    [
        [("1", "a", "b", "c"), ("2", "%s", "%d%%", "%")],  # plain values that look like formats
        [("a/b//c", "x", "y", "z"), ("/", "", "", "")],  # '/' doubled in the key only
        [("1", 'q"', "b\\", "\x1f"), ("2", "\x7f", "\u2028", "日本")],  # escaped or not plain
        [("1", None, "b", "c"), ("2", "a", None, None)],  # NULLs
        [("é%", "ü", "✓", "\u00a0")],  # non-ASCII key and values
    ],
)
@pytest.mark.parametrize("columns", [None, ["id", "é"], ["é", "id", 'q"\\']])
def test_inserts_equal_the_oracle(rows: list[tuple[str | None, ...]], columns: list[str] | None) -> None:
    got, expected = encode(T, rows, columns)
    assert got == expected


def test_table_without_primary_key_and_composite_key() -> None:
    nopk = Table(8, "s", "t%", (Col("a"), Col("b")))
    got, expected = encode(nopk, [("1", "2"), ("x/y", None)])
    assert got == expected
    composite = Table(9, "s", "t", (Col("a"), Col("b"), Col("c")), ("b", "a"))
    got, expected = encode(composite, [("1", "2", "3"), ("%s", "/", "c")])
    assert got == expected


name = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=8)
value = st.one_of(
    st.none(), st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=12)
)


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(name, name),
    st.lists(name, min_size=1, max_size=5, unique=True),
    st.lists(st.lists(value, min_size=5, max_size=5), min_size=1, max_size=4),
    st.booleans(),
)
def test_any_insert_equals_the_oracle(
    relation: tuple[str, str], names: list[str], rows: list[list[str | None]], project: bool
) -> None:
    table = Table(10, relation[0], relation[1], tuple(Col(n) for n in names), (names[0],))
    width = len(names)
    data = [tuple(r[:width]) for r in rows if r[0] is not None]
    if not data:
        return
    columns = [names[0], *names[width // 2 + 1 :]] if project else None
    got, expected = encode(table, data, columns)
    assert got == expected


def _whole_vs_fragment(
    defn: ShapeDefinition, rel: Relation, rows: list[tuple[str | None, ...]], where: Any = None
) -> tuple[list[bytes], list[bytes]]:
    """One-insert transactions through ``encode_whole`` on one encoder and ``encode_fragment`` on another
    (the first row builds the template, later ones take the template path of ``encode_whole``)."""
    whole, general = ShapeLogEncoder(defn, where), ShapeLogEncoder(defn, where)
    got: list[bytes] = []
    expected: list[bytes] = []
    for i, row in enumerate(rows):
        frag = TransactionFragment(XID, LSN, (Insert(rel, row, 2 * i),), True, True, LSN + 8)
        got += [it.json for it in whole.encode_whole(frag)]
        expected += [it.json for it in general.encode_fragment(frag)]
    return got, expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(value, value, value, value), min_size=1, max_size=6), st.booleans())
def test_whole_transaction_of_one_insert_equals_the_general_path(
    rows: list[tuple[str | None, ...]], project: bool
) -> None:
    data = [r for r in rows if r[0] is not None]
    if not data:
        return
    defn = ShapeDefinition.create((T.schema, T.name), T, columns=["é", "id"] if project else None)
    got, expected = _whole_vs_fragment(defn, relation_of(T), data)
    assert got == expected
    rel = relation_of(T)
    assert got == [oracle(defn, rel, [row], [2 * i])[0] for i, row in enumerate(data)]  # each one "last"


def test_whole_transaction_evaluates_the_where_unless_exact() -> None:
    defn = ShapeDefinition.create((T.schema, T.name), T)
    rel = relation_of(T)
    rows: list[tuple[str | None, ...]] = [("1", "a", "b", "c"), ("2", "a", "b", "c"), ("3", "x", "b", "c")]
    got, expected = _whole_vs_fragment(defn, rel, rows, where=lambda r: r["id"] != "2")
    assert got == expected
    assert len(got) == 2
    enc = ShapeLogEncoder(defn, lambda r: False)
    frags = [
        TransactionFragment(XID, LSN + i, (Insert(rel, r, 0),), True, True, LSN) for i, r in enumerate(rows)
    ]
    assert [len(enc.encode_whole(f, exact=True)) for f in frags] == [1, 1, 1]  # routed exactly: no evaluation
    assert [len(enc.encode_whole(f)) for f in frags] == [0, 0, 0]


def test_whole_transactions_of_plain_inserts_take_the_template() -> None:
    defn = ShapeDefinition.create((T.schema, T.name), T)
    rel = relation_of(T)
    rows: list[tuple[str | None, ...]] = [("1", "a", "b", "c"), ("a/b", "%s", "x y", "z"), ("3", "", "", "é")]
    got, expected = _whole_vs_fragment(defn, rel, rows)
    assert got == expected == [oracle(defn, rel, [row], [2 * i])[0] for i, row in enumerate(rows)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(value, value, value, value, st.booleans()), min_size=1, max_size=8),
    st.booleans(),
    st.booleans(),
)
def test_a_run_of_whole_transactions_equals_encoding_them_one_by_one(
    rows: list[tuple[str | None, str | None, str | None, str | None, bool]], project: bool, where: bool
) -> None:
    """``encode_run`` (a ShapeRun's transactions on the template path at once) gives the items the general
    path (``encode_fragment``) gives for each transaction, or None (nothing kept) when one of them cannot
    take the template path: a value that is not plain (NULL, quote, backslash, control character), or a
    WHERE to evaluate."""
    data = [r for r in rows if r[0] is not None]
    if not data:
        return
    defn = ShapeDefinition.create((T.schema, T.name), T, columns=["é", "id"] if project else None)
    rel = relation_of(T)
    predicate = (lambda r: r["id"] != "2") if where else None
    run_enc, one_enc = ShapeLogEncoder(defn, predicate), ShapeLogEncoder(defn, predicate)
    warm = TransactionFragment(XID, LSN - 10, (Insert(rel, ("0", "a", "b", "c"), 0),), True, True, LSN)
    run_enc.encode_whole(warm, exact=True)  # the first plain insert builds the template
    one_enc.encode_whole(warm, exact=True)
    items: list[object] = []
    expected: list[bytes] = []
    for i, (*row, exact) in enumerate(data):
        change = Insert(rel, tuple(row), 2 * i)
        items += [XID + i, LSN + i, change, exact]
        frag = TransactionFragment(XID + i, LSN + i, (change,), True, True, LSN + i)
        expected += [it.json for it in one_enc.encode_fragment(frag, exact)]  # the general path
    got = run_enc.encode_run(items)
    selected = (3, 0) if project else (0, 1, 2, 3)
    plain = all(
        v is not None and '"' not in v and "\\" not in v and v.isprintable()
        for r in data
        for v in (cast(str | None, r[i]) for i in selected)  # column values (r[4] is the exact flag)
    )
    if plain and not (where and not all(r[4] for r in data)):
        assert got is not None
        assert [it.json for it in got] == expected
        assert [str(it.offset) for it in got] == [f"{LSN + i}_{2 * i}" for i in range(len(data))]
    else:
        assert got is None


def test_a_run_sets_up_the_template_itself_on_a_new_encoder_and_after_a_new_relation_message() -> None:
    """A new (or reloaded) shape's first run, and the first run after a reconnect (an equal Relation as
    another object), take the template path at once: the same items as the general path, never None for
    plain inserts.  A Relation without a selected column still fails on the general path."""
    defn = ShapeDefinition.create((T.schema, T.name), T)
    rows: list[tuple[str | None, ...]] = [("1", "a", "b", "c"), ("a/b", "%s", "x y", "z")]

    def run_and_general(rel: Relation, enc: ShapeLogEncoder) -> tuple[list[bytes] | None, list[bytes]]:
        items: list[object] = []
        expected: list[bytes] = []
        general = ShapeLogEncoder(defn)
        for i, row in enumerate(rows):
            change = Insert(rel, row, 2 * i)
            items += [XID + i, LSN + i, change, True]
            frag = TransactionFragment(XID + i, LSN + i, (change,), True, True, LSN + i)
            expected += [it.json for it in general.encode_fragment(frag, True)]
        got = enc.encode_run(items)
        return (None if got is None else [it.json for it in got]), expected

    enc = ShapeLogEncoder(defn)
    got, expected = run_and_general(relation_of(T), enc)
    assert got is not None and got == expected
    again = relation_of(T)  # a new session's Relation message: equal, another object
    got, expected = run_and_general(again, enc)
    assert got is not None and got == expected
    narrower = Table(T.oid, T.schema, T.name, T.columns[:2], T.pk)
    bad = Insert(relation_of(narrower), ("1", "a"), 0)
    assert enc.encode_run([XID, LSN, bad, True]) is None
    with pytest.raises(RelationMismatch):
        enc.encode_fragment(TransactionFragment(XID, LSN, (bad,), True, True, LSN))
