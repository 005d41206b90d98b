"""Replaying a shape's log items reproduces the shape's rows after every transaction (random workloads)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.replication.changes import (
    UNCHANGED_TOAST,
    Change,
    Delete,
    Insert,
    TransactionFragment,
    Update,
    Value,
)
from sync.shapes.definition import ShapeDefinition
from sync.shapes.log_items import ShapeLogEncoder
from tests.shapes.helpers import Col, Table, relation_of

COLS = ("id", "a", "b", "c")
WITH_PK = Table(1, "public", "t", tuple(Col(c) for c in COLS), ("id",))
NO_PK = Table(2, "public", "n", tuple(Col(c) for c in COLS))
VALUES = st.one_of(st.none(), st.sampled_from(["", "a", "b/c", "m", 'q"', "z", "x" * 30]))


def in_shape(row: Mapping[str, str | None]) -> bool:
    return row["a"] is not None and row["a"] < "n"


@st.composite
def workload(draw: st.DrawFn) -> list[list[tuple[str, Any]]]:
    txns: list[list[tuple[str, Any]]] = []
    for _ in range(draw(st.integers(1, 12))):
        ops: list[tuple[str, Any]] = []
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(["insert", "update", "update", "delete"]))
            row = {c: draw(VALUES) for c in COLS}
            row["id"] = str(draw(st.integers(0, 8)))
            ops.append((kind, (draw(st.integers(0, 100)), row, draw(st.booleans()))))
        txns.append(ops)
    return txns


def apply(client: dict[str, dict[str, Any]], item: dict[str, Any]) -> None:
    op, key, value = item["headers"]["operation"], item["key"], item["value"]
    if op == "insert":
        assert key not in client, item
        client[key] = dict(value)
    elif op == "update":
        assert key in client, item
        client[key].update(value)
    else:
        assert key in client, item
        del client[key]


@given(
    workload(),
    st.sampled_from([WITH_PK, NO_PK]),
    st.sampled_from(["default", "full"]),
    st.booleans(),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_replay_equals_model(
    txns: list[list[tuple[str, Any]]], table: Table, replica: str, subset: bool, use_where: bool
) -> None:
    columns = ["id", "a", "b"] if subset and table is WITH_PK else None
    definition = ShapeDefinition.create((table.schema, table.name), table, columns=columns, replica=replica)
    where = in_shape if use_where else None
    encoder = ShapeLogEncoder(definition, where)
    relation = relation_of(table)
    model: list[dict[str, str | None]] = []  # the table
    client: dict[str, dict[str, Any]] = {}
    lsn = 1000
    for n, ops in enumerate(txns):
        changes: list[Change] = []
        for kind, (pick, row, toast) in ops:
            op = 2 * len(changes)
            if kind == "insert" or not model:
                if table is WITH_PK and any(r["id"] == row["id"] for r in model):
                    continue
                if table is NO_PK and row in model:
                    continue
                model.append(row)
                changes.append(Insert(relation, tuple(row[c] for c in COLS), op))
                continue
            i = pick % len(model)
            old = model[i]
            if kind == "delete":
                del model[i]
                changes.append(Delete(relation, tuple(old[c] for c in COLS), "O", op))
                continue
            new = {**old, **{c: row[c] for c in ("a", "b") if row[c] != "z"}}
            if pick % 3 == 0:
                new["id"] = row["id"]
            if pick % 4 == 0:
                new["c"] = row["c"]
            others = model[:i] + model[i + 1 :]
            if table is WITH_PK and any(r["id"] == new["id"] for r in others):
                continue
            if table is NO_PK and new in others:
                continue
            model[i] = new
            new_tuple: tuple[Value, ...] = tuple(
                UNCHANGED_TOAST if c == "c" and toast and new["c"] == old["c"] else new[c] for c in COLS
            )
            changes.append(Update(relation, new_tuple, tuple(old[c] for c in COLS), "O", op))
        lsn += 100
        items = encoder.encode_fragment(TransactionFragment(n, lsn, tuple(changes), True, True, lsn + 50))
        offsets = [i.offset for i in items]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        decoded = [orjson.loads(i.json) for i in items]
        assert [d["headers"].get("last", False) for d in decoded] == [False] * (len(items) - 1) + [
            True
        ] * bool(items)
        for d in decoded:
            assert d["headers"]["lsn"] == str(lsn) and d["headers"]["txids"] == [n]
            apply(client, d)
        expected = {
            encoder.snapshot_item(tuple(r[c] for c in definition.columns))[0]: {
                c: r[c] for c in definition.columns
            }
            for r in model
            if where is None or where(r)
        }
        assert client == expected
