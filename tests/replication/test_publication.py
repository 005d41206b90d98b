"""PublicationManager against a real Postgres: ref-counting, REPLICA IDENTITY FULL, lock timeouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pykka
import pytest

from sync.postgres.errors import DbConnectionError
from sync.replication.publication import AddTable, PublicationManager, RemoveTable, TableName

PUB = "shapesync_pub_t"


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute(f"CREATE PUBLICATION {PUB}")
        yield c


@pytest.fixture
def manager(db_dsn: str, conn: psycopg.Connection[Any]) -> Iterator[pykka.ActorRef[Any]]:
    del conn
    ref = PublicationManager.start(db_dsn, PUB, lock_timeout=0.3)
    yield ref
    ref.stop(timeout=5)


def published(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2", (PUB,)
    ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def replident(conn: psycopg.Connection[Any], table: str) -> str:
    row = conn.execute("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()
    assert row is not None
    return str(row[0])


def test_add_is_refcounted_idempotent_and_sets_replica_identity_full(
    conn: psycopg.Connection[Any], manager: pykka.ActorRef[Any]
) -> None:
    conn.execute('CREATE TABLE "Weird ""Name" (id int PRIMARY KEY)')
    weird = TableName("public", 'Weird "Name')
    assert replident(conn, '"Weird ""Name"') == "d"
    assert manager.ask(AddTable(weird, "shape-1"), timeout=10) is None
    assert manager.ask(AddTable(weird, "shape-2"), timeout=10) is None
    assert manager.ask(AddTable(weird, "shape-2"), timeout=10) is None
    assert published(conn) == [("public", 'Weird "Name')]
    assert replident(conn, '"Weird ""Name"') == "f"
    assert manager.ask(RemoveTable(weird, "shape-1"), timeout=10) is None
    assert published(conn) == [("public", 'Weird "Name')]
    assert manager.ask(RemoveTable(weird, "shape-2"), timeout=10) is None
    assert published(conn) == []
    # removed from outside meanwhile: adding again repairs it
    assert manager.ask(AddTable(weird, "shape-3"), timeout=10) is None
    conn.execute(f'ALTER PUBLICATION {PUB} DROP TABLE "Weird ""Name"')
    assert manager.ask(AddTable(weird, "shape-4"), timeout=10) is None
    assert published(conn) == [("public", 'Weird "Name')]


def test_lock_timeout_reports_instead_of_hanging(
    db_dsn: str, conn: psycopg.Connection[Any], manager: pykka.ActorRef[Any]
) -> None:
    conn.execute("CREATE TABLE busy (id int PRIMARY KEY)")
    table = TableName("public", "busy")
    with psycopg.connect(db_dsn) as app:  # a long-running application transaction reading the table
        app.execute("SELECT * FROM busy").fetchall()
        t0 = time.monotonic()
        error = manager.ask(AddTable(table, "shape-1"), timeout=10)
        assert time.monotonic() - t0 < 5
        assert isinstance(error, DbConnectionError) and error.kind == "lock_timeout"
        assert "public.busy" in error.message
        assert published(conn) == []
        app.rollback()
    assert manager.ask(AddTable(table, "shape-1"), timeout=10) is None
    assert published(conn) == [("public", "busy")]
    assert manager.is_alive()


def test_missing_table_and_missing_publication_are_values(
    conn: psycopg.Connection[Any], manager: pykka.ActorRef[Any]
) -> None:
    error = manager.ask(AddTable(TableName("public", "nope"), "s"), timeout=10)
    assert isinstance(error, DbConnectionError) and error.kind == "table_missing"
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    conn.execute(f"DROP PUBLICATION {PUB}")
    error = manager.ask(AddTable(TableName("public", "t"), "s"), timeout=10)
    assert isinstance(error, DbConnectionError) and error.kind == "publication_missing"
    assert manager.is_alive()


def test_one_check_answers_the_requests_sent_before_it_finished(
    conn: psycopg.Connection[Any], manager: pykka.ActorRef[Any]
) -> None:
    """A burst of new shapes on one table is answered by the check that was running when they asked; a
    request sent after the last check finished checks again (and repairs what changed outside)."""
    conn.execute("CREATE TABLE burst (id int PRIMARY KEY)")
    table = TableName("public", "burst")
    early = AddTable(table, "shape-early")  # made (sent) before the first check
    assert manager.ask(AddTable(table, "shape-1"), timeout=10) is None
    conn.execute(f"ALTER PUBLICATION {PUB} DROP TABLE burst")
    # covered by shape-1's check: no catalog round trip, so the outside change is not seen yet
    assert manager.ask(early, timeout=10) is None
    assert published(conn) == []
    # sent after that check finished: checked again, repaired
    assert manager.ask(AddTable(table, "shape-2"), timeout=10) is None
    assert published(conn) == [("public", "burst")]
    # every owner counts: the table leaves the publication with the last of the three
    for owner in ("shape-1", "shape-early"):
        assert manager.ask(RemoveTable(table, owner), timeout=10) is None
        assert published(conn) == [("public", "burst")]
    assert manager.ask(RemoveTable(table, "shape-2"), timeout=10) is None
    assert published(conn) == []
    # after the last owner left, an old request is checked again (the table is no longer published)
    assert manager.ask(early, timeout=10) is None
    assert published(conn) == [("public", "burst")]


def test_adding_sets_back_a_publication_altered_to_send_less(
    conn: psycopg.Connection[Any], manager: pykka.ActorRef[Any]
) -> None:
    """Operations left out of the publication, or a row filter or column list put on the table, from
    outside: the next shape that needs the table gets every change of it again."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    table = TableName("public", "t")
    assert manager.ask(AddTable(table, "shape-1"), timeout=10) is None
    conn.execute(f"ALTER PUBLICATION {PUB} SET (publish = 'insert')")
    conn.execute(f"ALTER PUBLICATION {PUB} SET TABLE t (id) WHERE (id > 10)")
    assert manager.ask(AddTable(table, "shape-2"), timeout=10) is None
    row = conn.execute(
        "SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, pr.prqual IS NULL, pr.prattrs IS NULL "
        "FROM pg_publication p JOIN pg_publication_rel pr ON pr.prpubid = p.oid WHERE p.pubname = %s",
        (PUB,),
    ).fetchone()
    assert row == (True, True, True, True, True, True)
    assert published(conn) == [("public", "t")]


