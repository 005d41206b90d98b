"""A random write workload over tables of assorted types, 50 assorted shapes of them, and the oracle of what
each shape holds after every transaction, with Postgres itself evaluating every shape's WHERE clause.

Why this module exists: a log replayed to the right final state can still have passed through wrong states
(a transaction split, reordered, skipped and made up for later).  So the writer records, inside each of its
transactions, each table with one boolean column per shape (``(<where>) IS TRUE``), and
:func:`check_log` replays a shape's log transaction by transaction (the items up to each ``last``) against the
record of that transaction's xid.  One writer commits in order, so the records are also the commit order:
a transaction that changed a shape after the first one its log holds must be in its log (nothing skipped).

Tables: ``items`` (a primary key, ints, text, boolean, numeric, timestamptz, and ``note``, stored out of
line when large, so updates that leave it alone replicate it as an unchanged-TOAST value); ``pairs`` (no
primary key: rows are keyed by all their values); ``"Odd/Name"`` (a quoted name with a slash, a composite
key of quoted columns, one with a dot).
"""

from __future__ import annotations

import random
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from sync.shapes.log_layout import key_prefix, row_key
from sync.shapes.snapshot import raw_text_cursor
from tests.shapes.consumer_harness import apply_item

TextRow = dict[str, str | None]

TABLES_SQL = """
CREATE TABLE items (id int PRIMARY KEY, grp int, value int NOT NULL, label text, flag boolean,
                    price numeric(8, 2), ts timestamptz, note text);
ALTER TABLE items ALTER COLUMN note SET STORAGE EXTERNAL;
INSERT INTO items
  SELECT g, g % 5, g * 7 % 100, CASE WHEN g % 4 = 0 THEN NULL ELSE chr(97 + g % 3) || g END,
         CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END, CASE WHEN g % 6 = 0 THEN NULL ELSE g * 1.25 END,
         timestamptz '2026-01-01 00:00:00+00' + g * interval '9 days', 'n' || g
  FROM generate_series(1, 60) g;
CREATE TABLE pairs (a int, b text);
INSERT INTO pairs SELECT g % 10, 'p' || g FROM generate_series(1, 20) g;
CREATE TABLE "Odd/Name" ("Key" text, n int, "x.y" text, PRIMARY KEY ("Key", n));
INSERT INTO "Odd/Name" SELECT 'k/' || (g % 4), g, CASE WHEN g % 2 = 0 THEN 'x.' || g END
  FROM generate_series(1, 12) g;
"""

# table -> (its name in a shape request and in SQL, its columns in order, its key columns)
TABLES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "items": ("items", ("id", "grp", "value", "label", "flag", "price", "ts", "note"), ("id",)),
    "pairs": ("pairs", ("a", "b"), ("a", "b")),
    "Odd/Name": ('"Odd/Name"', ("Key", "n", "x.y"), ("Key", "n")),
}

ITEMS_WHERES: list[tuple[str | None, tuple[str, ...]]] = [
    (None, ()),
    ("grp = 1", ()),
    ("grp = 2", ()),
    ("grp IN (3, 4)", ()),
    ("value > 50", ()),
    ("value <= 20", ()),
    ("value BETWEEN 30 AND 60", ()),
    ("value % 3 = 0", ()),
    ("label LIKE 'a%'", ()),
    ("label ILIKE 'B1%'", ()),
    ("label IS NULL", ()),
    ("label IS NOT NULL AND value < 50", ()),
    ("flag", ()),
    ("NOT flag", ()),
    ("flag IS NULL", ()),
    ("price > 50.5", ()),
    ("price IS NULL OR price < 10", ()),
    ("ts > '2026-06-01 00:00:00+00'", ()),
    ("id IN (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)", ()),
    ("grp = 2 OR label LIKE 'b%'", ()),
    ("NOT (value > 10 AND value < 90)", ()),
    ("id > 1000", ()),
    ("note LIKE 'big%'", ()),
    ("grp = $1 AND value > $2", ("0", "30")),
]
OTHER_SHAPES: list[tuple[str, str | None, tuple[str, ...], str | None]] = [
    # table, where, params, columns
    ("pairs", None, (), None),
    ("pairs", "a = 3", (), None),
    ("pairs", "a > 5", (), None),
    ("pairs", "b LIKE 'q%'", (), None),
    ("Odd/Name", None, (), None),
    ("Odd/Name", '"x.y" IS NOT NULL', (), None),
    ("Odd/Name", "n > 6", (), '"Key",n'),
]
ITEMS_COLUMNS = (None, "id,value,label", "id,note,flag,grp")
N_SHAPES = 50


