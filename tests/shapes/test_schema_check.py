"""Pure rules of the catalog check (dropped, renamed, columns gone or changed, type changes, enum labels
renamed, rewrites by ALTER, names that label other columns) and the catalog query and the checker against a
real Postgres."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from sync.postgres.inspector import inspect_table
from sync.shapes.definition import ShapeDefinition
from sync.shapes.schema_check import (
    CatalogTable,
    ColumnType,
    ColumnTypes,
    SchemaCatalog,
    catalog_reason,
    check_shapes,
    column_types_from_meta,
    column_types_to_meta,
    labels_added,
    table_column_types,
)
from sync.shapes.schema_checker import SchemaChecker

INT, TEXT, BIGINT = 23, 25, 20
COLS: ColumnTypes = (ColumnType("id", INT, -1), ColumnType("a", TEXT, -1), ColumnType("b", INT, -1))


def shape(columns: tuple[str, ...] = ("id", "a", "b"), *, all_columns: bool = True) -> ShapeDefinition:
    return ShapeDefinition("public", "t", 100, columns, ("id",), all_columns)


def table(columns: ColumnTypes = COLS, name: str = "t") -> CatalogTable:
    return CatalogTable(100, "public", name, columns)


def test_unchanged_table_keeps_every_shape() -> None:
    assert catalog_reason(shape(), table(), COLS) is None
    assert catalog_reason(shape(("id", "a"), all_columns=False), table(), COLS) is None


def test_dropped_and_renamed_tables() -> None:
    assert catalog_reason(shape(), None, COLS) == "table public.t was dropped"
    assert catalog_reason(shape(), table(name="t2"), COLS) == "table public.t was renamed to public.t2"


def test_columns_gone_or_added() -> None:
    without_b = COLS[:2]
    assert catalog_reason(shape(("id", "b"), all_columns=False), table(without_b), COLS) is not None
    assert catalog_reason(shape(("id", "a"), all_columns=False), table(without_b), COLS) is None
    added = (*COLS, ColumnType("c", INT, -1))
    assert catalog_reason(shape(), table(added), COLS) == "the columns of public.t changed"
    assert catalog_reason(shape(("id", "a"), all_columns=False), table(added), COLS) is None


def test_type_changes_of_selected_columns_only() -> None:
    b_bigint: ColumnTypes = (COLS[0], COLS[1], ColumnType("b", BIGINT, -1))
    assert catalog_reason(shape(), table(b_bigint), COLS) == "column b of public.t changed type"
    assert catalog_reason(shape(("id", "a"), all_columns=False), table(b_bigint), COLS) is None
    assert catalog_reason(shape(), table(b_bigint), None) is None  # no stored types: not compared
    a_varchar: ColumnTypes = (COLS[0], ColumnType("a", TEXT, 14), COLS[2])  # a typmod change counts too
    assert catalog_reason(shape(("id", "a"), all_columns=False), table(a_varchar), COLS) is not None


def test_meta_round_trip_and_check_shapes() -> None:
    assert column_types_from_meta(column_types_to_meta(COLS)) == COLS
    assert column_types_from_meta(None) is None
    out = check_shapes([("h1", shape()), ("h2", shape(("id", "a"), all_columns=False))], {}, {"h1": COLS})
    assert [h for h, _ in out] == ["h1", "h2"]  # table missing from the catalog: both dropped


def test_shapes_sharing_a_verdict_each_get_their_own() -> None:
    """check_shapes gives one verdict per (table, columns, stored types): each shape's is still the one
    catalog_reason gives it alone."""
    b_bigint: ColumnTypes = (COLS[0], COLS[1], ColumnType("b", BIGINT, -1))
    other = ShapeDefinition("public", "u", 200, ("id", "a", "b"), ("id",), True)
    shapes = [
        *((f"k{k}", dataclasses.replace(shape(), where=f"id = {k}")) for k in range(5)),
        ("narrow", shape(("id", "a"), all_columns=False)),
        ("other", other),
    ]
    stored = {h: COLS for h, _ in shapes} | {"k3": b_bigint, "k4": None}
    for tables in ({100: table(b_bigint)}, {100: table()}, {100: table(name="t2"), 200: table()}):
        expected = [
            (h, r) for h, d in shapes if (r := catalog_reason(d, tables.get(d.relation_oid), stored.get(h)))
        ]
        assert check_shapes(shapes, tables, stored) == expected  # type: ignore[arg-type]  # k4: None, types unknown
    changed = check_shapes(shapes, {100: table(b_bigint), 200: table()}, stored)  # type: ignore[arg-type]  # as above
    assert [h for h, _ in changed] == ["k0", "k1", "k2", "other"]  # not k3 (created as bigint), k4, narrow


def _oids_after(db_dsn: str, statements: list[str], tables: list[str]) -> list[int]:
    """Run ``statements``; the OIDs of ``tables`` (as ``regclass`` reads them)."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        rows = [conn.execute("SELECT %s::regclass::oid::bigint", (t,)).fetchone() for t in tables]
    return [int(row[0]) for row in rows if row is not None]


