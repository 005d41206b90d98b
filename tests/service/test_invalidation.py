"""Schema changes against the real service (gunicorn, HTTP): exactly the affected shapes are invalidated.

TRUNCATE and ALTER TABLE reach the engine through the replication stream; a dropped or renamed table, a
table dropped from the publication, or a publication altered to send less, sends nothing, so the ShapeCache's
periodic catalog check
(``shapes.schema_check_interval_s``, short here) finds it; so is a renamed enum label, and a table rewritten
by ``ALTER COLUMN ... TYPE ... USING``, or a column name that labels another column after renames.  A column type changed, or the table dropped
from the publication, while the service was down is found on reload.
Clients of an invalidated shape get 409 (with a new handle when the table still exists); shapes of other
tables, and shapes the change does not touch, keep their handle.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from tests.fixtures.pg import run_sql
from tests.fixtures.service import ServiceProcess, actor_nodes

EXTRA: dict[str, dict[str, object]] = {
    "shapes": {"schema_check_interval_s": 0.3},
    "http": {"long_poll_timeout_ms": 500},
}


class Shape:
    """A client of one shape: the handle and offset it follows."""

    def __init__(self, svc: ServiceProcess, params: str) -> None:
        self.svc = svc
        self.params = params
        code, headers, body = svc.get(f"/v1/shape?{params}&offset=-1")
        assert code == 200, (code, body)
        self.handle = headers["electric-handle"]
        self.offset = headers["electric-offset"]
        self.rows = sum(1 for item in orjson.loads(body) if "key" in item)

    def poll(self) -> tuple[int, str | None]:
        """One non-live request from where the client is: (status, handle in the answer)."""
        q = f"/v1/shape?{self.params}&offset={self.offset}&handle={urllib.parse.quote(self.handle)}"
        code, headers, _ = self.svc.get(q)
        return code, headers.get("electric-handle")


def _until_gone(shape: Shape, deadline_s: float = 20.0) -> tuple[int, str | None]:
    """Poll until the shape's handle is no longer served (no event crosses the process boundary)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        code, handle = shape.poll()
        if code != 200:
            return code, handle
        assert handle == shape.handle
        time.sleep(0.1)
    pytest.fail(f"shape {shape.params} ({shape.handle}) still served after {deadline_s}s")


def _no_replacement(shape: Shape, code: int, handle: str | None) -> None:
    """The first answer after ``shape``'s table went away (``_until_gone``) must not offer a new shape.

    Until the API's definition memo expires the server still tries to create one (503, retryable); then it
    says the table does not exist (400).  A poll that looked the handle up just before the invalidation
    withdrew it, and read the log just after, sees the rotation mid-request: 409 must-refetch, rightly
    without a handle (spec §7), and the next poll says why.  A 409 *with* a handle would be a shape created
    on a table that is gone.
    """
    if code == 409:
        assert handle is None
        code, handle = shape.poll()
    assert code in (400, 503) and handle is None, (code, handle)


def _restarts(svc: ServiceProcess) -> int:
    """Restarts of every actor of the tree (``/v1/health/actors``)."""
    return sum(node["restarts"] for node in actor_nodes(svc))


def _changed_while_down(svc: ServiceProcess, dsn: str, shape: Shape, *statements: str) -> str:
    """Stop the service, run ``statements``, start it: ``shape``'s next poll is a 409 with a new handle
    (returned), found on reload."""
    assert svc.stop() == 0
    run_sql(dsn, *statements)
    svc.start()
    svc.wait_healthy()
    code, handle = shape.poll()
    assert code == 409 and handle is not None and handle != shape.handle
    return handle


def _column(svc: ServiceProcess, params: str, handle: str, column: str) -> list[str]:
    """The sorted values of ``column`` in the snapshot of the shape ``params`` under ``handle``."""
    code, _, body = svc.get(f"/v1/shape?{params}&offset=-1&handle={handle}")
    assert code == 200, body
    return sorted(item["value"][column] for item in orjson.loads(body) if "key" in item)