@dataclass(frozen=True)
class ShapeSpec:
    """One shape of the workload, as a client asks for it."""

    table: str  # the key of TABLES
    where: str | None = None
    params: tuple[str, ...] = ()
    columns: str | None = None
    replica: str = "default"

    def resolved_columns(self) -> tuple[str, ...]:
        """The columns the shape's values hold (every column when none were asked for)."""
        if self.columns is None:
            return TABLES[self.table][1]
        return tuple(c.strip('"') for c in self.columns.split(","))

    def query(self) -> str:
        """The shape's request parameters (``table=...&where=...``)."""
        params = [("table", TABLES[self.table][0]), ("replica", self.replica)]
        params += [("where", self.where)] if self.where is not None else []
        params += [(f"params[{i}]", v) for i, v in enumerate(self.params, 1)]
        params += [("columns", self.columns)] if self.columns is not None else []
        return urllib.parse.urlencode(params)

    def oracle_where(self) -> str:
        """The WHERE clause with its parameters inlined (test-side SQL, for the oracle only)."""
        where = self.where or "true"
        for i, value in reversed(list(enumerate(self.params, 1))):
            where = where.replace(f"${i}", value)
        return where


def shape_specs(n: int = N_SHAPES) -> list[ShapeSpec]:
    """``n`` distinct shapes: those of ``pairs`` and ``"Odd/Name"``, then every WHERE of ``items`` in turn,
    with its column subsets and replica modes cycled, until there are ``n``."""
    out = [
        ShapeSpec(t, w, p, c, "full" if i % 2 else "default") for i, (t, w, p, c) in enumerate(OTHER_SHAPES)
    ]
    i = 0
    while len(out) < n:
        where, params = ITEMS_WHERES[i % len(ITEMS_WHERES)]
        turn = i // len(ITEMS_WHERES)
        columns = ITEMS_COLUMNS[(i + turn) % len(ITEMS_COLUMNS)]
        replica = "full" if (i + turn) % 2 else "default"
        out.append(ShapeSpec("items", where, params, columns, replica))
        i += 1
    assert len(set(out)) == len(out)
    return out


def _big_note(rng: random.Random) -> str:
    return "big" + "".join(f"{rng.getrandbits(32):08x}" for _ in range(400))  # ~3.2 KB: out of line


def statement(rng: random.Random, next_id: list[int]) -> tuple[str, tuple[Any, ...] | None]:
    """One random statement (``next_id``: ``[n]``, n >= 2000 and above every id used so far), with its
    parameters (None: several statements, no parameters): inserts, updates of one column or several,
    deletes, primary key changes, rows moving in and out of shapes, no-op updates, updates that leave a
    large value unchanged, and savepoints rolled back or released."""
    kind = rng.randrange(18)
    some = rng.randrange(1, 61) if rng.random() < 0.8 else rng.randrange(2000, next_id[0] + 1)  # mostly hits
    value = rng.randrange(100)
    label = rng.choice([None, f"a{value}", f"b{value}", f"B1{value}", f"c{value}"])
    if kind == 0:
        next_id[0] += 1
        note = _big_note(rng) if rng.random() < 0.3 else f"n{value}"
        sql = "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, now(), %s)"
        return sql, (next_id[0], value % 5, value, label, rng.choice([True, False, None]), value * 1.5, note)
    if kind == 1:
        return "UPDATE items SET value = %s WHERE id = %s", (value, some)
    if kind == 2:
        return "UPDATE items SET label = %s, flag = %s WHERE id = %s", (label, rng.choice([True, None]), some)
    if kind == 3:
        return "UPDATE items SET grp = %s, price = %s WHERE id = %s", (value % 5, rng.choice([None, 7]), some)
    if kind == 4:
        return "DELETE FROM items WHERE id = %s", (some,)
    if kind == 5:
        next_id[0] += rng.choice([1, 1000])
        return "UPDATE items SET id = %s WHERE id = %s", (next_id[0], some)  # a primary key change
    if kind == 6:
        return "UPDATE items SET value = value WHERE id = %s", (some,)  # no-op
    if kind == 7:
        return "UPDATE items SET value = (value + 7) %% 100 WHERE id %% 7 = %s", (value % 7,)
    if kind == 8:
        return "UPDATE items SET note = %s WHERE id = %s", (_big_note(rng), some)
    if kind == 9:
        return "UPDATE items SET ts = ts + interval '40 days' WHERE id = %s", (some,)
    if kind == 10:
        return "UPDATE pairs SET a = %s WHERE b = %s", (value % 10, f"p{rng.randrange(1, 21)}")
    if kind == 11:
        next_id[0] += 1  # rows of a table without a primary key are keyed by their values: keep them distinct
        return "INSERT INTO pairs VALUES (%s, %s)", (value % 10, f"q{next_id[0]}")
    if kind == 12:
        return "DELETE FROM pairs WHERE b = %s", (f"p{rng.randrange(1, 21)}",)
    if kind == 13:
        next_id[0] += 1
        return 'INSERT INTO "Odd/Name" VALUES (%s, %s, %s)', (f"k/{value % 4}", next_id[0], f"x.{value}")
    if kind == 14:
        return 'UPDATE "Odd/Name" SET "x.y" = %s WHERE n = %s', (
            rng.choice([None, "x.y"]),
            rng.randrange(1, 13),
        )
    if kind == 15:
        return 'UPDATE "Odd/Name" SET n = n + 100 WHERE n = %s', (rng.randrange(1, 13),)  # a key change
    # Subtransactions (no parameters: several statements in one simple query): one rolled back, whose
    # changes must never reach a log, and one released, whose changes belong to the transaction.
    verb = "ROLLBACK TO" if kind == 16 else "RELEASE"
    return (
        f"SAVEPOINT s; UPDATE items SET value = {value}, label = 'sp{value}' WHERE id = {some};"
        f" DELETE FROM pairs WHERE b = 'p{rng.randrange(1, 21)}'; {verb} SAVEPOINT s",
        None,
    )