def test_catalog_reads_tables_by_oid(db_dsn: str) -> None:
    oid, empty = _oids_after(
        db_dsn,
        [
            'CREATE TABLE "T x" (id int PRIMARY KEY, v varchar(12), gone text)',
            'ALTER TABLE "T x" DROP COLUMN gone',
            "CREATE TABLE nocols ()",
        ],
        ['"T x"', "nocols"],
    )
    catalog = SchemaCatalog(db_dsn)
    try:
        tables = catalog.tables([oid, empty, 1])
    finally:
        catalog.close()
    table = tables[oid]
    assert table == CatalogTable(oid, "public", "T x", table.columns)
    assert [c[:3] for c in table.columns] == [("id", INT, -1), ("v", 1043, 16)]
    assert tables[empty].columns == ()
    assert 1 not in tables


def test_catalog_reads_on_after_its_connection_was_cut_while_idle(db_dsn: str) -> None:
    """A restart, ``idle_session_timeout`` or a proxy cuts the connection between two checks: the next
    check reads on a new one instead of failing (and leaving the shapes unchecked another interval)."""
    (oid,) = _oids_after(db_dsn, ["CREATE TABLE t (id int PRIMARY KEY)"], ["t"])
    catalog = SchemaCatalog(db_dsn)
    try:
        assert set(catalog.tables([oid])) == {oid}
        with psycopg.connect(db_dsn, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            ).fetchall()
        assert cut == [(True,)]
        assert set(catalog.tables([oid])) == {oid}
    finally:
        catalog.close()


def test_catalog_and_inspector_read_the_labels_a_column_may_print(db_dsn: str) -> None:
    """Through arrays, domains, composites, ranges and multiranges, the catalog check and the compiler's
    inspection read the same labels (a fresh shape is never invalidated), and a rename shows in both."""
    (oid,) = _oids_after(
        db_dsn,
        [
            "CREATE TYPE mood AS ENUM ('sad', 'ok')",
            "CREATE TYPE other AS ENUM ('x')",
            "CREATE DOMAIN dmood AS mood",
            "CREATE TYPE pair AS (n int, ms dmood[])",
            "CREATE TYPE moods AS RANGE (subtype = mood)",
            "CREATE TABLE t (id int PRIMARY KEY, m mood, ms mood[], d dmood, p pair, r moods, mr moods_multirange,"
            " o other, x text)",
        ],
        ["t"],
    )

    def read() -> tuple[ColumnTypes, ColumnTypes]:
        catalog = SchemaCatalog(db_dsn)
        try:
            columns = catalog.tables([oid])[oid].columns
        finally:
            catalog.close()
        with psycopg.connect(db_dsn) as conn:
            return columns, table_column_types(inspect_table(conn, "public", "t"))

    columns, compiled = read()
    assert columns == compiled
    labels = {c.name: [label for _, label in c.enum_labels] for c in columns}
    moods = ["sad", "ok"]
    assert labels == {"id": [], "m": moods, "ms": moods, "d": moods, "p": moods, "r": moods, "mr": moods,
                      "o": ["x"], "x": []}  # fmt: skip
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'")
    renamed, _ = read()
    every = shape(tuple(c.name for c in columns))
    reason = catalog_reason(every, CatalogTable(oid, "public", "t", renamed), compiled)
    assert reason == "enum label 'ok' of column m of public.t was renamed to 'fine'"
    for name in ("ms", "d", "p", "r", "mr"):
        one = dataclasses.replace(every, columns=("id", name), all_columns=False)
        assert catalog_reason(one, CatalogTable(oid, "public", "t", renamed), compiled) is not None, name
    others = dataclasses.replace(every, columns=("id", "o", "x"), all_columns=False)
    assert catalog_reason(others, CatalogTable(oid, "public", "t", renamed), compiled) is None