def _still_live(*shapes: Shape) -> None:
    for shape in shapes:
        assert shape.poll() == (200, shape.handle), shape.params


@pytest.fixture
def svc(db_dsn: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    run_sql(
        db_dsn,
        "CREATE TABLE a (id int PRIMARY KEY, x text, y text)",
        "CREATE TABLE b (id int PRIMARY KEY, x text)",
        "CREATE TABLE c (id int PRIMARY KEY, x text, y text)",
        "INSERT INTO a VALUES (1, 'a', 'y'), (2, 'b', 'y')",
        "INSERT INTO b VALUES (1, 'b')",
        "INSERT INTO c VALUES (1, 'c', 'y')",
    )
    service = ServiceProcess(db_dsn, tmp_path, EXTRA).start()
    try:
        service.wait_healthy()
        yield service
    finally:
        service.stop()


def test_truncate_and_alter_invalidate_exactly_the_affected_shapes(svc: ServiceProcess, db_dsn: str) -> None:
    a_all = Shape(svc, "table=a")
    a_xy = Shape(svc, "table=a&columns=id,x,y")
    a_x = Shape(svc, "table=a&columns=id,x")
    a_where_y = Shape(svc, "table=a&columns=id,x&where=y%20%3D%20'y'")  # reads y without selecting it
    b = Shape(svc, "table=b")
    c_all = Shape(svc, "table=c")
    c_x = Shape(svc, "table=c&columns=id,x")

    # A nullability-only change touches no selected column: every shape keeps its handle.
    run_sql(db_dsn, "ALTER TABLE a ALTER COLUMN x SET NOT NULL", "INSERT INTO a VALUES (3, 'c', 'y')")
    time.sleep(1.0)  # several schema checks and the Relation message: nothing may be invalidated
    _still_live(a_all, a_xy, a_x, b, c_all, c_x)

    # Dropping y: shapes selecting y (the all-columns one included) or filtering on it go, the id,x one
    # stays; the rows after the drop have no y, and routing them never crashes an actor.
    run_sql(db_dsn, "ALTER TABLE a DROP COLUMN y", "INSERT INTO a VALUES (4, 'd')")
    code, new_handle = _until_gone(a_xy)
    # 409, with a new shape's handle, or with none when creating one failed (spec 7 allows it): the
    # replacement selects y, which is gone, so whether it can be made depends on how stale the definition
    # memo of that instant is.
    assert code == 409 and new_handle != a_xy.handle
    assert _until_gone(a_all)[0] == 409
    assert _until_gone(a_where_y)[0] in (400, 409)  # its WHERE names a column that is gone
    run_sql(db_dsn, "INSERT INTO a VALUES (5, 'e')")
    _still_live(a_x, b, c_all, c_x)
    assert _restarts(svc) == 0

    # Adding a column: only the all-columns shape of c follows the table's columns.  No row is written, so
    # no Relation message comes: the catalog check must find it.
    run_sql(db_dsn, "ALTER TABLE c ADD COLUMN z int")
    assert _until_gone(c_all)[0] == 409
    _still_live(a_x, b, c_x)

    # TRUNCATE invalidates every shape of the table, and only those.
    run_sql(db_dsn, "TRUNCATE a")
    code, new_handle = _until_gone(a_x)
    assert code == 409 and new_handle != a_x.handle
    _still_live(b, c_x)
    fresh = Shape(svc, "table=a&columns=id,x")
    assert fresh.handle != a_x.handle and fresh.rows == 0


def test_drop_and_rename_are_found_by_the_catalog_check(svc: ServiceProcess, db_dsn: str) -> None:
    a = Shape(svc, "table=a")
    b = Shape(svc, "table=b&columns=id")
    c = Shape(svc, "table=c")
    run_sql(db_dsn, "DROP TABLE a")
    _no_replacement(a, *_until_gone(a))  # the table is gone: no new shape can take its place
    _still_live(b, c)
    run_sql(db_dsn, "ALTER TABLE b RENAME TO b2")
    _no_replacement(b, *_until_gone(b))
    _still_live(c)
    renamed = Shape(svc, "table=b2&columns=id")
    assert renamed.handle != b.handle and renamed.rows == 1


def test_type_change_while_down_invalidates_on_restart(db_dsn: str, tmp_path: Path) -> None:
    run_sql(
        db_dsn,
        "CREATE TABLE t (id int PRIMARY KEY, v int, w text)",
        "CREATE TABLE u (id int PRIMARY KEY, v int)",
        "INSERT INTO t VALUES (1, 1, 'w')",
        "INSERT INTO u VALUES (1, 1)",
    )
    svc = ServiceProcess(db_dsn, tmp_path, {"shapes": {"schema_check_interval_s": 0}}).start()
    try:
        svc.wait_healthy()
        t_v = Shape(svc, "table=t&columns=id,v")
        t_w = Shape(svc, "table=t&columns=id,w")
        u = Shape(svc, "table=u")
        new_handle = _changed_while_down(svc, db_dsn, t_v, "ALTER TABLE t ALTER COLUMN v TYPE bigint")
        _still_live(t_w, u)  # w's type did not change; u's table was not touched
        code, headers, _ = svc.get(f"/v1/shape?table=t&columns=id,v&offset=-1&handle={new_handle}")
        assert code == 200 and headers["electric-handle"] == new_handle
        assert '"v":{"type":"int8"' in headers["electric-schema"].replace(" ", "")
    finally:
        svc.stop()


def test_a_renamed_enum_label_invalidates_the_shapes_that_print_it(svc: ServiceProcess, db_dsn: str) -> None:
    """RENAME VALUE changes how existing rows print and replicates nothing (no row is written, the type and
    the column stay): the catalog check finds it live, the reload while down.  ADD VALUE prints nothing new
    for existing rows and invalidates nothing while the service runs."""
    run_sql(
        db_dsn,
        "CREATE TYPE status AS ENUM ('todo', 'done')",
        "CREATE TYPE colour AS ENUM ('red')",
        "CREATE TABLE e (id int PRIMARY KEY, s status, tags status[], x text)",
        "CREATE TABLE f (id int PRIMARY KEY, c colour)",
        "INSERT INTO e VALUES (1, 'todo', '{done}', 'x')",
        "INSERT INTO f VALUES (1, 'red')",
    )
    e_s = Shape(svc, "table=e&columns=id,s")
    e_tags = Shape(svc, "table=e&columns=id,tags")
    e_x = Shape(svc, "table=e&columns=id,x")
    f = Shape(svc, "table=f")
    # ADD VALUE, then a rename elsewhere: once f's shape is gone, a catalog check ran after the ADD.
    run_sql(
        db_dsn, "ALTER TYPE status ADD VALUE 'doing'", "ALTER TYPE colour RENAME VALUE 'red' TO 'crimson'"
    )
    assert _until_gone(f)[0] == 409
    _still_live(e_s, e_tags, e_x)

    run_sql(db_dsn, "ALTER TYPE status RENAME VALUE 'todo' TO 'open'")
    code, new_handle = _until_gone(e_s)
    assert code == 409 and new_handle is not None and new_handle != e_s.handle
    assert _until_gone(e_tags)[0] == 409  # its values may print the label too
    _still_live(e_x)
    assert _column(svc, "table=e&columns=id,s", new_handle, "s") == ["open"]

    fresh = Shape(svc, "table=e&columns=id,s")  # follows the new label; renamed while down:
    _changed_while_down(svc, db_dsn, fresh, "ALTER TYPE status RENAME VALUE 'open' TO 'new'")
    _still_live(e_x)
    # A label added (and used) after the shape was created, renamed while down: across a restart only the
    # creation's labels are known, so any label added since makes the shape refetch.
    fresher = Shape(svc, "table=e&columns=id,s")
    run_sql(db_dsn, "ALTER TYPE status ADD VALUE 'later'", "INSERT INTO e VALUES (2, 'later', '{}', 'y')")
    _changed_while_down(svc, db_dsn, fresher, "ALTER TYPE status RENAME VALUE 'later' TO 'latest'")
    _still_live(e_x)


def test_a_rewrite_by_alter_invalidates_the_shapes_reading_the_column(
    svc: ServiceProcess, db_dsn: str
) -> None:
    """``ALTER COLUMN ... TYPE`` to the same type ``USING`` an expression rewrites every row, and a rewrite is
    never replicated: the catalog check finds it.  VACUUM FULL rewrites the table and changes no value."""
    a_x = Shape(svc, "table=a&columns=id,x")
    a_y = Shape(svc, "table=a&columns=id,y")
    b = Shape(svc, "table=b")
    c = Shape(svc, "table=c")
    run_sql(db_dsn, "VACUUM FULL a", "DROP TABLE c")  # once c's shape is gone, a check ran after the VACUUM
    _until_gone(c)
    _still_live(a_x, a_y, b)

    run_sql(db_dsn, "ALTER TABLE a ALTER COLUMN x TYPE text USING upper(x)")
    code, new_handle = _until_gone(a_x)
    assert code == 409 and new_handle is not None and new_handle != a_x.handle
    _still_live(a_y, b)
    assert _column(svc, "table=a&columns=id,x", new_handle, "x") == ["A", "B"]


def test_a_name_that_labels_another_column_now_invalidates(svc: ServiceProcess, db_dsn: str) -> None:
    """Renames in a ring leave every name a shape reads in place, with the same type, and send nothing for
    existing rows: y's shape would serve the old y for ever.  The catalog check compares attnums."""
    a_y = Shape(svc, "table=a&columns=id,y")
    b = Shape(svc, "table=b")
    run_sql(db_dsn, "ALTER TABLE a RENAME y TO z", "ALTER TABLE a RENAME x TO y")
    code, new_handle = _until_gone(a_y)
    assert code == 409 and new_handle is not None and new_handle != a_y.handle
    _still_live(b)
    assert _column(svc, "table=a&columns=id,y", new_handle, "y") == ["a", "b"]


def test_a_request_for_a_dropped_table_checks_its_shapes_at_once(db_dsn: str, tmp_path: Path) -> None:
    run_sql(
        db_dsn,
        "CREATE TABLE a (id int PRIMARY KEY, x text)",
        "CREATE TABLE b (id int PRIMARY KEY, x text)",
        "INSERT INTO a VALUES (1, 'a')",
        "INSERT INTO b VALUES (1, 'b')",
    )
    # No periodic catalog check: only the request below can reveal the drop.
    svc = ServiceProcess(db_dsn, tmp_path, {"shapes": {"schema_check_interval_s": 0}}).start()
    try:
        svc.wait_healthy()
        a = Shape(svc, "table=a")
        b = Shape(svc, "table=b")
        run_sql(db_dsn, "DROP TABLE a")
        assert a.poll() == (200, a.handle)  # nothing tells the engine yet
        code, _, body = svc.get("/v1/shape?table=a&columns=id&offset=-1")  # a new client of the table
        assert code == 400 and b"does not exist" in body, (code, body)
        # The shape is invalidated (its log deleted) at once, not at some later check.
        log = tmp_path / "storage" / "e2e" / "shapes" / a.handle
        end = time.monotonic() + 10.0
        while log.exists() and time.monotonic() < end:
            time.sleep(0.05)
        assert not log.exists()
        code, handle = a.poll()
        assert code in (400, 409) and handle is None, code  # gone, and no shape can replace it
        _still_live(b)
    finally:
        svc.stop()


def _drop_from_publication(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pubname FROM pg_publication").fetchone()  # the service's one
        assert row is not None
        conn.execute(f'ALTER PUBLICATION "{row[0]}" DROP TABLE {table}')


def test_a_table_dropped_from_the_publication_invalidates_its_shapes(
    svc: ServiceProcess, db_dsn: str
) -> None:
    """Its changes stop coming without a word: the catalog check finds it, its clients refetch, and the new
    shape (which adds the table back) follows the table again."""
    a = Shape(svc, "table=a")
    b = Shape(svc, "table=b")
    _drop_from_publication(db_dsn, "a")
    run_sql(db_dsn, "INSERT INTO a VALUES (3, 'never replicated')")
    code, new_handle = _until_gone(a)
    assert code == 409 and new_handle is not None and new_handle != a.handle
    _still_live(b)
    fresh = Shape(svc, "table=a")
    assert fresh.handle == new_handle and fresh.rows == 3  # the row its log missed is in the new snapshot
    run_sql(db_dsn, "INSERT INTO a VALUES (4, 'replicated')")
    code, headers, body = svc.get(
        f"/v1/shape?table=a&offset={fresh.offset}&handle={urllib.parse.quote(fresh.handle)}&live=true"
    )
    while code == 200 and not any(
        "key" in item for item in orjson.loads(body)
    ):  # a live request returns on data
        code, headers, body = svc.get(
            f"/v1/shape?table=a&offset={headers['electric-offset']}&handle={urllib.parse.quote(fresh.handle)}"
            "&live=true"
        )
    assert code == 200 and [item["value"]["id"] for item in orjson.loads(body) if "key" in item] == ["4"]


@pytest.mark.parametrize("change", ["SET (publish = 'insert, delete')", "SET TABLE a WHERE (id > 1)"])
def test_a_publication_altered_to_send_less_invalidates_the_shapes_it_starves(
    svc: ServiceProcess, db_dsn: str, change: str
) -> None:
    """Updates left out, or a row filter put on the table, from outside: the publication still lists the
    table but its update of row 1 never comes.  The catalog check finds it, the client refetches, and the
    new shape (which sets the publication back) has the update and follows the table again."""
    a = Shape(svc, "table=a")
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pubname FROM pg_publication").fetchone()
        assert row is not None
        pub = row[0]
        conn.execute(f'ALTER PUBLICATION "{pub}" {change}')
        conn.execute("UPDATE a SET x = 'missed' WHERE id = 1")
        code, new_handle = _until_gone(a)
        assert code == 409 and new_handle is not None and new_handle != a.handle
        code, headers, body = svc.get("/v1/shape?table=a&offset=-1")
        assert code == 200 and headers["electric-handle"] == new_handle
        assert {i["value"]["id"]: i["value"]["x"] for i in orjson.loads(body) if "key" in i} == {
            "1": "missed",
            "2": "b",
        }
        state = conn.execute(
            "SELECT p.pubupdate, pr.prqual IS NULL FROM pg_publication p "
            "JOIN pg_publication_rel pr ON pr.prpubid = p.oid AND pr.prrelid = 'a'::regclass"
        ).fetchone()
        assert state == (True, True)


def test_a_table_dropped_from_the_publication_while_down_invalidates_on_restart(
    db_dsn: str, tmp_path: Path
) -> None:
    run_sql(db_dsn, "CREATE TABLE t (id int PRIMARY KEY)", "CREATE TABLE u (id int PRIMARY KEY)")
    svc = ServiceProcess(db_dsn, tmp_path, {"shapes": {"schema_check_interval_s": 0}}).start()
    try:
        svc.wait_healthy()
        t = Shape(svc, "table=t")
        u = Shape(svc, "table=u")
        assert svc.stop() == 0
        _drop_from_publication(db_dsn, "t")
        run_sql(db_dsn, "INSERT INTO t VALUES (1)")  # never sent: the engine would re-add t and miss it
        svc.start()
        svc.wait_healthy()
        code, new_handle = t.poll()
        assert code == 409 and new_handle is not None and new_handle != t.handle
        _still_live(u)
        assert Shape(svc, "table=t").rows == 1
    finally:
        svc.stop()