@pytest.mark.parametrize("covers", ["FOR ALL TABLES", "FOR TABLES IN SCHEMA public"])
def test_a_publication_that_takes_the_table_in_by_itself_is_left_so(
    conn: psycopg.Connection[Any], manager: pykka.ActorRef[Any], covers: str
) -> None:
    """An operator made the stream's publication cover every table (or a schema): Postgres refuses to add
    or drop one table (every shape creation was a 503), and the table's changes are sent anyway."""
    conn.execute(f"DROP PUBLICATION {PUB}")
    conn.execute(f"CREATE PUBLICATION {PUB} {covers}")
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    table = TableName("public", "t")
    assert manager.ask(AddTable(table, "shape-1"), timeout=10) is None
    assert replident(conn, "t") == "f"
    assert published(conn) == [("public", "t")]
    assert manager.ask(RemoveTable(table, "shape-1"), timeout=10) is None
    assert published(conn) == [("public", "t")]


def add_watching_queue(
    manager: pykka.ActorRef[Any], conn: psycopg.Connection[Any], table: TableName, owner: str
) -> tuple[Any, int]:
    """``AddTable``'s answer, and how often a lock request on the table was seen queued while it ran."""
    future = manager.ask(AddTable(table, owner), block=False)
    seen = 0
    deadline = time.monotonic() + 10
    while True:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass", (str(table),)
        ).fetchone()
        assert row is not None
        seen += int(row[0])
        try:
            return future.get(timeout=0.005), seen
        except pykka.Timeout:
            assert time.monotonic() < deadline


@pytest.mark.parametrize("identity", ["DEFAULT", "FULL"])
def test_a_long_transaction_on_the_table_is_not_queued_behind(
    db_dsn: str, conn: psycopg.Connection[Any], manager: pykka.ActorRef[Any], identity: str
) -> None:
    """A transaction that has held the table longer than ``lock_timeout`` (a batch job): adding the table
    fails at once instead of queueing a lock request, behind which every writer of the table would queue
    for ``lock_timeout``, again at each retry of the shape.  Once it ends, the table is added."""
    conn.execute("CREATE TABLE busy (id int PRIMARY KEY, v int)")
    conn.execute("INSERT INTO busy VALUES (1, 1)")
    conn.execute(f"ALTER TABLE busy REPLICA IDENTITY {identity}")
    table = TableName("public", "busy")
    with psycopg.connect(db_dsn) as app:
        app.execute("UPDATE busy SET v = 2")  # a writer: its lock conflicts with SHARE and ACCESS EXCLUSIVE
        app.execute("SELECT pg_sleep(0.5)")  # older than the manager's lock_timeout (0.3 s)
        error, seen = add_watching_queue(manager, conn, table, "shape-1")
        assert seen == 0  # no lock request queued: the application's writers never waited behind one
        assert isinstance(error, DbConnectionError) and error.kind == "lock_timeout"
        assert "has held a lock on it" in error.message
        app.rollback()
    assert manager.ask(AddTable(table, "shape-1"), timeout=10) is None
    assert published(conn) == [("public", "busy")]