def test_a_rewrite_by_an_alter_of_a_read_column_invalidates() -> None:
    """Both the table's relfilenode and the column's catalog row new: ALTER COLUMN ... TYPE ... USING."""
    then = tuple(c._replace(rewrite=(500, 700 + i)) for i, c in enumerate(COLS))

    def now(file: int, b_xmin: int) -> CatalogTable:
        return table(
            tuple(c._replace(rewrite=(file, b_xmin if c.name == "b" else c.rewrite[1])) for c in then)
        )

    reason = "column b of public.t was rewritten by ALTER TABLE (its values may differ)"
    assert catalog_reason(shape(), now(501, 799), then) == reason
    assert catalog_reason(shape(("id", "a"), all_columns=False), now(501, 799), then) is None  # b not read
    assert catalog_reason(shape(), now(501, 702), then) is None  # VACUUM FULL, CLUSTER: the file alone
    assert catalog_reason(shape(), now(500, 799), then) is None  # SET NOT NULL: the column's row alone
    assert catalog_reason(shape(), now(501, 799), COLS) is None  # marks unknown (an older log)
    assert column_types_from_meta(column_types_to_meta(then)) == then


def test_the_checker_tells_an_alter_rewrite_from_harmless_changes(db_dsn: str) -> None:
    """Against a real catalog, check after check: VACUUM FULL, SET NOT NULL and CLUSTER keep every shape
    (each judged against the last check), ALTER COLUMN ... TYPE ... USING invalidates the shapes reading
    the column, and the inspection that compiles a shape reads what the check reads."""
    _oids_after(
        db_dsn, ["CREATE TABLE t (id int PRIMARY KEY, v text, w int)", "INSERT INTO t VALUES (1, 'a', 1)"], []
    )
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        info = inspect_table(conn, "public", "t")
    created = table_column_types(info)
    every = dataclasses.replace(shape(("id", "v", "w")), relation_oid=info.oid)
    shapes = [("all", every), ("id_w", dataclasses.replace(every, columns=("id", "w"), all_columns=False))]
    invalidated: list[tuple[str, str]] = []
    checker = SchemaChecker(SchemaCatalog(db_dsn), 0, lambda h, r: invalidated.append((h, r)))
    try:

        def check_after(statement: str) -> list[tuple[str, str]]:
            with psycopg.connect(db_dsn, autocommit=True) as conn:
                conn.execute(statement)
                assert table_column_types(inspect_table(conn, "public", "t")) == checker_columns()
            return checker.check(shapes, {"all": created, "id_w": created})

        def checker_columns() -> ColumnTypes:
            catalog = SchemaCatalog(db_dsn)
            try:
                return catalog.tables([info.oid])[info.oid].columns
            finally:
                catalog.close()

        assert checker.check(shapes, {"all": created, "id_w": created}) == []
        for harmless in (
            "VACUUM FULL t",
            "ALTER TABLE t ALTER COLUMN v SET NOT NULL",
            "CLUSTER t USING t_pkey",
        ):
            assert check_after(harmless) == [], harmless
        rewritten = check_after(
            "ALTER TABLE t ALTER COLUMN v TYPE text USING upper(v)"
        )  # rows now 'A', unsent
        assert rewritten == [
            ("all", "column v of public.t was rewritten by ALTER TABLE (its values may differ)")
        ]
        assert invalidated == rewritten
    finally:
        checker.stop()