@dataclass
class Oracle:
    """Each table as it stood after each transaction, with which shapes each row belongs to."""

    specs: Sequence[ShapeSpec]
    order: list[int] = field(default_factory=list)  # xids in commit order
    # xid -> table -> rows (column values as text, then one bool per shape of that table)
    states: dict[int, dict[str, list[tuple[Any, ...]]]] = field(default_factory=dict)
    _rows: dict[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)  # one copy of each row seen

    def _shapes_of(self, table: str) -> list[int]:
        return [i for i, s in enumerate(self.specs) if s.table == table]

    def record(self, conn: psycopg.Connection[Any]) -> int:
        """Inside a transaction, after its statements: record the tables; returns its xid (32 bits)."""
        row = conn.execute("SELECT txid_current() % 4294967296").fetchone()
        assert row is not None
        xid = int(row[0])
        self.states[xid] = self.snapshot(conn)
        self.order.append(xid)
        return xid

    def snapshot(self, conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
        """The tables now, each row followed by whether each shape of its table holds it."""
        out = {}
        for table, (sql_name, cols, _) in TABLES.items():
            flags = [f"({self.specs[i].oracle_where()}) IS TRUE" for i in self._shapes_of(table)]
            select = ", ".join([*(f'"{c}"' for c in cols), *flags])
            cur = raw_text_cursor(conn)
            cur.execute(f"SELECT {select} FROM {sql_name}")
            out[table] = [self._rows.setdefault(row, row) for row in cur.fetchall()]
        return out

    def expected(self, state: Mapping[str, list[tuple[Any, ...]]], index: int) -> dict[str, TextRow]:
        """What shape ``index`` holds in ``state``: its rows by key, with its columns' values."""
        spec = self.specs[index]
        _, cols, key = TABLES[spec.table]
        columns = spec.resolved_columns()
        flag_at = len(cols) + self._shapes_of(spec.table).index(index)
        prefix = key_prefix("public", spec.table)
        out = {}
        for row in state[spec.table]:
            if row[flag_at] == "t":
                values = dict(zip(cols, row[: len(cols)], strict=True))
                out[row_key(prefix, [values[c] for c in key])] = {c: values[c] for c in columns}
        return out

    def check_state(self, index: int, rows: Mapping[str, TextRow], xid: int) -> None:
        """A client of shape ``index`` holding ``rows`` after transaction ``xid`` (its ``last`` item)."""
        assert xid in self.states, f"shape {index}: xid {xid} was never committed by the writer"
        want = self.expected(self.states[xid], index)
        assert rows == want, f"shape {index} {self.specs[index]}: state after xid {xid}"

    def check_no_skip(self, index: int, logged: Sequence[int]) -> None:
        """``logged``, the transactions a client of shape ``index`` followed in turn, are in commit order,
        each once, and none that changed the shape after the first of them is missing."""
        in_log = set(logged)
        assert len(in_log) == len(logged), f"shape {index}: a transaction appears twice"
        if not logged:
            return
        assert [x for x in self.order if x in in_log] == list(logged), f"shape {index}: out of commit order"
        start = self.order.index(logged[0])
        previous = self.expected(self.states[logged[0]], index)
        for xid in self.order[start + 1 :]:
            now = self.expected(self.states[xid], index)
            assert now == previous or xid in in_log, (
                f"shape {index}: xid {xid} changed it and is not in its log"
            )
            previous = now


def check_log(oracle: Oracle, index: int, items: list[dict[str, Any]]) -> int:
    """Replay one shape's whole log: the state after each of its transactions equals the oracle's for that
    xid, and none is skipped.  Returns the number of transaction boundaries checked."""
    rows: dict[str, TextRow] = {}
    logged: list[int] = []
    for item in items:
        error = apply_item(rows, item)
        assert error is None, f"shape {index}: {error}"
        if item["headers"].get("last"):
            (xid,) = item["headers"]["txids"]
            oracle.check_state(index, rows, xid)
            logged.append(xid)
    oracle.check_no_skip(index, logged)
    return len(logged)