@contextmanager
def role_publishing(
    db_dsn: str, role: str, *, as_admin: list[str], as_role: list[str], tables: list[str]
) -> Iterator[pykka.ActorRef[Any]]:
    """A login ``role`` that may create in the database and owns the stream's publication (``as_admin``
    statements run before it is made, ``as_role`` ones as it), and a PublicationManager connected as it;
    afterwards the manager stopped and the publication, ``tables``, its grants and the role dropped."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_dsn)["dbname"]
    with psycopg.connect(db_dsn, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO {role}')
        for statement in as_admin:
            admin.execute(statement)
        admin.execute(f"SET ROLE {role}")
        admin.execute(f"CREATE PUBLICATION {PUB}")
        for statement in as_role:
            admin.execute(statement)
        admin.execute("RESET ROLE")
    manager = PublicationManager.start(db_dsn.replace("user=postgres", f"user={role}"), PUB, lock_timeout=0.3)
    try:
        yield manager
    finally:
        manager.stop(timeout=5)
        with psycopg.connect(db_dsn, autocommit=True) as admin:
            admin.execute(f"DROP PUBLICATION IF EXISTS {PUB}")
            for table in tables:
                admin.execute(f"DROP TABLE IF EXISTS {table}")
            admin.execute(f'REVOKE ALL ON DATABASE "{dbname}" FROM {role}')
            admin.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
            admin.execute(f"DROP ROLE {role}")


def test_a_blocker_this_role_cannot_see_the_age_of_is_queued_behind_once(db_dsn: str) -> None:
    """Without the privileges to see another role's transaction start (``pg_read_all_stats``), the first
    try waits ``lock_timeout`` in vain; the transactions that held it back are remembered, and while they
    last no later try queues behind them."""
    table = TableName("public", "busy")
    with (
        role_publishing(
            db_dsn,
            "restricted",
            as_admin=["GRANT CREATE ON SCHEMA public TO restricted"],
            as_role=["CREATE TABLE busy (id int PRIMARY KEY, v int)", "INSERT INTO busy VALUES (1, 1)"],
            tables=["busy"],
        ) as manager,
        psycopg.connect(db_dsn, autocommit=True) as conn,
        psycopg.connect(db_dsn) as app,
    ):
        app.execute("UPDATE busy SET v = 2")  # the superuser's transaction: its start is hidden
        app.execute("SELECT pg_sleep(0.5)")
        first = manager.ask(AddTable(table, "shape-1"), timeout=10)
        assert isinstance(first, DbConnectionError) and first.kind == "lock_timeout"
        second, seen = add_watching_queue(manager, conn, table, "shape-2")
        assert seen == 0
        assert isinstance(second, DbConnectionError) and "has held a lock on it" in second.message
        app.rollback()
        assert manager.ask(AddTable(table, "shape-3"), timeout=10) is None
        assert published(conn) == [("public", "busy")]


def test_a_table_this_role_does_not_own_says_how_to_set_it_up_and_stays_once_set_up(db_dsn: str) -> None:
    """Publishing a table needs its ownership.  Without it every try failed with Postgres' bare "must be
    owner" (a 503 retried for ever); and once the owner had set the table up, the last shape's removal
    dropped it from the publication again, which this role cannot undo."""
    table = TableName("public", "theirs")
    with (
        role_publishing(
            db_dsn,
            "tenant",
            as_admin=["CREATE TABLE theirs (id int PRIMARY KEY)", "GRANT SELECT ON theirs TO tenant"],
            as_role=[],
            tables=["theirs"],
        ) as manager,
        psycopg.connect(db_dsn, autocommit=True) as conn,
    ):
        error = manager.ask(AddTable(table, "shape-1"), timeout=10)
        assert isinstance(error, DbConnectionError) and error.kind == "table_privilege"
        assert not error.retry_may_fix
        setup = error.message.split("sets it up once: ")[1].split(" (shapesync")[0]
        assert (
            setup
            == f"ALTER TABLE public.theirs REPLICA IDENTITY FULL; ALTER PUBLICATION {PUB} ADD TABLE public.theirs"
        )
        conn.execute(setup)  # what the owner is told to run
        assert manager.ask(AddTable(table, "shape-2"), timeout=10) is None
        assert manager.ask(RemoveTable(table, "shape-2"), timeout=10) is None
        assert published(conn) == [("public", "theirs")]  # left: this role could not add it back
        assert manager.ask(AddTable(table, "shape-3"), timeout=10) is None


def test_a_table_stays_published_for_the_grace_after_its_last_shape(
    db_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Every shape of a table invalidated at once (a TRUNCATE) comes back a moment later: removing the table
    and adding it again took its SHARE lock again, behind the writer in flight.  Within the grace it is still
    published and re-adding it takes no lock; past the grace without an owner it is removed."""
    conn.execute("CREATE TABLE hot (id int PRIMARY KEY, v int)")
    conn.execute("INSERT INTO hot VALUES (1, 1)")
    manager = PublicationManager.start(db_dsn, PUB, lock_timeout=0.3, unpublish_grace=1.0)
    table = TableName("public", "hot")
    try:
        assert manager.ask(AddTable(table, "shape-1"), timeout=10) is None
        assert manager.ask(RemoveTable(table, "shape-1"), timeout=10) is None
        assert published(conn) == [("public", "hot")]
        with psycopg.connect(db_dsn) as writer:
            writer.execute("UPDATE hot SET v = 2")  # in flight: a SHARE lock request would wait behind it
            assert manager.ask(AddTable(table, "shape-2"), timeout=10) is None
            writer.rollback()
        assert manager.ask(RemoveTable(table, "shape-2"), timeout=10) is None
        deadline = time.monotonic() + 10
        while published(conn):
            assert time.monotonic() < deadline, "not removed after the grace"
            time.sleep(0.05)
    finally:
        manager.stop(timeout=5)