def test_a_rewrite_and_a_column_change_between_two_checks_look_like_an_alter(db_dsn: str) -> None:
    """Both since the last check (or while the engine was down): told apart from an ALTER rewrite they are
    not, and the shape is invalidated (a refetch too many, never a stale shape)."""
    _oids_after(db_dsn, ["CREATE TABLE t (id int PRIMARY KEY, v text)"], [])
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        info = inspect_table(conn, "public", "t")
        conn.execute("VACUUM FULL t")
        conn.execute("ALTER TABLE t ALTER COLUMN v SET NOT NULL")
    checker = SchemaChecker(SchemaCatalog(db_dsn), 0, lambda h, r: None)
    try:
        every = dataclasses.replace(shape(("id", "v")), relation_oid=info.oid)
        assert [h for h, _ in checker.check([("h", every)], {"h": table_column_types(info)})] == ["h"]
    finally:
        checker.stop()


def test_a_name_that_labels_another_column_now_invalidates() -> None:
    """attnum by name: columns renamed in a ring (``b`` to ``c``, ``a`` to ``b``) or a column dropped and
    added again; a rename sends nothing for existing rows, and the shape's type checks see the same types."""
    then = tuple(c._replace(attnum=i + 1) for i, c in enumerate(COLS))  # id 1, a 2, b 3
    shifted = (then[0], ColumnType("b", INT, -1, attnum=2), ColumnType("c", INT, -1, attnum=3))
    narrow = shape(("id", "b"), all_columns=False)
    reason = "column b of public.t is another column now (renamed, or dropped and added again)"
    assert catalog_reason(narrow, table(shifted), then) == reason
    a_dropped = (then[0], then[2])  # b keeps attnum 3: a drop renumbers nothing
    assert catalog_reason(narrow, table(a_dropped), then) is None
    assert catalog_reason(shape(("id", "a"), all_columns=False), table((then[0], then[1])), then) is None
    assert catalog_reason(narrow, table(shifted), COLS) is None  # attnums unknown (an older log)
    assert column_types_from_meta(column_types_to_meta(then)) == then


def test_the_checker_sees_columns_renamed_in_a_ring(db_dsn: str) -> None:
    _oids_after(db_dsn, ["CREATE TABLE t (id int PRIMARY KEY, a int, b int, x int)"], [])
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        info = inspect_table(conn, "public", "t")
    created = table_column_types(info)
    base = dataclasses.replace(shape(("id", "b")), relation_oid=info.oid, all_columns=False)
    shapes = [("b", base), ("x", dataclasses.replace(base, columns=("id", "x")))]
    checker = SchemaChecker(SchemaCatalog(db_dsn), 0, lambda h, r: None)
    try:
        types = {"b": created, "x": created}
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE t DROP COLUMN a")  # renumbers nothing
        assert checker.check(shapes, types) == []
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE t RENAME b TO c")
            conn.execute("ALTER TABLE t RENAME x TO b")
        assert [h for h, _ in checker.check(shapes, types)] == ["b", "x"]  # x is gone, b is x's values
    finally:
        checker.stop()


def test_column_types_as_created_are_accepted() -> None:
    assert column_types_from_meta(COLS) == COLS  # the in-memory (tuple) form, before any reload
    assert column_types_from_meta("not types") is None
    # Logs written before the labels were recorded: no labels, so a rename cannot be told (not an error).
    assert column_types_from_meta([["id", INT, -1], ["a", TEXT, -1]]) == COLS[:2]


MOOD = 16500  # an enum type's OID; its labels' pg_enum OIDs are 1..3
MOODS = ((1, "sad"), (2, "ok"), (3, "happy"))
WITH_ENUM: ColumnTypes = (COLS[0], ColumnType("m", MOOD, -1, MOODS), COLS[1])


def test_a_renamed_enum_label_of_a_read_column_invalidates() -> None:
    """RENAME VALUE changes how existing rows print and replicates nothing: the stored labels tell."""
    renamed = (COLS[0], ColumnType("m", MOOD, -1, ((1, "sad"), (2, "fine"), (3, "happy"))), COLS[1])
    assert catalog_reason(shape(("id", "m", "a")), table(renamed), WITH_ENUM) == (
        "enum label 'ok' of column m of public.t was renamed to 'fine'"
    )
    narrow = shape(("id", "a"), all_columns=False)
    assert catalog_reason(narrow, table(renamed), WITH_ENUM) is None  # m is not read
    in_where = dataclasses.replace(narrow, where="m = 'ok'")
    assert catalog_reason(in_where, table(renamed), WITH_ENUM) is not None  # read by the WHERE only
    added = (COLS[0], ColumnType("m", MOOD, -1, (*MOODS, (4, "glad"))), COLS[1])
    assert (
        catalog_reason(shape(("id", "m", "a")), table(added), WITH_ENUM) is None
    )  # ADD VALUE: rows print alike
    assert column_types_from_meta(column_types_to_meta(WITH_ENUM)) == WITH_ENUM
    # At a reload, an added label may have been renamed while shapesync was down: it cannot be told.
    assert labels_added(shape(("id", "m", "a")), WITH_ENUM, added) == (
        "enum label 'glad' of column m of public.t was added since the shape was created "
        "(it may have been renamed since: not known across a restart)"
    )
    assert labels_added(narrow, WITH_ENUM, added) is None  # m is not read
    assert labels_added(shape(("id", "m", "a")), WITH_ENUM, WITH_ENUM) is None


def test_a_table_out_of_the_publication_invalidates() -> None:
    gone = dataclasses.replace(table(), unpublished="was removed from the publication")
    assert catalog_reason(shape(), gone, None) == "table public.t was removed from the publication"


def test_catalog_reads_publication_membership(db_dsn: str) -> None:
    statements = [
        "CREATE TABLE inpub (id int)",
        "CREATE TABLE outpub (id int)",
        "CREATE PUBLICATION pub FOR TABLE inpub",
    ]
    inside, outside = _oids_after(db_dsn, statements, ["inpub", "outpub"])
    with_pub, without = SchemaCatalog(db_dsn, publication="pub"), SchemaCatalog(db_dsn)
    try:
        assert with_pub.tables([inside])[inside].unpublished is None
        assert with_pub.tables([outside])[outside].unpublished == "was removed from the publication"
        assert without.tables([outside])[outside].unpublished is None  # no publication named: not judged
    finally:
        with_pub.close()
        without.close()


def test_a_table_published_through_its_schema_counts_as_published(db_dsn: str) -> None:
    (oid,) = _oids_after(
        db_dsn, ["CREATE TABLE s (id int)", "CREATE PUBLICATION p FOR TABLES IN SCHEMA public"], ["s"]
    )
    catalog = SchemaCatalog(db_dsn, publication="p")
    try:
        assert catalog.tables([oid])[oid].unpublished is None
    finally:
        catalog.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("ALTER PUBLICATION pub SET (publish = 'insert, delete')", "no longer publishes insert, update"),
        (
            "ALTER PUBLICATION pub SET (publish = 'insert, update, delete')",
            "no longer publishes insert, update",
        ),
        ("ALTER PUBLICATION pub SET TABLE f WHERE (id > 10)", "published with a row filter or column list"),
        ("ALTER PUBLICATION pub SET TABLE f (id)", "published with a row filter or column list"),
    ],
)
def test_a_publication_that_sends_less_than_every_change_is_seen(
    db_dsn: str, change: str, reason: str
) -> None:
    """Changed from outside, the publication still lists the table but sends only some of its changes:
    operations left out, or a row filter or column list; the catalog says why."""
    (oid,) = _oids_after(
        db_dsn, ["CREATE TABLE f (id int PRIMARY KEY, v int)", "CREATE PUBLICATION pub FOR TABLE f"], ["f"]
    )
    catalog = SchemaCatalog(db_dsn, publication="pub")
    try:
        assert catalog.tables([oid])[oid].unpublished is None
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(change)
        assert reason in (catalog.tables([oid])[oid].unpublished or "")
    finally:
        catalog.close()
